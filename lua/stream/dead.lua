--[[
name: stream.dead
version: 1.0.0
summary: List dead-lettered entries, oldest first.
flags: no-writes
includes: stream
keys: keyset streamqueue
argv:
  count: int 1..1000 = 100; most entries listed
returns:
  {{dead entry id, {field, value, ...}}, ...} with fields p, id, group, deliveries, reason
errors:
  BADARG: an argument or the key count is invalid
]]
return rcall('XRANGE', dead_key, '-', '+', 'COUNT', count)
