--[[
name: ratelimit.inspect
version: 1.0.0
summary: Report the raw state of one rate limiter key, whatever its algorithm, without changing it.
flags: no-writes
keys:
  limiter: any; any ratelimit key
argv:
returns:
  {type (none|string|hash|zset), pttl_ms (-2 when absent), now_ms, then by type: string: its
  value; hash: field, value pairs; zset: member count, oldest score, newest score}
errors:
  BADARG: the key count is invalid
]]
local now = prl_now_ms()
local t = rcall('TYPE', limiter_key)['ok']
local out = {t, rcall('PTTL', limiter_key), now}
if t == 'string' then
  out[4] = rcall('GET', limiter_key)
elseif t == 'hash' then
  local h = rcall('HGETALL', limiter_key)
  for i = 1, math.min(#h, 16) do out[#out + 1] = h[i] end
elseif t == 'zset' then
  out[4] = rcall('ZCARD', limiter_key)
  local first = rcall('ZRANGE', limiter_key, 0, 0, 'WITHSCORES')
  local last = rcall('ZRANGE', limiter_key, -1, -1, 'WITHSCORES')
  out[5] = first[2] or false
  out[6] = last[2] or false
end
return out
