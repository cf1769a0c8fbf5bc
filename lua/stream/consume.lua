--[[
name: stream.consume
version: 1.1.0
summary: Deliver up to count entries: stalled ones first (XAUTOCLAIM, resuming where the last scan of the group stopped), dead-lettering those past max_deliveries, then new ones (XREADGROUP); with the consumers key, keep this consumer's last-seen time and forget a few consumers idle for forget_idle_ms with nothing pending.
flags: allow-oom
resend: safe
includes: stream
keys: keyset streamqueue + cursors, consumers, request
argv:
  group: str 1..256; the consumer group
  consumer: str 1..256; this consumer's name
  count: int 1..1000 = 1; most entries delivered
  claim_idle_ms: int 1..86400000 = 30000; an entry pending this long without ack or extend is stalled and claimed
  max_deliveries: int 1..1000000 = 3; an entry delivered this often is dead-lettered instead of delivered again
  forget_idle_ms: int 1..2592000000 = 600000; with the consumers key: a consumer that has not consumed for this long and holds no entry is deleted from its group (at most 3 per call, looked at when this consumer is new or gets nothing)
returns:
  {{id, deliveries, payload}, ...}; (consumer, deliveries) is the lease token for ack, nack, extend
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
]]
local first = stream_recorded(request_key, 'stream.consume')
if first then
  -- the same call re-sent: what its first run delivered, still pending for this consumer
  local out = {}
  for i = 1, #first, 2 do
    local id, deliveries = first[i], first[i + 1]
    local p = stream_pending(stream_key, group, id)
    if p and p[2] == consumer and tonumber(p[4]) == deliveries then
      local entry = rcall('XRANGE', stream_key, id, id)[1]
      out[#out + 1] = {id, deliveries, entry and stream_payload(entry[2]) or ''}
    end
  end
  return out
end
-- read and check: the scan cursor, the dead-letter stream's type, this consumer's registration
local cursor = rcall('HGET', cursors_key, group) or '0-0'
if not string.match(cursor, '^%d+%-%d+$') then
  prl_fail('BADSTATE', 'the scan cursor of group ' .. prl_shown(group) .. ' is not an entry id: ' .. prl_shown(cursor))
end
rcall('XLEN', dead_key)
local now, member, registered
if consumers_key then
  now = prl_now_ms()
  member = stream_member(group, consumer)
  registered = rcall('ZSCORE', consumers_key, member)
end
-- write: the group first (a stream key of another type fails there, before anything changed)
stream_group(stream_key, group)
local out = {}
-- The stalled entries first. XAUTOCLAIM looks at no more than 10 x count pending entries per
-- call; the scan resumes where the group's last one stopped (wrapping at the end), so a stalled
-- entry is claimed within ceil(pending / (10 x count)) calls, and each call is bounded.
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
      out[#out + 1] = {id, deliveries, payload or ''}
    end
  end
end
if #out < count then
  local fresh = rcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out, 'STREAMS', stream_key, '>')
  if fresh and fresh[1] then
    for _, entry in ipairs(fresh[1][2]) do
      out[#out + 1] = {entry[1], 1, stream_payload(entry[2]) or ''}
    end
  end
end
if consumers_key then
  rcall('ZADD', consumers_key, now, member)
  if not registered or #out == 0 then stream_forget(stream_key, consumers_key, now, forget_idle_ms) end
end
if #out > 0 then
  local rec = {}
  for _, e in ipairs(out) do
    rec[#rec + 1] = e[1]
    rec[#rec + 1] = e[2]
  end
  stream_record(request_key, 'stream.consume', rec)
end
return out
