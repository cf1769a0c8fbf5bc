--[[
name: lock.release
version: 1.0.0
summary: Release a held lock (owner only) and hand it to the longest-blocked live waiter, if any.
flags: none
keys:
  lock: hash {owner, fence}; replaced by {ticket} while handed off
  signal: list a waiter blocks on (BLPOP); holds at most the one live hand-off ticket
  waiters: sorted set of waiting tokens scored by the server time their wait ends
argv:
  token: str 1..256; the owner token
  handoff_ms: int 1..60000 = 1000; how long the lock stays reserved for the woken waiter
returns:
  1 when released; 0 when the token does not hold the lock (nothing changed)
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local held = rcall('HMGET', lock_key, 'owner', 'fence')
if held[1] ~= token then return 0 end
rcall('DEL', lock_key)

local now = prl_now_ms()
-- Forget waiters whose wait is over: a few per call keeps the work bounded.
local gone = rcall('ZRANGEBYSCORE', waiters_key, '-inf', now, 'LIMIT', 0, 16)
if #gone > 0 then rcall('ZREM', waiters_key, unpack(gone)) end

if #rcall('ZRANGEBYSCORE', waiters_key, '(' .. now, '+inf', 'LIMIT', 0, 1) > 0 then
  -- Reserve the lock for whoever pops the ticket: BLPOP serves the longest-blocked client first,
  -- and the releaser cannot barge back in ahead of it. A ticket nobody redeems lapses after handoff_ms.
  local ticket = 'h' .. held[2]
  rcall('HSET', lock_key, 'ticket', ticket)
  rcall('PEXPIRE', lock_key, handoff_ms)
  rcall('DEL', signal_key)
  rcall('RPUSH', signal_key, ticket)
  rcall('PEXPIRE', signal_key, handoff_ms)
end
return 1
