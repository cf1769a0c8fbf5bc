--[[
name: ratelimit.inspect
version: 1.1.0
summary: Report the raw state of one rate limiter key, whatever its algorithm, without changing it.
flags: no-writes
includes: ratelimit
keys:
  limiter: any; any ratelimit key
argv:
returns:
  {type (none|string|hash|zset|...), pttl_ms (-2 when absent), now_ms, then by type: string: its
  value, what it holds (gcra|token_bucket|fixed_window|sliding_window|unknown); hash: field,
  value pairs (not rate limiter state); zset: entry count, oldest score, newest score (false when
  empty), what it holds (sliding_log|concurrency|unknown); the marker member is not counted}
errors:
  BADARG: the key count is invalid
]]
local now = prl_now_ms()
local kind, t = ratelimit_kind(limiter_key)
local out = {t, rcall('PTTL', limiter_key), now}
if t == 'string' then
  out[4] = rcall('GET', limiter_key)
  out[5] = kind or 'unknown'
elseif t == 'hash' then
  local h = rcall('HGETALL', limiter_key)
  for i = 1, math.min(#h, 16) do out[#out + 1] = h[i] end
elseif t == 'zset' then
  -- a limiter's marker is its lowest member (scored 0, below every timestamp)
  local low, high = kind and 1 or 0, -1
  local count = rcall('ZCARD', limiter_key) - (kind and 1 or 0)
  local first = rcall('ZRANGE', limiter_key, low, low, 'WITHSCORES')
  local last = rcall('ZRANGE', limiter_key, high, high, 'WITHSCORES')
  out[4] = count
  out[5] = count > 0 and first[2] or false
  out[6] = count > 0 and last[2] or false
  out[7] = kind or 'unknown'
end
return out
