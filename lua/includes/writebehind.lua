-- Helpers of the write-behind operations (lua/writebehind/*.lua).
--
-- A write-behind store takes nine keys, all under the store's hash tag:
--   1 values   hash, record key -> current value (absent: deleted, or never written)
--   2 versions hash, record key -> version of its latest write, negative when that write is a
--              delete; a flushed tombstone is forgotten. Versions are a hybrid clock: the server
--              time in microseconds, or the last version + 1 when that is higher. They strictly
--              increase per store, and a store Redis lost (a restart without persistence, a
--              failover that lost writes, an old snapshot) starts again above every version it
--              handed out before, so the sinks' "newer version wins" keeps taking its writes.
--   3 meta     hash, record key -> msgpack {s dirty since (ms), a attempts, q 'd' dirty |
--              'r' in backoff | 'x' dead, p written during a claim at (ms), e last error,
--              dt dead-lettered at (ms), z 1: back from an expired claim and not written to the
--              sink since (a suspect, claimed alone), c the id of a suspect's claim};
--              present exactly while the key is not clean
--   4 dirty    sorted set of due dirty keys, score = dirty since (ms): oldest first; a suspect
--              scores dirty since - 2^52, so suspects come first
--   5 retry    sorted set of keys waiting out a retry backoff, score = server time they are due
--   6 claimed  sorted set of claimed keys, score = claim id = lease deadline (ms) * 1000 +
--              claim sequence mod 1000 (unique per claim of a key, exact in a double)
--   7 dead     sorted set of dead-lettered keys, score = server time they died
--   8 stats    hash: seq (the last version handed out), counters (claims, writes, coalesced,
--              claimed, acked, failed, dead, reaped, released, requeued) and, while a claim
--              made with a request id is live, claim:<request id> -> '<claim id> <oldest>' and
--              rid:<claim id> -> <request id> (a re-sent claim gets the same records back)
--   9 signal   list an idle flusher blocks on (BLPOP); holds at most one wake-up, expires
-- A key is in at most one of dirty, retry, claimed and dead. While claimed, meta.q keeps 'd' and
-- the claimed set is the truth (claim does not rewrite meta: the hot path stays cheap).
-- Operations read and parse everything they need first, then write: an error changes nothing.

local WB_SUSPECT = 4503599627370496  -- 2^52: a suspect's dirty score is below every other's
local WB_EXPIRED = 'claim expired: the flusher stopped or crashed while writing this record'

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

local function wb_int(n)
  return string.format('%d', n)
end

-- A cheap read of each named key that fails with WRONGTYPE unless the key holds its declared
-- type (or nothing): called for every key an operation writes, before its first write.
local WB_PROBE = {values = 'HLEN', versions = 'HLEN', meta = 'HLEN', stats = 'HLEN',
                  dirty = 'ZCARD', retry = 'ZCARD', claimed = 'ZCARD', dead = 'ZCARD',
                  signal = 'LLEN'}
local function wb_check(K, ...)
  for _, name in ipairs({...}) do redis.call(WB_PROBE[name], K[name]) end
end

-- Stats fields, read before the first write: the named counters (which must be integers: they
-- are written back, incremented, by one HSET at the end) and, as they are, the extra fields.
local function wb_stats(K, counters, extra)
  local names = {}
  for i, name in ipairs(counters) do names[i] = name end
  for _, name in ipairs(extra or {}) do names[#names + 1] = name end
  local values = redis.call('HMGET', K.stats, unpack(names))
  local c, x = {}, {}
  for i, name in ipairs(counters) do
    local v = values[i]
    if v and not string.match(v, '^%-?%d+$') then
      prl_fail('BADSTATE', 'the counter ' .. name .. ' of the store is not an integer: ' .. prl_shown(v))
    end
    c[name] = tonumber(v or '0')
  end
  for i, name in ipairs(extra or {}) do x[name] = values[#counters + i] end
  return c, x
end

-- Write the counters that moved (c[name] + inc[name]) and the given field/value pairs, in one
-- HSET (one call instead of an HINCRBY per counter; the script is atomic).
local function wb_stats_write(K, c, inc, fields)
  local args = fields or {}
  for name, n in pairs(inc) do
    if n ~= 0 then
      args[#args + 1] = name
      args[#args + 1] = wb_int(c[name] + n)
    end
  end
  if #args > 0 then redis.call('HSET', K.stats, unpack(args)) end
end

-- A stored meta entry, parsed; state not written by these operations is BADSTATE.
local function wb_meta(raw, key)
  local ok, m = pcall(cmsgpack.unpack, raw)
  if not ok or type(m) ~= 'table' or type(m.s) ~= 'number' then
    prl_fail('BADSTATE', 'the write-behind state of record ' .. prl_shown(key) .. ' is malformed')
  end
  return m
end

-- The parsed meta of each key (nil where the key is clean), one HMGET per 1000 keys.
local function wb_metas(K, keys)
  local out = {}
  for i = 1, #keys, 1000 do
    local part = redis.call('HMGET', K.meta, unpack(keys, i, math.min(i + 999, #keys)))
    for n = 1, #part do
      if part[n] then out[i + n - 1] = wb_meta(part[n], keys[i + n - 1]) end
    end
  end
  return out
end

-- The score of each key in a sorted set (false where absent), one ZMSCORE per 1000 keys.
local function wb_scores(set, keys)
  local out = {}
  for i = 1, #keys, 1000 do
    local part = redis.call('ZMSCORE', set, unpack(keys, i, math.min(i + 999, #keys)))
    for n = 1, #part do out[i + n - 1] = part[n] and tonumber(part[n]) or false end
  end
  return out
end

-- Run a variadic command over a long argument list in chunks (unpack has a stack limit);
-- chunks hold an even number of values, so field/value and score/member pairs stay together.
local function wb_chunked(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

local function wb_score(m)
  if m.z then return m.s - WB_SUSPECT end
  return m.s
end

-- Buffered writes: meta entries, dirty and retry scores. Decide first, flush at the end.
local function wb_writes()
  return {meta = {}, dirty = {}, retry = {}, dead = {}}
end

local function wb_put(w, key, m)
  w.meta[#w.meta + 1] = key
  w.meta[#w.meta + 1] = cmsgpack.pack(m)
end

-- Make a key due again (dirty, oldest-first by the time it first turned dirty).
local function wb_make_dirty(w, key, m)
  m.q = 'd'
  w.dirty[#w.dirty + 1] = wb_score(m)
  w.dirty[#w.dirty + 1] = key
  wb_put(w, key, m)
end

local function wb_make_retry(w, key, m, due)
  m.q = 'r'
  w.retry[#w.retry + 1] = due
  w.retry[#w.retry + 1] = key
  wb_put(w, key, m)
end

local function wb_make_dead(w, key, m, now)
  m.q, m.dt = 'x', now
  w.dead[#w.dead + 1] = now
  w.dead[#w.dead + 1] = key
  wb_put(w, key, m)
end

local function wb_flush_writes(K, w)
  wb_chunked('ZADD', K.dirty, w.dirty)
  wb_chunked('ZADD', K.retry, w.retry)
  wb_chunked('ZADD', K.dead, w.dead)
  wb_chunked('HSET', K.meta, w.meta)
end

-- Forget the request id of a claim that holds nothing any more (`rid`: its request id when the
-- caller read it already, else looked up).
local function wb_forget_claim(K, id_text, rid)
  if rid == nil then rid = redis.call('HGET', K.stats, 'rid:' .. id_text) end
  if rid and redis.call('ZCOUNT', K.claimed, id_text, id_text) == 0 then
    redis.call('HDEL', K.stats, 'rid:' .. id_text, 'claim:' .. rid)
  end
end

-- After an ack cleaned records that other claims held (it does so for a record whose own
-- claim expired while it was written): those claims may be empty now, forget their request
-- ids. Only suspects are claimed by others so; their claim records its id in the meta (c).
local function wb_forget_others(K, clean, raws)
  for j = 1, #clean do
    local raw = raws[j]
    if raw and string.find(raw, '\161c', 1, true) then
      local ok, m = pcall(cmsgpack.unpack, raw)
      if ok and type(m) == 'table' and type(m.c) == 'number' then wb_forget_claim(K, wb_int(m.c)) end
    end
  end
end

-- Bounded upkeep (claim and reap), read part: expired claims and due retries, parsed.
local function wb_expired(K, now, limit)
  return redis.call('ZRANGEBYSCORE', K.claimed, '-inf', string.format('(%d', (now + 1) * 1000),
                    'WITHSCORES', 'LIMIT', 0, limit),
         redis.call('ZRANGEBYSCORE', K.retry, '-inf', now, 'LIMIT', 0, limit)
end

-- `expired` (key, claim id pairs) and `due` as wb_expired read them, with their metas.
local function wb_upkeep_prepare(K, expired, due)
  local u = {keys = {}, ids = {}, due = due}
  for i = 1, #expired, 2 do
    u.keys[#u.keys + 1] = expired[i]
    u.ids[#u.ids + 1] = wb_int(tonumber(expired[i + 1]))
  end
  u.metas = wb_metas(K, u.keys)
  u.due_metas = wb_metas(K, u.due)
  return u
end

local function wb_upkeep_read(K, now, limit)
  return wb_upkeep_prepare(K, wb_expired(K, now, limit))
end

-- Write part. An expired claim counts as a failed attempt of each of its records (their flusher
-- died or stalled while writing them; a record that crashes its flusher must not come back
-- forever): after max_attempts a record is dead-lettered, before that it comes back as a
-- suspect, claimed alone until it is written, so it cannot take a batch down with it again.
-- Returns the number of expired claims handled and how many of them were dead-lettered (the
-- caller adds them to the counters reaped and dead).
local function wb_upkeep_write(K, u, w, now, max_attempts)
  local dead = 0
  if #u.keys > 0 then
    wb_chunked('ZREM', K.claimed, u.keys)
    for j, key in ipairs(u.keys) do
      local m = u.metas[j]
      if m then
        if m.p and m.p < m.s then m.s = m.p end
        m.p, m.a, m.e, m.z, m.c = nil, (m.a or 0) + 1, WB_EXPIRED, 1, nil
        if m.a >= max_attempts then
          wb_make_dead(w, key, m, now)
          dead = dead + 1
        else
          wb_make_dirty(w, key, m)
        end
      end
    end
  end
  if #u.due > 0 then
    wb_chunked('ZREM', K.retry, u.due)
    for j, key in ipairs(u.due) do
      local m = u.due_metas[j]
      if m then wb_make_dirty(w, key, m) end
    end
  end
  return #u.keys, dead
end

-- After wb_flush_writes: forget the request ids of the expired claims now empty.
local function wb_upkeep_forget(K, u)
  local seen = {}
  for _, id in ipairs(u.ids) do
    if not seen[id] then
      seen[id] = true
      wb_forget_claim(K, id)
    end
  end
end

-- Wake an idle flusher; `queued` is the signal list's length, read before the first write.
local function wb_signal(K, queued)
  if queued == 0 then
    redis.call('RPUSH', K.signal, '1')
    redis.call('PEXPIRE', K.signal, 2000)  -- a wake-up matters only to a flusher blocked now
  end
end

-- writebehind.write's steps, defined here once (a function defined in an operation's body is
-- made anew on every call).

-- What a write does to a record's state m (nil: clean): returns the new state and whether it
-- must be stored, whether the record turns dirty, leaves the dead letters, or coalesces.
local function wb_write_decide(m, held, now)
  if m and held then
    -- written during a flush: the claim's ack will see the version moved and keep it dirty
    if m.p then return m, false, false, false, false end
    m.p = now
    return m, true, false, false, false
  elseif m and (m.q == 'd' or m.q == 'r') then
    -- coalesce; a new value waiting out a retry backoff keeps its turn but gets fresh attempts
    if m.q == 'r' and m.a ~= 0 then
      m.a = 0
      return m, true, false, false, true
    end
    return m, false, false, false, true
  end
  -- a new write supersedes a dead-lettered one with fresh attempts; a suspect stays one
  return {s = now, a = 0, z = m and m.z or nil, q = 'd'}, true, true, m ~= nil and m.q == 'x', false
end

-- The version sequence and write counters, checked (they are rewritten at the end).
local function wb_write_stats(K)
  local sv = redis.call('HMGET', K.stats, 'seq', 'writes', 'coalesced')
  for i = 1, 3 do
    if sv[i] and not string.match(sv[i], '^%-?%d+$') then
      prl_fail('BADSTATE', 'a counter of the store is not an integer: ' .. prl_shown(sv[i]))
    end
  end
  return sv
end

local function wb_write_count(K, sv, base, count, coalesced)
  if coalesced > 0 then
    redis.call('HSET', K.stats, 'seq', wb_int(base + count),
               'writes', wb_int(tonumber(sv[2] or '0') + count),
               'coalesced', wb_int(tonumber(sv[3] or '0') + coalesced))
  else
    redis.call('HSET', K.stats, 'seq', wb_int(base + count),
               'writes', wb_int(tonumber(sv[2] or '0') + count))
  end
end

-- Whether a write wakes a flusher: the dirty set turns non-empty, or reaches notify_at.
local function wb_wakes(before, fresh, notify_at)
  local after = before + fresh
  return (before == 0 and after > 0) or (notify_at > 0 and before < notify_at and after >= notify_at)
end
