--[[
name: queue.enqueue_batch
version: 1.5.0
summary: Add up to 1000 jobs in one call, all validated before the first is added (the fields per job told by their count; queue.enqueue_jobs takes it as an argument).
flags: none
resend: safe
includes: queue, metrics, queue_enqueue
keys: keyset queue + request, metrics
argv:
  items: rest; 6 fields per job: payload, priority, delay_ms, max_attempts, backoff_ms, idem_key (as queue.enqueue, all required); or 7, max_run_ms last, when the field count is not a multiple of 6 (7 x a job count that is not a multiple of 6); or 8, max_run_ms then trace_context (the producer's W3C trace context, "" for none, at most 1024 bytes), when it is a multiple of neither 6 nor 7 (8 x a job count that is a multiple of neither 3 nor 7)
returns:
  a flat list {id1, created1, id2, created2, ...} in argument order (created 0: an existing job's id)
errors:
  BADARG: a job field, the field count (groups of 6, 7 or 8), the job count (1..1000) or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
local n = #ARGV - items_start + 1
-- 6 fields per job; 7 (max_run_ms last) when the count is not a multiple of 6; 8 (then
-- trace_context) when it is a multiple of neither 6 nor 7 (queue.enqueue_jobs says it instead)
local width = 6
if n > 0 and n % 6 ~= 0 then
  if n % 7 == 0 then width = 7 elseif n % 8 == 0 then width = 8 end
end
if n == 0 or n % width ~= 0 then
  prl_fail('BADARG', 'items must be groups of 6 fields (payload, priority, delay_ms, max_attempts, backoff_ms, idem_key), or of 7 with max_run_ms, or of 8 with max_run_ms and trace_context, got ' .. n .. ' fields')
end
return queue_enqueue_all(K, ARGV, items_start, width, 'queue.enqueue_batch', metrics_key)
