--[[
name: optimistic.get
version: 1.0.0
summary: Read a versioned value with its version and remaining TTL (what a compare-and-set needs).
flags: no-writes
includes: optimistic
keys:
  item: hash; the versioned value {t = 'prl:optimistic', n = version, v = value, w = writer's request id}
argv:
returns:
  {version, value, pttl_ms}: version 0, value nil and pttl_ms -2 when the key does not exist;
  pttl_ms -1 when the value has no TTL
errors:
  BADARG: the key count is invalid
  WRONGTYPE: the key holds another Redis type than a hash
  BADSTATE: the key holds a hash that is not a well-formed versioned value
]]
local version, value = opt_read(item_key)
if version == 0 then return {0, false, -2} end
return {version, value, rcall('PTTL', item_key)}
