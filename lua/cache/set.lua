--[[
name: cache.set
version: 1.2.0
summary: Store a cache entry (or a cached not-found) with its TTL, recompute cost and tags, recording each tag's current generation.
flags: none
resend: safe
includes: cache, metrics
keys: variadic
  entry: hash; the cached entry (KEYS[1])
  generations: hash; tag to generation (KEYS[2]); lives at least as long as the entries carrying tags
  tag_sets: set; one set per tag, in the order of the tag arguments (KEYS[3..])
  metrics: optional hash; the namespace's metrics, prl:cache:{namespace}:metrics, after the tag sets: a call passing it (one more key than 2 plus its tags) counts a stored value as a recompute
argv:
  value: str 0..8388608; the value (at most 8 MiB) (ignored for a not-found)
  ttl_ms: int 1..31536000000; logical time to live
  delta_ms: int 0..86400000; what recomputing the value cost (XFetch's delta)
  grace_ms: int 0..31536000000; keep serving the value as stale this long after it expires
  negative: int 0..1; 1 caches "not found"
  tag_names: rest; 0..32 (tag, expected generation) pairs, one per tag set key; tag 1..256 bytes; expected generation -1 takes the current one, else the value is only stored if the tag's generation is still that (it was read before computing the value)
returns:
  1 when stored; 0 when a tag was invalidated since the expected generation was read (nothing changed)
  A repeat stores the same entry again.
errors:
  BADARG: an argument, a tag or the key count is invalid (nothing changed)
  WRONGTYPE: the entry, the generations or a tag set holds another Redis type (nothing changed)
  BADSTATE: a tag's generation is not an integer (nothing changed)
]]
if #KEYS < 2 then prl_fail('BADARG', 'cache.set takes at least 2 keys, got ' .. #KEYS) end
-- one key more than 2 plus the tags: the last is the metrics key
local nkeys, metrics_key = #KEYS, nil
local npairs = #ARGV - tag_names_start + 1
if npairs >= 0 and npairs % 2 == 0 and #KEYS == 3 + npairs / 2 then
  nkeys, metrics_key = #KEYS - 1, KEYS[#KEYS]
end
local ntags = cache_tags(ARGV, tag_names_start, nkeys)
local entry, tags = KEYS[1], KEYS[2]
-- read: every key this call writes is checked before the first write
rcall('HLEN', entry)  -- an entry is a hash (WRONGTYPE otherwise: it is not replaced blindly)
local fields = {'v', negative == 1 and '' or value, 'd', delta_ms, 'e', 0, 'n', negative}
local set_ttls, tags_ttl = {}, 0
if ntags > 0 then
  local names, expected = {}, {}
  for i = 1, ntags do
    names[i] = ARGV[tag_names_start + 2 * (i - 1)]
    expected[i] = tonumber(ARGV[tag_names_start + 2 * i - 1])
  end
  local gens = rcall('HMGET', tags, unpack(names))
  for i = 1, ntags do
    local gen = tonumber(gens[i] or '0')
    if not gen then
      prl_fail('BADSTATE', 'the generation of tag ' .. prl_shown(names[i]) .. ' is not a number')
    end
    if expected[i] >= 0 and gen ~= expected[i] then return 0 end
    fields[#fields + 1] = 't:' .. names[i]
    fields[#fields + 1] = gen
  end
  for i = 1, ntags do
    rcall('SISMEMBER', KEYS[2 + i], entry)
    set_ttls[i] = rcall('PTTL', KEYS[2 + i])
  end
  tags_ttl = rcall('PTTL', tags)
end
local now = prl_now_ms()
local M = metrics_open(metrics_key, 'cache', now)
fields[6] = now + ttl_ms
local life = ttl_ms + grace_ms
-- write
rcall('DEL', entry)
rcall('HSET', entry, unpack(fields))
rcall('PEXPIRE', entry, life)
for i = 1, ntags do
  local set = KEYS[2 + i]
  rcall('SADD', set, entry)
  if set_ttls[i] < life then rcall('PEXPIRE', set, life) end
end
-- an entry is valid only while its tags' generations are current: the generations must outlive
-- it (were they gone, an invalidated entry would look valid again)
if ntags > 0 and tags_ttl < life then rcall('PEXPIRE', tags, life) end
metrics_count(M, 'recomputes', 1)
metrics_flush(M)
return 1
