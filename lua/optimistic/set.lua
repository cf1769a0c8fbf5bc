--[[
name: optimistic.set
version: 1.0.0
summary: Store a value if its version is still the expected one (0: the key must not exist), giving it a new, higher version.
flags: none
resend: once
includes: optimistic
keys:
  item: hash; the versioned value {t = 'prl:optimistic', n = version, v = value, w = writer's request id}
argv:
  expected_version: int 0..9007199254740991; the version the caller read (0: the key must not exist)
  value: str 0..8388608; the new value (at most 8 MiB)
  ttl_ms: int -1..31536000000 = 0; 0 keeps the key's TTL (none for a new key), > 0 sets it, -1 removes it
  request_id: str 0..64 = ""; unique per call (optional): recorded with the version this call makes, so the same call re-sent after a lost reply replies {1, that version} while it is still current, instead of a mismatch
returns:
  {1, new_version} when stored: the new version is max(expected + 1, server time in microseconds);
  {0, version, value, pttl_ms} on a version mismatch, with the current state as optimistic.get
  replies (version 0 when the key does not exist), so the caller can retry without reading
  again (nothing changed). Re-sent after a success without a request id, or after another write,
  it replies a mismatch: the drivers never re-send it; see request_id.
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  WRONGTYPE: the key holds another Redis type than a hash (nothing changed)
  BADSTATE: the key holds a hash that is not a well-formed versioned value (nothing changed)
]]
local version, current, writer = opt_read(item_key)
if version ~= expected_version then
  if version > 0 and request_id ~= '' and writer == request_id then
    return {1, version}  -- this very call made the current version: a re-send
  end
  if version == 0 then return {0, 0, false, -2} end
  return {0, version, current, rcall('PTTL', item_key)}
end
local new_version = opt_next(item_key, version, opt_now_us())
opt_write(item_key, value, new_version, request_id, ttl_ms)
return {1, new_version}
