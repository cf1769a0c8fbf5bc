--[[
name: ratelimit.acquire
version: 1.1.0
summary: Take a slot of a concurrency limit (at most limit leases in flight) for a lease id; leases expire if their holder dies.
flags: none
resend: safe
includes: ratelimit
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
local now = prl_now_ms()
local scores = rcall('ZMSCORE', slots_key, lease, RATELIMIT_SLOTS_MARK)
local exists = scores[2] ~= false or ratelimit_zset_absent(slots_key, 'concurrency')
local mine = scores[1]
if mine and tonumber(mine) <= now then mine = false end
local function last_end()
  local newest = rcall('ZRANGE', slots_key, -1, -1, 'WITHSCORES')
  return math.max(now, tonumber(newest[2]))
end
-- Ended leases, bounded: at most as many as were ever in flight at once.
local count = 0
if exists then count = rcall('ZCOUNT', slots_key, '(' .. now, '+inf') end
if mine or count < limit then
  local reset = ttl_ms
  if exists then
    rcall('ZREMRANGEBYSCORE', slots_key, '(0', now)
    rcall('ZADD', slots_key, now + ttl_ms, lease)
    reset = last_end() - now
  else
    rcall('ZADD', slots_key, 0, RATELIMIT_SLOTS_MARK, now + ttl_ms, lease)
  end
  if not mine then count = count + 1 end
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
