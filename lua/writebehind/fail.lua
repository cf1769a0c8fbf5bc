--[[
name: writebehind.fail
version: 1.1.0
summary: Report records the sink rejected: retry each after an exponential backoff, or dead-letter it with the error after max_attempts.
flags: allow-oom
resend: safe
includes: writebehind, metrics
keys: keyset writebehind + metrics
argv:
  claim_id: int 1..9007199254740991; the claim id claim returned; records claimed by another claim are left alone
  max_attempts: int 1..1000; dead-letter a record on this many failed attempts
  backoff_ms: int 0..86400000; the first retry waits this long, doubling each attempt
  max_backoff_ms: int 0..86400000; cap on the wait
  items: rest; 1..1000 (key, version, error) triples; error is 0..4096 bytes
returns:
  {outcome, ...} in order: 1 retry scheduled; 2 dead-lettered; 3 written since the claim (due
  again, attempts reset); 0 not claimed by this claim (nothing changed)
  A repeat replies 0 (no longer claimed by this claim) and changes nothing.
errors:
  BADARG: an argument, a triple or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local count = wb_groups(ARGV, items_start, 3, 'items', function(i)
  wb_key(ARGV[i])
  prl_int(ARGV, i + 1, 'version', -9007199254740991, 9007199254740991, nil)
  prl_str(ARGV, i + 2, 'error', 0, 4096, nil)
end)
local now = prl_now_ms()
local keys = {}
for j = 1, count do keys[j] = ARGV[items_start + 3 * (j - 1)] end
-- read
local scores = wb_scores(K.claimed, keys)
local held = {}
for j = 1, count do
  if scores[j] == claim_id then held[#held + 1] = keys[j] end
end
local metas, versions = {}, {}
if #held > 0 then
  local ms = wb_metas(K, held)
  local vs = rcall('HMGET', K.versions, unpack(held))
  for n, key in ipairs(held) do
    metas[key], versions[key] = ms[n], tonumber(vs[n] or '0')
    if not versions[key] then
      prl_fail('BADSTATE', 'the version of record ' .. prl_shown(key) .. ' is not a number')
    end
  end
end
local c = wb_stats(K, {'failed', 'dead'})
if #held > 0 then wb_check(K, 'dirty', 'retry', 'dead') end
local M = #held > 0 and metrics_open(metrics_key, 'writebehind', now) or nil
-- decide
local w = wb_writes()
local out, release, failed, dead = {}, {}, 0, 0
for j = 1, count do
  local i = items_start + 3 * (j - 1)
  local key, version = keys[j], tonumber(ARGV[i + 1])
  local m = metas[key]
  local outcome = 0
  if m then
    metas[key] = nil  -- a key listed twice is handled once
    release[#release + 1] = key
    m.e, m.z, m.c = ARGV[i + 2], nil, nil  -- the sink answered (no crash): no suspect
    if versions[key] ~= version then
      m.s, m.p, m.a = m.p or m.s, nil, 0
      wb_make_dirty(w, key, m)
      outcome = 3
    else
      m.a = (m.a or 0) + 1
      m.p = nil
      failed = failed + 1
      if m.a >= max_attempts then
        wb_make_dead(w, key, m, now)
        dead = dead + 1
        outcome = 2
      else
        wb_make_retry(w, key, m, now + math.min(backoff_ms * 2 ^ math.min(m.a - 1, 40), max_backoff_ms))
        outcome = 1
      end
    end
  end
  out[j] = outcome
end
-- write
wb_chunked('ZREM', K.claimed, release)
wb_flush_writes(K, w)
wb_stats_write(K, c, {failed = failed, dead = dead})
metrics_count(M, 'failed', failed)
metrics_count(M, 'dead', dead)
metrics_flush(M)
wb_forget_claim(K, wb_int(claim_id))
return out
