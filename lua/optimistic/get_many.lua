--[[
name: optimistic.get_many
version: 1.0.0
summary: Read several versioned values under one hash tag at one instant (a consistent snapshot of their versions).
flags: no-writes
includes: optimistic
keys: variadic
  items: hash; 1..128 versioned values, all under one hash tag
argv:
returns:
  {{version, value, pttl_ms}, ...} one entry per key in KEYS order, as optimistic.get replies
errors:
  BADARG: no key, or more than 128
  WRONGTYPE: a key holds another Redis type than a hash
  BADSTATE: a key holds a hash that is not a well-formed versioned value
]]
if #KEYS < 1 or #KEYS > 128 then
  prl_fail('BADARG', 'optimistic.get_many takes 1..128 keys, got ' .. #KEYS)
end
local out = {}
for i = 1, #KEYS do
  local version, value = opt_read(KEYS[i])
  if version == 0 then
    out[i] = {0, false, -2}
  else
    out[i] = {version, value, rcall('PTTL', KEYS[i])}
  end
end
return out
