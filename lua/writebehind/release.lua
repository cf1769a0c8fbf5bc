--[[
name: writebehind.release
version: 1.0.0
summary: Give claimed records back without counting an attempt (the sink was unavailable, or the flusher is stopping), due after delay_ms.
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
  delay_ms: int 0..86400000; the records are due again after this long
  items: rest; 1..1000 record keys
returns:
  the number of records given back
errors:
  BADARG: an argument, a key or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
wb_groups(ARGV, items_start, 1, 'items', function(i) wb_key(ARGV[i]) end)
local now = prl_now_ms()
local released = 0
for i = items_start, #ARGV do
  local key = ARGV[i]
  local m = wb_get(K, key)
  if m and wb_holds(K, key, claim_id) then
    rcall('ZREM', K.claimed, key)
    if m.p and m.p < m.s then m.s = m.p end
    m.p = nil
    if delay_ms > 0 then
      m.q = 'r'
      rcall('ZADD', K.retry, now + delay_ms, key)
      wb_put(K, key, m)
    else
      wb_make_dirty(K, key, m)
    end
    released = released + 1
  end
end
if released > 0 then rcall('HINCRBY', K.stats, 'released', released) end
return released
