-- Helpers of the Streams-based queue (lua/stream/*.lua).
-- An entry carries its payload in field 'p'. A delivery is identified by the consumer that holds
-- it and its delivery count (from the group's pending entries list): that pair is the lease token.
--
-- Keys, all under the queue's hash tag (prl:sq:{name}:...):
--   stream     the entries (payload in field p); holds the consumer groups
--   dead       the dead-letter stream (fields p, id, group, deliveries, reason)
--   cursors    hash, group -> where its next XAUTOCLAIM scan of the pending list starts
--   consumers  zset, member = <#group>:<group><consumer>, score = the server time (ms) the
--              consumer last consumed: what lets consume forget idle consumers with nothing
--              pending (XGROUP DELCONSUMER), a few per call, instead of keeping them forever
--   request    string, one call's request record (optional, chosen by the caller, unique per
--              call): a call that changed something stores its reply there for
--              STREAM_REQUEST_TTL_MS, and the same call re-sent finds it and replies the same.
-- An error reply changes nothing: every operation reads and checks what it uses first.

local STREAM_REQUEST_TTL_MS = 120000
local STREAM_FORGET_PER_CALL = 3

-- The reply a re-sent call gave on its first run, from its request record (nil: a first run).
local function stream_recorded(key, op)
  if not key then return nil end
  local raw = redis.call('GET', key)
  if not raw then return nil end
  local ok, v = pcall(cmsgpack.unpack, raw)
  if not ok or type(v) ~= 'table' or v.o ~= op or v.r == nil then
    prl_fail('BADSTATE', 'the request record ' .. prl_shown(key) .. ' is not one of ' .. op)
  end
  return v.r
end

local function stream_record(key, op, reply)
  if key then
    redis.call('SET', key, cmsgpack.pack({o = op, r = reply}), 'PX', STREAM_REQUEST_TTL_MS)
  end
end

-- Create the consumer group (reading from the start) if it does not exist yet.
local function stream_group(stream_key, group)
  local ok = redis.pcall('XGROUP', 'CREATE', stream_key, group, '0', 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP', 1, true) then
    error(ok, 0)
  end
end

-- {id, consumer, idle ms, deliveries} of one pending entry, or nil; NOTFOUND when the group
-- (or the stream) does not exist.
local function stream_pending(stream_key, group, id)
  local rows = redis.pcall('XPENDING', stream_key, group, id, id, 1)
  if type(rows) == 'table' and rows.err then
    if string.find(rows.err, 'NOGROUP', 1, true) then
      prl_fail('NOTFOUND', 'no consumer group ' .. prl_shown(group) .. ' on this stream')
    end
    error(rows, 0)
  end
  local row = rows[1]
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

local function stream_check_id(id)
  if not string.match(id, '^%d+%-%d+$') then
    prl_fail('BADARG', 'id must look like 123-0, got ' .. prl_shown(id))
  end
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

-- A consumer's member in the consumers set, and back.
local function stream_member(group, consumer)
  return #group .. ':' .. group .. consumer
end

local function stream_unmember(member)
  local n, rest = string.match(member, '^(%d+):(.*)$')
  n = tonumber(n)
  if not n or n < 1 or n >= #rest then return nil end
  return string.sub(rest, 1, n), string.sub(rest, n + 1)
end

-- Forget up to STREAM_FORGET_PER_CALL consumers not seen for forget_ms: those with nothing
-- pending are deleted from their group (XGROUP DELCONSUMER: a consumer holding entries is never
-- deleted, its entries would be lost), the others are looked at again forget_ms later.
local function stream_forget(stream_key, consumers_key, now, forget_ms)
  local stale = redis.call('ZRANGEBYSCORE', consumers_key, '-inf', now - forget_ms,
                           'LIMIT', 0, STREAM_FORGET_PER_CALL)
  for _, member in ipairs(stale) do
    local group, consumer = stream_unmember(member)
    local keep = false
    if group then
      local rows = redis.pcall('XPENDING', stream_key, group, '-', '+', 1, consumer)
      if type(rows) == 'table' and not rows.err and #rows > 0 then
        keep = true
      elseif type(rows) == 'table' and not rows.err then
        redis.call('XGROUP', 'DELCONSUMER', stream_key, group, consumer)
      end
    end
    if keep then
      redis.call('ZADD', consumers_key, now, member)
    else
      redis.call('ZREM', consumers_key, member)
    end
  end
end
