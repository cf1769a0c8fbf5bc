--[[
name: stream.ack
version: 1.1.0
summary: Acknowledge and delete delivered entries; each needs its live (consumer, deliveries) token, else nothing changes.
flags: allow-oom
resend: safe
includes: stream
keys: keyset streamqueue + request
argv:
  group: str 1..256; the consumer group
  consumer: str 1..256; the consumer holding the entries
  pairs: rest; id, deliveries, id, deliveries, ... (1..1000 entries)
returns:
  the number of entries acknowledged
errors:
  BADARG: an argument, the pair list or the key count is invalid (nothing changed)
  STALE: an entry is no longer pending for this consumer with that delivery count (nothing changed)
  NOTFOUND: the consumer group (or the stream) does not exist (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
]]
local n = #ARGV - pairs_start + 1
if n == 0 or n % 2 ~= 0 or n > 2000 then
  prl_fail('BADARG', 'pairs must be 1..1000 (id, deliveries) pairs, got ' .. n .. ' values')
end
local ids, seen = {}, {}
for i = pairs_start, #ARGV, 2 do
  local id = prl_str(ARGV, i, 'id', 1, 64, nil)
  stream_check_id(id)
  prl_int(ARGV, i + 1, 'deliveries', 1, 1000000000, nil)
  if seen[id] then prl_fail('BADARG', 'entry ' .. id .. ' is listed twice') end
  seen[id] = true
  ids[#ids + 1] = id
end
local first = stream_recorded(request_key, 'stream.ack')
if first then return first end
for i = pairs_start, #ARGV, 2 do
  stream_live(stream_key, group, consumer, ARGV[i], tonumber(ARGV[i + 1]))
end
rcall('XACK', stream_key, group, unpack(ids))
rcall('XDEL', stream_key, unpack(ids))
stream_record(request_key, 'stream.ack', #ids)
return #ids
