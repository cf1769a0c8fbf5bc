--[[
name: queue.reap
version: 1.0.1
summary: Return up to limit jobs whose lease ran out to the queue (retry with backoff, or dead letter).
flags: allow-oom
resend: safe
includes: queue
keys: keyset queue
argv:
  limit: int 1..1000 = 100; most expired leases handled in this call
returns:
  {now, {{id, outcome, at, attempts}, ...}}; outcome ready|delayed|dead
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
local now = prl_now_ms()
local expired = rcall('ZRANGEBYSCORE', K.active, '-inf', now, 'LIMIT', 0, limit)
local out = {}
if #expired == 0 then return {now, out} end
local raws = rcall('HMGET', K.jobs, unpack(expired))
local metas = {}
for i, id in ipairs(expired) do metas[i] = queue_meta(raws[i], id) end
local settled = queue_settle(K, expired, metas, now, 'lease expired', 'retry', -1,
                             {reaped = #expired})
for i, id in ipairs(expired) do
  out[i] = {id, settled[i][1], settled[i][2], metas[i].a}
end
return {now, out}
