--[[
name: writebehind.release
version: 1.0.1
summary: Give claimed records back without counting an attempt (the sink was unavailable, or the flusher is stopping), due after delay_ms.
flags: allow-oom
resend: safe
includes: writebehind
keys: keyset writebehind
argv:
  claim_id: int 1..9007199254740991; the claim id claim returned; records claimed by another claim are left alone
  delay_ms: int 0..86400000; the records are due again after this long
  items: rest; 1..1000 record keys
returns:
  the number of records given back
  A repeat gives back nothing more (0).
errors:
  BADARG: an argument, a key or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
wb_groups(ARGV, items_start, 1, 'items', function(i) wb_key(ARGV[i]) end)
local now = prl_now_ms()
local keys = {}
for i = items_start, #ARGV do keys[#keys + 1] = ARGV[i] end
-- read
local scores = wb_scores(K.claimed, keys)
local held, seen = {}, {}
for j, key in ipairs(keys) do
  if scores[j] == claim_id and not seen[key] then
    seen[key] = true
    held[#held + 1] = key
  end
end
local metas = wb_metas(K, held)
local c = wb_stats(K, {'released'})
if #held > 0 then wb_check(K, 'dirty', 'retry') end
-- decide
local w = wb_writes()
local released = {}
for n, key in ipairs(held) do
  local m = metas[n]
  if m then
    released[#released + 1] = key
    if m.p and m.p < m.s then m.s = m.p end
    m.p, m.c = nil, nil
    if delay_ms > 0 then wb_make_retry(w, key, m, now + delay_ms) else wb_make_dirty(w, key, m) end
  end
end
-- write
wb_chunked('ZREM', K.claimed, released)
wb_flush_writes(K, w)
wb_stats_write(K, c, {released = #released})
wb_forget_claim(K, wb_int(claim_id))
return #released
