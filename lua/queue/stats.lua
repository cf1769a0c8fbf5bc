--[[
name: queue.stats
version: 1.0.1
summary: Counts per state and per priority, and the queue's running totals.
flags: no-writes
includes: queue
keys: keyset queue
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
