--[[
name: writebehind.write
version: 1.2.0
summary: Store values and deletes (tombstones), give each a new version and mark the keys dirty, atomically.
flags: none
resend: safe
includes: writebehind, metrics
keys: keyset writebehind + metrics
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
local keys = {}
local count = wb_groups(ARGV, items_start, 3, 'items', function(i)
  local op = ARGV[i]
  if op ~= 'set' and op ~= 'del' then
    prl_fail('BADARG', 'op must be one of set|del, got ' .. prl_shown(op))
  end
  keys[#keys + 1] = wb_key(ARGV[i + 1])
end)
-- This is the hot path of every application write: few calls, few tables (the Lua garbage
-- collector's work is part of every call's cost). One record takes a path without batch tables.
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])

if count == 1 then
  local key, set = keys[1], ARGV[items_start] == 'set'
  -- read
  local raw = rcall('HGET', K.meta, key)
  local m = raw and wb_meta(raw, key) or nil
  local held = m and rcall('ZSCORE', K.claimed, key)
  local sv = wb_write_stats(K)
  local before = rcall('ZCARD', K.dirty)
  rcall('HLEN', K.versions)  -- its type, before the first write (values checks itself: it is first)
  -- decide: versions continue the sequence, or the clock when it is ahead (a store Redis lost)
  local base = math.max(tonumber(sv[1] or '0'), clock)
  local put, dirty, undead, coalesce
  m, put, dirty, undead, coalesce = wb_write_decide(m, held, now)
  if undead then rcall('ZCARD', K.dead) end
  local wake = wb_wakes(before, dirty and 1 or 0, notify_at)
  local queued = wake and rcall('LLEN', K.signal) or 1
  local M = metrics_open(metrics_key, 'writebehind', now)
  -- write
  if set then rcall('HSET', K.values, key, ARGV[items_start + 2]) else rcall('HDEL', K.values, key) end
  rcall('HSET', K.versions, key, set and base + 1 or -(base + 1))
  if undead then rcall('ZREM', K.dead, key) end
  if dirty then rcall('ZADD', K.dirty, wb_score(m), key) end
  if put then rcall('HSET', K.meta, key, cmsgpack.pack(m)) end
  wb_write_count(K, sv, base, count, coalesce and 1 or 0)
  if wake then wb_signal(K, queued) end
  metrics_count(M, 'written', 1)
  metrics_flush(M)
  return {base + 1}
end

-- read
local metas = wb_metas(K, keys)
local known, claimed
for j = 1, count do
  if metas[j] then
    known = known or {}
    known[#known + 1] = keys[j]
  end
end
if known then
  claimed = {}
  for n, score in ipairs(wb_scores(K.claimed, known)) do
    if score then claimed[known[n]] = true end
  end
end
local sv = wb_write_stats(K)
local before = rcall('ZCARD', K.dirty)
rcall('HLEN', K.versions)  -- its type, before the first write (values checks itself: it is first)
-- decide: versions continue the sequence, or the clock when it is ahead (a store Redis lost)
local base = math.max(tonumber(sv[1] or '0'), clock)
local state, versions, undead = {}, {}, nil
local coalesced, fresh = 0, 0
for j = 1, count do
  local key = keys[j]
  local st = state[key]
  if not st then
    st = {m = metas[j]}
    state[key] = st
  end
  local m, put, dirty, dead, coalesce = wb_write_decide(st.m, claimed and claimed[key], now)
  st.m, st.put, st.dirty = m, st.put or put, st.dirty or dirty
  if dead then
    undead = undead or {}
    undead[#undead + 1] = key
  end
  if dirty then fresh = fresh + 1 end
  if coalesce then coalesced = coalesced + 1 end
  versions[j] = base + j
  st.j = j
end
if undead then rcall('ZCARD', K.dead) end  -- its type, before the first write
local wake = wb_wakes(before, fresh, notify_at)
local queued = wake and rcall('LLEN', K.signal) or 1
local M = metrics_open(metrics_key, 'writebehind', now)
local sets, vers, dels, zdirty, hmeta = {}, {}, nil, nil, nil
for key, st in pairs(state) do
  local i = items_start + 3 * (st.j - 1)
  if ARGV[i] == 'set' then
    sets[#sets + 1] = key
    sets[#sets + 1] = ARGV[i + 2]
    vers[#vers + 1] = key
    vers[#vers + 1] = versions[st.j]
  else
    dels = dels or {}
    dels[#dels + 1] = key
    vers[#vers + 1] = key
    vers[#vers + 1] = -versions[st.j]
  end
  if st.put then
    hmeta = hmeta or {}
    hmeta[#hmeta + 1] = key
    hmeta[#hmeta + 1] = cmsgpack.pack(st.m)
  end
  if st.dirty then
    zdirty = zdirty or {}
    zdirty[#zdirty + 1] = wb_score(st.m)
    zdirty[#zdirty + 1] = key
  end
end
-- write
wb_chunked('HSET', K.values, sets)  -- the first write: a values key of another type fails here
if dels then wb_chunked('HDEL', K.values, dels) end
wb_chunked('HSET', K.versions, vers)
if undead then wb_chunked('ZREM', K.dead, undead) end
if zdirty then wb_chunked('ZADD', K.dirty, zdirty) end
if hmeta then wb_chunked('HSET', K.meta, hmeta) end
wb_write_count(K, sv, base, count, coalesced)
if wake then wb_signal(K, queued) end
metrics_count(M, 'written', count)
metrics_flush(M)
return versions
