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
