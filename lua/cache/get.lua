--[[
name: cache.get
version: 1.1.0
summary: Read a cache entry with what XFetch needs: value, recompute cost and remaining TTL (the client decides on early recomputation).
flags: no-writes
includes: cache
keys:
  entry: hash; {v, d, e, n, t:<tag>...} of the cached key
  generations: hash; tag to generation for the namespace
argv:
  tag_names: rest; 0..32 tags whose current generations to return (a recompute passes them to cache.set, which then refuses to store a value computed before an invalidation)
returns:
  {status, value, delta_ms, ttl_ms, {generation, ...}}: status 1 hit, 2 cached not-found (value
  nil), 3 stale (logically expired, still within grace: ttl_ms <= 0), 0 miss (absent or
  invalidated by a tag); one generation per requested tag
errors:
  BADARG: the key count or a tag is invalid
  BADSTATE: a requested tag's generation is not a number
]]
return cache_lookup(entry_key, generations_key, ARGV, tag_names_start)
