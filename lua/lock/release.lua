--[[
name: lock.release
version: 1.0.0
summary: Release a held lock (owner only); if a live waiter is blocked, grant the lock to it directly.
flags: none
keys:
  lock: hash {owner, fence, wttl, grant_until}
  fence: fencing counter; a grant takes the next fence
  signal: list a waiter blocks on (BLPOP); holds at most the one live grant
  waiters: sorted set of waiting tokens scored by the server time their wait ends
argv:
  token: str 1..256; the owner token
  ttl_ms: int 1..1000000000000 = 30000; lease of a grant when no waiter declared its own
  handoff_ms: int 1..60000 = 1000; how long an unclaimed grant stays reserved for registered waiters
  waiter: str 0..256 = ""; the holder's own waiter registration to drop (a holder that got the lock by popping a grant)
returns:
  1 when released; 0 when the token does not hold the lock (nothing changed)
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local held = rcall('HMGET', lock_key, 'owner', 'wttl')
if held[1] ~= token then return 0 end
rcall('DEL', lock_key)

if waiter ~= '' then rcall('ZREM', waiters_key, waiter) end
if rcall('EXISTS', waiters_key) == 0 then return 1 end

local now = prl_now_ms()
-- Forget waiters whose wait is over: a few per call keeps the work bounded.
local gone = rcall('ZRANGEBYSCORE', waiters_key, '-inf', now, 'LIMIT', 0, 16)
if #gone > 0 then rcall('ZREM', waiters_key, unpack(gone)) end

if #rcall('ZRANGEBYSCORE', waiters_key, '(' .. now, '+inf', 'LIMIT', 0, 1) > 0 then
  -- Hand the lock straight to the longest-blocked waiter: BLPOP serves blocked clients first
  -- come, first served, the releaser cannot barge back in, and the waiter needs no further
  -- round trip. The grant string is the new owner token; it carries its fence and lease.
  local fence = rcall('INCR', fence_key)
  local lease = tonumber(held[2]) or ttl_ms
  local grant = 'grant:' .. fence .. ':' .. lease
  rcall('HSET', lock_key, 'owner', grant, 'fence', fence, 'wttl', lease,
        'grant_until', now + handoff_ms)
  rcall('PEXPIRE', lock_key, lease)
  rcall('DEL', signal_key)
  rcall('RPUSH', signal_key, grant)
  rcall('PEXPIRE', signal_key, lease)
end
return 1
