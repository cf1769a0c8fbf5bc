-- Helpers of the lock operations (lua/lock/*.lua).
--
-- A lock keeps four keys under one hash tag:
--   lock     hash: owner (token, or a grant), fence (the holder's), fttl (ms: the fence counter
--            expires, "ephemeral", when set); while owned by a grant also grant_until (server ms:
--            reserved for waiters until then), granted_by (the releaser's waiter token), gw and gd
--            (the registration the grant consumed, and when that registration ends); ts
--            (server ms: the holder's turn began, at its first release that carried the lock,
--            turn_ms). While carried for its releaser's next acquire, owner is `carry:<token>`.
--            Expires with the lease.
--   fence    string counter; never goes backwards while it exists (no TTL unless ephemeral).
--   signal   list holding at most one unpopped grant; expires at the same instant as the lock.
--   waiters  zset: waiter token -> server ms its registration ends; the reserved member ''
--            (tokens are never empty) scored by minus the shortest lease a waiter registered
--            with since the set was created: a grant carries no longer a lease than that.

-- A carried lock's lease outlives the releaser's turn by this much: time for the releaser to come
-- back, or to pass the lock on, before a carrier that died stops holding up the waiters.
local CARRY_SLACK_MS = 250

-- The server time in ms (prl_now_ms), and the same as a string of TIME's own digits, for the calls
-- that take it as an argument (a number would be formatted with snprintf on each).
local function lock_now()
  local t = redis.call('TIME')
  local us = t[2]
  local ms = string.sub('000' .. string.sub(us, 1, -4), -3)  -- whole ms of the micros, 3 digits
  return tonumber(t[1]) * 1000 + math.floor(tonumber(us) / 1000), t[1] .. ms
end

-- Integer arguments for redis.call: Redis formats a Lua number with snprintf on every call and
-- takes a string as it is, so an operation passes its caller's own digits when they are canonical
-- (no leading zero). `arg` is the ARGV string `n` was checked from (n >= 1; nil when defaulted).
local function lock_int(arg, n)
  if arg ~= nil and string.byte(arg) ~= 48 then return arg end
  return n
end

-- The same for an integer the library stored (a hash field), `n` being what it reads as.
local function lock_stored(s, n)
  if string.find(s, '^[1-9]%d*$') then return s end
  return n
end

-- The same for minus `n`.
local function lock_neg(arg, n)
  if arg ~= nil and string.byte(arg) ~= 48 then return '-' .. arg end
  return -n
end

-- Register `member` as a waiter until `deadline` (server ms, `ttl` ms from now) asking for leases
-- of `-floor` ms (the lease floor '' keeps the shortest asked for), and keep the set alive at
-- least that long; `floor` and `ttl` as lock_neg and lock_int make them. The caller has checked
-- the key's type already (an earlier read of it in the same call), so nothing here can fail
-- halfway.
local function lock_register(waiters_key, member, deadline, floor, ttl)
  redis.call('ZADD', waiters_key, deadline, member)
  redis.call('ZADD', waiters_key, 'GT', floor, '')
  if redis.call('PEXPIRE', waiters_key, ttl, 'GT') == 0 and redis.call('PTTL', waiters_key) < 0 then
    redis.call('PEXPIRE', waiters_key, ttl)
  end
end

-- Make `token` the holder, with `fence`, for `ttl` ms (a lease with its slack: ttl_ms +
-- PRL_LEASE_SLACK_MS); an ephemeral fence counter (`fttl` ms as lock_int makes it, or nil:
-- durable) expires that long after.
local function lock_own(lock_key, fence_key, token, fence, ttl, fttl)
  if fttl then
    redis.call('HSET', lock_key, 'owner', token, 'fence', fence, 'fttl', fttl)
    redis.call('PEXPIRE', fence_key, fttl)
  else
    redis.call('HSET', lock_key, 'owner', token, 'fence', fence)
  end
  redis.call('PEXPIRE', lock_key, ttl)
end

-- The next fence after `previous` (the lock's, nil when unknown): an ephemeral counter that
-- expired while the lock was held starts again at 1, and fences must still go forward.
local function lock_next_fence(fence_key, previous)
  local fence = redis.call('INCR', fence_key)
  if previous and fence <= previous then
    fence = previous + 1
    redis.call('SET', fence_key, fence)
  end
  return fence
end
