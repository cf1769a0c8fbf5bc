--[[
name: ratelimit.fixed_window
version: 1.2.1
summary: Charge a request against one or more fixed window (up to 2*limit across a window boundary) limits, all or none.
flags: none
resend: once
includes: ratelimit, metrics, ratelimit_charge
keys: variadic
  each: string; 1..16 keys, one per limit, all under one hash tag; each a string "fw:<window index>:<count>"; expires at the window end
  metrics: optional hash; the limiter's metrics, prl:rl:{tag}:metrics:<limiter name> (docs/design/metrics-in-redis.md), after the limit keys: a call passing one more key than it has limits records its decision there (allowed or denied, per minute); expires 61 minutes after the last minute anything was recorded
argv:
  cost: int 1..1000000; units the request weighs; above the limit it is denied and changes nothing
  limits: rest; per key: limit (int 1..1000000), period_ms (int 1..2678400000), burst: must be 0
returns:
  {allowed (1|0), remaining, retry_after_ms (0 if allowed, -1 if the cost can never be admitted),
  reset_after_ms (until the limiter is back to full), now_ms (server time of the decision),
  binding limit (1-based index of the limit that decided), then per limit: allowed, remaining,
  retry_after_ms, reset_after_ms}
errors:
  BADARG: an argument, a per-limit value or the key count is invalid (nothing changed)
  BADSTATE: a key holds something other than this algorithm's state (another algorithm's, or not a rate limiter's; nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
return ratelimit_charge(KEYS, ARGV, 'fixed_window', limits_start, cost)
