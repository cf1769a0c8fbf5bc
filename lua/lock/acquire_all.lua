--[[
name: lock.acquire_all
version: 1.0.1
summary: Take several locks under one hash tag for one owner token, all or none, each with its own fence; or report the first busy one.
flags: none
resend: safe
includes: lock
keys: keyset lock repeated
argv:
  token: str 1..256; the owner token (unique per holder)
  ttl_ms: int 1..1000000000000; lease length of every lock, in milliseconds
  wait_ms: int -1..86400000 = -1; -1 (or absent): the caller is not a waiter; > 0: when a lock is busy, register as a waiter on the first busy one (in KEYS order) until this many ms from now, and on no other lock of the call; 0: end the caller's registrations on every lock of the call (a waiter giving up)
  fence_ttl_ms: int 0..1000000000000 = 0; 0: durable fence counters; > 0: each counter expires this long after its last acquire (as lock.acquire)
  grant_at: int 0..64 = 0; 0: no grant; i: the caller (a waiter) popped `grant` from the signal list of lock i (1-based, in KEYS order)
  grant: str 0..256 = ""; the grant popped from lock grant_at: if lock grant_at is still owned by it, it counts as the caller's and keeps the grant's fence (grants of different locks can read alike: only lock grant_at's counts)
returns:
  {1, ttl_ms, fence_1, ..., fence_n} when the token holds every lock: each taken now (a new fence), or held already by the token (the same fence, lease renewed), or lock grant_at owned by `grant` (now the token's, with the grant's fence);
  {0, i, pttl} when lock i (1-based, in KEYS order) is busy, pttl being the milliseconds until its lease ends: nothing is taken (a waiter's registration aside)
  KEYS: 1..64 groups of the lock key set (lock, fence, signal, waiters), one group per lock, all under one hash tag, no lock twice
errors:
  BADARG: an argument or the key count is invalid, or a lock is named twice (nothing changed)
  BADSTATE: a lock hash or a fence counter holds something else than the lock keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local nkeys = #KEYS
local n = math.floor(nkeys / 4)
if nkeys % 4 ~= 0 or n < 1 or n > 64 then
  prl_fail('BADARG', 'lock.acquire_all takes 1..64 groups of 4 keys, got ' .. nkeys .. ' keys')
end
local seen = {}
for i = 1, n do
  local k = KEYS[4 * i - 3]
  if seen[k] then prl_fail('BADARG', 'lock.acquire_all names a lock twice: ' .. prl_shown(k)) end
  seen[k] = true
end
local waits = wait_ms >= 0
if grant_at > n then prl_fail('BADARG', 'grant_at must be in 0..' .. n .. ', got ' .. grant_at) end
if grant == '' then grant_at = 0 end

-- Read every lock's owner and fence before anything is written.
local held, busy = {}, nil
for i = 1, n do
  local h = rcall('HMGET', KEYS[4 * i - 3], 'owner', 'fence')
  held[i] = h
  if h[1] and h[1] ~= token and (i ~= grant_at or h[1] ~= grant) then
    busy = busy or i
    if not waits and grant_at == 0 then break end  -- nothing to write: the answer is known
  end
end

-- A waiter's registration on each lock (the key's type is checked here, before any write).
local registered = {}
if waits or grant_at > 0 then
  for i = 1, n do registered[i] = rcall('ZSCORE', KEYS[4 * i], token) end
end

local now, now_arg
-- The grant a waiter popped: read what restoring the registration it consumed needs.
local granted, consumed, consumed_until = nil, nil, 0
if grant_at > 0 and held[grant_at] and held[grant_at][1] == grant then
  granted = grant_at
  local g = rcall('HMGET', KEYS[4 * granted - 3], 'gw', 'gd')
  consumed, consumed_until = g[1], tonumber(g[2] or '0')
  if not consumed_until then prl_fail('BADSTATE', 'the lock hash holds a malformed grant') end
end

-- BLPOP served this caller a grant consumed from another waiter's registration: that waiter
-- keeps its place (whether the caller now keeps the lock or gives the grant back).
local function restore_consumed()
  if granted and consumed and consumed ~= token and consumed_until > now then
    local waiters = KEYS[4 * granted]
    rcall('ZADD', waiters, 'NX', consumed_until, consumed)
    if rcall('PEXPIRE', waiters, consumed_until - now, 'GT') == 0 and
        rcall('PTTL', waiters) < 0 then
      rcall('PEXPIRE', waiters, consumed_until - now)
    end
  end
end

if busy then
  local pttl = rcall('PTTL', KEYS[4 * busy - 3])
  now, now_arg = lock_now()
  restore_consumed()
  if waits then
    for i = 1, n do
      if registered[i] and i ~= busy then rcall('ZREM', KEYS[4 * i], token) end
    end
    local waiters = KEYS[4 * busy]
    if wait_ms > 0 then
      local gone = rcall('ZRANGEBYSCORE', waiters, 0, now_arg, 'LIMIT', 0, 4)
      if #gone > 0 then rcall('ZREM', waiters, unpack(gone)) end
      lock_register(waiters, token, now + wait_ms, lock_neg(ARGV[2], ttl_ms),
                    lock_int(ARGV[3], wait_ms))
    elseif registered[busy] then
      rcall('ZREM', waiters, token)
    end
  end
  return {0, busy, pttl}
end

-- Every lock is free or the caller's: check what taking them reads, then take them all.
local fences, current = {}, {}
for i = 1, n do
  local owner = held[i][1]
  if owner then
    fences[i] = tonumber(held[i][2])
    if not fences[i] then prl_fail('BADSTATE', 'a lock hash holds no valid fence') end
  else
    local c = rcall('GET', KEYS[4 * i - 2])
    if c and not string.find(c, '^%d+$') then
      prl_fail('BADSTATE', 'a fence counter holds something else than a counter')
    end
    current[i] = c
  end
end
now = lock_now()

local ttl = ttl_ms + PRL_LEASE_SLACK_MS
local fttl = fence_ttl_ms > 0 and lock_int(ARGV[4], fence_ttl_ms)
local reply = {1, ttl_ms}
for i = 1, n do
  local lock_i, fence_i = KEYS[4 * i - 3], KEYS[4 * i - 2]
  if not held[i][1] then
    local fence = rcall('INCR', fence_i)
    if fttl then
      rcall('HSET', lock_i, 'owner', token, 'fence', fence, 'fttl', fttl)
      rcall('PEXPIRE', fence_i, fttl)
    else
      rcall('HSET', lock_i, 'owner', token, 'fence', fence)
    end
    fences[i] = fence
  elseif i == granted then
    -- the popped grant becomes the token's hold: same fence, no grant fields
    rcall('HDEL', lock_i, 'grant_until', 'granted_by', 'gw', 'gd')
    rcall('HSET', lock_i, 'owner', token)
  end
  rcall('PEXPIRE', lock_i, ttl)
  if registered[i] then rcall('ZREM', KEYS[4 * i], token) end
  reply[i + 2] = fences[i]
end
restore_consumed()
return reply
