--[[
name: ratelimit.batch
version: 1.1.1
summary: Many independent single-limit decisions in one call (e.g. one tenant's users): each key admitted or denied on its own.
flags: none
resend: once
includes: ratelimit
keys: variadic
  each: any; 1..256 distinct keys, one per decision, all under one hash tag; state as in ratelimit.<algorithm>
argv:
  items: rest; per key: algorithm (gcra|token_bucket|sliding_log|sliding_window|fixed_window), limit, period_ms, burst, cost (int 1..1000000); sliding-log costs may total at most 10000 per call
returns:
  {now_ms, then per key: allowed (1|0), remaining, retry_after_ms (-1: never), reset_after_ms}
errors:
  BADARG: an argument, a per-key value or the key count is invalid (nothing changed)
  BADSTATE: a key holds something other than its algorithm's state (nothing changed: every key is read and checked before the first is charged)
  WRONGTYPE: a key holds another Redis type than its algorithm keeps (nothing changed)
]]
local n = #KEYS
if n < 1 or n > 256 then prl_fail('BADARG', 'takes 1..256 keys, got ' .. n) end
if #ARGV ~= n * 5 then
  prl_fail('BADARG', 'takes 5 arguments per key (' .. n * 5 .. ' for ' .. n .. ' keys), got ' .. #ARGV)
end
-- validate every argument, then read and check every key, then charge: an error changes nothing
local specs, costs, seen, log_units = {}, {}, {}, 0
for i = 1, n do
  local key = KEYS[i]
  if seen[key] then prl_fail('BADARG', 'key ' .. prl_shown(key) .. ' is given twice') end
  seen[key] = true
  local j = (i - 1) * 5 + 1
  local a = ratelimit_algorithm_arg(ARGV, j)
  local s = ratelimit_spec(key, a, ARGV, j + 1, true)
  local cost = prl_int(ARGV, j + 4, 'cost', 1, 1000000, nil)
  if a == 'sliding_log' and cost <= s.limit then log_units = log_units + cost end
  specs[i], costs[i] = s, cost
end
if log_units > 10000 then
  prl_fail('BADARG', 'sliding-log costs in one batch may total at most 10000, got ' .. log_units)
end
local now = prl_now_ms()
local decisions = {}
for i, s in ipairs(specs) do
  decisions[i] = ratelimit_algorithm(s.algo)(s, costs[i], now)
end
local out = {now}
for _, d in ipairs(decisions) do
  if d.ok then d.commit() end
  out[#out + 1] = d.ok and 1 or 0
  out[#out + 1] = d.remaining
  out[#out + 1] = d.retry
  out[#out + 1] = d.reset
end
return out
