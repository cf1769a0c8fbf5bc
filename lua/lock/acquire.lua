--[[
name: lock.acquire
version: 1.0.0
summary: Take the lock for an owner token and return a fencing token, or report how long it stays busy.
flags: none
keys:
  lock: hash; {owner, fence, wttl, grant_until, granted_by}; expires with the lease
  fence: string; fencing counter; never expires and never goes backwards
  signal: list; holds the grant a release handed to the longest-blocked waiter (BLPOP)
  waiters: zset; waiting tokens scored by the server time their wait ends
argv:
  token: str 1..256; the owner token (unique per holder)
  ttl_ms: int 1..1000000000000; lease length in milliseconds
  wait_ms: int 0..86400000 = 0; when busy, stay registered as a waiter for this long (0 ends a registration)
returns:
  {1, fence, ttl_ms} when this token holds the lock (a repeat by the holder returns the same fence
  and renews the lease); {0, pttl} when busy, pttl being the milliseconds until the lease ends
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local held = rcall('HMGET', lock_key, 'owner', 'fence', 'grant_until', 'granted_by')
local owner = held[1]

if owner == token then
  -- A retried acquire by the holder (e.g. after a response timeout): same fence, no double count.
  rcall('PEXPIRE', lock_key, ttl_ms)
  return {1, tonumber(held[2]), ttl_ms}
end

if owner then
  local now = prl_now_ms()
  -- A grant still sitting in the signal list was handed to nobody yet (its waiter was between
  -- calls, timed out, or died): a live registered waiter other than the releaser may take it at
  -- once, anyone once the hand-off window is over. The list is then cleared so it can never be
  -- popped afterwards.
  local takeover = false
  if held[3] and rcall('LINDEX', signal_key, 0) == owner then
    if now >= tonumber(held[3]) then
      takeover = true
    elseif token ~= held[4] then
      takeover = tonumber(rcall('ZSCORE', waiters_key, token) or '0') > now
    end
  end
  if not takeover then
    if wait_ms > 0 then
      rcall('ZADD', waiters_key, now + wait_ms, token)
      if rcall('PTTL', waiters_key) < wait_ms then rcall('PEXPIRE', waiters_key, wait_ms) end
      rcall('HSET', lock_key, 'wttl', ttl_ms)
    else
      rcall('ZREM', waiters_key, token)
    end
    return {0, rcall('PTTL', lock_key)}
  end
  rcall('DEL', signal_key, lock_key)
end

local fence = rcall('INCR', fence_key)
rcall('HSET', lock_key, 'owner', token, 'fence', fence)
rcall('PEXPIRE', lock_key, ttl_ms)
rcall('ZREM', waiters_key, token)
return {1, fence, ttl_ms}
