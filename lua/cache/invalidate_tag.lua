--[[
name: cache.invalidate_tag
version: 1.1.0
summary: Invalidate every entry carrying a tag at once (bump its generation), and delete the tagged entries this call declares (bounded).
flags: allow-oom
resend: safe
keys: variadic
  generations: hash; tag to generation (KEYS[1]); kept at least a day after a bump
  tag_set: set; the tag's set of entry key names (KEYS[2])
  entries: hash; 0..1000 entry keys to delete if they still carry the tag at an older generation (KEYS[3..])
argv:
  tag: str 1..256; the tag
  bump: int 0..1; 1 invalidates (the first call); 0 only deletes invalidated entries (later calls)
returns:
  {generation, deleted, left}: the tag's generation now, entries deleted, members left in the tag set
  A repeat bumps the generation once more: one more invalidation, which only costs a recompute.
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
if #KEYS < 2 or #KEYS > 1002 then
  prl_fail('BADARG', 'cache.invalidate_tag takes 2..1002 keys, got ' .. #KEYS)
end
local tags, set = KEYS[1], KEYS[2]
-- read
local stored = rcall('HGET', tags, tag)
local gen = tonumber(stored or '0')
if not gen or gen ~= math.floor(gen) then
  prl_fail('BADSTATE', 'the generation of tag ' .. prl_shown(tag) .. ' is not an integer')
end
if bump == 1 then gen = gen + 1 end
local doomed = {}
for i = 3, #KEYS do
  local entry = KEYS[i]
  if rcall('SISMEMBER', set, entry) == 1 then
    -- set before the bump (or gone, or not ours): invalid, delete it
    local recorded = tonumber(rcall('HGET', entry, 't:' .. tag) or '-1') or -1
    if recorded < gen then doomed[#doomed + 1] = entry end
  end
end
local left = rcall('SCARD', set)
local keep = bump == 1 and rcall('PTTL', tags) or nil
-- write
if bump == 1 then
  rcall('HINCRBY', tags, tag, 1)
  -- entries extend the generations' life to theirs; a bump is kept at least a day, so a
  -- recompute that read the old generation cannot store its value after the bump expired
  if keep < 86400000 then rcall('PEXPIRE', tags, 86400000) end
end
local deleted = 0
if #doomed > 0 then
  deleted = rcall('DEL', unpack(doomed))
  rcall('SREM', set, unpack(doomed))
  left = left - #doomed
end
return {gen, deleted, left}
