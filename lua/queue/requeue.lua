--[[
name: queue.requeue
version: 1.1.0
summary: Put dead-lettered jobs back as ready with fresh attempts: the listed ids, else the oldest limit.
flags: none
resend: safe
includes: queue
keys: keyset queue + request
argv:
  limit: int 1..1000 = 100; how many of the oldest dead jobs when no ids are given
  ids: rest; job ids (0..1000); ids that are not dead are skipped
returns:
  the list of requeued ids
errors:
  BADARG: an argument, the id list or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
queue_check_ids(ARGV, ids_start)
local first = queue_recorded(K, 'queue.requeue')
if first then return first end
local ids = queue_dead_ids(K, ARGV, ids_start, limit)
if #ids == 0 then return ids end
-- read: the jobs, who holds their idempotency keys, the counts of their priorities
local raws = rcall('HMGET', K.jobs, unpack(ids))
local metas, wanted, changes, names = {}, {}, {}, {}
for i, id in ipairs(ids) do
  local m = queue_meta(raws[i], id)
  metas[i] = m
  wanted[m.p] = true
  changes[m.p] = (changes[m.p] or 0) + 1
  if m.k then names[#names + 1] = m.k end
end
local taken = {}
if #names > 0 then
  local holders = rcall('HMGET', K.idem, unpack(names))
  for j, name in ipairs(names) do
    if holders[j] then taken[name] = true end
  end
end
local counts = queue_prio_read(K, wanted)
rcall('ZCARD', K.ready)
local llen = rcall('LLEN', K.marker)
-- write: the counter first (it fails on a bad counter before anything changed)
rcall('HINCRBY', K.stats, 'requeued', #ids)
local records, ready, idem = {}, {}, {}
for i, id in ipairs(ids) do
  local m = metas[i]
  m.a = 0
  m.r = nil
  if m.k then
    -- the key is claimed again unless another job took it meanwhile
    if taken[m.k] then
      m.k = nil
    else
      taken[m.k] = true
      idem[#idem + 1] = m.k
      idem[#idem + 1] = id
    end
  end
  records[#records + 1] = id
  records[#records + 1] = queue_encode(m)
  ready[#ready + 1] = m.p
  ready[#ready + 1] = id
end
queue_chunked('ZREM', K.dead, ids)
queue_chunked('HSET', K.jobs, records)
queue_chunked('ZADD', K.ready, ready)
if #idem > 0 then queue_chunked('HSET', K.idem, idem) end
queue_prio_write(K, counts, changes)
queue_wake(K, #ids, llen)
queue_record(K, 'queue.requeue', ids)
return ids
