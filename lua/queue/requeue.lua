--[[
name: queue.requeue
version: 1.0.1
summary: Put dead-lettered jobs back as ready with fresh attempts: the listed ids, else the oldest limit.
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
  limit: int 1..1000 = 100; how many of the oldest dead jobs when no ids are given
  ids: rest; job ids (0..1000); ids that are not dead are skipped
returns:
  the list of requeued ids
errors:
  BADARG: an argument, the id list or the key count is invalid (nothing changed)
]]
local K = queue_K(KEYS)
local ids = queue_dead_ids(K, ARGV, ids_start, limit)
local done = {}
for _, id in ipairs(ids) do
  if redis.call('ZREM', K.dead, id) == 1 then
    local m = queue_decode(redis.call('HGET', K.jobs, id))
    m.a = 0
    m.r = nil
    if m.k then
      -- the key is claimed again unless another job took it meanwhile
      if redis.call('HSETNX', K.idem, m.k, id) == 0 then m.k = nil end
    end
    redis.call('HSET', K.jobs, id, queue_encode(m))
    redis.call('ZADD', K.ready, m.p, id)
    queue_prio_add(K, m.p, 1)
    done[#done + 1] = id
  end
end
if #done > 0 then
  redis.call('HINCRBY', K.stats, 'requeued', #done)
  queue_wake(K, #done)
end
return done
