--[[
name: lock.release
version: 1.1.0
summary: Release a held lock (owner only); if a live waiter is registered, grant the lock to it directly.
flags: allow-oom
resend: once
includes: lock
keys:
  lock: hash; {owner, fence, fttl, grant_until, granted_by, gw, gd}
  fence: string; fencing counter; a grant takes the next fence
  signal: list; what a waiter blocks on (BLPOP); holds at most the one live grant, expiring with the lock
  waiters: zset; waiting tokens scored by the server time their registration ends, and '' scored by minus the shortest lease a waiter asked for
argv:
  token: str 1..256; the owner token: your own, or the grant you popped
  ttl_ms: int 1..1000000000000 = 30000; your lease: what a grant carries when no registered waiter declared one, and the lease of your requeue registration
  handoff_ms: int 1..60000 = 100; how long an unclaimed grant stays reserved for registered waiters
  waiter: str 0..256 = ""; the token to register when requeue_ms > 0 ("" = token; a holder through a grant passes its own waiter token)
  requeue_ms: int 0..86400000 = 0; when the lock is granted to another waiter, register `waiter` for this long (it expects to want the lock again)
returns:
  1 when released and free; 2 when released and granted to a registered waiter; 0 when the token
  does not hold the lock (nothing changed). Running it twice releases once, but the repeat replies
  0: after a lost reply, 0 means released or expired, so the Python client sends it once and
  recovers itself
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the fence counter holds something else than a counter (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local held = rcall('HMGET', lock_key, 'owner', 'fence', 'fttl')
if held[1] ~= token then return 0 end
if rcall('ZCARD', waiters_key) == 0 then
  rcall('DEL', lock_key)
  return 1
end

local now = prl_now_ms()
local gone = rcall('ZRANGEBYSCORE', waiters_key, 0, now, 'LIMIT', 0, 16)
local live = rcall('ZRANGEBYSCORE', waiters_key, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 2)
local next_waiter, next_until
for i = 1, #live, 2 do
  if live[i] ~= token then
    next_waiter, next_until = live[i], live[i + 1]
    break
  end
end
if not next_waiter then
  -- Nobody else waits: free. What is left of the set is over (or the releaser's own), so it goes,
  -- and with it the lease floor of its waiters.
  rcall('DEL', lock_key, waiters_key)
  return 1
end

-- Hand the lock straight to the longest-blocked waiter: BLPOP serves blocked clients first come,
-- first served, the releaser cannot barge back in, and the waiter needs no further round trip.
-- The grant string is the new owner token; it carries its fence and lease. The lease is the
-- shortest any registered waiter asked for, so whoever pops it holds no longer than it asked.
local lease = ttl_ms
local shortest = tonumber(rcall('ZSCORE', waiters_key, '') or '0')
if shortest and shortest <= -1 then lease = math.floor(-shortest) end
local pending = rcall('LLEN', signal_key)
local fence = rcall('INCR', fence_key)
local previous = tonumber(held[2])
if previous and fence <= previous then
  -- an ephemeral counter expired during this hold: fences still go forward
  fence = previous + 1
  rcall('SET', fence_key, fence)
end
local grant = 'grant:' .. fence .. ':' .. lease
local me = waiter ~= '' and waiter or token
local fence_ttl = tonumber(held[3])
if fence_ttl and fence_ttl > 0 then
  rcall('HSET', lock_key, 'owner', grant, 'fence', fence, 'grant_until', now + handoff_ms,
        'granted_by', me, 'gw', next_waiter, 'gd', next_until, 'fttl', fence_ttl)
  rcall('PEXPIRE', fence_key, fence_ttl)
else
  rcall('HSET', lock_key, 'owner', grant, 'fence', fence, 'grant_until', now + handoff_ms,
        'granted_by', me, 'gw', next_waiter, 'gd', next_until)
end
-- The lock and its grant expire at the same instant (one absolute time, not two relative ones
-- that read the clock apart): a grant can never be popped after its lock is gone.
local ends = now + lease
rcall('PEXPIREAT', lock_key, ends)
if pending > 0 then rcall('DEL', signal_key) end
rcall('RPUSH', signal_key, grant)
rcall('PEXPIREAT', signal_key, ends)
-- The grant consumes one registration, the longest-standing one: whoever pops the grant is no
-- longer waiting, whatever token it registered with, so its own release needs no extra argument.
rcall('ZREM', waiters_key, next_waiter, token, unpack(gone))
if requeue_ms > 0 then
  -- The releaser queues up behind the waiters at once, saving its next acquire a round trip.
  lock_register(waiters_key, me, now + requeue_ms, ttl_ms, now)
end
return 2
