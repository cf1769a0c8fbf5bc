--[[
name: queue.ack
version: 1.3.0
summary: Finish leased jobs: each id must come with its live lease token, else nothing changes.
flags: allow-oom
resend: safe
includes: queue, metrics
keys: keyset queue + request, metrics
argv:
  pairs: rest; id, token, id, token, ... (1..1000 jobs)
returns:
  the number of jobs finished
errors:
  BADARG: the pair list or the key count is invalid (nothing changed)
  STALE: a token is not its job's live lease: finished, expired, or re-delivered (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
local n = #ARGV - pairs_start + 1
if n == 0 or n % 2 ~= 0 or n > 2000 then
  prl_fail('BADARG', 'pairs must be 1..1000 (id, token) pairs, got ' .. n .. ' values')
end
if n == 2 then
  -- one job: the steps below without their tables
  local id = prl_str(ARGV, pairs_start, 'id', 1, 64, nil)
  local token = prl_str(ARGV, pairs_start + 1, 'token', 1, 64, nil)
  local first = queue_recorded(K, 'queue.ack')
  if first then return first end
  local now = prl_now_ms()
  local m = queue_live_one(K, id, token, now)
  local free = m.k and rcall('HGET', K.idem, m.k) == id
  -- the priority as a string once (a number in a call's arguments is formatted each time)
  local p = m.p .. ''
  local count = queue_count(rcall('HGET', K.prio, p), 'the count of priority ', p)
  -- a job enqueued before 1.28 has its payload in the payloads hash
  if not m.j then rcall('HLEN', K.payloads) end
  local M = metrics_open(metrics_key, 'queue', now)
  rcall('HINCRBY', K.stats, 'acked', '1')
  if free then rcall('HDEL', K.idem, m.k) end
  -- (the count was read and checked above: HINCRBY writes what HSET of count - 1 would)
  if count > 1 then rcall('HINCRBY', K.prio, p, '-1') else rcall('HDEL', K.prio, p) end
  rcall('ZREM', K.active, id)
  if m.j then
    rcall('HDEL', K.jobs, id, id .. QUEUE_PAYLOAD)
  else
    rcall('HDEL', K.jobs, id)
    rcall('HDEL', K.payloads, id)
  end
  metrics_count(M, 'completed', 1)
  local leased = M and queue_leased_at(m.t)
  if leased then metrics_sample(M, 'run', now - leased) end
  metrics_flush(M)
  queue_record(K, 'queue.ack', 1)
  return 1
end
local ids, tokens, seen = {}, {}, {}
for i = pairs_start, #ARGV, 2 do
  local id = prl_str(ARGV, i, 'id', 1, 64, nil)
  tokens[#tokens + 1] = prl_str(ARGV, i + 1, 'token', 1, 64, nil)
  if seen[id] then prl_fail('BADARG', 'job ' .. id .. ' is listed twice') end
  seen[id] = true
  ids[#ids + 1] = id
end
local first = queue_recorded(K, 'queue.ack')
if first then return first end
local now = prl_now_ms()
local metas = queue_live(K, ids, tokens, now)
-- read: the idempotency keys these jobs hold, the counts of their priorities
local wanted, changes, names, owners = {}, {}, {}, {}
for i, m in ipairs(metas) do
  wanted[m.p] = true
  changes[m.p] = (changes[m.p] or 0) - 1
  if m.k then
    names[#names + 1] = m.k
    owners[#owners + 1] = ids[i]
  end
end
local free = {}
if #names > 0 then
  local holders = rcall('HMGET', K.idem, unpack(names))
  for j, name in ipairs(names) do
    if holders[j] == owners[j] then free[#free + 1] = name end
  end
end
local counts = queue_prio_read(K, wanted)
local fields, old = queue_doomed(K, ids, metas)
local M = metrics_open(metrics_key, 'queue', now)
-- write: the counter first (it fails on a bad counter before anything changed)
rcall('HINCRBY', K.stats, 'acked', #ids)
if #free > 0 then queue_chunked('HDEL', K.idem, free) end
queue_prio_write(K, counts, changes)
queue_chunked('ZREM', K.active, ids)
queue_delete(K, fields, old)
metrics_count(M, 'completed', #ids)
if M then
  for _, m in ipairs(metas) do
    local leased = queue_leased_at(m.t)
    if leased then metrics_sample(M, 'run', now - leased) end
  end
end
metrics_flush(M)
queue_record(K, 'queue.ack', #ids)
return #ids
