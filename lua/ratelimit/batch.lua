--[[
name: ratelimit.batch
version: 1.0.0
summary: Many independent single-limit decisions in one call (e.g. one tenant's users): each key admitted or denied on its own.
flags: none
includes: ratelimit
keys: variadic
  each: any; 1..256 distinct keys, one per decision, all under one hash tag
argv:
  items: rest; per key: algorithm (gcra|token_bucket|sliding_log|sliding_window|fixed_window), limit, period_ms, burst, cost (int 1..1000000); sliding-log costs may total at most 10000 per call
returns:
  {now_ms, then per key: allowed (1|0), remaining, retry_after_ms (-1: never), reset_after_ms}
errors:
  BADARG: an argument, a per-key value or the key count is invalid (nothing changed)
  BADSTATE: a key holds something other than its limiter's state (nothing changed)
]]
local n = #KEYS
if n < 1 or n > 256 then prl_fail('BADARG', 'takes 1..256 keys, got ' .. n) end
if #ARGV ~= n * 5 then
  prl_fail('BADARG', 'takes 5 arguments per key (' .. n * 5 .. ' for ' .. n .. ' keys), got ' .. #ARGV)
end
-- validate everything before the first write
local specs, costs, seen, log_units = {}, {}, {}, 0
local algorithms = {'gcra', 'token_bucket', 'sliding_log', 'sliding_window', 'fixed_window'}
for i = 1, n do
  local key = KEYS[i]
  if seen[key] then prl_fail('BADARG', 'key ' .. prl_shown(key) .. ' is given twice') end
  seen[key] = true
  local j = (i - 1) * 5 + 1
  local a = prl_enum(ARGV, j, 'algorithm', algorithms, nil)
  local limit = prl_int(ARGV, j + 1, 'limit', 1, 1000000, nil)
  local period = prl_int(ARGV, j + 2, 'period_ms', 1, 2678400000, nil)
  local burst = prl_int(ARGV, j + 3, 'burst', 0, 1000000, nil)
  local cost = prl_int(ARGV, j + 4, 'cost', 1, 1000000, nil)
  if a == 'sliding_log' then
    if limit > 10000 then
      prl_fail('BADARG', 'limit of a sliding log must be in 1..10000, got ' .. limit)
    end
    if cost <= limit then log_units = log_units + cost end
  end
  if burst > 0 and a ~= 'gcra' and a ~= 'token_bucket' then
    prl_fail('BADARG', 'burst applies to gcra and token_bucket only; send 0 for ' .. a)
  end
  if burst == 0 then burst = limit end
  specs[i] = {key = key, algo = a, limit = limit, period = period, burst = burst}
  costs[i] = cost
end
if log_units > 10000 then
  prl_fail('BADARG', 'sliding-log costs in one batch may total at most 10000, got ' .. log_units)
end
local now = prl_now_ms()
local out = {now}
for i, s in ipairs(specs) do
  local d = ratelimit_algorithm(s.algo)(s, costs[i], now)
  if d.ok then d.commit() end
  out[#out + 1] = d.ok and 1 or 0
  out[#out + 1] = d.remaining
  out[#out + 1] = d.retry
  out[#out + 1] = d.reset
end
return out
