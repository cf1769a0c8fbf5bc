--[[
name: ratelimit.multi_peek
version: 1.1.1
summary: Report what a hit against several limits of mixed algorithms would decide, without charging.
flags: no-writes
includes: ratelimit
keys: variadic
  each: any; 1..16 keys, one per limit, all under one hash tag; state as in ratelimit.<algorithm>
argv:
  cost: int 0..1000000; units the request would weigh (0 reports the current state)
  limits: rest; per key: algorithm (gcra|token_bucket|sliding_log|sliding_window|fixed_window), limit, period_ms, burst
returns:
  {allowed (1|0), remaining, retry_after_ms (0 if allowed, -1 if the cost can never be admitted),
  reset_after_ms (until the limiter is back to full), now_ms (server time of the decision),
  binding limit (1-based index of the limit that decided), then per limit: allowed, remaining,
  retry_after_ms, reset_after_ms}
errors:
  BADARG: an argument, a per-limit value or the key count is invalid (nothing changed)
  BADSTATE: a key holds something other than its algorithm's state (another algorithm's, or not a rate limiter's; nothing changed)
  WRONGTYPE: a key holds another Redis type than its algorithm keeps (nothing changed)
]]
return ratelimit_decide(KEYS, ARGV, limits_start, 4, nil, cost, false)
