-- Helpers of the queue operations (lua/queue/*.lua).
--
-- Every queue operation takes the same ten keys, all under the queue's hash tag:
--   1 ready     sorted set, member = job id, score = priority (lower first)
--   2 delayed   sorted set, member = job id, score = server time (ms) the job becomes ready
--   3 active    sorted set, member = job id, score = lease deadline (ms, server time)
--   4 dead      sorted set, member = job id, score = server time (ms) it was dead-lettered
--   5 jobs      hash, job id -> msgpack map {p priority, a attempts, m max attempts,
--               b backoff base ms, k idempotency key, e enqueued at ms, r last reason,
--               t lease token, d deliveries (the last lease token), x max run time ms (absent: none),
--               c the producer's W3C trace context (absent: none), j 1: the payload is in this hash},
--               and job id .. QUEUE_PAYLOAD -> payload (opaque bytes), beside its record, so one
--               HMGET reads both and one HDEL deletes both
--   6 payloads  hash, job id -> payload, of jobs whose record has no j (enqueued before 1.28);
--               nothing is added to it any more
--   7 idem      hash, idempotency key -> job id, while the job is unfinished
--   8 prio      hash, priority -> number of unfinished (ready, delayed, active) jobs
--   9 stats     hash of counters: seq (job ids; also the number enqueued), acked, retried, dead, requeued,
--               purged, reaped (and tokens: the lease tokens of jobs enqueued before 1.7)
--  10 marker    list an idle consumer blocks on (BLPOP): each enqueue of a ready job pushes to it
--              (at most QUEUE_MARKERS); a dequeue that finds nothing to do deletes it
-- and the operations that would do something twice when re-sent take an optional eleventh:
--  11 request   string, this call's request record (a key chosen by the caller, unique per
--               call, under the same hash tag): a call that changed something stores its reply
--               there for QUEUE_REQUEST_TTL_MS; the same call re-sent (a client retrying after a
--               lost reply) finds it and replies the same, changing nothing.
-- and the operations that record metrics an optional twelfth (the eleventh for reap, which
-- takes no request record: the operations use their metrics_key local):
--  12 metrics   hash, the queue's metrics (lua/includes/metrics.lua)
--
-- Ordering: a job id is its enqueue sequence number as 16 zero-padded decimal digits, so the
-- byte order of ids is the enqueue order. The ready score is the bare priority (an integer in
-- -2^31..2^31-1, exact in a double) and Redis orders equal scores by member bytes: the lowest
-- (priority, enqueue order) comes first at any queue size, and nothing wraps before 10^16
-- enqueues.
--
-- An error reply changes nothing: every operation reads and checks what it will use (key types,
-- job records, counters) first, and writes only then. A key an operation writes without reading
-- it first gets a cheap type check (HLEN, ZCARD, LLEN) unless its write is the first one (a
-- write on a key of the wrong type fails before it changes anything).

local QUEUE_MAX_BACKOFF_MS = 3600000
local QUEUE_PROMOTE_LIMIT = 1000
local QUEUE_PROMOTE_LIMIT_ARG = QUEUE_PROMOTE_LIMIT .. ''  -- formatted once, not per call
local QUEUE_MARKERS = 1000
local QUEUE_REQUEST_TTL_MS = 120000
-- A job's payload field in the jobs hash is its id and this suffix (an id is digits only).
local QUEUE_PAYLOAD = ':p'

-- The keys by name. One table serves every call, each setting all twelve: building a table of
-- twelve fields costs about what a Redis call does, and a call runs alone, to its end (in a
-- Functions library the table outlives the call; in a script it is made once per call anyway).
local QUEUE_KEYS = {}
local function queue_K(keys)
  local K = QUEUE_KEYS
  K.ready, K.delayed, K.active, K.dead, K.jobs, K.payloads = keys[1], keys[2], keys[3], keys[4],
      keys[5], keys[6]
  K.idem, K.prio, K.stats, K.marker, K.request, K.metrics = keys[7], keys[8], keys[9], keys[10],
      keys[11], keys[12]
  return K
end

local function queue_id(seq)
  return string.format('%016.0f', seq)
end

local function queue_num(n)
  return string.format('%.0f', n)
end

local function queue_encode(m)
  return cmsgpack.pack(m)
end

-- A job's record, decoded and checked: BADSTATE when it is missing or not a job record. The
-- numeric fields are checked with one sum inside the protected decode (cheaper than a type()
-- per field); the token and the idempotency key must be strings when present.
local function queue_decode(raw)
  local m = cmsgpack.unpack(raw)
  local _ = m.p + m.a + m.m + m.b + m.e + (m.d or 0) + (m.x or 0) + (m.j or 0)
  return m
end

local function queue_meta(raw, id)
  if not raw then prl_fail('BADSTATE', 'job ' .. prl_shown(id) .. ' is listed but has no record') end
  local ok, m = pcall(queue_decode, raw)
  if not ok or (m.t ~= nil and type(m.t) ~= 'string') or (m.k ~= nil and type(m.k) ~= 'string')
      or (m.c ~= nil and type(m.c) ~= 'string') then
    prl_fail('BADSTATE', 'job ' .. prl_shown(id) .. ': its record is not a queue job record')
  end
  return m
end

-- A stored counter (false/nil: 0), or BADSTATE naming it `what` (.. `which`: the message is
-- only built for the error, as a number turned into a string costs a printf). Only the form
-- Redis writes and HINCRBY accepts passes ('007' and '-0' do not), so a counter checked here
-- never fails a later HINCRBY.
local function queue_count(v, what, which)
  if not v then return 0 end
  if #v > 17 or not (string.find(v, '^%-?[1-9]%d*$') or v == '0') then
    prl_fail('BADSTATE', what .. (which or '') .. ' is not an integer: ' .. prl_shown(v))
  end
  return tonumber(v)
end

-- Run a variadic command over a long list in chunks (unpack has a stack limit).
local function queue_chunked(cmd, key, list, step)
  step = step or 1000
  for i = 1, #list, step do
    redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- Whether id can name a job: a field with the payload suffix is a payload, never a job.
local function queue_is_id(id)
  return not string.find(id, QUEUE_PAYLOAD, 1, true)
end

-- Fill in, from the payloads hash, the payloads of jobs enqueued before 1.28: job i's payload is
-- got[i * step] (false when the jobs hash had none); with step 2 its record is got[i * step - 1],
-- and a job without a record has no payload to look for.
local function queue_old_payloads(K, ids, got, step)
  local old
  for i = 1, #ids do
    if not got[i * step] and (step == 1 or got[i * step - 1]) then
      old = old or {}
      old[#old + 1] = i
    end
  end
  if old then
    local names = {}
    for j, i in ipairs(old) do names[j] = ids[i] end
    local found = redis.call('HMGET', K.payloads, unpack(names))
    for j, i in ipairs(old) do got[i * step] = found[j] end
  end
  return got
end

-- The payloads of jobs ids: one HMGET of their fields in the jobs hash (and one of the payloads
-- hash for jobs enqueued before 1.28). A payload not found is false.
local function queue_payloads(K, ids)
  local fields = {}
  for i, id in ipairs(ids) do fields[i] = id .. QUEUE_PAYLOAD end
  return queue_old_payloads(K, ids, redis.call('HMGET', K.jobs, unpack(fields)), 1)
end

-- The records and payloads of jobs ids, in one HMGET of the jobs hash (and, for jobs enqueued
-- before 1.28, one of the payloads hash): job i's record at [2i - 1], its payload at [2i]. A
-- missing record is false, and so is its payload.
local function queue_read(K, ids)
  local fields = {}
  for i, id in ipairs(ids) do
    fields[2 * i - 1] = id
    fields[2 * i] = id .. QUEUE_PAYLOAD
  end
  return queue_old_payloads(K, ids, redis.call('HMGET', K.jobs, unpack(fields)), 2)
end

-- queue_read of one job: its record and payload (false, false: no such job).
local function queue_read_one(K, id)
  local got = redis.call('HMGET', K.jobs, id, id .. QUEUE_PAYLOAD)
  if got[1] and not got[2] then got[2] = redis.call('HGET', K.payloads, id) end
  return got[1], got[2]
end

-- What deleting finished jobs (ids, their decoded records metas) writes: the jobs hash fields
-- (records and payloads) and the ids of jobs enqueued before 1.28, whose payloads are in the
-- payloads hash; that hash is type-checked here, so call this before the first write.
local function queue_doomed(K, ids, metas)
  local fields, old = {}, {}
  for i, id in ipairs(ids) do
    fields[#fields + 1] = id
    if metas[i].j then fields[#fields + 1] = id .. QUEUE_PAYLOAD else old[#old + 1] = id end
  end
  if #old > 0 then redis.call('HLEN', K.payloads) end
  return fields, old
end

-- Delete what queue_doomed listed.
local function queue_delete(K, fields, old)
  queue_chunked('HDEL', K.jobs, fields)
  if #old > 0 then queue_chunked('HDEL', K.payloads, old) end
end

-- Lease job record m (in place) at the server time `stamp` ('.' .. ms): one more attempt and
-- delivery, and the delivery's token. A lease token is its job's delivery count and the server
-- time of the lease: job ids and delivery counts start again after Redis lost its data (a restart
-- without persistence), and a worker still holding a lease from before must not settle the new
-- job that got its id. base: the old shared token counter, for a record from before 1.7 (no d).
local function queue_lease(m, base, stamp)
  m.a = m.a + 1
  m.d = (m.d or base) + 1
  m.t = queue_num(m.d) .. stamp
end

-- One leased job as queue.dequeue replies it.
local function queue_leased(id, m, deadline, payload)
  return {id, m.t, deadline, m.a, m.m, m.p, payload, m.e, m.x or 0, m.c or ''}
end

-- The reply a re-sent call gave on its first run, from its request record (nil: a first run).
local function queue_recorded(K, op)
  if not K.request then return nil end
  local raw = redis.call('GET', K.request)
  if not raw then return nil end
  local ok, v = pcall(cmsgpack.unpack, raw)
  if not ok or type(v) ~= 'table' or v.o ~= op or v.r == nil then
    prl_fail('BADSTATE', 'the request record ' .. prl_shown(K.request) .. ' is not one of ' .. op)
  end
  return v.r
end

-- The server time (ms) a lease token says its lease began ('<deliveries>.<ms>'; nil for a
-- token from before 1.20, or none): what the run-time histogram measures from.
local function queue_leased_at(token)
  return token and tonumber(string.match(token, '%.(%d+)$'))
end

-- Store a call's reply (or what rebuilds it) as its request record, after its writes.
local function queue_record(K, op, reply)
  if K.request then
    redis.call('SET', K.request, cmsgpack.pack({o = op, r = reply}), 'PX', QUEUE_REQUEST_TTL_MS)
  end
end

-- The counts of the given priorities (a table priority -> true), read and checked.
local function queue_prio_read(K, wanted)
  local list = {}
  for p in pairs(wanted) do list[#list + 1] = p end
  local counts = {}
  if #list == 0 then return counts end
  local raw = redis.call('HMGET', K.prio, unpack(list))
  for i, p in ipairs(list) do counts[p] = queue_count(raw[i], 'the count of priority ', p) end
  return counts
end

-- Write the counts back: changes is priority -> delta; counts what queue_prio_read read.
local function queue_prio_write(K, counts, changes)
  local set, del = {}, {}
  for p, delta in pairs(changes) do
    if delta ~= 0 then
      local n = counts[p] + delta
      if n > 0 then
        set[#set + 1] = p
        set[#set + 1] = n
      else
        del[#del + 1] = p
      end
    end
  end
  if #set > 0 then redis.call('HSET', K.prio, unpack(set)) end
  if #del > 0 then redis.call('HDEL', K.prio, unpack(del)) end
end

-- Push up to n wake-ups for idle consumers, never beyond QUEUE_MARKERS (llen: the marker's
-- length, read before the first write).
local function queue_wake(K, n, llen)
  n = math.min(n, 100, QUEUE_MARKERS - llen)
  if n <= 0 then return end
  local markers = {}
  for i = 1, n do markers[i] = '1' end
  redis.call('RPUSH', K.marker, unpack(markers))
end

-- Validate one job's six enqueue fields at argv[i..i+5] (seven with max_run, at argv[i+6];
-- eight with the trace context too, at argv[i+7]); returns a table or raises BADARG.
local function queue_check_job(argv, i, label, width)
  local max_run_ms, trace_context = 0, ''
  if width >= 7 then max_run_ms = prl_int(argv, i + 6, label .. 'max_run_ms', 0, 86400000, nil) end
  if width >= 8 then trace_context = prl_str(argv, i + 7, label .. 'trace_context', 0, 1024, nil) end
  return {
    payload = prl_str(argv, i, label .. 'payload', 0, 16777216, nil),
    priority = prl_int(argv, i + 1, label .. 'priority', -2147483648, 2147483647, nil),
    delay_ms = prl_int(argv, i + 2, label .. 'delay_ms', 0, 31536000000, nil),
    max_attempts = prl_int(argv, i + 3, label .. 'max_attempts', 1, 1000000, nil),
    backoff_ms = prl_int(argv, i + 4, label .. 'backoff_ms', 0, 86400000, nil),
    idem_key = prl_str(argv, i + 5, label .. 'idem_key', 0, 512, nil),
    max_run_ms = max_run_ms,
    trace_context = trace_context,
  }
end

-- Add validated jobs: reads and checks everything first, then writes. Returns the flat reply
-- {id1, created1, ...} and the number of jobs created (0: nothing was written). A job whose
-- idempotency key names an unfinished job (or a job earlier in the same call) is not added:
-- its entry is that job's id with created 0.
local function queue_add(K, jobs, now)
  -- read: the jobs holding the idempotency keys
  local names, seen = {}, {}
  for _, job in ipairs(jobs) do
    if job.idem_key ~= '' and not seen[job.idem_key] then
      seen[job.idem_key] = true
      names[#names + 1] = job.idem_key
    end
  end
  local holders, jobs_checked = {}, false
  if #names > 0 then
    local ids = redis.call('HMGET', K.idem, unpack(names))
    local found, owners = {}, {}
    for i = 1, #names do
      if ids[i] then
        found[#found + 1] = ids[i]
        owners[#owners + 1] = names[i]
      end
    end
    if #found > 0 then
      local exist = redis.call('HMGET', K.jobs, unpack(found))
      jobs_checked = true
      for i, raw in ipairs(exist) do
        if raw then holders[owners[i]] = found[i] end
      end
    end
  end
  -- decide
  local out, new, wanted = {}, {}, {}
  local ready, delayed, keyed = 0, 0, false
  for _, job in ipairs(jobs) do
    local existing = job.idem_key ~= '' and holders[job.idem_key]
    if existing then
      out[#out + 1] = existing
      out[#out + 1] = 0
    else
      new[#new + 1] = job
      wanted[job.priority] = true
      if job.delay_ms > 0 then delayed = delayed + 1 else ready = ready + 1 end
      if job.idem_key ~= '' then
        keyed = true
        holders[job.idem_key] = #new  -- a later job with this key gets this one's id
      end
      out[#out + 1] = #new  -- replaced by the id below
      out[#out + 1] = 1
    end
  end
  if #new == 0 then return out, 0 end
  -- read and check what the writes touch (stats: its first write fails on a bad sequence)
  local counts = queue_prio_read(K, wanted)
  if not jobs_checked then redis.call('HLEN', K.jobs) end
  if ready > 0 then redis.call('ZCARD', K.ready) end
  if delayed > 0 then redis.call('ZCARD', K.delayed) end
  local llen = ready > 0 and redis.call('LLEN', K.marker) or 0
  -- write: the sequence first
  local seq = redis.call('HINCRBY', K.stats, 'seq', #new) - #new
  local records, to_ready, to_delayed, idem, changes = {}, {}, {}, {}, {}
  local ids = {}
  for n, job in ipairs(new) do
    local id = queue_id(seq + n)
    ids[n] = id
    local m = {p = job.priority, a = 0, m = job.max_attempts, b = job.backoff_ms, e = now, j = 1}
    if job.max_run_ms > 0 then m.x = job.max_run_ms end
    if job.trace_context ~= '' then m.c = job.trace_context end
    if job.idem_key ~= '' then
      m.k = job.idem_key
      if holders[job.idem_key] == n then
        idem[#idem + 1] = job.idem_key
        idem[#idem + 1] = id
      end
    end
    records[#records + 1] = id
    records[#records + 1] = queue_encode(m)
    records[#records + 1] = id .. QUEUE_PAYLOAD
    records[#records + 1] = job.payload
    if job.delay_ms > 0 then
      to_delayed[#to_delayed + 1] = now + job.delay_ms
      to_delayed[#to_delayed + 1] = id
    else
      to_ready[#to_ready + 1] = job.priority
      to_ready[#to_ready + 1] = id
    end
    changes[job.priority] = (changes[job.priority] or 0) + 1
  end
  for i = 1, #out, 2 do
    if type(out[i]) == 'number' then out[i] = ids[out[i]] end
  end
  if keyed and #idem > 0 then queue_chunked('HSET', K.idem, idem) end
  queue_chunked('HSET', K.jobs, records)
  if #to_ready > 0 then queue_chunked('ZADD', K.ready, to_ready) end
  if #to_delayed > 0 then queue_chunked('ZADD', K.delayed, to_delayed) end
  queue_prio_write(K, counts, changes)
  queue_wake(K, ready, llen)
  return out, #new
end

-- Exponential backoff with equal jitter: half the step fixed, half random.
local function queue_backoff(m)
  if m.b <= 0 then return 0 end
  local step = math.min(m.b * 2 ^ math.max(m.a - 1, 0), QUEUE_MAX_BACKOFF_MS)
  return math.floor(step / 2 + math.random() * step / 2)
end

-- The live leases of jobs ids[i] for tokens[i], else a STALE error. Returns the decoded records.
local function queue_live(K, ids, tokens, now)
  for _, id in ipairs(ids) do
    if not queue_is_id(id) then prl_fail('STALE', 'job ' .. id .. ' does not exist (not a job id)') end
  end
  local raws = redis.call('HMGET', K.jobs, unpack(ids))
  local deadlines = redis.call('ZMSCORE', K.active, unpack(ids))
  local metas = {}
  for i, id in ipairs(ids) do
    if not raws[i] then prl_fail('STALE', 'job ' .. id .. ' does not exist (finished or purged)') end
    local m = queue_meta(raws[i], id)
    if m.t ~= tokens[i] then
      prl_fail('STALE', 'job ' .. id .. ': token ' .. prl_shown(tokens[i]) .. ' is not its live lease')
    end
    local deadline = tonumber(deadlines[i] or '0')
    if deadline <= now then
      prl_fail('STALE', 'job ' .. id .. ': the lease expired ' .. (now - deadline) .. ' ms ago')
    end
    metas[i] = m
  end
  return metas
end

-- The live lease of job `id` for `token` (one job), else a STALE error. Returns its record.
local function queue_live_one(K, id, token, now)
  if not queue_is_id(id) then prl_fail('STALE', 'job ' .. id .. ' does not exist (not a job id)') end
  local raw = redis.call('HGET', K.jobs, id)
  if not raw then prl_fail('STALE', 'job ' .. id .. ' does not exist (finished or purged)') end
  local m = queue_meta(raw, id)
  if m.t ~= token then
    prl_fail('STALE', 'job ' .. id .. ': token ' .. prl_shown(token) .. ' is not its live lease')
  end
  local deadline = tonumber(redis.call('ZSCORE', K.active, id) or '0')
  if deadline <= now then
    prl_fail('STALE', 'job ' .. id .. ': the lease expired ' .. (now - deadline) .. ' ms ago')
  end
  return m
end

-- queue_settle for one job (nack): the same decisions, reads and writes without the tables.
local function queue_settle_one(K, id, m, now, reason, how, delay_ms)
  m.t = nil
  m.r = reason
  if how == 'release' then
    m.a = math.max(m.a - 1, 0)
  elseif how == 'dead' or m.a >= m.m then
    -- read and check, then write: the counter first
    local free = m.k and redis.call('HGET', K.idem, m.k) == id
    local count = queue_count(redis.call('HGET', K.prio, m.p), 'the count of priority ', m.p)
    redis.call('ZCARD', K.dead)
    redis.call('HINCRBY', K.stats, 'dead', 1)
    redis.call('ZREM', K.active, id)
    redis.call('HSET', K.jobs, id, queue_encode(m))
    redis.call('ZADD', K.dead, now, id)
    if free then redis.call('HDEL', K.idem, m.k) end
    if count > 1 then redis.call('HSET', K.prio, m.p, count - 1) else redis.call('HDEL', K.prio, m.p) end
    return 'dead', now
  else
    local delay = delay_ms
    if delay == nil or delay < 0 then delay = queue_backoff(m) end
    if delay > 0 then
      redis.call('ZCARD', K.delayed)
      redis.call('HINCRBY', K.stats, 'retried', 1)
      redis.call('ZREM', K.active, id)
      redis.call('HSET', K.jobs, id, queue_encode(m))
      redis.call('ZADD', K.delayed, now + delay, id)
      return 'delayed', now + delay
    end
    redis.call('ZCARD', K.ready)
    local llen = redis.call('LLEN', K.marker)
    redis.call('HINCRBY', K.stats, 'retried', 1)
    redis.call('ZREM', K.active, id)
    redis.call('HSET', K.jobs, id, queue_encode(m))
    redis.call('ZADD', K.ready, m.p, id)
    queue_wake(K, 1, llen)
    return 'ready', now
  end
  -- release: back to ready at once
  redis.call('ZCARD', K.ready)
  local llen = redis.call('LLEN', K.marker)
  redis.call('ZREM', K.active, id)
  redis.call('HSET', K.jobs, id, queue_encode(m))
  redis.call('ZADD', K.ready, m.p, id)
  queue_wake(K, 1, llen)
  return 'ready', now
end

-- Take active jobs off their leases: retry each (with backoff, or delay_ms when >= 0), put it
-- back untouched (how = 'release': the attempt is not counted) or dead-letter it (how = 'dead',
-- or when its attempts are used up). Reads and checks what it writes first. counters: extra
-- stats counters to add (name -> n). Returns per job {outcome ('ready'|'delayed'|'dead'), at}.
local function queue_settle(K, ids, metas, now, reason, how, delay_ms, counters)
  -- decide
  local results, to = {}, {ready = {}, delayed = {}, dead = {}}
  local wanted, changes, keyed = {}, {}, {}
  counters = counters or {}
  for i, id in ipairs(ids) do
    local m = metas[i]
    m.t = nil
    m.r = reason
    local outcome, at = 'ready', now
    if how == 'release' then
      m.a = math.max(m.a - 1, 0)
      to.ready[#to.ready + 1] = m.p
      to.ready[#to.ready + 1] = id
    elseif how == 'dead' or m.a >= m.m then
      outcome = 'dead'
      to.dead[#to.dead + 1] = now
      to.dead[#to.dead + 1] = id
      wanted[m.p] = true
      changes[m.p] = (changes[m.p] or 0) - 1
      if m.k then keyed[#keyed + 1] = i end
      counters.dead = (counters.dead or 0) + 1
    else
      counters.retried = (counters.retried or 0) + 1
      local delay = delay_ms
      if delay == nil or delay < 0 then delay = queue_backoff(m) end
      if delay > 0 then
        outcome, at = 'delayed', now + delay
        to.delayed[#to.delayed + 1] = at
        to.delayed[#to.delayed + 1] = id
      else
        to.ready[#to.ready + 1] = m.p
        to.ready[#to.ready + 1] = id
      end
    end
    results[i] = {outcome, at}
  end
  -- read and check what the writes touch (active and jobs were read by the caller)
  local free_keys = {}
  if #keyed > 0 then
    local names = {}
    for j, i in ipairs(keyed) do names[j] = metas[i].k end
    local holders = redis.call('HMGET', K.idem, unpack(names))
    for j, i in ipairs(keyed) do
      if holders[j] == ids[i] then free_keys[#free_keys + 1] = names[j] end
    end
  end
  local counts = queue_prio_read(K, wanted)
  local names = {}
  for name in pairs(counters) do names[#names + 1] = name end
  table.sort(names)
  local values = {}
  if #names > 1 then
    local sv = redis.call('HMGET', K.stats, unpack(names))
    for j, name in ipairs(names) do
      values[#values + 1] = name
      values[#values + 1] = queue_num(queue_count(sv[j], 'the ' .. name .. ' count') + counters[name])
    end
  end
  local llen = 0
  if #to.ready > 0 then
    redis.call('ZCARD', K.ready)
    llen = redis.call('LLEN', K.marker)
  end
  if #to.delayed > 0 then redis.call('ZCARD', K.delayed) end
  if #to.dead > 0 then redis.call('ZCARD', K.dead) end
  -- write: a single counter is the first write (it fails on a bad counter before anything)
  if #names == 1 then
    redis.call('HINCRBY', K.stats, names[1], counters[names[1]])
  elseif #names > 1 then
    redis.call('HSET', K.stats, unpack(values))
  end
  local records = {}
  for i, id in ipairs(ids) do
    records[#records + 1] = id
    records[#records + 1] = queue_encode(metas[i])
  end
  queue_chunked('ZREM', K.active, ids)
  queue_chunked('HSET', K.jobs, records)
  for _, state in ipairs({'ready', 'delayed', 'dead'}) do
    if #to[state] > 0 then queue_chunked('ZADD', K[state], to[state]) end
  end
  if #free_keys > 0 then queue_chunked('HDEL', K.idem, free_keys) end
  queue_prio_write(K, counts, changes)
  queue_wake(K, #to.ready / 2, llen)
  return results
end

-- A job as a reply row: {id, state, score, priority, attempts, max_attempts, reason, payload}
local function queue_row(id, state, score, m, payload)
  return {id, state, tonumber(score), m.p, m.a, m.m, m.r or false, payload or false}
end

-- The dead jobs a requeue or purge works on: the given ids that are dead (at most 1000, each
-- once, checked before anything is written), or the `limit` oldest dead jobs when none are given.
local function queue_check_ids(argv, first)
  local n = #argv - first + 1
  if n > 1000 then prl_fail('BADARG', 'at most 1000 ids per call, got ' .. n) end
  for i = first, #argv do prl_str(argv, i, 'id', 1, 64, nil) end
end

local function queue_dead_ids(K, argv, first, limit)
  local n = #argv - first + 1
  if n == 0 then return redis.call('ZRANGE', K.dead, 0, limit - 1) end
  local given, seen = {}, {}
  for i = first, #argv do
    if not seen[argv[i]] then
      seen[argv[i]] = true
      given[#given + 1] = argv[i]
    end
  end
  local scores = redis.call('ZMSCORE', K.dead, unpack(given))
  local ids = {}
  for i, id in ipairs(given) do
    if scores[i] then ids[#ids + 1] = id end
  end
  return ids
end

-- One job's row for queue.get and queue.get_by_key: its state (the set holding it), the score
-- there, its record's fields and its payload. `raw`, `payload`: its record and payload (queue_read).
local function queue_job(K, id, raw, payload)
  local m = queue_meta(raw, id)
  for _, state in ipairs({'ready', 'delayed', 'active', 'dead'}) do
    local score = redis.call('ZSCORE', K[state], id)
    if score then
      local row = queue_row(id, state, score, m, payload)
      row[9] = m.b
      row[10] = m.k or false
      row[11] = m.e
      return row
    end
  end
  return prl_fail('BADSTATE', 'job ' .. id .. ' is in no state')
end
