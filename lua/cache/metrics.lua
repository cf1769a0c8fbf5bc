--[[
name: cache.metrics
version: 1.0.0
summary: A cache namespace's recorded metrics: hits, misses, stale entries and recomputes per minute over the last hour (safe on a replica).
flags: no-writes
includes: metrics
keys:
  metrics: hash; the namespace's metrics, prl:cache:{namespace}:metrics (the key cache.get_recorded and cache.set pass)
argv:
returns:
  {minute, {counter, {60 counts}, ...}, {}}: minute is the server's current minute (unix seconds
  // 60); each counter has 60 counts, oldest first, the last one the current minute, a minute
  nothing recorded into reading 0. Counters: hits (a lookup that found a live value or a cached
  not-found), misses (absent or invalidated), stale (found expired, within its grace: the
  caller serves it or recomputes), recomputes (values stored by a recording cache.set)
errors:
  BADARG: the key count is invalid
  WRONGTYPE: the key holds another Redis type
]]
return metrics_read(metrics_key, 'cache', prl_now_ms())
