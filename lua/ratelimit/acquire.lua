--[[
name: ratelimit.acquire
version: 1.0.0
summary: Take a slot of a concurrency limit (at most limit leases in flight) for a lease id; leases expire if their holder dies.
flags: none
keys:
  slots: zset; live lease ids scored by the server time their lease ends; expires with the last lease
argv:
  lease: str 1..128; the lease id (unique per request; a retry with the same id renews, never takes two slots)
  limit: int 1..100000; at most this many leases in flight
  ttl_ms: int 1..86400000; the lease ends this long from now unless released or renewed
returns:
  {allowed (1|0), remaining slots, retry_after_ms (0 if allowed: else until the oldest lease
  ends, sooner if released), reset_after_ms (until every lease ends), now_ms, in flight}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local now = prl_now_ms()
local function last_end()
  local newest = rcall('ZRANGE', slots_key, -1, -1, 'WITHSCORES')
  if #newest == 0 then return now end
  return tonumber(newest[2])
end
-- Ended leases, bounded: at most as many as were ever in flight at once.
local count = rcall('ZCOUNT', slots_key, '(' .. now, '+inf')
local mine = rcall('ZSCORE', slots_key, lease)
if mine and tonumber(mine) <= now then mine = nil end
if mine or count < limit then
  rcall('ZREMRANGEBYSCORE', slots_key, '-inf', now)
  rcall('ZADD', slots_key, now + ttl_ms, lease)
  if not mine then count = count + 1 end
  local reset = last_end() - now
  rcall('PEXPIRE', slots_key, math.max(1, reset))
  return {1, limit - count, 0, reset, now, count}
end
local oldest = rcall('ZRANGEBYSCORE', slots_key, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local retry = tonumber(oldest[2]) - now
-- count may exceed a lowered limit: wait for enough leases to end
if count - limit > 0 then
  local nth = rcall('ZRANGEBYSCORE', slots_key, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT',
    count - limit, 1)
  retry = tonumber(nth[2]) - now
end
return {0, 0, retry, last_end() - now, now, count}
