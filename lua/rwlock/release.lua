--[[
name: rwlock.release
version: 1.0.1
summary: Release a read share or the write lock (holder only) and grant the head of the queue what it may now hold.
flags: allow-oom
resend: once
includes: rwlock
keys: keyset rwlock
argv:
  token: str 1..256; the holder's token
  mode: enum read|write; what it holds
  handoff_ms: int 1..60000 = 30; how long a grant this call makes to a waiter waits for that waiter's claim (made again while it stays registered)
returns:
  1 when released (waiters at the head of the queue were granted the lock if they may now hold
  it: one writer, or the readers before the first waiting writer; each claims its grant with its
  next acquire); 0 when the token does not hold
  it in this mode (expired, or never acquired: nothing changed). Running it twice releases once,
  but the repeat replies 0: after a lost reply, 0 means released or expired, so the Python client
  sends it once and recovers itself
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the fence counter holds something else than a counter (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local now = prl_now_ms()
local writes = mode == 'write'
if writes then
  if rcall('HGET', rwlock_key, 'owner') ~= token then return 0 end
elseif tonumber(rcall('ZSCORE', readers_key, token) or '0') < now then
  return 0
end
if rcall('ZCARD', queue_key) == 0 then
  -- Nobody waits (the hot path).
  if writes then rcall('DEL', rwlock_key) else rcall('ZREM', readers_key, token) end
  return 1
end
-- Read (and so type-check) what the promotion writes before the first write.
rw_counter(fence_key)
rcall('HEXISTS', rwlock_key, 'owner')
rcall('ZCARD', readers_key)
rcall('ZCARD', deadlines_key)
rcall('LLEN', signal_key)
if writes then rcall('DEL', rwlock_key) else rcall('ZREM', readers_key, token) end
rw_promote({rwlock = rwlock_key, readers = readers_key, fence = fence_key, queue = queue_key,
            deadlines = deadlines_key, signal = signal_key}, now, '', handoff_ms)
return 1
