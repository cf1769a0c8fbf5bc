--[[
name: writebehind.ack
version: 1.0.0
summary: Mark flushed records clean, each only if its version is unchanged since the claim; a record written meanwhile stays dirty.
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
  claim_id: int 1..9007199254740991; the claim id claim returned; records claimed by another claim are left alone
  items: rest; 1..1000 (key, version) pairs: the versions written to the sink (negative for a delete)
returns:
  {status, ...} in order: 1 clean now; 0 written since the claim (stays dirty); 2 already clean
errors:
  BADARG: an argument, a pair or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local count = wb_groups(ARGV, items_start, 2, 'items', function(i)
  wb_key(ARGV[i])
  local v = prl_int(ARGV, i + 1, 'version', -9007199254740991, 9007199254740991, nil)
  if v == 0 then prl_fail('BADARG', 'version must not be 0') end
end)
local now = prl_now_ms()
local keys = {}
for j = 1, count do keys[j] = ARGV[items_start + 2 * (j - 1)] end
local versions, metas = {}, {}
for i = 1, count, 1000 do
  local part = {unpack(keys, i, math.min(i + 999, count))}
  local vs = rcall('HMGET', K.versions, unpack(part))
  local ms = rcall('HMGET', K.meta, unpack(part))
  for n = 1, #part do
    versions[i + n - 1] = vs[n]
    metas[i + n - 1] = ms[n]
  end
end
local clean, forget, out = {}, {}, {}
for j = 1, count do
  local key, version = keys[j], tonumber(ARGV[items_start + 2 * j - 1])
  local current = tonumber(versions[j] or '0')
  local status = 2
  if metas[j] then
    if current == version then
      -- the sink holds this version: clean, whoever holds the claim now
      clean[#clean + 1] = key
      if current < 0 then forget[#forget + 1] = key end  -- a flushed tombstone is forgotten
      status = 1
    elseif math.abs(current) > math.abs(version) then
      status = 0
      if wb_holds(K, key, claim_id) then
        rcall('ZREM', K.claimed, key)
        local m = cmsgpack.unpack(metas[j])
        m.s, m.p, m.a = m.p or now, nil, 0
        wb_make_dirty(K, key, m)
      end
    end
  end
  out[j] = status
end
for _, set in ipairs({K.claimed, K.dirty, K.retry, K.dead}) do wb_chunked('ZREM', set, clean) end
wb_chunked('HDEL', K.meta, clean)
wb_chunked('HDEL', K.versions, forget)
if #clean > 0 then rcall('HINCRBY', K.stats, 'acked', #clean) end
return out
