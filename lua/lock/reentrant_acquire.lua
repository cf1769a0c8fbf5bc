--[[
name: lock.reentrant_acquire
version: 1.0.1
summary: Take a reentrant lock for an owner token, or take it again (one hold per request id, counted per owner); or report how long it stays busy.
flags: none
resend: safe
includes: lock
keys: keyset rlock
argv:
  owner: str 1..256; the owner token (unique per owner: a process, a task, a job; not a thread id)
  request: str 1..64; names this hold: unique per acquire. An acquire re-sent with the same request id (after a lost reply) is the same hold, never a second one; the release names it too
  ttl_ms: int 1..1000000000000; lease length in milliseconds; a nested acquire never shortens the lease
  wait_ms: int -1..86400000 = -1; -1 (or absent): not a waiter; > 0: when another owner holds the lock, register as a waiter until this many ms from now (the release that frees the lock then pushes a wake-up to the signal list); 0: end the registration
returns:
  {1, fence, holds} when the owner holds the lock: taken now (a new fence, holds 1), taken again (the same fence, one more hold), or a re-sent acquire of a hold it has (the same fence and count; only the lease renewed);
  {0, pttl} when another owner holds it, pttl being the milliseconds until its lease ends
errors:
  BADARG: an argument or the key count is invalid, or the owner already has 1000 holds (nothing changed)
  BADSTATE: the lock hash or the fence counter holds something else than this operation keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local held = rcall('HMGET', lock_key, 'owner', 'fence')
local waits = wait_ms >= 0
local ttl = ttl_ms + PRL_LEASE_SLACK_MS

if held[1] == owner then
  local fence = tonumber(held[2])
  if not fence then prl_fail('BADSTATE', 'the lock hash holds no valid fence') end
  local registered = waits and rcall('ZSCORE', waiters_key, owner)
  local field = 'r:' .. request
  local holds = rcall('HLEN', lock_key) - 2
  if rcall('HEXISTS', lock_key, field) == 0 then
    if holds >= 1000 then prl_fail('BADARG', 'the owner already has 1000 holds of this lock') end
    rcall('HSET', lock_key, field, 1)
    holds = holds + 1
  end
  rcall('PEXPIRE', lock_key, ttl, 'GT')
  if registered then rcall('ZREM', waiters_key, owner) end
  return {1, fence, holds}
end

if held[1] then
  if wait_ms > 0 then
    local now, now_arg = lock_now()
    local gone = rcall('ZRANGEBYSCORE', waiters_key, 0, now_arg, 'LIMIT', 0, 4)
    if #gone > 0 then rcall('ZREM', waiters_key, unpack(gone)) end
    rcall('ZADD', waiters_key, now + wait_ms, owner)
    local wait = lock_int(ARGV[4], wait_ms)
    if rcall('PEXPIRE', waiters_key, wait, 'GT') == 0 and rcall('PTTL', waiters_key) < 0 then
      rcall('PEXPIRE', waiters_key, wait)
    end
  elseif waits then
    rcall('ZREM', waiters_key, owner)
  end
  return {0, rcall('PTTL', lock_key)}
end

-- Free: a registered waiter's entry is read first (its type checked before any write); the
-- fence counter fails, if it does, at the first write.
local registered = waits and rcall('ZSCORE', waiters_key, owner)
local fence = rcall('INCR', fence_key)
rcall('HSET', lock_key, 'owner', owner, 'fence', fence, 'r:' .. request, 1)
rcall('PEXPIRE', lock_key, ttl)
if registered then rcall('ZREM', waiters_key, owner) end
return {1, fence, 1}
