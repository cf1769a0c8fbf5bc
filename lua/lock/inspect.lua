--[[
name: lock.inspect
version: 1.0.1
summary: Report whether the lock is held, by whom, for how long, its fence and how many wait.
flags: no-writes
includes: lock
keys:
  lock: hash; {owner, fence} while held
  fence: string; fencing counter
  waiters: zset; waiting tokens scored by the server time their registration ends (and '' scored below 0: the lease floor)
argv:
returns:
  {held (1|0), owner or nil, pttl (ms, 0 when free), fence (the holder's, else the last issued; 0 if never), live waiters}.
  A lock just granted to a waiter is owned by the grant token ("grant:<fence>:<lease ms>").
errors:
  BADARG: the key count is invalid
]]
local held = rcall('HMGET', lock_key, 'owner', 'fence')
local _, now_arg = lock_now()
local waiting = rcall('ZCOUNT', waiters_key, '(' .. now_arg, '+inf')
if held[1] then
  return {1, held[1], rcall('PTTL', lock_key), tonumber(held[2]), waiting}
end
return {0, false, 0, tonumber(rcall('GET', fence_key) or '0'), waiting}
