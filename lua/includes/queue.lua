-- Helpers of the queue operations (lua/queue/*.lua).
--
-- Every queue operation takes the same ten keys, all under the queue's hash tag:
--   1 ready     sorted set, member = job id, score = priority (lower first)
--   2 delayed   sorted set, member = job id, score = server time (ms) the job becomes ready
--   3 active    sorted set, member = job id, score = lease deadline (ms, server time)
--   4 dead      sorted set, member = job id, score = server time (ms) it was dead-lettered
--   5 jobs      hash, job id -> msgpack map {p priority, a attempts, m max attempts,
--               b backoff base ms, k idempotency key, e enqueued at ms, r last reason, t lease token,
--               x max run time ms (absent: none)}
--   6 payloads  hash, job id -> payload (opaque bytes)
--   7 idem      hash, idempotency key -> job id, while the job is unfinished
--   8 prio      hash, priority -> number of unfinished (ready, delayed, active) jobs
--   9 stats     hash of counters: seq (job ids), tokens (lease tokens), enqueued, acked, retried,
--               dead, requeued, purged, reaped
--  10 marker    list an idle consumer blocks on (BLPOP): each enqueue of a ready job pushes to it
--
-- Ordering: a job id is its enqueue sequence number as 16 zero-padded decimal digits, so the
-- byte order of ids is the enqueue order. The ready score is the bare priority (an integer in
-- -2^31..2^31-1, exact in a double) and Redis orders equal scores by member bytes: ZPOPMIN
-- returns the lowest (priority, enqueue order) at any queue size, and nothing wraps before
-- 10^16 enqueues.

local QUEUE_MAX_BACKOFF_MS = 3600000
local QUEUE_PROMOTE_LIMIT = 1000
local QUEUE_MARKERS = 1000

local function queue_K(keys)
  return {ready = keys[1], delayed = keys[2], active = keys[3], dead = keys[4], jobs = keys[5],
          payloads = keys[6], idem = keys[7], prio = keys[8], stats = keys[9], marker = keys[10]}
end

local function queue_id(seq)
  return string.format('%016.0f', seq)
end

local function queue_decode(raw)
  return cmsgpack.unpack(raw)
end

local function queue_encode(m)
  return cmsgpack.pack(m)
end

-- Run a variadic command over a long list in chunks (unpack has a stack limit).
local function queue_chunked(cmd, key, list, step)
  step = step or 1000
  for i = 1, #list, step do
    redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- The dead jobs a requeue or purge works on: the given ids that are dead (at most 1000, checked
-- before anything is written), or the `limit` oldest dead jobs when none are given.
local function queue_dead_ids(K, argv, first, limit)
  local n = #argv - first + 1
  if n > 1000 then prl_fail('BADARG', 'at most 1000 ids per call, got ' .. n) end
  for i = first, #argv do prl_str(argv, i, 'id', 1, 64, nil) end
  if n == 0 then return redis.call('ZRANGE', K.dead, 0, limit - 1) end
  local ids = {}
  for i = first, #argv do
    if redis.call('ZSCORE', K.dead, argv[i]) then ids[#ids + 1] = argv[i] end
  end
  return ids
end

local function queue_wake(K, n)
  if n <= 0 then return end
  local markers = {}
  for i = 1, math.min(n, 100) do markers[i] = '1' end
  if redis.call('RPUSH', K.marker, unpack(markers)) > QUEUE_MARKERS then
    redis.call('LTRIM', K.marker, -QUEUE_MARKERS, -1)
  end
end

local function queue_prio_add(K, priority, n)
  if redis.call('HINCRBY', K.prio, priority, n) <= 0 then
    redis.call('HDEL', K.prio, priority)
  end
end

-- Validate one job's six enqueue fields at argv[i..i+5] (seven with max_run, at argv[i+6]);
-- returns a table or raises BADARG.
local function queue_check_job(argv, i, label, with_max_run)
  local max_run_ms = 0
  if with_max_run then max_run_ms = prl_int(argv, i + 6, label .. 'max_run_ms', 0, 86400000, nil) end
  return {
    payload = prl_str(argv, i, label .. 'payload', 0, 16777216, nil),
    priority = prl_int(argv, i + 1, label .. 'priority', -2147483648, 2147483647, nil),
    delay_ms = prl_int(argv, i + 2, label .. 'delay_ms', 0, 31536000000, nil),
    max_attempts = prl_int(argv, i + 3, label .. 'max_attempts', 1, 1000000, nil),
    backoff_ms = prl_int(argv, i + 4, label .. 'backoff_ms', 0, 86400000, nil),
    idem_key = prl_str(argv, i + 5, label .. 'idem_key', 0, 512, nil),
    max_run_ms = max_run_ms,
  }
end

-- Add one validated job. Returns id, created (1) or 0 when the idempotency key names a live job.
local function queue_add(K, job, now)
  if job.idem_key ~= '' then
    local existing = redis.call('HGET', K.idem, job.idem_key)
    if existing and redis.call('HEXISTS', K.jobs, existing) == 1 then
      return existing, 0
    end
  end
  local id = queue_id(redis.call('HINCRBY', K.stats, 'seq', 1))
  local m = {p = job.priority, a = 0, m = job.max_attempts, b = job.backoff_ms, e = now}
  if (job.max_run_ms or 0) > 0 then m.x = job.max_run_ms end
  if job.idem_key ~= '' then
    m.k = job.idem_key
    redis.call('HSET', K.idem, job.idem_key, id)
  end
  redis.call('HSET', K.jobs, id, queue_encode(m))
  redis.call('HSET', K.payloads, id, job.payload)
  if job.delay_ms > 0 then
    redis.call('ZADD', K.delayed, now + job.delay_ms, id)
  else
    redis.call('ZADD', K.ready, job.priority, id)
  end
  queue_prio_add(K, job.priority, 1)
  return id, 1
end

-- Exponential backoff with equal jitter: half the step fixed, half random.
local function queue_backoff(m)
  if m.b <= 0 then return 0 end
  local step = math.min(m.b * 2 ^ math.max(m.a - 1, 0), QUEUE_MAX_BACKOFF_MS)
  return math.floor(step / 2 + math.random() * step / 2)
end

local function queue_release_idem(K, id, m)
  if m.k and redis.call('HGET', K.idem, m.k) == id then
    redis.call('HDEL', K.idem, m.k)
  end
end

-- Take an active job off its lease: retry it (with backoff, or delay_ms when >= 0), put it back
-- untouched (how = 'release': the attempt is not counted) or dead-letter it (how = 'dead', or when
-- its attempts are used up). Returns the outcome ('ready'|'delayed'|'dead') and its time.
local function queue_settle(K, id, m, now, reason, how, delay_ms)
  redis.call('ZREM', K.active, id)
  m.t = nil
  m.r = reason
  if how == 'release' then
    m.a = math.max(m.a - 1, 0)
    redis.call('HSET', K.jobs, id, queue_encode(m))
    redis.call('ZADD', K.ready, m.p, id)
    queue_wake(K, 1)
    return 'ready', now
  end
  if how == 'dead' or m.a >= m.m then
    redis.call('HSET', K.jobs, id, queue_encode(m))
    redis.call('ZADD', K.dead, now, id)
    queue_release_idem(K, id, m)
    queue_prio_add(K, m.p, -1)
    redis.call('HINCRBY', K.stats, 'dead', 1)
    return 'dead', now
  end
  redis.call('HSET', K.jobs, id, queue_encode(m))
  redis.call('HINCRBY', K.stats, 'retried', 1)
  local delay = delay_ms
  if delay == nil or delay < 0 then delay = queue_backoff(m) end
  if delay > 0 then
    redis.call('ZADD', K.delayed, now + delay, id)
    return 'delayed', now + delay
  end
  redis.call('ZADD', K.ready, m.p, id)
  queue_wake(K, 1)
  return 'ready', now
end

-- Move delayed jobs whose time has come to ready (at most QUEUE_PROMOTE_LIMIT per call).
local function queue_promote(K, now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, QUEUE_PROMOTE_LIMIT)
  if #due == 0 then return 0 end
  local raws = redis.call('HMGET', K.jobs, unpack(due))
  local pairs_ = {}
  for i, id in ipairs(due) do
    local m = queue_decode(raws[i])
    pairs_[#pairs_ + 1] = m.p
    pairs_[#pairs_ + 1] = id
  end
  queue_chunked('ZREM', K.delayed, due)
  queue_chunked('ZADD', K.ready, pairs_)
  return #due
end

-- The live lease of job `id` for `token`, or a STALE error. Returns the decoded meta.
local function queue_live(K, id, token, now)
  local raw = redis.call('HGET', K.jobs, id)
  if not raw then prl_fail('STALE', 'job ' .. id .. ' does not exist (finished or purged)') end
  local m = queue_decode(raw)
  if m.t ~= token then
    prl_fail('STALE', 'job ' .. id .. ': token ' .. prl_shown(token) .. ' is not its live lease')
  end
  local deadline = tonumber(redis.call('ZSCORE', K.active, id) or '0')
  if deadline <= now then
    prl_fail('STALE', 'job ' .. id .. ': the lease expired ' .. (now - deadline) .. ' ms ago')
  end
  return m
end

-- A job as a reply row: {id, state, score, priority, attempts, max_attempts, reason, payload}
local function queue_row(id, state, score, m, payload)
  return {id, state, tonumber(score), m.p, m.a, m.m, m.r or false, payload or false}
end
