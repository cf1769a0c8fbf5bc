--[[
name: queue.stats
version: 1.0.0
summary: Counts per state and per priority, and the queue's running totals.
flags: no-writes
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
returns:
  {ready, delayed, active, expired_leases, dead, {counter, value, ...}, per_priority} where
  per_priority = {{priority, unfinished, ready}, ...} (at most 1000 priorities; false beyond)
errors:
  BADARG: the key count is invalid
]]
local K = queue_K(KEYS)
local now = prl_now_ms()
local per = false
if redis.call('HLEN', K.prio) <= 1000 then
  per = {}
  local flat = redis.call('HGETALL', K.prio)
  for i = 1, #flat, 2 do
    per[#per + 1] = {tonumber(flat[i]), tonumber(flat[i + 1]),
                     redis.call('ZCOUNT', K.ready, flat[i], flat[i])}
  end
end
return {redis.call('ZCARD', K.ready), redis.call('ZCARD', K.delayed),
        redis.call('ZCARD', K.active), redis.call('ZCOUNT', K.active, '-inf', now),
        redis.call('ZCARD', K.dead), redis.call('HGETALL', K.stats), per}
