--[[
name: semaphore.renew
version: 1.0.1
summary: Extend a live lease to end ttl_ms from now (a holder still working); a waiter renewing its grant claims it.
flags: allow-oom
resend: safe
includes: semaphore
keys: keyset semaphore
argv:
  lease: str 1..128; the lease id given to semaphore.acquire (or a waiter's grant)
  ttl_ms: int 1..86400000; the lease now ends this long from now
returns:
  {renewed (1, or 0 when the lease already ended: its permits may be someone else's), now_ms}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than this operation keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
-- allow-oom: a renewal rewrites scores in place (no growth); refused, the lease would end under a
-- holder still at work. A re-sent renewal only moves the lease's end a little later.
local now = prl_now_ms()
local scores = rcall('ZMSCORE', semaphore_key, lease, SEM_MARK)
if scores[2] == false then
  sem_absent(semaphore_key, 'semaphore')
  return {0, now}
end
local info = sem_lease_info(leases_key, rcall('HGET', leases_key, lease))
local wait = sem_wait_info(waiting_key, rcall('HGET', waiting_key, lease))
if not scores[1] or tonumber(scores[1]) <= now then return {0, now} end
if not info then sem_bad(leases_key, 'no entry for a live lease') end
local claim = wait ~= nil and not wait.queued
if claim then rcall('LLEN', signal_key) end  -- its type, before the first write
sem_put(semaphore_key, lease, info.k, now + ttl_ms + PRL_LEASE_SLACK_MS, 'XX')
sem_keep(semaphore_key, ttl_ms + PRL_LEASE_SLACK_MS)
sem_keep(leases_key, ttl_ms + PRL_LEASE_SLACK_MS)
if claim then
  rcall('HDEL', waiting_key, lease)
  rcall('LREM', signal_key, 1, sem_grant_string(wait.fence, lease))
end
return {1, now}
