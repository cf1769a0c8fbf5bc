--[[
name: rwlock.inspect
version: 1.0.0
summary: Report the writer (if any), its lease and fence, how many hold read shares and how many wait.
flags: no-writes
includes: rwlock
keys: keyset rwlock
argv:
returns:
  {writer token or nil, writer pttl (ms, 0 when none), fence (the writer's, else the last issued;
  0 if never), live readers, live waiters}. A waiter granted the lock counts as a holder.
errors:
  BADARG: the key count is invalid
]]
local now = prl_now_ms()
local held = rcall('HMGET', rwlock_key, 'owner', 'fence')
local readers = rcall('ZCOUNT', readers_key, now, '+inf')
local waiting = rcall('ZCOUNT', deadlines_key, '(' .. now, '+inf')
if held[1] then
  return {held[1], math.max(rcall('PTTL', rwlock_key), 0), tonumber(held[2] or '') or 0, readers,
          waiting}
end
return {false, 0, tonumber(rcall('GET', fence_key) or '0') or 0, readers, waiting}
