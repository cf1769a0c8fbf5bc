--[[
name: optimistic.set_many
version: 1.0.0
summary: Store several values under one hash tag if every version is still the expected one: all written or none.
flags: none
resend: once
includes: optimistic
keys: variadic
  items: hash; 1..64 distinct versioned values, all under one hash tag
argv:
  ttl_ms: int -1..31536000000; for every key: 0 keeps its TTL (none for a new key), > 0 sets it, -1 removes it
  request_id: str 0..64; unique per call, or empty: recorded with the versions this call makes, so the same call re-sent after a lost reply replies success while they are all still current
  entries: rest; one (expected_version, value) pair per key, in KEYS order: expected_version 0..9007199254740991 (0: the key must not exist), value 0..8388608 bytes
returns:
  {1, {new_version, ...}} when every version matched and all were stored (each new version is
  max(expected + 1, server time in microseconds)); {0, {{version, value, pttl_ms}, ...}} when
  any did not, with every key's current state as optimistic.get replies (nothing changed).
errors:
  BADARG: an argument, a pair or the key count is invalid, or a key appears twice (nothing changed)
  WRONGTYPE: a key holds another Redis type than a hash (nothing changed)
  BADSTATE: a key holds a hash that is not a well-formed versioned value (nothing changed)
]]
local n = #KEYS
if n < 1 or n > 64 then
  prl_fail('BADARG', 'optimistic.set_many takes 1..64 keys, got ' .. n)
end
if #ARGV - entries_start + 1 ~= 2 * n then
  prl_fail('BADARG', 'optimistic.set_many takes one (expected_version, value) pair per key: ' ..
    (2 * n) .. ' arguments after request_id for ' .. n .. ' keys, got ' .. (#ARGV - entries_start + 1))
end
local seen, expected = {}, {}
for i = 1, n do
  if seen[KEYS[i]] then prl_fail('BADARG', prl_shown(KEYS[i]) .. ' appears twice') end
  seen[KEYS[i]] = true
  local at = entries_start + 2 * (i - 1)
  expected[i] = prl_int(ARGV, at, 'expected_version', 0, OPT_MAX_VERSION, nil)
  prl_str(ARGV, at + 1, 'value', 0, 8388608, nil)
end
-- read and check every key before the first write
local versions, values, writers = {}, {}, {}
local all_match, all_ours = true, request_id ~= ''
for i = 1, n do
  versions[i], values[i], writers[i] = opt_read(KEYS[i])
  if versions[i] ~= expected[i] then all_match = false end
  if versions[i] == 0 or writers[i] ~= request_id then all_ours = false end
end
if not all_match then
  if all_ours then return {1, versions} end  -- this very call made every current version
  local states = {}
  for i = 1, n do
    if versions[i] == 0 then
      states[i] = {0, false, -2}
    else
      states[i] = {versions[i], values[i], rcall('PTTL', KEYS[i])}
    end
  end
  return {0, states}
end
local now_us = opt_now_us()
local made = {}
for i = 1, n do made[i] = opt_next(KEYS[i], versions[i], now_us) end
for i = 1, n do
  opt_write(KEYS[i], ARGV[entries_start + 2 * i - 1], made[i], request_id, ttl_ms)
end
return {1, made}
