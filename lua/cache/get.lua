--[[
name: cache.get
version: 1.0.1
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
local asked = {}
for i = tag_names_start, #ARGV do
  prl_str(ARGV, i, 'tag', 1, 256, nil)
  asked[#asked + 1] = ARGV[i]
end
if #asked > 32 then prl_fail('BADARG', 'at most 32 tags, got ' .. #asked) end
local asked_gens = {}
if #asked > 0 then
  local g = rcall('HMGET', generations_key, unpack(asked))
  for i = 1, #asked do
    asked_gens[i] = tonumber(g[i] or '0')
    if not asked_gens[i] then
      prl_fail('BADSTATE', 'the generation of tag ' .. prl_shown(asked[i]) .. ' is not a number')
    end
  end
end
local raw = rcall('HGETALL', entry_key)
if #raw == 0 then return {0, false, 0, 0, asked_gens} end
local f, tagnames, gens = {}, {}, {}
for i = 1, #raw, 2 do
  local name = raw[i]
  if string.sub(name, 1, 2) == 't:' then
    tagnames[#tagnames + 1] = string.sub(name, 3)
    gens[#gens + 1] = raw[i + 1]
  else
    f[name] = raw[i + 1]
  end
end
if #tagnames > 0 then
  local current = rcall('HMGET', generations_key, unpack(tagnames))
  for i = 1, #tagnames do
    if (current[i] or '0') ~= gens[i] then return {0, false, 0, 0, asked_gens} end
  end
end
local ttl = tonumber(f.e or '0') - prl_now_ms()
local status = 1
if ttl <= 0 then status = 3 elseif f.n == '1' then status = 2 end
local value = f.v
if f.n == '1' then value = false end
return {status, value, tonumber(f.d or '0'), ttl, asked_gens}
