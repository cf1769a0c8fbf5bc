--[[
name: lock.metrics
version: 1.0.0
summary: The lock's recorded metrics: per-minute counts over the last hour (safe on a replica).
flags: no-writes
includes: metrics
keys:
  metrics: hash; the lock's metrics, prl:lock:{name}:metrics (the key acquire, release and extend pass last)
argv:
returns:
  {minute, {counter, {60 counts}, ...}, {}}: minute is the server's current minute (unix seconds
  // 60); each counter has 60 counts, oldest first, the last one the current minute, a minute
  nothing recorded into reading 0. Counters: acquired (holds that began: a free lock taken, or a
  release's hand-off to a waiter), contended (of those, by a registered waiter), handoffs (a
  release granting the lock to a waiter), expired (a release or extend whose lease was gone).
  No histograms: the waiters set keeps when a registration ends, not when the wait began
errors:
  BADARG: the key count is invalid
  WRONGTYPE: the key holds another Redis type
]]
return metrics_read(metrics_key, 'lock', prl_now_ms())
