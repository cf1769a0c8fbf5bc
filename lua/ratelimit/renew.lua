--[[
name: ratelimit.renew
version: 1.1.2
summary: Extend a live concurrency lease to end ttl_ms from now (a holder still working).
flags: allow-oom
resend: safe
includes: semaphore
keys:
  slots: zset; live lease ids scored by the server time their lease ends, and the concurrency marker
argv:
  lease: str 1..128; the lease id given to ratelimit.acquire
  ttl_ms: int 1..86400000; the lease now ends this long from now
returns:
  {renewed (1, or 0 when the lease already ended: its slot may be someone else's), now_ms}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the key holds a sorted set that is not a concurrency limiter's (nothing changed)
  WRONGTYPE: the key holds another Redis type (nothing changed)
]]
-- allow-oom: a renewal rewrites one score in place (no growth); refused, the lease would end
-- under a holder still at work and its slot could go to a second one once memory is back.
-- A re-sent renewal only moves the lease's end a little later.
local now = prl_now_ms()
local scores = rcall('ZMSCORE', slots_key, lease, SEM_MARK)
if scores[2] == false then
  sem_absent(slots_key, 'concurrency rate limiter')
  return {0, now}
end
local score = scores[1]
if not score or tonumber(score) <= now then return {0, now} end
sem_put(slots_key, lease, 1, now + ttl_ms + PRL_LEASE_SLACK_MS, 'XX')
sem_keep(slots_key, ttl_ms + PRL_LEASE_SLACK_MS)
return {1, now}
