--[[
name: cache.invalidate_tag
version: 1.0.0
summary: Invalidate every entry carrying a tag at once (bump its generation), and delete the tagged entries this call declares (bounded).
flags: none
keys: variadic
  generations: hash; tag to generation (KEYS[1])
  tag_set: set; the tag's set of entry key names (KEYS[2])
  entries: hash; 0..1000 entry keys to delete if they still carry the tag at an older generation (KEYS[3..])
argv:
  tag: str 1..256; the tag
  bump: int 0..1; 1 invalidates (the first call); 0 only deletes invalidated entries (later calls)
returns:
  {generation, deleted, left}: the tag's generation now, entries deleted, members left in the tag set
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
if #KEYS < 2 or #KEYS > 1002 then
  prl_fail('BADARG', 'cache.invalidate_tag takes 2..1002 keys, got ' .. #KEYS)
end
local tags, set = KEYS[1], KEYS[2]
local gen
if bump == 1 then
  gen = rcall('HINCRBY', tags, tag, 1)
else
  gen = tonumber(rcall('HGET', tags, tag) or '0')
end
local deleted = 0
for i = 3, #KEYS do
  local entry = KEYS[i]
  if rcall('SISMEMBER', set, entry) == 1 then
    local recorded = rcall('HGET', entry, 't:' .. tag)
    if not recorded or tonumber(recorded) < gen then
      -- set before the bump (or already gone): it is invalid, delete it
      deleted = deleted + rcall('DEL', entry)
      rcall('SREM', set, entry)
    end
  end
end
return {gen, deleted, rcall('SCARD', set)}
