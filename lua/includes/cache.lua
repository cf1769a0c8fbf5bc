-- Helpers of the cache operations (lua/cache/*.lua).
--
-- A cache namespace keeps everything under one hash tag, the namespace's:
--   entry   hash per cached key: v value, d recompute cost (ms), e logical expiry (server ms),
--           n '1' for a cached "not found", t:<tag> the tag's generation when the entry was set.
--           The key itself expires at e + grace (grace: how long a stale value may still be served).
--   tags    hash, tag -> generation; bumping a generation invalidates every entry carrying the
--           tag at once (an entry is valid only while all its recorded generations are current)
--   tag set set per tag of the entry key names carrying it, so invalidation can also delete them
--           (bounded, in calls that declare the entry keys they delete)

-- Validate the (tag, expected generation) pairs of cache.set against its tag set keys.
local function cache_tags(argv, start, nkeys)
  local n = #argv - start + 1
  if n < 0 then n = 0 end
  if n % 2 ~= 0 then prl_fail('BADARG', 'tags come as (tag, expected generation) pairs') end
  local ntags = n / 2
  if ntags > 32 then prl_fail('BADARG', 'at most 32 tags per entry, got ' .. ntags) end
  if nkeys ~= 2 + ntags then
    prl_fail('BADARG', 'cache.set takes 2 keys plus one tag set key per tag: expected ' ..
      (2 + ntags) .. ' keys, got ' .. nkeys)
  end
  for i = start, #argv, 2 do
    if #argv[i] < 1 or #argv[i] > 256 then
      prl_fail('BADARG', 'a tag must be 1..256 bytes long, got ' .. #argv[i])
    end
    prl_int(argv, i + 1, 'expected generation', -1, 9007199254740991, nil)
  end
  return ntags
end

-- cache.get's body, shared with cache.get_recorded (not named cache_get: that is the
-- operation's own function): the entry's status, value, delta, ttl and the asked tags'
-- generations (reads only).
local function cache_lookup(entry_key, generations_key, argv, tag_names_start)
  local asked = {}
  for i = tag_names_start, #argv do
    prl_str(argv, i, 'tag', 1, 256, nil)
    asked[#asked + 1] = argv[i]
  end
  if #asked > 32 then prl_fail('BADARG', 'at most 32 tags, got ' .. #asked) end
  local asked_gens = {}
  if #asked > 0 then
    local g = redis.call('HMGET', generations_key, unpack(asked))
    for i = 1, #asked do
      asked_gens[i] = tonumber(g[i] or '0')
      if not asked_gens[i] then
        prl_fail('BADSTATE', 'the generation of tag ' .. prl_shown(asked[i]) .. ' is not a number')
      end
    end
  end
  local raw = redis.call('HGETALL', entry_key)
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
    local current = redis.call('HMGET', generations_key, unpack(tagnames))
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
end
