--[[
name: queue.reap
version: 1.1.0
summary: Return up to limit jobs whose lease ran out to the queue (retry with backoff, or dead letter).
flags: allow-oom
resend: safe
includes: queue, metrics
keys: keyset queue + metrics
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
K.request, K.metrics = nil, metrics_key  -- reap takes no request record
local now = prl_now_ms()
local expired = rcall('ZRANGEBYSCORE', K.active, '-inf', now, 'LIMIT', 0, limit)
local out = {}
if #expired == 0 then return {now, out} end
local raws = rcall('HMGET', K.jobs, unpack(expired))
local metas = {}
for i, id in ipairs(expired) do metas[i] = queue_meta(raws[i], id) end
local M = metrics_open(metrics_key, 'queue', now)
local settled = queue_settle(K, expired, metas, now, 'lease expired', 'retry', -1,
                             {reaped = #expired})
for i, id in ipairs(expired) do
  out[i] = {id, settled[i][1], settled[i][2], metas[i].a}
  metrics_count(M, settled[i][1] == 'dead' and 'dead' or 'retried', 1)
end
metrics_count(M, 'failed', #expired)
metrics_flush(M)
return {now, out}
