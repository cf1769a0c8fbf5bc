--[[
name: lock.extend_all
version: 1.0.1
summary: Renew the leases of several locks held by one owner token to ttl_ms from now, all or none; an expired lock stays expired.
flags: allow-oom
resend: safe
includes: lock
keys: variadic
  lock: hash; {owner, fence}; the lock hash of each lock (1..64 of them), all under one hash tag
argv:
  token: str 1..256; the owner token
  ttl_ms: int 1..1000000000000; new lease length in milliseconds, counted from now
returns:
  1 when every lock was renewed; 0 when the token does not hold one of them (nothing changed).
  Runs at maxmemory (allow-oom): it allocates nothing
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local n = #KEYS
if n < 1 or n > 64 then prl_fail('BADARG', 'lock.extend_all takes 1..64 keys, got ' .. n) end
for i = 1, n do
  if rcall('HGET', KEYS[i], 'owner') ~= token then return 0 end
end
local ttl = ttl_ms + PRL_LEASE_SLACK_MS
for i = 1, n do rcall('PEXPIRE', KEYS[i], ttl) end
return 1
