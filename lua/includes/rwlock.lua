-- Helpers of the read-write lock operations (lua/rwlock/*.lua).
--
-- A read-write lock keeps six keys under one hash tag (lua/keysets/rwlock.keys):
--   rwlock     hash {owner, fence}: the writer (its token) and its fence; expires with its lease.
--              A waiting writer granted the lock is its owner at once, for the hand-off window:
--              it claims it (sets its own lease, ends its registration) with its next call.
--   readers    zset: reader token -> server ms its lease ends (granted waiting readers likewise;
--              a share scored `now` still runs: it ends after that ms, as PEXPIRE's keys do);
--              expired members are pruned by the next promotion; the key expires no earlier
--              than the last lease it was given.
--   fence      string counter: one fence per writer hold (or grant); never expires.
--   queue      zset: 'r:<token>' / 'w:<token>' -> arrival number (FIFO; restarts when empty);
--              a granted waiter stays in it until it claims its grant.
--   deadlines  zset: the same members -> server ms the registration ends (a waiter renews it on
--              every call while it waits). Both sets expire with their last registration.
--   signal     list: wake-ups; a grant pushes one per registered waiter (capped), every blocked
--              waiter wakes and asks again; expires when the grants it announces do.

local RW_SCAN = 64   -- queue entries one promotion looks at (the run of readers it may grant)
local RW_WAKE = 1000 -- wake-ups one grant pushes at most
local RW_PRUNE = 16  -- lapsed registrations removed per promotion

-- Keep `key` alive through the ms `at` (server ms, in the future; a share scored `at` still runs
-- in it): never shortens its life. The key expires PRL_LEASE_SLACK_MS after `at`: Redis deletes
-- a key at once when its new expiry is not after its clock, and `at` is already that clock
-- in the last ms of the share.
local function rw_keep(key, at)
  at = at + PRL_LEASE_SLACK_MS
  if redis.call('PEXPIREAT', key, at, 'GT') == 0 and redis.call('PTTL', key) < 0 then
    redis.call('PEXPIREAT', key, at)
  end
end

-- The fence counter's value (0 when absent); BADSTATE unless it is a counter this library can
-- keep incrementing. Operations that may grant a writer call it before their first write.
local function rw_counter(fence_key)
  local v = redis.call('GET', fence_key)
  if not v then return 0 end
  if not string.find(v, '^%d+$') or #v > 15 then
    prl_fail('BADSTATE', 'the fence counter holds ' .. prl_shown(v) .. ', not a counter')
  end
  return tonumber(v)
end

-- How long until a holder's lease ends by itself (a crashed holder frees the lock then): what a
-- waiter may block for at most before it asks again. `fallback` when nobody holds.
local function rw_busy_for(K, now, fallback)
  local pttl = redis.call('PTTL', K.rwlock)
  if pttl > 0 then return pttl end
  local first = redis.call('ZRANGEBYSCORE', K.readers, now, '+inf', 'WITHSCORES', 'LIMIT', 0,
                           1)
  if #first > 0 then return tonumber(first[2]) - now + 1 end
  return fallback
end

-- Whether the head of the queue holds a grant it has not claimed yet (a claim ends the
-- registration, so unclaimed grantees are the first entries of the queue).
local function rw_unclaimed(K)
  local head = redis.call('ZRANGE', K.queue, 0, 0)
  if #head == 0 then return false end
  local kind, token = string.sub(head[1], 1, 2), string.sub(head[1], 3)
  if kind == 'w:' then return redis.call('HGET', K.rwlock, 'owner') == token end
  return kind == 'r:' and redis.call('ZSCORE', K.readers, token) ~= false
end

-- Grant the head of the queue what it may hold now: the first live waiting writer when nobody
-- holds, or the run of live waiting readers before the first waiting writer when no writer
-- holds. A grantee stays registered (at the head) until it claims its grant with its next call,
-- which sets its own lease; the grant itself lasts `handoff` ms (less if the registration ends
-- sooner). A grant that lapses unclaimed is made again by the next promotion while its waiter is
-- still registered (a waiter whose wake-up went to another waiter loses nothing), and a waiter
-- that died is passed over when its registration ends. Expired readers and up to RW_PRUNE lapsed
-- registrations go first; dead or malformed entries met at the head are dropped.
-- The caller has read every key (types checked) and the fence counter (rw_counter) before its
-- first write, so nothing here can fail halfway. `me`: the caller's own queue member (it claims
-- in the same call: no wake-up). Returns whether `me` was granted.
local function rw_promote(K, now, me, handoff)
  local rcall = redis.call
  rcall('ZREMRANGEBYSCORE', K.readers, '-inf', '(' .. now)
  local lapsed = rcall('ZRANGEBYSCORE', K.deadlines, '-inf', now, 'LIMIT', 0, RW_PRUNE)
  if #lapsed > 0 then
    rcall('ZREM', K.deadlines, unpack(lapsed))
    rcall('ZREM', K.queue, unpack(lapsed))
  end
  if rcall('HEXISTS', K.rwlock, 'owner') == 1 then return false end  -- a writer holds
  local head = rcall('ZRANGE', K.queue, 0, RW_SCAN - 1)
  if #head == 0 then return false end
  local ends = rcall('ZMSCORE', K.deadlines, unpack(head))
  local sharing = rcall('ZCARD', K.readers) > 0
  local readers, writer, dead = {}, nil, {}
  for i = 1, #head do
    local m = head[i]
    local kind, until_ms = string.sub(m, 1, 2), tonumber(ends[i] or '')
    if not until_ms or until_ms <= now or #m < 3 or (kind ~= 'r:' and kind ~= 'w:') then
      dead[#dead + 1] = m
    else
      -- the grant lasts the hand-off window, and this call out (now is TIME's whole ms: the
      -- clock may be on by 1 ms already)
      until_ms = math.max(math.min(until_ms, now + handoff), now + 2)
      if kind == 'w:' then
        if #readers == 0 and not sharing then writer = {m, until_ms} end
        break
      end
      readers[#readers + 1] = {m, until_ms}
    end
  end
  if #dead > 0 then
    rcall('ZREM', K.queue, unpack(dead))
    rcall('ZREM', K.deadlines, unpack(dead))
  end
  local granted, mine, last = 0, false, 0
  if writer then
    rcall('HSET', K.rwlock, 'owner', string.sub(writer[1], 3), 'fence', rcall('INCR', K.fence))
    rcall('PEXPIREAT', K.rwlock, writer[2] + PRL_LEASE_SLACK_MS)
    granted, mine, last = 1, writer[1] == me, writer[2]
  elseif #readers > 0 then
    local scored = {}
    for i, entry in ipairs(readers) do
      scored[2 * i - 1], scored[2 * i] = entry[2], string.sub(entry[1], 3)
      if entry[1] == me then mine = true end
      if entry[2] > last then last = entry[2] end
    end
    -- readers granted before and not yet claimed keep their share (GT): only new ones count
    granted = rcall('ZADD', K.readers, 'GT', unpack(scored))
    rw_keep(K.readers, last)
  end
  if granted == 0 then return mine end
  -- Wake every registered waiter once (BLPOP serves blocked clients in the order they blocked,
  -- which need not be the queue's): the grantees claim their grant, the others block again.
  local wake = math.min(rcall('ZCARD', K.queue) - (mine and 1 or 0), RW_WAKE)
  if wake > 0 then
    local ones = {}
    for i = 1, wake do ones[i] = '1' end
    rcall('DEL', K.signal)
    rcall('RPUSH', K.signal, unpack(ones))
    rw_keep(K.signal, last)
  end
  return mine
end
