--[[
name: queue.purge
version: 1.2.0
summary: Delete dead-lettered jobs for good: the listed ids, else the oldest limit.
flags: allow-oom
resend: safe
includes: queue
keys: keyset queue + request
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
-- the payloads hash holds only payloads of jobs enqueued before 1.28, if any
local old = rcall('HLEN', K.payloads) > 0
-- write: the counter first (it fails on a bad counter before anything changed)
rcall('HINCRBY', K.stats, 'purged', #ids)
queue_chunked('ZREM', K.dead, ids)
local fields = {}
for _, id in ipairs(ids) do
  fields[#fields + 1] = id
  fields[#fields + 1] = id .. QUEUE_PAYLOAD
end
queue_chunked('HDEL', K.jobs, fields)
if old then queue_chunked('HDEL', K.payloads, ids) end
queue_record(K, 'queue.purge', #ids)
return #ids
