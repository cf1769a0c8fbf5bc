-- Counting semaphore state: permits held under leases, and the FIFO queue of waiters.
-- Shared by the semaphore's operations (lua/semaphore/*.lua) and the concurrency limiter's
-- (lua/ratelimit/acquire|release|renew.lua): a concurrency limiter is a semaphore whose leases
-- hold one permit each and where nobody waits.
--
-- permits  zset (the semaphore's base key; a concurrency limiter's one key): one member per held
--          permit, scored by the server ms its lease ends (exclusive: the lease runs while now
--          is below it), set to now + ttl + PRL_LEASE_SLACK_MS (now is a whole ms; the lease
--          outlives ttl from any instant of the call). A lease's first permit is the lease
--          id itself, its i-th (i >= 2) is "<lease>#<i>" (so a semaphore lease id has no '#').
--          The marker member SEM_MARK is scored 0 (longer than any lease id, so never one).
--          Permits in use = the members scored above now (ZCOUNT); ended ones go with one
--          ZREMRANGEBYSCORE: a call never loops over the leases. Expires with the last lease.
-- The semaphore's other keys (lua/keysets/semaphore.keys):
-- leases   hash: lease id -> "<permits>:<fence>" while the lease may be live; an entry of a lease
--          that ended unreleased goes when a later call prunes it (up to SEM_PRUNE_INFO per call,
--          the rest with the hash, which expires with the last lease).
-- fence    string counter (INCR on every acquire and grant); durable: no TTL.
-- signal   list of grants "grant:<fence>:<lease>" pushed to waiters; a waiter BLPOPs it together
--          with its own inbox, signal:<lease>, where semaphore.forward puts its grant when another
--          waiter popped it (that key expires with the grant window).
-- waiters  zset: the FIFO queue, waiter lease id -> its place: the server ms of its first
--          registration, or one more than the last place when that is later (so two waiters
--          queuing in the same ms keep their order).
-- waiting  hash: waiter lease id -> "w:<registration end ms>:<permits>" while queued, then
--          "g:<fence>:<permits>" once granted and until its waiter claims the grant.

-- (a literal: the library's main chunk runs without the string library at FUNCTION LOAD; the
-- same literal as the concurrency limiter's RATELIMIT_SLOTS_MARK, tests check they agree)
local SEM_MARK =
  '~pyredislua:concurrency:~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'

-- Members per ZADD/ZREM (unpack's stack is bounded): a lease of k permits costs ceil(k/1000) calls.
local SEM_CHUNK = 1000
-- How many ended permits a call looks at to drop their leases' entries (one HDEL).
local SEM_PRUNE_INFO = 64
-- How many queued waiters a call looks at from the head of the queue.
local SEM_QUEUE_SCAN = 16
-- A grant stays reserved for its waiter until its registration ends, and at least this long (ms):
-- a waiter blocks only while registered for longer (the Python client: 250 ms), and claims a
-- grant within its registration, popped or not.
local SEM_HANDOFF_MS = 250

local function sem_unit(lease, i)
  if i == 1 then return lease end
  return lease .. '#' .. i
end

-- ZADD (score, member) for the k permits of `lease`; flag 'XX' renews only what exists.
local function sem_put(key, lease, k, score, flag)
  for from = 1, k, SEM_CHUNK do
    local args = {}
    if flag then args[1] = flag end
    for i = from, math.min(k, from + SEM_CHUNK - 1) do
      args[#args + 1] = score
      args[#args + 1] = sem_unit(lease, i)
    end
    redis.call('ZADD', key, unpack(args))
  end
end

-- ZREM the k permits of `lease`.
local function sem_drop(key, lease, k)
  for from = 1, k, SEM_CHUNK do
    local args = {}
    for i = from, math.min(k, from + SEM_CHUNK - 1) do args[#args + 1] = sem_unit(lease, i) end
    redis.call('ZREM', key, unpack(args))
  end
end

-- Permits held by live leases.
local function sem_in_use(key, now)
  return redis.call('ZCOUNT', key, '(' .. now, '+inf')
end

-- Drop the ended permits (the marker, scored 0, stays).
local function sem_prune(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '(0', now)
end

-- ms until `need` permits of `permits` are free by leases ending on their own (in_use held now);
-- -1 when the live leases hold too few for that.
local function sem_free_in(key, now, in_use, permits, need)
  local over = in_use + need - permits
  if over <= 0 then return 0 end
  local nth = redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT',
    over - 1, 1)
  if #nth == 0 then return -1 end  -- not enough live leases: only a change of N frees them
  return tonumber(nth[2]) - now
end

-- ms until the last lease ends (0 when none is live).
local function sem_last_end(key, now)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #newest == 0 then return 0 end
  return math.max(0, tonumber(newest[2]) - now)
end

-- A zset without the marker: absent (false), or not permit state (BADSTATE).
local function sem_absent(key, what)
  if redis.call('EXISTS', key) == 1 then
    prl_fail('BADSTATE', 'key ' .. prl_shown(key) .. ' holds a sorted set without its marker, not ' ..
      what .. ' state (nothing changed)')
  end
  return false
end

-- PEXPIRE so the key lives at least `ttl` ms more (never shortens it).
local function sem_keep(key, ttl)
  ttl = math.max(1, ttl)
  if redis.call('PEXPIRE', key, ttl, 'GT') == 0 and redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, ttl)
  end
end

local function sem_bad(key, what)
  prl_fail('BADSTATE', 'key ' .. prl_shown(key) .. ' holds ' .. what .. ' (nothing changed)')
end

-- "<permits>:<fence>" of a lease, or nil.
local function sem_lease_info(key, stored)
  if not stored then return nil end
  local k, fence = string.match(stored, '^([1-9]%d*):(%d+)$')
  if not k then sem_bad(key, 'a malformed lease entry') end
  return {k = tonumber(k), fence = tonumber(fence)}
end

-- A waiting entry: {queued = true, ends, k} or {queued = false, fence, k}, or nil.
local function sem_wait_info(key, stored)
  if not stored then return nil end
  local kind, a, b = string.match(stored, '^([wg]):(%d+):([1-9]%d*)$')
  if not kind then sem_bad(key, 'a malformed waiter entry') end
  if kind == 'w' then return {queued = true, ends = tonumber(a), k = tonumber(b)} end
  return {queued = false, fence = tonumber(a), k = tonumber(b)}
end

local function sem_grant_string(fence, lease)
  return 'grant:' .. string.format('%d', fence) .. ':' .. lease
end

-- Everything a semaphore call reads, checked (no write): the caller's lease and registration,
-- the permits in use, the head of the queue, the fence counter.
local function sem_load(K, now, lease)
  local s = {K = K, now = now, lease = lease}
  local scores = redis.call('ZMSCORE', K.permits, lease, SEM_MARK)
  s.exists = scores[2] ~= false or sem_absent(K.permits, 'semaphore')
  local mine = tonumber(scores[1] or '0')
  s.in_use = 0
  s.gone = {}
  if s.exists then
    s.in_use = sem_in_use(K.permits, now)
    s.gone = redis.call('ZRANGEBYSCORE', K.permits, '(0', now, 'LIMIT', 0, SEM_PRUNE_INFO)
  end
  s.info = sem_lease_info(K.leases, redis.call('HGET', K.leases, lease))
  s.live = mine > now
  if s.live and not s.info then sem_bad(K.leases, 'no entry for a live lease') end
  local fence = redis.call('GET', K.fence)
  if fence and not string.find(fence, '^%d+$') then sem_bad(K.fence, 'no fence counter') end
  s.fence = tonumber(fence or '0')
  s.wait = sem_wait_info(K.waiting, redis.call('HGET', K.waiting, lease))
  s.queue_len = redis.call('ZCARD', K.waiters)
  s.queued_at, s.queue, s.tail, s.queue_info = false, {}, {}, {}
  if s.queue_len > 0 then  -- nobody queued (the common case): nothing more to read
    s.queued_at = redis.call('ZSCORE', K.waiters, lease)
    s.queue = redis.call('ZRANGE', K.waiters, 0, SEM_QUEUE_SCAN - 1)
    s.tail = redis.call('ZRANGE', K.waiters, -1, -1, 'WITHSCORES')
    local stored = redis.call('HMGET', K.waiting, unpack(s.queue))
    for i = 1, #s.queue do s.queue_info[i] = sem_wait_info(K.waiting, stored[i]) end
  end
  -- the signal list's type, before any write to it (a grant, a claim, a grant put back)
  if s.queue_len > 0 or s.wait then redis.call('LLEN', K.signal) end
  return s
end

-- Decide the grants (no write): from the head of the queue, drop waiters whose registration
-- ended, grant in order while the next one's permits are free, stop at the first that does not
-- fit (strict FIFO: a later request never takes permits an earlier one waits for), noted as
-- s.blocker (and s.blocker_ends, when its registration ends). `skip`: a waiter leaving the queue
-- in this call. Returns grants {lease, k, ends}, drops, how many stay queued, the free permits.
local function sem_plan_grants(s, permits, free, skip)
  local grants, drops, blocked = {}, {}, false
  for i, w in ipairs(s.queue) do
    local info = s.queue_info[i]
    if w == skip then
      -- leaving
    elseif not info or not info.queued or info.ends <= s.now then
      drops[#drops + 1] = w
    elseif info.k <= free and info.k <= permits then
      free = free - info.k
      grants[#grants + 1] = {lease = w, k = info.k,
                             ends = math.max(info.ends, s.now + SEM_HANDOFF_MS)}
    else
      -- the first waiter that does not fit: nobody behind it is served before it is
      blocked = true
      s.blocker, s.blocker_ends = w, info.ends
      break
    end
  end
  local settled = #drops + #grants + ((skip and s.queued_at) and 1 or 0)
  local remaining = s.queue_len - settled
  return grants, drops, remaining, free
end

-- Write the planned grants and drops; `me`: the caller's lease when it is granted itself (no
-- signal for it: the call's reply tells it). Returns the fence of the caller's grant, if any.
local function sem_commit_grants(s, grants, drops, me)
  local K = s.K
  local fence, mine = s.fence, nil
  local longest = 0
  for _, g in ipairs(grants) do
    fence = fence + 1
    redis.call('INCR', K.fence)
    if g.lease == me then
      mine = fence
    else
      sem_put(K.permits, g.lease, g.k, g.ends)
      redis.call('HSET', K.leases, g.lease, g.k .. ':' .. string.format('%d', fence))
      redis.call('HSET', K.waiting, g.lease, 'g:' .. string.format('%d', fence) .. ':' .. g.k)
      redis.call('RPUSH', K.signal, sem_grant_string(fence, g.lease))
      longest = math.max(longest, g.ends - s.now)
    end
    redis.call('ZREM', K.waiters, g.lease)
  end
  if #drops > 0 then
    redis.call('ZREM', K.waiters, unpack(drops))
    redis.call('HDEL', K.waiting, unpack(drops))
  end
  if longest > 0 then
    sem_keep(K.signal, longest)
    sem_keep(K.waiting, longest)
  end
  s.fence = fence
  return mine
end

-- Prune ended permits and the entries of their leases.
local function sem_commit_prune(s)
  if #s.gone > 0 then
    sem_prune(s.K.permits, s.now)
    redis.call('HDEL', s.K.leases, unpack(s.gone))
    redis.call('HDEL', s.K.waiting, unpack(s.gone))
  end
end

-- After a write: the permits zset and the leases hash expire when the last lease ends (PEXPIREAT
-- its score: exact, and the same instant however often it is set); the marker goes in with the
-- first permit.
local function sem_settle(s)
  local K = s.K
  local newest = redis.call('ZRANGE', K.permits, -1, -1, 'WITHSCORES')
  if #newest > 0 and tonumber(newest[2]) > s.now then
    redis.call('PEXPIREAT', K.permits, newest[2])
    if redis.call('EXISTS', K.leases) == 1 then redis.call('PEXPIREAT', K.leases, newest[2]) end
  else
    redis.call('DEL', K.permits, K.leases)
  end
end
