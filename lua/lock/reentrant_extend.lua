--[[
name: lock.reentrant_extend
version: 1.0.1
summary: Renew a reentrant lock's lease to at least ttl_ms from now (never shortening it: nested holders renew with their own leases); only the owner can, and an expired lock stays expired.
flags: allow-oom
resend: safe
includes: lock
keys:
  lock: hash; {owner, fence, r:<request id> per hold}
argv:
  owner: str 1..256; the owner token
  ttl_ms: int 1..1000000000000; the lease lasts at least this many milliseconds from now
returns:
  1 when the owner holds the lock (its lease now ends no sooner than ttl_ms from now); 0 when it does not (expired or taken by another owner). Runs at maxmemory (allow-oom): it allocates nothing
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
if rcall('HGET', lock_key, 'owner') ~= owner then return 0 end
rcall('PEXPIRE', lock_key, ttl_ms + PRL_LEASE_SLACK_MS, 'GT')
return 1
