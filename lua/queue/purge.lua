--[[
name: queue.purge
version: 1.1.0
summary: Delete dead-lettered jobs for good: the listed ids, else the oldest limit.
flags: allow-oom
resend: safe
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
  request: optional string; this call's request record, a key of your choosing under the queue's hash tag, unique per call (prl:q:{name}:req:<random>): a call that changed something keeps its reply there for 120 s, and the same call re-sent (after a lost reply) replies the same and changes nothing
argv:
  limit: int 1..1000 = 100; how many of the oldest dead jobs when no ids are given
  ids: rest; job ids (0..1000); ids that are not dead are skipped
returns:
  the number of jobs deleted
errors:
  BADARG: an argument, the id list or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
queue_check_ids(ARGV, ids_start)
local first = queue_recorded(K, 'queue.purge')
if first then return first end
local ids = queue_dead_ids(K, ARGV, ids_start, limit)
if #ids == 0 then return 0 end
rcall('HLEN', K.jobs)
rcall('HLEN', K.payloads)
-- write: the counter first (it fails on a bad counter before anything changed)
rcall('HINCRBY', K.stats, 'purged', #ids)
queue_chunked('ZREM', K.dead, ids)
queue_chunked('HDEL', K.jobs, ids)
queue_chunked('HDEL', K.payloads, ids)
queue_record(K, 'queue.purge', #ids)
return #ids
