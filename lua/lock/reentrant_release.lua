--[[
name: lock.reentrant_release
version: 1.0.0
summary: Release one hold of a reentrant lock, named by the request id that took it; the last hold frees the lock and wakes a registered waiter.
flags: allow-oom
resend: once
includes: lock
keys: keyset rlock
argv:
  owner: str 1..256; the owner token
  request: str 1..64; the request id of the acquire whose hold this releases
returns:
  {1, holds} when this hold was released, holds being the owner's holds left (0: the lock is free, and a wake-up was pushed if a waiter is registered);
  {2, holds} when the owner holds the lock but not through this request (released already: a re-sent release changes nothing);
  {0, 0} when the owner does not hold the lock (nothing changed). After a lost reply a re-sent release of the last hold replies 0, so the Python client sends it once and recovers itself
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
if rcall('HGET', lock_key, 'owner') ~= owner then return {0, 0} end
local field = 'r:' .. request
local holds = rcall('HLEN', lock_key) - 2
if rcall('HEXISTS', lock_key, field) == 0 then return {2, holds} end
if holds > 1 then
  rcall('HDEL', lock_key, field)
  return {1, holds - 1}
end
-- The last hold: free the lock, and wake one waiter if any registration is live (the one that
-- ends last keeps the wake-up alive).
local _, now_arg = lock_now()
local latest = rcall('ZRANGE', waiters_key, '+inf', '(' .. now_arg, 'BYSCORE', 'REV', 'LIMIT', 0, 1,
                     'WITHSCORES')
rcall('LLEN', signal_key)  -- its type, before the first write
rcall('DEL', lock_key)
if #latest > 0 then
  rcall('DEL', signal_key)
  rcall('RPUSH', signal_key, 'free')
  rcall('PEXPIREAT', signal_key, latest[2])
end
return {1, 0}
