--[[
name: writebehind.dead
version: 1.0.1
summary: List dead-lettered records, oldest first, with their last error.
flags: no-writes
includes: writebehind
keys: keyset writebehind
argv:
  offset: int 0..1000000000 = 0; skip this many
  count: int 1..1000 = 100; most records to list
returns:
  {record, ...}: record = {key, version (negative: a delete), attempts, error, died_at}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local keys = rcall('ZRANGE', K.dead, offset, offset + count - 1)
local out = {}
if #keys == 0 then return out end
local metas = wb_metas(K, keys)
local versions = rcall('HMGET', K.versions, unpack(keys))
for j, key in ipairs(keys) do
  local m = metas[j]
  if m then
    out[#out + 1] = {key, tonumber(versions[j] or '0') or 0, m.a or 0, m.e or '', m.dt or 0}
  end
end
return out
