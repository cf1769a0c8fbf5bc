--[[
name: queue.stats
version: 1.0.1
summary: Counts per state and per priority, and the queue's running totals.
flags: no-writes
includes: queue
keys:
  ready: zset; ready job ids scored by priority (ties in id order = enqueue order)
  delayed: zset; delayed job ids scored by the server time they become ready
  active: zset; leased job ids scored by their lease deadline
  dead: zset; dead-lettered job ids scored by the time they died
  jobs: hash; job id to its msgpack record (priority, attempts, limits, lease token, deliveries)
  payloads: hash; job id to its payload
  idem: hash; idempotency key to the id of its unfinished job
  prio: hash; priority to its number of unfinished jobs
  stats: hash; counters (job sequence, totals); durable
  marker: list; what idle consumers block on: enqueue pushes to it (at most 1000), a dequeue with nothing to do deletes it
argv:
returns:
  {ready, delayed, active, expired_leases, dead, {counter, value, ...}, per_priority} where
  per_priority = {{priority, unfinished, ready}, ...} (at most 1000 priorities; false beyond)
errors:
  BADARG: the key count is invalid
  BADSTATE: a key holds something else than the queue keeps there
  WRONGTYPE: a key holds another Redis type
]]
local K = queue_K(KEYS)
local now = prl_now_ms()
local per = false
if rcall('HLEN', K.prio) <= 1000 then
  per = {}
  local flat = rcall('HGETALL', K.prio)
  for i = 1, #flat, 2 do
    local p = queue_count(flat[i], 'a priority')
    per[#per + 1] = {p, queue_count(flat[i + 1], 'the count of priority ' .. p),
                     rcall('ZCOUNT', K.ready, flat[i], flat[i])}
  end
end
local flat = rcall('HGETALL', K.stats)
-- every job created takes a sequence number: enqueued is the sequence (1.7 keeps no copy)
local counters, seq = {}, nil
for i = 1, #flat, 2 do
  queue_count(flat[i + 1], 'the counter ' .. prl_shown(flat[i]))
  if flat[i] == 'seq' then seq = flat[i + 1] end
  if flat[i] ~= 'enqueued' then
    counters[#counters + 1] = flat[i]
    counters[#counters + 1] = flat[i + 1]
  end
end
if seq then
  counters[#counters + 1] = 'enqueued'
  counters[#counters + 1] = seq
end
return {rcall('ZCARD', K.ready), rcall('ZCARD', K.delayed),
        rcall('ZCARD', K.active), rcall('ZCOUNT', K.active, '-inf', now),
        rcall('ZCARD', K.dead), counters, per}
