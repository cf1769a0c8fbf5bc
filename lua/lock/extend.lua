--[[
name: lock.extend
version: 1.2.1
summary: Renew the lease of a held lock to ttl_ms from now; only the owner can, and an expired lock stays expired.
flags: allow-oom
resend: safe
includes: lock, metrics
keys:
  lock: hash; {owner, fence}
  metrics: optional hash; the lock's metrics, prl:lock:{name}:metrics: pass it to record an extend that finds its lease gone (expired)
argv:
  token: str 1..256; the owner token
  ttl_ms: int 1..1000000000000; new lease length in milliseconds, counted from now
returns:
  1 when renewed; 0 when the token does not hold the lock (expired or taken by another owner).
  Runs at maxmemory (allow-oom): it allocates nothing, and a holder must keep its lease
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
if rcall('HGET', lock_key, 'owner') ~= token then
  -- the caller's lease is gone: expired (or expired and another took the lock)
  metrics_once(metrics_key, 'lock', 'expired', 1)
  return 0
end
rcall('PEXPIRE', lock_key, ttl_ms + PRL_LEASE_SLACK_MS)
return 1
