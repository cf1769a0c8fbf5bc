--[[
name: writebehind.requeue
version: 1.0.0
summary: Make dead-lettered records dirty again with fresh attempts: the given keys, or the oldest limit ones.
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
  limit: int 1..1000 = 100; most records to requeue when no keys are given
  items: rest; 0..1000 record keys (none: the oldest dead-lettered)
returns:
  the number of records requeued
errors:
  BADARG: an argument, a key or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local keys = {}
if #ARGV >= items_start then
  wb_groups(ARGV, items_start, 1, 'items', function(i) wb_key(ARGV[i]) end)
  for i = items_start, #ARGV do keys[#keys + 1] = ARGV[i] end
else
  keys = rcall('ZRANGE', K.dead, 0, limit - 1)
end
local n = 0
for _, key in ipairs(keys) do
  local m = wb_get(K, key)
  if m and m.q == 'x' then
    rcall('ZREM', K.dead, key)
    m.a, m.e, m.dt = 0, nil, nil
    wb_make_dirty(K, key, m)
    n = n + 1
  end
end
if n > 0 then
  rcall('HINCRBY', K.stats, 'requeued', n)
  wb_signal(K)
end
return n
