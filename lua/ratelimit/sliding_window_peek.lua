--[[
name: ratelimit.sliding_window_peek
version: 1.1.2
summary: Report what a sliding window counter (approximate: see docs/ratelimit.md for its bound) hit of this cost would decide, without charging anything.
flags: no-writes
includes: ratelimit
keys: variadic
  each: string; 1..16 keys, one per limit, all under one hash tag; each a string "sw:<window index>:<count>:<previous count>"; expires after the next window
argv:
  cost: int 0..1000000; units the request would weigh (0 reports the current state)
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
if #KEYS == 1 and #ARGV == 4 then return ratelimit_one(KEYS[1], ARGV, 'sliding_window', cost, false) end
return ratelimit_decide(KEYS, ARGV, limits_start, 3, 'sliding_window', cost, false)
