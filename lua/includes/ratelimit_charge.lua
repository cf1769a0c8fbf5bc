-- The body of every charging rate-limit operation (lua/ratelimit/<algorithm>.lua).
-- A charging operation of algorithm `alg`: one limit (the hot path: no tables), or several (all
-- or none); with one more key than limits, the last key is the metrics key (read first,
-- recorded last). An include of its own, listed after the metrics and ratelimit ones: it
-- calls both.
local function ratelimit_charge(KEYS, ARGV, alg, limits_start, cost)
  if #KEYS == 1 and #ARGV == 4 then return ratelimit_one(KEYS[1], ARGV, alg, cost, true) end
  local limit_keys, metrics_key = KEYS, nil
  if #KEYS > 1 and #ARGV - limits_start + 1 == (#KEYS - 1) * 3 then
    limit_keys, metrics_key = {unpack(KEYS, 1, #KEYS - 1)}, KEYS[#KEYS]
  end
  local M = metrics_open(metrics_key, 'ratelimit')
  local reply
  if #limit_keys == 1 and #ARGV == 4 then
    reply = ratelimit_one(limit_keys[1], ARGV, alg, cost, true)
  else
    reply = ratelimit_decide(limit_keys, ARGV, limits_start, 3, alg, cost, true)
  end
  metrics_count(M, reply[1] == 1 and 'allowed' or 'denied', 1)
  metrics_flush(M)
  return reply
end
