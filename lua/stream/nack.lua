--[[
name: stream.nack
version: 1.1.0
summary: Give a delivered entry back: claimable at once by any consumer (retry), or dead-lettered now.
flags: allow-oom
resend: safe
includes: stream
keys: keyset streamqueue + request
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
  NOTFOUND: the consumer group (or the stream) does not exist (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
]]
stream_check_id(id)
local first = stream_recorded(request_key, 'stream.nack')
if first then return first end
stream_live(stream_key, group, consumer, id, deliveries)
if action == 'dead' then
  local entry = rcall('XRANGE', stream_key, id, id)[1]
  -- the dead-letter XADD is the first write: a dead key of another type fails before anything
  stream_dead_letter(stream_key, dead_key, group, id, entry and stream_payload(entry[2]),
                     deliveries, reason ~= '' and reason or 'nacked')
else
  -- Make it look stalled for a day: any consume claims it next (its delivery count is kept).
  rcall('XCLAIM', stream_key, group, consumer, 0, id, 'IDLE', 86400000, 'JUSTID')
end
stream_record(request_key, 'stream.nack', action)
return action
