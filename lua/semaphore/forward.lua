--[[
name: semaphore.forward
version: 1.0.0
summary: Forward a grant popped by the wrong waiter to its own waiter's inbox list, while the grant is unclaimed.
flags: allow-oom
resend: once
includes: semaphore
keys:
  semaphore: zset; the permits (the semaphore's base key): the grant's lease must still be live
  waiting: hash; the waiters' entries: the grant must still be unclaimed
  inbox: list; the grant's waiter's own list, the signal key plus ':<lease>' (prl:sem:{name}:signal:<lease>), which that waiter BLPOPs with the signal list; expires with the grant window
argv:
  grant: str 1..200; the grant popped from the signal list, 'grant:<fence>:<lease>'
returns:
  1 when forwarded; 0 when not (claimed already, its window ended, or not a grant): a forward
  that is not needed changes nothing
errors:
  BADARG: an argument or the key count is invalid, or inbox is not the grant's waiter's list (nothing changed)
  BADSTATE: the waiting hash holds something else than this operation keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
-- allow-oom: a refused forward would leave a live waiter blocked on a grant it never sees
local fence, lease = string.match(grant, '^grant:(%d+):(.+)$')
if not fence then return 0 end
if #inbox_key <= #lease or string.sub(inbox_key, -#lease - 1) ~= ':' .. lease then
  prl_fail('BADARG', "inbox must be the grant's waiter's list, <signal key>:" .. prl_shown(lease))
end
local now = prl_now_ms()
local ends = rcall('ZSCORE', semaphore_key, lease)
local wait = sem_wait_info(waiting_key, rcall('HGET', waiting_key, lease))
rcall('LLEN', inbox_key)  -- its type, before the write
if not wait or wait.queued or wait.fence ~= tonumber(fence) or not ends or
    tonumber(ends) <= now then
  return 0
end
rcall('RPUSH', inbox_key, grant)
rcall('PEXPIREAT', inbox_key, ends)  -- the grant's window: the end of its unclaimed lease
return 1
