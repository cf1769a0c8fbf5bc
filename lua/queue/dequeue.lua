--[[
name: queue.dequeue
version: 1.1.0
summary: Lease up to count ready jobs, lowest (priority, enqueue order) first; due delayed jobs are made ready first.
flags: none
includes: queue
keys:
  ready: zset; ready job ids scored by priority (ties in id order = enqueue order)
  delayed: zset; delayed job ids scored by the server time they become ready
  active: zset; leased job ids scored by their lease deadline
  dead: zset; dead-lettered job ids scored by the time they died
  jobs: hash; job id to its msgpack record (priority, attempts, limits, lease token)
  payloads: hash; job id to its payload
  idem: hash; idempotency key to the id of its unfinished job
  prio: hash; priority to its number of unfinished jobs
  stats: hash; counters (job sequence, lease tokens, totals)
  marker: list; what idle consumers block on; enqueue pushes to it
argv:
  count: int 1..1000 = 1; most jobs to lease
  lease_ms: int 1..86400000 = 30000; lease length; ack, nack or extend before it ends
returns:
  {now, wait_ms, {job, ...}}: now is the server time; wait_ms is 0 when jobs were leased, else
  the ms until the next delayed job is due (-1: none). job = {id, token, deadline, attempts,
  max_attempts, priority, payload, enqueued_at, max_run_ms} (max_run_ms 0: none set)
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local K = queue_K(KEYS)
local now = prl_now_ms()
queue_promote(K, now)
local popped = redis.call('ZPOPMIN', K.ready, count)
if #popped == 0 then
  local nxt = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
  local wait = -1
  if #nxt > 0 then wait = math.max(tonumber(nxt[2]) - now, 1) end
  return {now, wait, {}}
end
local ids = {}
for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
local raws = redis.call('HMGET', K.jobs, unpack(ids))
local payloads = redis.call('HMGET', K.payloads, unpack(ids))
local last = redis.call('HINCRBY', K.stats, 'tokens', #ids)
local deadline = now + lease_ms
local records, leases, out = {}, {}, {}
for i, id in ipairs(ids) do
  local m = queue_decode(raws[i])
  m.a = m.a + 1
  m.t = tostring(last - #ids + i)
  records[#records + 1] = id
  records[#records + 1] = queue_encode(m)
  leases[#leases + 1] = deadline
  leases[#leases + 1] = id
  out[i] = {id, m.t, deadline, m.a, m.m, m.p, payloads[i], m.e, m.x or 0}
end
queue_chunked('HSET', K.jobs, records)
queue_chunked('ZADD', K.active, leases)
-- Chain the wake-up: more work is waiting and no marker is left for an idle consumer.
if redis.call('ZCARD', K.ready) > 0 and redis.call('LLEN', K.marker) == 0 then
  queue_wake(K, 1)
end
return {now, 0, out}
