--[[
name: ratelimit.acquire
version: 1.1.2
summary: Take a slot of a concurrency limit (at most limit leases in flight) for a lease id; leases expire if their holder dies.
flags: none
resend: safe
includes: semaphore
keys:
  slots: zset; live lease ids scored by the server time their lease ends, and a marker member (134 bytes, longer than any lease id) scored 0; expires with the last lease
argv:
  lease: str 1..128; the lease id, chosen by the client (unique per request; a repeat of the call with the same id, e.g. a re-send, renews that lease and never takes a second slot)
  limit: int 1..100000; at most this many leases in flight
  ttl_ms: int 1..86400000; the lease ends this long from now unless released or renewed
returns:
  {allowed (1|0), remaining slots, retry_after_ms (0 if allowed: else until the oldest lease
  ends, sooner if released), reset_after_ms (until every lease ends), now_ms, in flight}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the key holds a sorted set that is not a concurrency limiter's (nothing changed)
  WRONGTYPE: the key holds another Redis type (nothing changed)
]]
-- The semaphore's permit state, one permit per lease and nobody waiting (lua/includes/semaphore.lua).
local now = prl_now_ms()
local scores = rcall('ZMSCORE', slots_key, lease, SEM_MARK)
local exists = scores[2] ~= false or sem_absent(slots_key, 'concurrency rate limiter')
local mine = scores[1]
if mine and tonumber(mine) <= now then mine = false end
-- Ended leases, bounded: at most as many as were ever in flight at once.
local count = 0
if exists then count = sem_in_use(slots_key, now) end
if mine or count < limit then
  local reset = ttl_ms + PRL_LEASE_SLACK_MS
  if exists then
    sem_prune(slots_key, now)
    sem_put(slots_key, lease, 1, now + ttl_ms + PRL_LEASE_SLACK_MS)
    reset = sem_last_end(slots_key, now)
  else
    rcall('ZADD', slots_key, 0, SEM_MARK, now + ttl_ms + PRL_LEASE_SLACK_MS, lease)
  end
  if not mine then count = count + 1 end
  rcall('PEXPIRE', slots_key, math.max(1, reset))
  return {1, limit - count, 0, reset, now, count}
end
-- count may exceed a lowered limit: wait for enough leases to end
return {0, 0, sem_free_in(slots_key, now, count, limit, 1), sem_last_end(slots_key, now), now,
        count}
