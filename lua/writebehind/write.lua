--[[
name: writebehind.write
version: 1.0.0
summary: Store values and deletes (tombstones), bump each key's version and mark the keys dirty, atomically.
flags: none
includes: writebehind
keys:
  values: hash; record key to its current value (absent: deleted)
  versions: hash; record key to the version of its latest write (negative: a delete)
  meta: hash; record key to its msgpack state {s, a, q, p, e, dt} while not clean
  dirty: zset; due dirty keys scored by the time they turned dirty
  retry: zset; keys in retry backoff scored by the time they are due
  claimed: zset; claimed keys scored by claim id (lease deadline ms * 1000 + sequence)
  dead: zset; dead-lettered keys scored by the time they died
  stats: hash; counters (seq is the version sequence)
  signal: list; what an idle flusher blocks on
argv:
  notify_at: int 0..1000000; also wake a flusher when the dirty count reaches this (0: only when the set turns non-empty)
  items: rest; 1..1000 (op, key, value) triples; op is set or del (a del's value is ignored)
returns:
  {version, ...}: the version each record got, in order; writes to a key already dirty coalesce
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
local now = prl_now_ms()
local last = rcall('HINCRBY', K.stats, 'seq', count)
local before = rcall('ZCARD', K.dirty)
local versions, coalesced = {}, 0
for j = 1, count do
  local i = items_start + 3 * (j - 1)
  local key = ARGV[i + 1]
  local version = last - count + j
  if ARGV[i] == 'set' then
    rcall('HSET', K.values, key, ARGV[i + 2])
    rcall('HSET', K.versions, key, version)
  else
    rcall('HDEL', K.values, key)
    rcall('HSET', K.versions, key, -version)
  end
  local m = wb_get(K, key)
  if m and rcall('ZSCORE', K.claimed, key) then
    -- written during a flush: the claim's ack will see the version moved and keep it dirty
    if not m.p then
      m.p = now
      wb_put(K, key, m)
    end
  elseif m and (m.q == 'd' or m.q == 'r') then
    -- coalesce; a new value waiting out a retry backoff keeps its turn but gets fresh attempts
    coalesced = coalesced + 1
    if m.q == 'r' and m.a ~= 0 then
      m.a = 0
      wb_put(K, key, m)
    end
  else
    if m and m.q == 'x' then
      -- a new write supersedes a dead-lettered one and gets a fresh set of attempts
      rcall('ZREM', K.dead, key)
    end
    wb_make_dirty(K, key, {s = now, a = 0})
  end
  versions[j] = version
end
rcall('HINCRBY', K.stats, 'writes', count)
if coalesced > 0 then rcall('HINCRBY', K.stats, 'coalesced', coalesced) end
local after = rcall('ZCARD', K.dirty)
if (before == 0 and after > 0) or (notify_at > 0 and before < notify_at and after >= notify_at) then
  wb_signal(K)
end
return versions
