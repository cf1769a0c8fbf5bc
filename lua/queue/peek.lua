--[[
name: queue.peek
version: 1.1.0
summary: Look at the next jobs of one state in order, without leasing them.
flags: no-writes
includes: queue
keys: keyset queue
argv:
  state: enum ready|delayed|active|dead = ready; which set (ready: dequeue order; delayed: due order; active: deadline order; dead: oldest first)
  count: int 1..1000 = 10; most jobs shown
returns:
  {row, ...}, row = {id, state, score, priority, attempts, max_attempts, reason, payload}; score
  is the priority (ready), due time (delayed), lease deadline (active) or death time (dead)
errors:
  BADARG: an argument or the key count is invalid
  BADSTATE: a key holds something else than the queue keeps there
  WRONGTYPE: a key holds another Redis type
]]
local K = queue_K(KEYS)
local ids = rcall('ZRANGE', K[state], 0, count - 1, 'WITHSCORES')
local out = {}
if #ids == 0 then return out end
local only = {}
for i = 1, #ids, 2 do only[#only + 1] = ids[i] end
local got = queue_read(K, only)
for i, id in ipairs(only) do
  out[i] = queue_row(id, state, ids[2 * i], queue_meta(got[2 * i - 1], id), got[2 * i])
end
return out
