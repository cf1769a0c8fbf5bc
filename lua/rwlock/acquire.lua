--[[
name: rwlock.acquire
version: 1.0.1
summary: Take a read share or the write lock for a token, first come first served, or queue up as a waiter.
flags: none
resend: safe
includes: rwlock
keys: keyset rwlock
argv:
  token: str 1..256; the holder's token (unique per holder)
  mode: enum read|write; a read share (many at once) or the write lock (alone)
  ttl_ms: int 1..1000000000000; lease length in milliseconds
  wait_ms: int -1..86400000 = -1; -1 (or absent): not a waiter: acquired only if nobody waits ahead; > 0: when not acquired, stay registered as a waiter (keeping your place in the queue) until this many ms from now (the registration must outlive your BLPOP on the signal list); 0: a waiter's last try: acquired if granted, else its registration ends
  handoff_ms: int 1..60000 = 30; how long a grant this call makes to a waiter waits for that waiter's claim (made again while it stays registered)
  woken: int 0..1 = 0; 1: the caller popped a wake-up from the signal list since its last call. If it is still waiting and a grant at the head of the queue is unclaimed, the wake-up is pushed back for that grantee (a waiter passes woken=1 only if its previous call did not pass one back)
returns:
  {1, fence, ttl_ms} when this token holds: acquired now, claimed a grant made to it while it
  waited, or a repeat by the holder (lease renewed). fence: a writer's fencing token (the same on
  a repeat); for a reader, the fence of the last writer granted (0 if none).
  {0, pttl, passed} when not acquired: pttl is the milliseconds until a holder's lease (or an
  unclaimed grant) ends by itself (how long a waiter may block on the signal list before it asks
  again); passed is 1 when this call pushed the caller's wake-up back for an unclaimed grant
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the lock hash or the fence counter holds something else than this operation keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local now = prl_now_ms()
local K = {rwlock = rwlock_key, readers = readers_key, fence = fence_key, queue = queue_key,
           deadlines = deadlines_key, signal = signal_key}
local writes = mode == 'write'
local member = (writes and 'w:' or 'r:') .. token
-- Read (and so type-check) every key before the first write.
local owner = rcall('HGET', rwlock_key, 'owner')
local counter = rw_counter(fence_key)
-- (a lease scored `now` still runs this ms: Redis ends a key's PEXPIRE likewise, after its ms)
local share = not writes and tonumber(rcall('ZSCORE', readers_key, token) or '0') >= now
local queued = rcall('ZCARD', queue_key)
local registered = queued > 0 and rcall('ZSCORE', queue_key, member)
rcall('ZSCORE', deadlines_key, member)

-- Holding: its own lease from now, and a registration (a waiter claiming a grant) ends.
local function claim(waiting)
  if waiting then
    rcall('ZREM', queue_key, member)
    rcall('ZREM', deadlines_key, member)
  end
  if writes then
    local fence = tonumber(rcall('HGET', rwlock_key, 'fence') or '')
    rcall('PEXPIRE', rwlock_key, ttl_ms + PRL_LEASE_SLACK_MS)
    return {1, fence, ttl_ms}
  end
  rcall('ZADD', readers_key, 'XX', now + ttl_ms, token)
  rw_keep(readers_key, now + ttl_ms)
  return {1, counter, ttl_ms}
end

-- A repeat by the holder, or a waiter claiming the grant made to it.
if writes and owner == token then
  if not tonumber(rcall('HGET', rwlock_key, 'fence') or '') then
    prl_fail('BADSTATE', 'the rwlock hash holds no valid fence')
  end
  return claim(registered)
end
if share then return claim(registered) end

local live_readers = rcall('ZCOUNT', readers_key, now, '+inf')
rcall('LLEN', signal_key)

if queued == 0 then
  -- Nobody waits (the hot path): compatible means acquired.
  if writes and not owner and live_readers == 0 then
    local fence = rcall('INCR', fence_key)
    if rcall('EXISTS', readers_key) == 1 then rcall('DEL', readers_key) end  -- expired shares
    rcall('HSET', rwlock_key, 'owner', token, 'fence', fence)
    rcall('PEXPIRE', rwlock_key, ttl_ms + PRL_LEASE_SLACK_MS)
    return {1, fence, ttl_ms}
  end
  if not writes and not owner then
    rcall('ZADD', readers_key, now + ttl_ms, token)
    rw_keep(readers_key, now + ttl_ms)
    return {1, counter, ttl_ms}
  end
  if wait_ms > 0 then
    rcall('ZADD', queue_key, 1, member)
    rcall('ZADD', deadlines_key, now + wait_ms, member)
    rw_keep(queue_key, now + wait_ms)
    rw_keep(deadlines_key, now + wait_ms)
  end
  return {0, rw_busy_for(K, now, 1), 0}
end

-- Waiters queue: the caller takes its place (a newcomer at the tail, a waiter keeps its own), the
-- head of the queue is granted what it may hold, and the caller holds if that included it.
if not registered then
  local last = rcall('ZRANGE', queue_key, -1, -1, 'WITHSCORES')
  rcall('ZADD', queue_key, (tonumber(last[2] or '0') or 0) + 1, member)
end
-- not waiting: registered for this call only (granted and claimed here, or removed below)
local until_ms = now + (wait_ms > 0 and wait_ms or 1000)
rcall('ZADD', deadlines_key, until_ms, member)
if rw_promote(K, now, member, handoff_ms) then
  return claim(true)
end
if wait_ms > 0 then
  rw_keep(queue_key, until_ms)
  rw_keep(deadlines_key, until_ms)
  if woken == 1 and rw_unclaimed(K) then
    -- The wake-up this waiter took was meant for a grantee (every registered waiter got one,
    -- but BLPOP serves whoever blocks first): it goes back to the list for the grantee.
    rcall('RPUSH', signal_key, '1')
    rw_keep(signal_key, now + handoff_ms)
    return {0, rw_busy_for(K, now, 1), 1}
  end
else
  -- Not a waiter (or one giving up): its entry goes, and a writer leaving may let readers in.
  rcall('ZREM', queue_key, member)
  rcall('ZREM', deadlines_key, member)
  if writes then rw_promote(K, now, member, handoff_ms) end
end
return {0, rw_busy_for(K, now, 1), 0}
