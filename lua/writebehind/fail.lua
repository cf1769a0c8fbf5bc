--[[
name: writebehind.fail
version: 1.0.0
summary: Report records the sink rejected: retry each after an exponential backoff, or dead-letter it with the error after max_attempts.
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
  max_attempts: int 1..1000; dead-letter a record on this many failed attempts
  backoff_ms: int 0..86400000; the first retry waits this long, doubling each attempt
  max_backoff_ms: int 0..86400000; cap on the wait
  items: rest; 1..1000 (key, version, error) triples; error is 0..4096 bytes
returns:
  {outcome, ...} in order: 1 retry scheduled; 2 dead-lettered; 3 written since the claim (due
  again, attempts reset); 0 not claimed by this claim (nothing changed)
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
local out, failed, dead = {}, 0, 0
for j = 1, count do
  local i = items_start + 3 * (j - 1)
  local key, version = ARGV[i], tonumber(ARGV[i + 1])
  local outcome = 0
  local m = wb_get(K, key)
  if m and wb_holds(K, key, claim_id) then
    rcall('ZREM', K.claimed, key)
    m.e = ARGV[i + 2]
    if tonumber(rcall('HGET', K.versions, key) or '0') ~= version then
      m.s, m.p, m.a = m.p or m.s, nil, 0
      wb_make_dirty(K, key, m)
      outcome = 3
    else
      m.a = (m.a or 0) + 1
      m.p = nil
      failed = failed + 1
      if m.a >= max_attempts then
        m.q, m.dt = 'x', now
        rcall('ZADD', K.dead, now, key)
        wb_put(K, key, m)
        dead = dead + 1
        outcome = 2
      else
        local wait = math.min(backoff_ms * 2 ^ math.min(m.a - 1, 40), max_backoff_ms)
        m.q = 'r'
        rcall('ZADD', K.retry, now + wait, key)
        wb_put(K, key, m)
        outcome = 1
      end
    end
  end
  out[j] = outcome
end
if failed > 0 then rcall('HINCRBY', K.stats, 'failed', failed) end
if dead > 0 then rcall('HINCRBY', K.stats, 'dead', dead) end
return out
