--[[
name: queue.nack
version: 1.2.1
summary: Give a leased job back: retry it with backoff, dead-letter it, or release it uncounted.
flags: allow-oom
resend: safe
includes: queue, metrics
keys: keyset queue + request, metrics
argv:
  id: str 1..64; the job id
  token: str 1..64; its live lease token
  reason: str 0..1024 = ""; why (kept with the job, shown for dead letters)
  action: enum retry|dead|release = retry; release puts it back at once without counting the attempt
  delay_ms: int -1..31536000000 = -1; retry delay (-1: exponential backoff with jitter)
returns:
  {outcome, at, attempts}: outcome ready|delayed|dead; at is when it becomes ready (or died)
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  STALE: the token is not the job's live lease (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
local first = queue_recorded(K, 'queue.nack')
if first then return first end
local now = prl_now_ms()
local m = queue_live_one(K, id, token, now)
local M = metrics_open(metrics_key, 'queue', now)
local outcome, at = queue_settle_one(K, id, m, now, reason, action, delay_ms)
if action ~= 'release' then
  metrics_count(M, 'failed', 1)
  metrics_count(M, outcome == 'dead' and 'dead' or 'retried', 1)
  metrics_flush(M)
end
local reply = {outcome, at, m.a}
queue_record(K, 'queue.nack', reply)
return reply
