--[[
name: lock.release
version: 1.4.1
summary: Release a held lock (owner only); if a live waiter is registered, grant the lock to it directly.
flags: allow-oom
resend: once
includes: lock, metrics
keys: keyset lock + metrics
argv:
  token: str 1..256; the owner token: your own, or the grant you popped
  ttl_ms: int 1..1000000000000 = 30000; your lease: what a grant carries when no registered waiter declared one, and the lease of your requeue registration
  handoff_ms: int 1..60000 = 100; how long an unclaimed grant stays reserved for registered waiters
  waiter: str 0..256 = ""; a holder through a grant: the token it registered with (optional: keeps the count of waiters exact when BLPOP served it before the waiter whose registration the grant consumed); and the token requeue_ms registers ("" = token)
  requeue_ms: int 0..86400000 = 0; when the lock is granted to another waiter, register `waiter` for this long (it expects to want the lock again)
  turn_ms: int 0..60000 = 0; > 0: the caller means to acquire again at once, and may keep the lock for that while its turn is younger than this many ms: instead of a grant to a waiter, the lock is carried (owner `carry:<waiter or token>`, its lease cut to turn_ms + 250 ms) for the caller's next acquire with the same token, which takes it with the next fence. The turn starts at the first release that carries; a release past it grants as usual. A carrier that does not acquire again within turn_ms passes the lock on: release with token `carry:<token>`
returns:
  1 when released and free; 2 when released and granted to a registered waiter; 3 when carried for
  the caller's next acquire (turn_ms); 0 when the token
  does not hold the lock (nothing changed). Running it twice releases once, but the repeat replies
  0: after a lost reply, 0 means released or expired, so the Python client sends it once and
  recovers itself
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the fence counter holds something else than a counter (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
-- Nobody waiting (the hot path): one field of the lock is all it reads.
if rcall('ZCARD', waiters_key) == 0 then
  if rcall('HGET', lock_key, 'owner') ~= token then
    -- the caller's lease is gone: expired (or expired and another took the lock)
    metrics_once(metrics_key, 'lock', 'expired', 1)
    return 0
  end
  rcall('DEL', lock_key)
  return 1
end
local held = rcall('HMGET', lock_key, 'owner', 'fence', 'fttl', 'gw', 'gd', 'ts')
if held[1] ~= token then
  -- the caller's lease is gone: expired (or expired and another took the lock)
  metrics_once(metrics_key, 'lock', 'expired', 1)
  return 0
end

local now, now_arg = lock_now()
-- A holder through a grant may name the token it registered with (waiter). If its grant consumed
-- another waiter's registration (BLPOP served this one first), this one's still stands, in place
-- of the other's: the other's is put back (unless it registered again), so the count of
-- registered waiters stays exact.
local standing, restore, restore_until = false, nil, nil
if waiter ~= '' and waiter ~= token and held[4] and held[4] ~= waiter then
  standing = rcall('ZSCORE', waiters_key, waiter) ~= false
  local consumed_until = tonumber(held[5] or '')
  if standing and consumed_until and consumed_until > now and
      not rcall('ZSCORE', waiters_key, held[4]) then
    restore, restore_until = held[4], consumed_until
  end
end
local live = rcall('ZRANGEBYSCORE', waiters_key, '(' .. now_arg, '+inf', 'WITHSCORES', 'LIMIT', 0,
                   3)
local next_waiter, next_until, next_until_arg
for i = 1, #live, 2 do
  if live[i] ~= token and not (standing and live[i] == waiter) then
    next_waiter, next_until, next_until_arg = live[i], tonumber(live[i + 1]), live[i + 1]
    break
  end
end
if restore and (not next_waiter or restore_until < next_until or
    (restore_until == next_until and restore < next_waiter)) then
  -- consumed again at once
  next_waiter, next_until, next_until_arg, restore = restore, restore_until, restore_until, nil
end
if not next_waiter then
  -- Nobody else waits: free. What is left of the set is over (or the releaser's own), so it goes,
  -- and with it the lease floor of its waiters (and, recording, the marks of their waits).
  local M = metrics_key and metrics_open(metrics_key, 'lock', now)
  local left = M and rcall('ZRANGE', waiters_key, 0, 63)
  rcall('DEL', lock_key, waiters_key)
  if M then metrics_wait_forget(M, left) end
  return 1
end

local me = waiter ~= '' and waiter or token
local turn_since = tonumber(held[6] or '')
if held[6] and not turn_since then prl_fail('BADSTATE', 'the lock hash holds a malformed turn') end
if turn_ms > 0 and not standing and not restore and (not turn_since or now - turn_since < turn_ms) then
  -- Bounded barging: the releaser keeps the lock for its next acquire while its turn lasts; the
  -- waiters keep their places, and the first release past the turn grants to the longest-blocked.
  if turn_since then
    rcall('HSET', lock_key, 'owner', 'carry:' .. me)
  else
    rcall('HSET', lock_key, 'owner', 'carry:' .. me, 'ts', now_arg)
  end
  -- A carrier that never comes back (it died) holds the waiters up no longer than this.
  rcall('PEXPIRE', lock_key, turn_ms + CARRY_SLACK_MS, 'LT')
  return 3
end

-- Up to 16 expired registrations go with the grant; the same read finds the lease floor ''
-- (scored below every registration: minus the shortest lease a waiter asked for).
local low = rcall('ZRANGEBYSCORE', waiters_key, '-inf', now_arg, 'WITHSCORES', 'LIMIT', 0, 17)
local shortest, gone = 0, {}
for i = 1, #low, 2 do
  if low[i] == '' then
    shortest = tonumber(low[i + 1])
  elseif #gone < 16 then
    gone[#gone + 1] = low[i]
  end
end

-- Hand the lock straight to the longest-blocked waiter: BLPOP serves blocked clients first come,
-- first served, the releaser cannot barge back in, and the waiter needs no further round trip.
-- The grant string is the new owner token; it carries its fence and lease. The lease is the
-- shortest any registered waiter asked for, so whoever pops it holds no longer than it asked.
local lease = ttl_ms
if shortest and shortest <= -1 then lease = math.floor(-shortest) end
local pending = rcall('LLEN', signal_key)
local M = metrics_key and metrics_open(metrics_key, 'lock', now)
local since = metrics_wait_since(M, next_waiter)
local fence = lock_next_fence(fence_key, tonumber(held[2]))
local grant = 'grant:' .. fence .. ':' .. lease
if held[6] then rcall('HDEL', lock_key, 'ts') end  -- the grantee's turn starts afresh
local fence_ttl = tonumber(held[3])
if fence_ttl and fence_ttl > 0 then
  local fttl = lock_stored(held[3], fence_ttl)
  rcall('HSET', lock_key, 'owner', grant, 'fence', fence, 'grant_until', now + handoff_ms,
        'granted_by', me, 'gw', next_waiter, 'gd', next_until_arg, 'fttl', fttl)
  rcall('PEXPIRE', fence_key, fttl)
else
  rcall('HSET', lock_key, 'owner', grant, 'fence', fence, 'grant_until', now + handoff_ms,
        'granted_by', me, 'gw', next_waiter, 'gd', next_until_arg)
end
-- The lock and its grant expire at the same instant (one absolute time, not two relative ones
-- that read the clock apart): a grant can never be popped after its lock is gone.
local ends = string.format('%d', now + lease + PRL_LEASE_SLACK_MS)  -- formatted once for both
rcall('PEXPIREAT', lock_key, ends)
if pending > 0 then rcall('DEL', signal_key) end
rcall('RPUSH', signal_key, grant)
rcall('PEXPIREAT', signal_key, ends)
-- The grant consumes one registration, the longest-standing one: whoever pops the grant is no
-- longer waiting, whatever token it registered with, so its own release needs no extra argument.
rcall('ZREM', waiters_key, next_waiter, token, unpack(gone))
if standing then rcall('ZREM', waiters_key, waiter) end
if restore then
  rcall('ZADD', waiters_key, 'NX', restore_until, restore)
  if rcall('PEXPIRE', waiters_key, restore_until - now, 'GT') == 0 and
      rcall('PTTL', waiters_key) < 0 then
    rcall('PEXPIRE', waiters_key, restore_until - now)
  end
end
if requeue_ms > 0 then
  -- The releaser queues up behind the waiters at once, saving its next acquire a round trip.
  lock_register(waiters_key, me, now + requeue_ms, lock_neg(ARGV[2], ttl_ms),
                lock_int(ARGV[5], requeue_ms))
end
if M then
  -- the grant is a hold that begins: an acquisition by a waiter, whose wait ends (the one whose
  -- registration it consumed: the longest-standing, normally its popper)
  metrics_count(M, 'acquired', 1)
  metrics_count(M, 'contended', 1)
  metrics_count(M, 'handoffs', 1)
  metrics_wait_end(M, next_waiter, since, now)
  metrics_wait_forget(M, gone)
  if standing then metrics_wait_forget(M, {waiter}) end
  if requeue_ms > 0 then metrics_wait_begin(M, me, now) end
  metrics_flush(M)
end
return 2
