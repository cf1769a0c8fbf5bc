--[[
name: queue.dead
version: 1.1.0
summary: List dead-lettered jobs, oldest first, with their reason and attempt count.
flags: no-writes
includes: queue
keys: keyset queue
argv:
  offset: int 0..1000000000 = 0; skip this many
  count: int 1..1000 = 100; most jobs listed
returns:
  {total, {row, ...}}, row = {id, "dead", died_at, priority, attempts, max_attempts, reason, payload}
errors:
  BADARG: an argument or the key count is invalid
  BADSTATE: a key holds something else than the queue keeps there
  WRONGTYPE: a key holds another Redis type
]]
local K = queue_K(KEYS)
local ids = rcall('ZRANGE', K.dead, offset, offset + count - 1, 'WITHSCORES')
local out = {}
if #ids > 0 then
  local only = {}
  for i = 1, #ids, 2 do only[#only + 1] = ids[i] end
  local got = queue_read(K, only)
  for i, id in ipairs(only) do
    out[i] = queue_row(id, 'dead', ids[2 * i], queue_meta(got[2 * i - 1], id), got[2 * i])
  end
end
return {rcall('ZCARD', K.dead), out}
