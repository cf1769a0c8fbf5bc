--[[
name: semaphore.inspect
version: 1.0.0
summary: Report how many permits live leases hold, how many waiters are queued and the last fence issued.
flags: no-writes
includes: semaphore
keys:
  semaphore: zset; the permits (the semaphore's base key)
  fence: string; the fencing counter
  waiters: zset; the FIFO queue
argv:
returns:
  {permits in use by live leases, waiters queued (registrations that ended count until a call
  drops them), the last fence issued (0 if never), now_ms}
errors:
  BADARG: the key count is invalid
  BADSTATE: the fence counter holds something else than a counter
  WRONGTYPE: a key holds another Redis type
]]
local now = prl_now_ms()
local in_use = sem_in_use(semaphore_key, now)
local fence = rcall('GET', fence_key)
if fence and not string.find(fence, '^%d+$') then sem_bad(fence_key, 'no fence counter') end
return {in_use, rcall('ZCARD', waiters_key), tonumber(fence or '0'), now}
