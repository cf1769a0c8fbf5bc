--[[
name: lock.release
version: 1.0.0
summary: Release a held lock (owner only); if a live waiter is registered, grant the lock to it directly.
flags: none
keys:
  lock: hash; {owner, fence, wttl, grant_until, granted_by}
  fence: string; fencing counter; a grant takes the next fence
  signal: list; what a waiter blocks on (BLPOP); holds at most the one live grant
  waiters: zset; waiting tokens scored by the server time their wait ends
argv:
  token: str 1..256; the owner token
  ttl_ms: int 1..1000000000000 = 30000; lease of a grant when no waiter declared its own
  handoff_ms: int 1..60000 = 100; how long an unclaimed grant stays reserved for registered waiters
  waiter: str 0..256 = ""; the holder's own waiter token when it holds through a grant ("" = token)
  requeue_ms: int 0..86400000 = 0; when the lock is granted to another waiter, register the holder's waiter token for this long (it expects to want the lock again)
returns:
  1 when released and free; 2 when released and granted to a registered waiter; 0 when the token
  does not hold the lock (nothing changed)
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local held = rcall('HMGET', lock_key, 'owner', 'wttl')
if held[1] ~= token then return 0 end
rcall('DEL', lock_key)

local me = waiter ~= '' and waiter or token
if rcall('EXISTS', waiters_key) == 0 then return 1 end
rcall('ZREM', waiters_key, me)

local now = prl_now_ms()
-- Forget waiters whose wait is over: a few per call keeps the work bounded.
local gone = rcall('ZRANGEBYSCORE', waiters_key, '-inf', now, 'LIMIT', 0, 16)
if #gone > 0 then rcall('ZREM', waiters_key, unpack(gone)) end
if #rcall('ZRANGEBYSCORE', waiters_key, '(' .. now, '+inf', 'LIMIT', 0, 1) == 0 then return 1 end

-- Hand the lock straight to the longest-blocked waiter: BLPOP serves blocked clients first come,
-- first served, the releaser cannot barge back in, and the waiter needs no further round trip.
-- The grant string is the new owner token; it carries its fence and lease.
local fence = rcall('INCR', fence_key)
local lease = tonumber(held[2]) or ttl_ms
local grant = 'grant:' .. fence .. ':' .. lease
rcall('HSET', lock_key, 'owner', grant, 'fence', fence, 'wttl', lease,
      'grant_until', now + handoff_ms, 'granted_by', me)
rcall('PEXPIRE', lock_key, lease)
rcall('DEL', signal_key)
rcall('RPUSH', signal_key, grant)
rcall('PEXPIRE', signal_key, lease)
if requeue_ms > 0 then
  -- The releaser queues up behind the waiters at once, saving its next acquire a round trip.
  rcall('ZADD', waiters_key, now + requeue_ms, me)
  if rcall('PTTL', waiters_key) < requeue_ms then rcall('PEXPIRE', waiters_key, requeue_ms) end
end
return 2
