--[[
name: stream.nack
version: 1.0.0
summary: Give a delivered entry back: claimable at once by any consumer (retry), or dead-lettered now.
flags: none
includes: stream
keys:
  stream: stream; the stream of entries (payload in field p)
  dead: stream; the dead-letter stream (fields p, id, group, deliveries, reason)
argv:
  group: str 1..256; the consumer group
  consumer: str 1..256; the consumer holding the entry
  id: str 1..64; the entry id
  deliveries: int 1..1000000000; its delivery count (the token)
  reason: str 0..1024 = ""; why (kept in the dead-letter entry)
  action: enum retry|dead = retry; retry marks it stalled so the next consume claims it
returns:
  "retry" or "dead"
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  STALE: the entry is no longer pending for this consumer with that delivery count (nothing changed)
]]
if not string.match(id, '^%d+%-%d+$') then prl_fail('BADARG', 'id must look like 123-0, got ' .. prl_shown(id)) end
stream_live(stream_key, group, consumer, id, deliveries)
if action == 'dead' then
  local entry = rcall('XRANGE', stream_key, id, id)[1]
  stream_dead_letter(stream_key, dead_key, group, id, entry and stream_payload(entry[2]),
                     deliveries, reason ~= '' and reason or 'nacked')
  return 'dead'
end
-- Make it look stalled for a day: any consume claims it next (its delivery count is kept).
rcall('XCLAIM', stream_key, group, consumer, 0, id, 'IDLE', 86400000, 'JUSTID')
return 'retry'
