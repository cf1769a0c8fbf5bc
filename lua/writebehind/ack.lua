--[[
name: writebehind.ack
version: 1.1.0
summary: Mark flushed records clean, each only if its version is unchanged since the claim; a record written meanwhile stays dirty.
flags: allow-oom
resend: safe
includes: writebehind, metrics
keys: keyset writebehind + metrics
argv:
  claim_id: int 1..9007199254740991; the claim id claim returned; records claimed by another claim are left alone
  items: rest; 1..1000 (key, version) pairs: the versions written to the sink (negative for a delete)
returns:
  {status, ...} in order: 1 clean now; 0 written since the claim (stays dirty); 2 already clean
  A repeat replies 2 (already clean) for what the first call cleaned and changes nothing.
errors:
  BADARG: an argument, a pair or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local count = wb_groups(ARGV, items_start, 2, 'items', function(i)
  wb_key(ARGV[i])
  local v = prl_int(ARGV, i + 1, 'version', -9007199254740991, 9007199254740991, nil)
  if v == 0 then prl_fail('BADARG', 'version must not be 0') end
end)
local id_text = wb_int(claim_id)
local keys = {}
for j = 1, count do keys[j] = ARGV[items_start + 2 * (j - 1)] end
-- read
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
local c, x = wb_stats(K, {'acked'}, {'rid:' .. id_text})
local mine = rcall('ZCOUNT', K.claimed, id_text, id_text)
-- decide
local now
local w = wb_writes()
local clean, raws, forget, redo, out = {}, {}, {}, {}, {}
for j = 1, count do
  local key, version = keys[j], tonumber(ARGV[items_start + 2 * j - 1])
  local current = tonumber(versions[j] or '0')
  if not current then
    prl_fail('BADSTATE', 'the version of record ' .. prl_shown(key) .. ' is not a number')
  end
  local status = 2
  if metas[j] then
    if current == version then
      -- the sink holds this version: clean, whoever holds the claim now
      clean[#clean + 1] = key
      raws[#clean] = metas[j]
      if current < 0 then forget[#forget + 1] = key end  -- a flushed tombstone is forgotten
      status = 1
    elseif math.abs(current) > math.abs(version) then
      status = 0
      if tonumber(rcall('ZSCORE', K.claimed, key) or '0') == claim_id then
        -- written since the claim: due again, with fresh attempts (the write went through)
        now = now or prl_now_ms()
        local m = wb_meta(metas[j], key)
        m.s, m.p, m.a, m.z, m.c = m.p or now, nil, 0, nil, nil
        redo[#redo + 1] = key
        wb_make_dirty(w, key, m)
      end
    end
  end
  out[j] = status
end
if #clean + #redo > 0 then wb_check(K, 'dirty', 'retry', 'dead') end
-- metrics: flushed, and the lag of each from its oldest unflushed write (its dirty-since)
local M = nil
if metrics_key and #clean > 0 then
  local at = prl_now_ms()
  M = metrics_open(metrics_key, 'writebehind', at)
  metrics_count(M, 'flushed', #clean)
  for n = 1, #clean do
    local ok, m = pcall(cmsgpack.unpack, raws[n])
    if ok and type(m) == 'table' and type(m.s) == 'number' then metrics_sample(M, 'lag', at - m.s) end
  end
end
-- write: the ZREM from claimed comes first (a claimed key of another type fails it, unwritten)
local held = 0
for i = 1, #clean, 1000 do
  held = held + rcall('ZREM', K.claimed, unpack(clean, i, math.min(i + 999, #clean)))
end
wb_chunked('ZREM', K.claimed, redo)
-- a record is in one of claimed, dirty, retry, dead: those not claimed any more (reaped,
-- released, failed) are in one of the others
if held < #clean then
  for _, set in ipairs({K.dirty, K.retry, K.dead}) do wb_chunked('ZREM', set, clean) end
end
wb_chunked('HDEL', K.meta, clean)
wb_chunked('HDEL', K.versions, forget)
wb_flush_writes(K, w)
wb_stats_write(K, c, {acked = #clean})
metrics_flush(M)
local left = (held > 0 or #redo > 0) and rcall('ZCOUNT', K.claimed, id_text, id_text) or mine
-- cleaned records held by other claims (counted: removed from claimed, but not from this one)
if held > mine - left - #redo then wb_forget_others(K, clean, raws) end
local rid = x['rid:' .. id_text]
if rid and left == 0 then rcall('HDEL', K.stats, 'rid:' .. id_text, 'claim:' .. rid) end
return out
