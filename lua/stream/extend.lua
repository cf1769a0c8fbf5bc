--[[
name: stream.extend
version: 1.0.1
summary: Reset a delivered entry's idle time (a heartbeat) so it is not claimed as stalled.
flags: allow-oom
resend: safe
includes: stream
keys: keyset streamqueue
argv:
  group: str 1..256; the consumer group
  consumer: str 1..256; the consumer holding the entry
  id: str 1..64; the entry id
  deliveries: int 1..1000000000; its delivery count (the token)
returns:
  1
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  STALE: the entry is no longer pending for this consumer with that delivery count (nothing changed)
  NOTFOUND: the consumer group (or the stream) does not exist (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
]]
stream_check_id(id)
stream_live(stream_key, group, consumer, id, deliveries)
rcall('XCLAIM', stream_key, group, consumer, 0, id, 'IDLE', 0, 'JUSTID')
return 1
