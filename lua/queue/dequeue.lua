--[[
name: queue.dequeue
version: 1.5.0
summary: Lease up to count ready jobs, lowest (priority, enqueue order) first; due delayed jobs are made ready first.
flags: allow-oom
resend: safe
includes: queue, metrics
keys: keyset queue + request, metrics
argv:
  count: int 1..1000 = 1; most jobs to lease
  lease_ms: int 1..86400000 = 30000; lease length; ack, nack or extend before it ends
returns:
  {now, wait_ms, {job, ...}}: now is the server time; wait_ms is 0 when jobs were leased, else
  the ms until the next delayed job is due (-1: none). job = {id, token, deadline, attempts,
  max_attempts, priority, payload, enqueued_at, max_run_ms, trace_context} (max_run_ms 0: none
  set; trace_context "": none stored). A token is opaque (today: the job's delivery count and the
  server time of the lease, so a lease from before Redis lost its data never matches a new one)
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
local first = queue_recorded(K, 'queue.dequeue')
local now = prl_now_ms()
if first then
  -- the same call re-sent: the jobs its first run leased, those still under that lease
  local out = {}
  if #first > 0 then
    local ids, tokens = {}, {}
    for i = 1, #first, 2 do
      ids[#ids + 1] = first[i]
      tokens[#tokens + 1] = first[i + 1]
    end
    local got = queue_read(K, ids)
    local deadlines = rcall('ZMSCORE', K.active, unpack(ids))
    for i, id in ipairs(ids) do
      local deadline = tonumber(deadlines[i] or '0')
      if got[2 * i - 1] and deadline > now then
        local m = queue_meta(got[2 * i - 1], id)
        if m.t == tokens[i] then out[#out + 1] = queue_leased(id, m, deadline, got[2 * i]) end
      end
    end
  end
  return {now, 0, out}
end
-- read: the due delayed jobs and the first ready ones (one more than count: is more left?),
-- with their scores only when due jobs are ranked among them. (Numbers in a call's arguments
-- and scores in its reply are formatted each time: hence the string arguments.)
local due = rcall('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', '0', QUEUE_PROMOTE_LIMIT_ARG)
local top, width
if #due == 0 then
  top, width = rcall('ZRANGE', K.ready, '0', count == 1 and '1' or count), 1
else
  top, width = rcall('ZRANGE', K.ready, '0', count, 'WITHSCORES'), 2
end
if #due == 0 and #top == 0 then
  -- nothing to do: wake-ups left for idle consumers would only wake them for nothing (and
  -- would stay behind when the queue falls idle), so they go
  local nxt = rcall('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
  if rcall('LLEN', K.marker) > 0 then rcall('DEL', K.marker) end
  local wait = -1
  if #nxt > 0 then wait = math.max(tonumber(nxt[2]) - now, 1) end
  return {now, wait, {}}
end
local left = #top / width > count  -- more ready jobs than this call takes
local deadline, stamp = now + lease_ms, '.' .. string.format('%d', now)
if #due == 0 and count == 1 then
  -- the common case, one job: the steps below without their tables
  local id = top[1]
  local raw, payload = queue_read_one(K, id)
  local m = queue_meta(raw, id)
  local base = 0
  if m.d == nil then base = queue_count(rcall('HGET', K.stats, 'tokens'), 'the lease token counter') end
  local llen = left and rcall('LLEN', K.marker) or 0
  local M = metrics_open(metrics_key, 'queue', now)
  if M and m.a == 0 then metrics_sample(M, 'wait', now - m.e) end
  queue_lease(m, base, stamp)
  rcall('ZADD', K.active, deadline, id)
  rcall('ZREM', K.ready, id)
  rcall('HSET', K.jobs, id, queue_encode(m))
  if left and llen == 0 then queue_wake(K, 1, 0) end
  metrics_flush(M)
  queue_record(K, 'queue.dequeue', {id, m.t})
  return {now, 0, {queue_leased(id, m, deadline, payload)}}
end
local chosen, metas, from_ready, promote, payloads = {}, {}, {}, {}, nil
if #due == 0 then
  -- the common case: the first ready jobs, in the ready set's order
  for i = 1, math.min(#top, count) do chosen[i] = top[i] end
  local got = queue_read(K, chosen)
  payloads = {}
  for i, id in ipairs(chosen) do
    metas[i] = queue_meta(got[2 * i - 1], id)
    payloads[i] = got[2 * i]
    from_ready[i] = id
  end
else
  -- the candidates: every due job (made ready now) and the first count ready ones
  local ids, seen, score_of = {}, {}, {}
  for _, id in ipairs(due) do
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
  local ndue = #ids
  for i = 1, math.min(#top / 2, count) do
    local id = top[2 * i - 1]
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
      score_of[id] = tonumber(top[2 * i])
    end
  end
  local raws = rcall('HMGET', K.jobs, unpack(ids))
  local cands = {}
  for i, id in ipairs(ids) do
    local m = queue_meta(raws[i], id)
    cands[i] = {id = id, m = m, due = i <= ndue, s = score_of[id] or m.p}
  end
  -- lowest (priority, id) first, as the ready set orders them
  table.sort(cands, function(x, y)
    if x.s ~= y.s then return x.s < y.s end
    return x.id < y.id
  end)
  for i, c in ipairs(cands) do
    if i <= count then
      chosen[#chosen + 1] = c.id
      metas[#metas + 1] = c.m
      if not c.due then from_ready[#from_ready + 1] = c.id end
    else
      left = true
      if c.due then
        promote[#promote + 1] = c.m.p
        promote[#promote + 1] = c.id
      end
    end
  end
end
local legacy = false
for _, m in ipairs(metas) do
  if m.d == nil then legacy = true end
end
-- the payloads (the common case read them with the records)
if not payloads then payloads = queue_payloads(K, chosen) end
-- a job enqueued before lease tokens were per job continues from the old shared counter
local base = legacy and queue_count(rcall('HGET', K.stats, 'tokens'), 'the lease token counter') or 0
local llen = left and rcall('LLEN', K.marker) or 0
local M = metrics_open(metrics_key, 'queue', now)
-- write: the leases first (a wrong type of active fails there, before anything changed)
local leases, records, out, rec = {}, {}, {}, {}
for i, id in ipairs(chosen) do
  local m = metas[i]
  -- metrics: the wait of a first delivery (from its enqueue)
  if M and m.a == 0 then metrics_sample(M, 'wait', now - m.e) end
  queue_lease(m, base, stamp)
  leases[2 * i - 1] = deadline
  leases[2 * i] = id
  records[2 * i - 1] = id
  records[2 * i] = queue_encode(m)
  out[i] = queue_leased(id, m, deadline, payloads[i])
  rec[2 * i - 1] = id
  rec[2 * i] = m.t
end
queue_chunked('ZADD', K.active, leases)
if #due > 0 then queue_chunked('ZREM', K.delayed, due) end
if #promote > 0 then queue_chunked('ZADD', K.ready, promote) end
if #from_ready > 0 then queue_chunked('ZREM', K.ready, from_ready) end
queue_chunked('HSET', K.jobs, records)
-- chain the wake-up: more work is waiting and no marker is left for an idle consumer
if left and llen == 0 then queue_wake(K, 1, 0) end
metrics_flush(M)
queue_record(K, 'queue.dequeue', rec)
return {now, 0, out}
