--[[
name: ratelimit.release
version: 1.1.1
summary: Release a concurrency lease by its id, freeing its slot at once.
flags: allow-oom
resend: safe
includes: semaphore
keys:
  slots: zset; live lease ids scored by the server time their lease ends, and the concurrency marker
argv:
  lease: str 1..128; the lease id given to ratelimit.acquire
returns:
  {released (1, or 0 when the lease had already ended, never existed or was released before:
  a re-sent release changes nothing and replies 0), now_ms, in flight after}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the key holds a sorted set that is not a concurrency limiter's (nothing changed)
  WRONGTYPE: the key holds another Redis type (nothing changed)
]]
-- allow-oom: releasing frees memory, and a refused release would hold a slot until its lease ends
local now = prl_now_ms()
local scores = rcall('ZMSCORE', slots_key, lease, SEM_MARK)
if scores[2] == false then
  sem_absent(slots_key, 'concurrency rate limiter')
  return {0, now, 0}
end
local released = 0
if scores[1] then
  sem_drop(slots_key, lease, 1)
  if tonumber(scores[1]) > now then released = 1 end
end
return {released, now, sem_in_use(slots_key, now)}
