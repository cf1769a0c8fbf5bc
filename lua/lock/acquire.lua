--[[
name: lock.acquire
version: 1.0.0
summary: Take the lock for an owner token and return a fencing token, or report how long it stays busy.
flags: none
keys:
  lock: hash {owner, fence} while held, {ticket} while handed off to a woken waiter; expires with the lease
  fence: fencing counter; never expires and never goes backwards
  signal: list holding the hand-off ticket a release pushes for the longest-blocked waiter
  waiters: sorted set of waiting tokens scored by the server time their wait ends
argv:
  token: str 1..256; the owner token (unique per holder)
  ttl_ms: int 1..1000000000000; lease length in milliseconds
  wait_ms: int 0..86400000 = 0; when busy, stay registered as a waiter for this long (0 ends a registration)
  ticket: str 0..64 = ""; the hand-off ticket the caller popped from the signal list, if any
returns:
  {1, fence, ttl_ms} when this token holds the lock (a repeat by the holder returns the same fence
  and renews the lease); {0, pttl} when busy, pttl being the milliseconds until the holder's lease
  or the hand-off reservation ends
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local held = rcall('HMGET', lock_key, 'owner', 'fence', 'ticket')
local owner, ticket_reserved = held[1], held[3]

if owner == token then
  -- A retried acquire by the holder (e.g. after a response timeout): same fence, no double count.
  rcall('PEXPIRE', lock_key, ttl_ms)
  return {1, tonumber(held[2]), ttl_ms}
end

if owner or (ticket_reserved and ticket_reserved ~= ticket) then
  -- A hand-off ticket still sitting in the signal list woke nobody yet: a live registered waiter
  -- may redeem it without popping (it was between calls, or its BLPOP had just timed out).
  local now = prl_now_ms()
  local redeemable = false
  if not owner and rcall('LINDEX', signal_key, 0) == ticket_reserved then
    local until_ms = tonumber(rcall('ZSCORE', waiters_key, token) or '0')
    redeemable = until_ms > now
  end
  if not redeemable then
    if wait_ms > 0 then
      rcall('ZADD', waiters_key, now + wait_ms, token)
      if rcall('PTTL', waiters_key) < wait_ms then rcall('PEXPIRE', waiters_key, wait_ms) end
    else
      rcall('ZREM', waiters_key, token)
    end
    return {0, rcall('PTTL', lock_key)}
  end
end

local fence = rcall('INCR', fence_key)
if ticket_reserved then
  rcall('HDEL', lock_key, 'ticket')
  rcall('DEL', signal_key)
end
rcall('HSET', lock_key, 'owner', token, 'fence', fence)
rcall('PEXPIRE', lock_key, ttl_ms)
rcall('ZREM', waiters_key, token)
return {1, fence, ttl_ms}
