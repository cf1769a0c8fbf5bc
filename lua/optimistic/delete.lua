--[[
name: optimistic.delete
version: 1.0.0
summary: Delete a versioned value if its version is still the expected one.
flags: allow-oom
resend: once
includes: optimistic
keys:
  item: hash; the versioned value {t = 'prl:optimistic', n = version, v = value, w = writer's request id}
argv:
  expected_version: int 1..9007199254740991; the version the caller read
returns:
  {1, 0} when deleted; {0, version, value, pttl_ms} on a mismatch, with the current state as
  optimistic.get replies (version 0 when the key does not exist; nothing changed). Re-sent after
  a success it replies {0, 0, nil, -2}: the drivers never re-send it.
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  WRONGTYPE: the key holds another Redis type than a hash (nothing changed)
  BADSTATE: the key holds a hash that is not a well-formed versioned value (nothing changed)
]]
local version, current = opt_read(item_key)
if version == 0 then return {0, 0, false, -2} end
if version ~= expected_version then
  return {0, version, current, rcall('PTTL', item_key)}
end
rcall('DEL', item_key)
return {1, 0}
