--[[
name: queue.purge
version: 1.0.1
summary: Delete dead-lettered jobs for good: the listed ids, else the oldest limit.
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
  the number of jobs deleted
errors:
  BADARG: an argument, the id list or the key count is invalid (nothing changed)
]]
local K = queue_K(KEYS)
local ids = queue_dead_ids(K, ARGV, ids_start, limit)
if #ids == 0 then return 0 end
queue_chunked('ZREM', K.dead, ids)
queue_chunked('HDEL', K.jobs, ids)
queue_chunked('HDEL', K.payloads, ids)
redis.call('HINCRBY', K.stats, 'purged', #ids)
return #ids
