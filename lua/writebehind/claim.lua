--[[
name: writebehind.claim
version: 1.2.0
summary: Claim up to count due dirty records, oldest first, with value and version, under a lease (expired claims count an attempt and return to dirty, due retries return to dirty first).
flags: allow-oom
resend: safe
includes: writebehind, metrics
keys: keyset writebehind + metrics
argv:
  count: int 1..1000; most records to claim
  lease_ms: int 1..86400000; the claim expires after this long and the records become dirty again
  min_count: int 0..1000 = 0; claim nothing unless this many records are due...
  max_age_ms: int 0..86400000 = 0; ...or the oldest due record has been dirty this long
  max_attempts: int 1..1000 = 5; an expired claim counts as a failed attempt of its records: dead-letter a record after this many
  request_id: int 0..9007199254740991 = 0; chosen by the caller, unique per claim (0: none); a repeat of a call that claimed records (a client re-sending after a timeout) returns those records again instead of claiming more
returns:
  {now, wait_ms, left, reaped, claim_id, oldest_dirty_since, {key, ...}, {value, ...},
  {version, ...}}: value nil and version negative for a delete; left = due records not claimed;
  wait_ms = 0 when records came back, else ms until something becomes due (a threshold age, a
  retry, a lease end), -1: never; claim_id (0 when nothing was claimed) identifies the claim to
  ack, fail and release. Records back from an expired claim (suspects) come first and one per
  claim, whatever min_count, until each was written to the sink
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local now = prl_now_ms()
local rid = request_id > 0 and wb_int(request_id) or nil
-- read (the counters, and the claim this request id made, if any: one call)
local sv = rcall('HMGET', K.stats, 'claims', 'claimed', 'reaped', 'dead', 'claim:' .. (rid or '0'))
for i = 1, 4 do
  if sv[i] and not string.match(sv[i], '^%-?%d+$') then
    prl_fail('BADSTATE', 'a counter of the store is not an integer: ' .. prl_shown(sv[i]))
  end
end
if rid and sv[5] then
  -- the same call again (its reply was lost): the records it claimed, as they are now
  local id_text, oldest = string.match(sv[5], '^(%d+) (%d+)$')
  local keys = id_text and rcall('ZRANGEBYSCORE', K.claimed, id_text, id_text) or {}
  if #keys > 0 then
    local values = rcall('HMGET', K.values, unpack(keys))
    local versions = rcall('HMGET', K.versions, unpack(keys))
    for i = 1, #keys do versions[i] = tonumber(versions[i] or '0') or 0 end
    return {now, 0, rcall('ZCARD', K.dirty), 0, tonumber(id_text), tonumber(oldest), keys,
            values, versions}
  end
end
local expired, retried = wb_expired(K, now, count)
local due = rcall('ZCARD', K.dirty)
local first = rcall('ZRANGE', K.dirty, 0, 0, 'WITHSCORES')
rcall('HLEN', K.values)  -- their types: they are read after the first write below
rcall('HLEN', K.versions)
local head = #first > 0 and tonumber(first[2]) or nil
if head and head < 0 then rcall('HLEN', K.meta) end  -- a suspect's claim writes its meta
local M = metrics_open(metrics_key, 'writebehind', now)
local reaped, died = 0, 0
if #expired > 0 or #retried > 0 then
  -- upkeep: expired claims (an attempt each) and due retries return to dirty, first
  local u = wb_upkeep_prepare(K, expired, retried)
  if #u.keys > 0 then wb_check(K, 'dead') end
  local w = wb_writes()
  reaped, died = wb_upkeep_write(K, u, w, now, max_attempts)
  for i = 1, #w.dirty, 2 do  -- what upkeep makes due joins the dirty set
    if head == nil or w.dirty[i] < head then head = w.dirty[i] end
  end
  due = due + #w.dirty / 2
  wb_flush_writes(K, w)
  wb_upkeep_forget(K, u)
end
local function counted(fields)
  -- the counters that moved, in one HSET with `fields`
  if reaped > 0 then
    fields[#fields + 1] = 'reaped'
    fields[#fields + 1] = wb_int(tonumber(sv[3] or '0') + reaped)
  end
  if died > 0 then
    fields[#fields + 1] = 'dead'
    fields[#fields + 1] = wb_int(tonumber(sv[4] or '0') + died)
  end
  if #fields > 0 then rcall('HSET', K.stats, unpack(fields)) end
  -- an expired claim its upkeep returned is a failed flush (an attempt counted)
  metrics_count(M, 'failed', reaped)
  metrics_count(M, 'dead', died)
  metrics_flush(M)
end
local function wait_hint(wait)
  local nr = rcall('ZRANGE', K.retry, 0, 0, 'WITHSCORES')
  if #nr > 0 and (wait < 0 or tonumber(nr[2]) - now < wait) then wait = math.max(tonumber(nr[2]) - now, 1) end
  local nc = rcall('ZRANGE', K.claimed, 0, 0, 'WITHSCORES')
  if #nc > 0 then
    local ends = math.floor(tonumber(nc[2]) / 1000) - now
    if wait < 0 or ends < wait then wait = math.max(ends, 1) end
  end
  return wait
end
if due == 0 then
  counted({})
  return {now, wait_hint(-1), 0, reaped, 0, 0, {}, {}, {}}
end
local oldest = head
local take = count
if oldest < 0 then
  oldest = oldest + WB_SUSPECT
  take = 1  -- a suspect is flushed alone: if it crashes the flusher again, only it pays
elseif due < min_count then
  local age = now - oldest
  if age < max_age_ms then
    counted({})
    return {now, wait_hint(max_age_ms - age), due, reaped, 0, 0, {}, {}, {}}
  end
end
-- the members alone: ZPOPMIN would format every score of its reply as a double
local keys = rcall('ZRANGE', K.dirty, 0, take - 1)
rcall('ZREMRANGEBYRANK', K.dirty, 0, take - 1)
local values = rcall('HMGET', K.values, unpack(keys))
local versions = rcall('HMGET', K.versions, unpack(keys))
local claims = tonumber(sv[1] or '0') + 1
local id = (now + lease_ms) * 1000 + claims % 1000
local id_text = wb_int(id)
local lease = {}
for i, key in ipairs(keys) do
  lease[#lease + 1] = id_text
  lease[#lease + 1] = key
  versions[i] = tonumber(versions[i] or '0') or 0
end
wb_chunked('ZADD', K.claimed, lease)
if take == 1 and head < 0 then
  -- a suspect's meta names its claim, so an ack by the claim it expired from can forget this
  -- claim's request id when it takes the record away (wb_forget_others)
  local raw = rcall('HGET', K.meta, keys[1])
  local ok, m = pcall(cmsgpack.unpack, raw or '')
  if ok and type(m) == 'table' and type(m.s) == 'number' then
    m.c = id
    rcall('HSET', K.meta, keys[1], cmsgpack.pack(m))
  end
end
local fields = {'claims', wb_int(claims), 'claimed', wb_int(tonumber(sv[2] or '0') + #keys)}
if rid then
  fields[5], fields[6] = 'claim:' .. rid, id_text .. ' ' .. wb_int(oldest)
  fields[7], fields[8] = 'rid:' .. id_text, rid
end
counted(fields)
return {now, 0, due - #keys, reaped, id, oldest, keys, values, versions}
