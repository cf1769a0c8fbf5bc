--[[
name: rwlock.extend
version: 1.0.1
summary: Renew a held read share or write lock to ttl_ms from now; only its holder can, and an expired one stays expired.
flags: allow-oom
resend: safe
includes: rwlock
keys:
  rwlock: hash; {owner, fence}
  readers: zset; reader tokens scored by the server time their lease ends
argv:
  token: str 1..256; the holder's token
  mode: enum read|write; what it holds
  ttl_ms: int 1..1000000000000; new lease length in milliseconds, counted from now
returns:
  1 when renewed; 0 when the token does not hold it (expired, released, or never acquired).
  Runs at maxmemory (allow-oom): a holder must keep its lease
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
if mode == 'write' then
  if rcall('HGET', rwlock_key, 'owner') ~= token then return 0 end
  rcall('PEXPIRE', rwlock_key, ttl_ms + PRL_LEASE_SLACK_MS)
  return 1
end
local now = prl_now_ms()
if tonumber(rcall('ZSCORE', readers_key, token) or '0') < now then return 0 end
rcall('ZADD', readers_key, 'XX', now + ttl_ms, token)
rw_keep(readers_key, now + ttl_ms)
return 1
