--[[
name: writebehind.write
version: 1.1.0
summary: Store values and deletes (tombstones), give each a new version and mark the keys dirty, atomically.
flags: none
resend: safe
includes: writebehind
keys:
  values: hash; record key to its current value (absent: deleted)
  versions: hash; record key to the version of its latest write (negative: a delete)
  meta: hash; record key to its msgpack state {s, a, q, p, e, dt, z} while not clean
  dirty: zset; due dirty keys scored by the time they turned dirty (suspects first)
  retry: zset; keys in retry backoff scored by the time they are due
  claimed: zset; claimed keys scored by claim id (lease deadline ms * 1000 + sequence)
  dead: zset; dead-lettered keys scored by the time they died
  stats: hash; counters, seq (the last version) and the request ids of live claims
  signal: list; what an idle flusher blocks on (one wake-up, expires)
argv:
  notify_at: int 0..1000000; also wake a flusher when the dirty count reaches this (0: only when the set turns non-empty)
  items: rest; 1..1000 (op, key, value) triples; op is set or del (a del's value is ignored)
returns:
  {version, ...}: the version each record got, in order: the server clock in microseconds, or the
  store's last version + 1 when higher (so versions rise even across a Redis that lost the
  store); writes to a key already dirty coalesce
  A repeat (a client re-sending a call whose reply it lost) stores the same values again under
  newer versions: the last write wins, as if the call ran once, after whatever was written in
  between.
errors:
  BADARG: an argument, a record or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local count = wb_groups(ARGV, items_start, 3, 'items', function(i)
  local op = ARGV[i]
  if op ~= 'set' and op ~= 'del' then
    prl_fail('BADARG', 'op must be one of set|del, got ' .. prl_shown(op))
  end
  wb_key(ARGV[i + 1])
end)
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- read
local keys = {}
for j = 1, count do keys[j] = ARGV[items_start + 3 * j - 2] end
local metas = wb_metas(K, keys)
local known = {}
for j = 1, count do
  if metas[j] then known[#known + 1] = keys[j] end
end
local scores = wb_scores(K.claimed, known)
local claimed = {}
for n, key in ipairs(known) do claimed[key] = scores[n] ~= false end
local c = wb_stats(K, {'seq', 'writes', 'coalesced'})
local last = c.seq
local before = rcall('ZCARD', K.dirty)
wb_check(K, 'versions')  -- values needs no look: the first write below is to it
-- decide: versions continue the sequence, or the clock when it is ahead (a store Redis lost)
local base = math.max(last, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local w = wb_writes()
local state, sets, dels, vers, undead = {}, {}, {}, {}, {}
local versions, coalesced, fresh = {}, 0, 0
for j = 1, count do
  local i = items_start + 3 * (j - 1)
  local key = ARGV[i + 1]
  local version = base + j
  local st = state[key]
  if not st then
    st = {m = metas[j]}
    state[key] = st
  end
  local m = st.m
  if m and claimed[key] then
    -- written during a flush: the claim's ack will see the version moved and keep it dirty
    if not m.p then
      m.p = now
      st.put = true
    end
  elseif m and (m.q == 'd' or m.q == 'r') then
    -- coalesce; a new value waiting out a retry backoff keeps its turn but gets fresh attempts
    coalesced = coalesced + 1
    if m.q == 'r' and m.a ~= 0 then
      m.a = 0
      st.put = true
    end
  else
    if m and m.q == 'x' then undead[#undead + 1] = key end
    -- a new write supersedes a dead-lettered one with fresh attempts; a suspect stays one
    st.m = {s = now, a = 0, z = m and m.z or nil, q = 'd'}
    st.put, st.dirty = true, true
    fresh = fresh + 1
  end
  st.version = ARGV[i] == 'set' and version or -version
  st.value = ARGV[i] == 'set' and ARGV[i + 2] or nil
  versions[j] = version
end
if #undead > 0 then wb_check(K, 'dead') end
local after = before + fresh
local wake = (before == 0 and after > 0) or (notify_at > 0 and before < notify_at and after >= notify_at)
local queued = wake and rcall('LLEN', K.signal) or 1
for key, st in pairs(state) do
  if st.dirty then
    wb_make_dirty(w, key, st.m)
  elseif st.put then
    wb_put(w, key, st.m)
  end
  if st.value then
    sets[#sets + 1] = key
    sets[#sets + 1] = st.value
  else
    dels[#dels + 1] = key
  end
  vers[#vers + 1] = key
  vers[#vers + 1] = st.version
end
-- write
wb_chunked('HSET', K.values, sets)  -- the first write: a values key of another type fails here
wb_chunked('HDEL', K.values, dels)
wb_chunked('HSET', K.versions, vers)
wb_chunked('ZREM', K.dead, undead)
wb_flush_writes(K, w)
wb_stats_write(K, c, {writes = count, coalesced = coalesced}, {'seq', wb_int(base + count)})
if wake then wb_signal(K, queued) end
return versions
