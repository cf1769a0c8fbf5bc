--[[
name: stream.consume
version: 1.0.0
summary: Deliver up to count entries: stalled ones first (XAUTOCLAIM, resuming where the last scan of the group stopped), dead-lettering those past max_deliveries, then new ones (XREADGROUP).
flags: none
includes: stream
keys:
  stream: stream; the stream of entries (payload in field p)
  dead: stream; the dead-letter stream (fields p, id, group, deliveries, reason)
  cursors: hash; group to where its next XAUTOCLAIM scan of the pending list starts
argv:
  group: str 1..256; the consumer group
  consumer: str 1..256; this consumer's name
  count: int 1..1000 = 1; most entries delivered
  claim_idle_ms: int 1..86400000 = 30000; an entry pending this long without ack or extend is stalled and claimed
  max_deliveries: int 1..1000000 = 3; an entry delivered this often is dead-lettered instead of delivered again
returns:
  {{id, deliveries, payload}, ...}; (consumer, deliveries) is the lease token for ack, nack, extend
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
stream_group(stream_key, group)
local out = {}
-- The stalled entries first. XAUTOCLAIM looks at no more than 10 x count pending entries per
-- call; the scan resumes where the group's last one stopped (wrapping at the end), so a stalled
-- entry is claimed within ceil(pending / (10 x count)) calls, and each call is bounded.
local cursor = rcall('HGET', cursors_key, group) or '0-0'
local claimed = rcall('XAUTOCLAIM', stream_key, group, consumer, claim_idle_ms, cursor, 'COUNT', count)
if claimed[1] == '0-0' then
  rcall('HDEL', cursors_key, group)
else
  rcall('HSET', cursors_key, group, claimed[1])
end
for _, entry in ipairs(claimed[2]) do
  local id, payload = entry[1], stream_payload(entry[2])
  local p = stream_pending(stream_key, group, id)
  if p then
    local deliveries = tonumber(p[4])
    if deliveries > max_deliveries then
      stream_dead_letter(stream_key, dead_key, group, id, payload, deliveries - 1,
                         'delivered ' .. (deliveries - 1) .. ' times without ack')
    else
      out[#out + 1] = {id, deliveries, payload}
    end
  end
end
if #out < count then
  local fresh = rcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out, 'STREAMS', stream_key, '>')
  if fresh and fresh[1] then
    for _, entry in ipairs(fresh[1][2]) do
      out[#out + 1] = {entry[1], 1, stream_payload(entry[2])}
    end
  end
end
return out
