--[[
name: cache.get_recorded
version: 1.0.0
summary: cache.get, recording the lookup in the namespace's metrics (hits, misses, stale) in the same call.
flags: none
resend: safe
includes: cache, metrics
keys:
  entry: hash; {v, d, e, n, t:<tag>...} of the cached key
  generations: hash; tag to generation for the namespace
  metrics: hash; the namespace's metrics, prl:cache:{namespace}:metrics (docs/design/metrics-in-redis.md): a hit (status 1 or 2) counts in hits, a miss (0) in misses, a stale entry (3) in stale; expires 61 minutes after the last minute anything was recorded
argv:
  tag_names: rest; 0..32 tags whose current generations to return (a recompute passes them to cache.set, which then refuses to store a value computed before an invalidation)
returns:
  {status, value, delta_ms, ttl_ms, {generation, ...}}: status 1 hit, 2 cached not-found (value
  nil), 3 stale (logically expired, still within grace: ttl_ms <= 0), 0 miss (absent or
  invalidated by a tag); one generation per requested tag. A re-sent call (a lost reply)
  counts again: the figures may count a lookup twice, the cache itself is unchanged
errors:
  BADARG: the key count or a tag is invalid
  BADSTATE: a requested tag's generation is not a number
  WRONGTYPE: the metrics key holds another Redis type (nothing changed)
]]
local M = metrics_open(metrics_key, 'cache')
local reply = cache_lookup(entry_key, generations_key, ARGV, tag_names_start)
local status = reply[1]
metrics_count(M, (status == 1 or status == 2) and 'hits' or status == 3 and 'stale' or 'misses', 1)
metrics_flush(M)
return reply
