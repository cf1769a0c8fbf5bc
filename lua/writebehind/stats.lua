--[[
name: writebehind.stats
version: 1.0.1
summary: Counts per state, the age of the oldest dirty record and the store's counters.
flags: no-writes
includes: writebehind
keys: keyset writebehind
returns:
  {now, dirty, retry, claimed, dead, oldest_dirty_since (-1: none), {counter, value, ...}}
  (counters: seq, the last version, and the operation counters)
errors:
  BADARG: the key count is invalid
]]
local K = wb_K(KEYS)
local oldest = -1
local first = rcall('ZRANGE', K.dirty, 0, 0, 'WITHSCORES')
if #first > 0 then
  oldest = tonumber(first[2])
  if oldest < 0 then oldest = oldest + WB_SUSPECT end
end
for _, set in ipairs({K.retry, K.claimed}) do
  -- the oldest of the first few in backoff or claimed (bounded look)
  local keys = rcall('ZRANGE', set, 0, 15)
  local metas = wb_metas(K, keys)
  for j = 1, #keys do
    local m = metas[j]
    if m and (oldest < 0 or m.s < oldest) then oldest = m.s end
  end
end
local counters = {}
local all = rcall('HGETALL', K.stats)
for i = 1, #all, 2 do
  -- the request ids of live claims are not counters
  if not string.find(all[i], ':', 1, true) then
    counters[#counters + 1] = all[i]
    counters[#counters + 1] = all[i + 1]
  end
end
return {prl_now_ms(), rcall('ZCARD', K.dirty), rcall('ZCARD', K.retry), rcall('ZCARD', K.claimed),
        rcall('ZCARD', K.dead), oldest, counters}
