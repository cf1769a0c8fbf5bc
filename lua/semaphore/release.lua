--[[
name: semaphore.release
version: 1.0.0
summary: Release a lease's permits by its id, and grant freed permits to the waiters at the head of the queue.
flags: allow-oom
resend: safe
includes: semaphore
keys: keyset semaphore
argv:
  lease: str 1..128; the lease id given to semaphore.acquire (or a waiter's grant)
  permits: int 1..100000; N, how many permits the semaphore has (decides the grants this call makes)
returns:
  {released (1, or 0 when the lease had already ended, never existed or was released before:
  a re-sent release changes nothing more and replies 0), permits in use after, waiters queued
  after, grants made, now_ms}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than this operation keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
-- allow-oom: releasing frees permits, and a refused release would hold them until the lease ends
local now = prl_now_ms()
local K = {permits = semaphore_key, leases = leases_key, fence = fence_key,
           signal = signal_key, waiters = waiters_key, waiting = waiting_key}
local s = sem_load(K, now, lease)
local mine = s.live and s.info.k or 0
local grants, drops = sem_plan_grants(s, permits, permits - s.in_use + mine, lease)

local wrote = #s.gone > 0 or #grants > 0 or #drops > 0
sem_commit_prune(s)
if s.live then
  sem_drop(semaphore_key, lease, s.info.k)
  wrote = true
end
if s.info then
  rcall('HDEL', leases_key, lease)
  wrote = true
end
if s.wait then
  rcall('HDEL', waiting_key, lease)
  if not s.wait.queued then rcall('LREM', signal_key, 1, sem_grant_string(s.wait.fence, lease)) end
  wrote = true
end
if s.queued_at then
  rcall('ZREM', waiters_key, lease)
  wrote = true
end
if #grants > 0 and rcall('EXISTS', semaphore_key) == 0 then
  rcall('ZADD', semaphore_key, 0, SEM_MARK)
end
sem_commit_grants(s, grants, drops, nil)
if wrote then sem_settle(s) end
return {s.live and 1 or 0, sem_in_use(semaphore_key, now), rcall('ZCARD', waiters_key), #grants,
        now}
