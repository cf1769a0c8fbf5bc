-- Helpers of the write-behind operations (lua/writebehind/*.lua).
--
-- A write-behind store takes nine keys, all under the store's hash tag:
--   1 values   hash, record key -> current value (absent: deleted, or never written)
--   2 versions hash, record key -> version of its latest write, negative when that write is a
--              delete; a flushed tombstone is forgotten (versions come from one store-wide
--              sequence, so a key's version still strictly increases with every write)
--   3 meta     hash, record key -> msgpack {s dirty since (ms), a failed attempts, q 'd' dirty |
--              'r' in backoff | 'x' dead, p written during a claim at (ms), e last error,
--              dt dead-lettered at (ms)}; present exactly while the key is not clean
--   4 dirty    sorted set of due dirty keys, score = dirty since (ms): oldest first
--   5 retry    sorted set of keys waiting out a retry backoff, score = server time they are due
--   6 claimed  sorted set of claimed keys, score = claim id = lease deadline (ms) * 1000 +
--              claim sequence mod 1000 (unique per claim of a key, exact in a double)
--   7 dead     sorted set of dead-lettered keys, score = server time they died
--   8 stats    hash of counters: seq (the version sequence), claims, writes, coalesced, claimed,
--              acked, failed, dead, reaped, released, requeued
--   9 signal   list an idle flusher blocks on (BLPOP); holds at most one wake-up
-- A key is in at most one of dirty, retry, claimed and dead. While claimed, meta.q keeps 'd' and
-- the claimed set is the truth (claim does not rewrite meta: the hot path stays cheap).

local function wb_K(keys)
  return {values = keys[1], versions = keys[2], meta = keys[3], dirty = keys[4],
          retry = keys[5], claimed = keys[6], dead = keys[7], stats = keys[8], signal = keys[9]}
end

-- Validate the rest of ARGV as 1..1000 groups of `width` values; `check(i)` validates the group
-- starting at ARGV[i]. Runs before any write. Returns the number of groups.
local function wb_groups(argv, start, width, what, check)
  local n = #argv - start + 1
  if n < width or n % width ~= 0 or n > 1000 * width then
    prl_fail('BADARG', what .. ' must be 1..1000 groups of ' .. width .. ' values, got ' .. n .. ' values')
  end
  for i = start, #argv, width do check(i) end
  return n / width
end

local function wb_key(v)
  if #v < 1 or #v > 1024 then
    prl_fail('BADARG', 'a record key must be 1..1024 bytes long, got ' .. #v)
  end
  return v
end

local function wb_get(K, key)
  local raw = redis.call('HGET', K.meta, key)
  if raw then return cmsgpack.unpack(raw) end
  return nil
end

local function wb_put(K, key, m)
  redis.call('HSET', K.meta, key, cmsgpack.pack(m))
end

-- Make a key due again (dirty, oldest-first by the time it first turned dirty).
local function wb_make_dirty(K, key, m)
  m.q = 'd'
  redis.call('ZADD', K.dirty, m.s, key)
  wb_put(K, key, m)
end

-- Run a variadic command over a long argument list in chunks (unpack has a stack limit).
local function wb_chunked(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Bounded upkeep at the start of a claim: expired claims and due retries return to dirty.
local function wb_upkeep(K, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', K.claimed, '-inf',
                             string.format('(%d', (now + 1) * 1000), 'LIMIT', 0, limit)
  for _, key in ipairs(expired) do
    redis.call('ZREM', K.claimed, key)
    local m = wb_get(K, key)
    if m then
      if m.p and m.p < m.s then m.s = m.p end
      m.p = nil
      wb_make_dirty(K, key, m)
    end
  end
  if #expired > 0 then redis.call('HINCRBY', K.stats, 'reaped', #expired) end
  local due = redis.call('ZRANGEBYSCORE', K.retry, '-inf', now, 'LIMIT', 0, limit)
  for _, key in ipairs(due) do
    redis.call('ZREM', K.retry, key)
    local m = wb_get(K, key)
    if m then wb_make_dirty(K, key, m) end
  end
  return #expired
end

-- Whether `key` is claimed under claim id `id`.
local function wb_holds(K, key, id)
  local score = redis.call('ZSCORE', K.claimed, key)
  return score ~= false and score ~= nil and tonumber(score) == id
end

local function wb_signal(K)
  if redis.call('LLEN', K.signal) == 0 then redis.call('RPUSH', K.signal, '1') end
end
