--[[
name: writebehind.claim
version: 1.0.0
summary: Claim up to count due dirty records, oldest first, with value and version, under a lease (expired claims and due retries return to dirty first).
flags: none
includes: writebehind
keys:
  values: hash; record key to its current value (absent: deleted)
  versions: hash; record key to the version of its latest write (negative: a delete)
  meta: hash; record key to its msgpack state {s, a, q, p, e, dt} while not clean
  dirty: zset; due dirty keys scored by the time they turned dirty
  retry: zset; keys in retry backoff scored by the time they are due
  claimed: zset; claimed keys scored by claim id (lease deadline ms * 1000 + sequence)
  dead: zset; dead-lettered keys scored by the time they died
  stats: hash; counters (seq is the version sequence)
  signal: list; what an idle flusher blocks on
argv:
  count: int 1..1000; most records to claim
  lease_ms: int 1..86400000; the claim expires after this long and the records become dirty again
  min_count: int 0..1000 = 0; claim nothing unless this many records are due...
  max_age_ms: int 0..86400000 = 0; ...or the oldest due record has been dirty this long
returns:
  {now, wait_ms, left, reaped, claim_id, oldest_dirty_since, {key, ...}, {value, ...},
  {version, ...}}: value nil and version negative for a delete; left = due records not claimed;
  wait_ms = 0 when records came back, else ms until something becomes due (a threshold age, a
  retry, a lease end), -1: never; claim_id (0 when nothing was claimed) identifies the claim to
  ack, fail and release
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local now = prl_now_ms()
local reaped = wb_upkeep(K, now, count)
local due = rcall('ZCARD', K.dirty)
local function wait_hint(w)
  local nr = rcall('ZRANGE', K.retry, 0, 0, 'WITHSCORES')
  if #nr > 0 and (w < 0 or tonumber(nr[2]) - now < w) then w = math.max(tonumber(nr[2]) - now, 1) end
  local nc = rcall('ZRANGE', K.claimed, 0, 0, 'WITHSCORES')
  if #nc > 0 then
    local ends = math.floor(tonumber(nc[2]) / 1000) - now
    if w < 0 or ends < w then w = math.max(ends, 1) end
  end
  return w
end
if due == 0 then return {now, wait_hint(-1), 0, reaped, 0, 0, {}, {}, {}} end
if due < min_count then
  local first = rcall('ZRANGE', K.dirty, 0, 0, 'WITHSCORES')
  local age = now - tonumber(first[2])
  if age < max_age_ms then return {now, wait_hint(max_age_ms - age), due, reaped, 0, 0, {}, {}, {}} end
end
local popped = rcall('ZPOPMIN', K.dirty, count)
local keys = {}
for i = 1, #popped, 2 do keys[#keys + 1] = popped[i] end
local oldest = tonumber(popped[2])
local values = rcall('HMGET', K.values, unpack(keys))
local versions = rcall('HMGET', K.versions, unpack(keys))
local seq = rcall('HINCRBY', K.stats, 'claims', 1)
local id = (now + lease_ms) * 1000 + seq % 1000
local id_text = string.format('%d', id)
local lease = {}
for i, key in ipairs(keys) do
  lease[#lease + 1] = id_text
  lease[#lease + 1] = key
  versions[i] = tonumber(versions[i] or '0')
end
wb_chunked('ZADD', K.claimed, lease)
rcall('HINCRBY', K.stats, 'claimed', #keys)
return {now, 0, due - #keys, reaped, id, oldest, keys, values, versions}
