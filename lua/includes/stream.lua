-- Helpers of the Streams-based queue (lua/stream/*.lua).
-- An entry carries its payload in field 'p'. A delivery is identified by the consumer that holds
-- it and its delivery count (from the group's pending entries list): that pair is the lease token.

-- Create the consumer group (reading from the start) if it does not exist yet.
local function stream_group(stream_key, group)
  local ok = redis.pcall('XGROUP', 'CREATE', stream_key, group, '0', 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP', 1, true) then
    error(ok, 0)
  end
end

-- {id, consumer, idle ms, deliveries} of one pending entry, or nil.
local function stream_pending(stream_key, group, id)
  local row = redis.call('XPENDING', stream_key, group, id, id, 1)[1]
  if not row then return nil end
  return {row[1], row[2], row[3], row[4]}
end

local function stream_payload(fields)
  if not fields then return nil end
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then return fields[i + 1] end
  end
  return ''
end

-- The live delivery of `id` to `consumer` with `deliveries`, else STALE.
local function stream_live(stream_key, group, consumer, id, deliveries)
  local p = stream_pending(stream_key, group, id)
  if not p then prl_fail('STALE', 'entry ' .. id .. ' is not pending (acked or dead-lettered)') end
  if p[2] ~= consumer or tonumber(p[4]) ~= deliveries then
    prl_fail('STALE', 'entry ' .. id .. ' was claimed by ' .. prl_shown(p[2]) .. ' (delivery ' .. p[4] .. ')')
  end
  return p
end

local function stream_dead_letter(stream_key, dead_key, group, id, payload, deliveries, reason)
  redis.call('XADD', dead_key, '*', 'p', payload or '', 'id', id, 'group', group,
             'deliveries', deliveries, 'reason', reason)
  redis.call('XACK', stream_key, group, id)
  redis.call('XDEL', stream_key, id)
end
