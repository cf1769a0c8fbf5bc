--[[
name: ratelimit.metrics
version: 1.0.0
summary: A rate limiter's recorded metrics under one hash tag: allowed and denied per minute over the last hour (safe on a replica).
flags: no-writes
includes: metrics
keys:
  metrics: hash; the limiter's metrics, prl:rl:{tag}:metrics:<limiter name> (the key its charging calls pass after their limit keys)
argv:
returns:
  {minute, {counter, {60 counts}, ...}, {}}: minute is the server's current minute (unix seconds
  // 60); allowed and denied (decisions, whatever their cost) have 60 counts each, oldest first,
  the last one the current minute, a minute nothing recorded into reading 0. The figures are
  those of the calls made under this hash tag (by default a limiter's tag is the identity)
errors:
  BADARG: the key count is invalid
  WRONGTYPE: the key holds another Redis type
]]
return metrics_read(metrics_key, 'ratelimit', prl_now_ms())
