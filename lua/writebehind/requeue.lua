--[[
name: writebehind.requeue
version: 1.0.1
summary: Make dead-lettered records dirty again with fresh attempts: the given keys, or the oldest limit ones.
flags: allow-oom
resend: once
includes: writebehind
keys: keyset writebehind
argv:
  limit: int 1..1000 = 100; most records to requeue when no keys are given
  items: rest; 0..1000 record keys (none: the oldest dead-lettered)
returns:
  the number of records requeued
  Not safe to re-send (resend: once): without keys, a repeat would requeue the next oldest dead
  letters.
errors:
  BADARG: an argument, a key or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local keys = {}
if #ARGV >= items_start then
  wb_groups(ARGV, items_start, 1, 'items', function(i) wb_key(ARGV[i]) end)
  local seen = {}
  for i = items_start, #ARGV do
    if not seen[ARGV[i]] then
      seen[ARGV[i]] = true
      keys[#keys + 1] = ARGV[i]
    end
  end
else
  keys = rcall('ZRANGE', K.dead, 0, limit - 1)
end
local metas = wb_metas(K, keys)
local c = wb_stats(K, {'requeued'})
wb_check(K, 'dead', 'dirty')
local queued = rcall('LLEN', K.signal)
local w = wb_writes()
local back = {}
for j, key in ipairs(keys) do
  local m = metas[j]
  if m and m.q == 'x' then
    back[#back + 1] = key
    m.a, m.e, m.dt = 0, nil, nil  -- a suspect stays one: it is still flushed alone
    wb_make_dirty(w, key, m)
  end
end
wb_chunked('ZREM', K.dead, back)
wb_flush_writes(K, w)
if #back > 0 then
  wb_stats_write(K, c, {requeued = #back})
  wb_signal(K, queued)
end
return #back
