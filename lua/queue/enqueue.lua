--[[
name: queue.enqueue
version: 1.5.0
summary: Add one job (payload, priority, delay, max attempts, backoff, idempotency key, max run time, trace context).
flags: none
resend: safe
includes: queue, metrics
keys: keyset queue + request, metrics
argv:
  payload: str 0..16777216; the job's payload (opaque bytes)
  priority: int -2147483648..2147483647 = 0; lower runs first
  delay_ms: int 0..31536000000 = 0; run no earlier than this many ms from now
  max_attempts: int 1..1000000 = 3; deliveries before the job is dead-lettered
  backoff_ms: int 0..86400000 = 1000; base of the exponential retry backoff (0: retry at once)
  idem_key: str 0..512 = ""; idempotency key ("" for none)
  max_run_ms: int 0..86400000 = 0; longest a worker may run the job per attempt (0: no limit of its own); dequeue returns it
  trace_context: str 0..1024 = ""; the producer's W3C trace context, "traceparent" or "traceparent tracestate" ("" for none); stored with the job, dequeue returns it
returns:
  {job id, 1} when added; {existing job id, 0} when the idempotency key names an unfinished job
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
local first = queue_recorded(K, 'queue.enqueue')
if first then return first end
local now = prl_now_ms()
-- read and check everything the writes touch
local jobs_checked = false
if idem_key ~= '' then
  local holder = rcall('HGET', K.idem, idem_key)
  if holder then
    jobs_checked = true
    if rcall('HEXISTS', K.jobs, holder) == 1 then return {holder, 0} end
  end
end
if not jobs_checked then rcall('HLEN', K.jobs) end
-- the priority as a string once (a number in a call's arguments is formatted each time)
local p = priority .. ''
local count = queue_count(rcall('HGET', K.prio, p), 'the count of priority ', p)
local into = delay_ms > 0 and K.delayed or K.ready
rcall('ZCARD', into)
local llen = delay_ms > 0 and QUEUE_MARKERS or rcall('LLEN', K.marker)
local M = metrics_open(metrics_key, 'queue', now)
-- write: the sequence first (a stats key of another type, or a bad sequence, fails there)
local id = queue_id(rcall('HINCRBY', K.stats, 'seq', '1'))
local m = {p = priority, a = 0, m = max_attempts, b = backoff_ms, e = now, j = 1}
if max_run_ms > 0 then m.x = max_run_ms end
if trace_context ~= '' then m.c = trace_context end
if idem_key ~= '' then
  m.k = idem_key
  rcall('HSET', K.idem, idem_key, id)
end
rcall('HSET', K.jobs, id, queue_encode(m), id .. QUEUE_PAYLOAD, payload)
rcall('ZADD', into, delay_ms > 0 and now + delay_ms or p, id)
-- (the count was read and checked above: HINCRBY writes what HSET of count + 1 would)
rcall('HINCRBY', K.prio, p, '1')
if llen < QUEUE_MARKERS then rcall('RPUSH', K.marker, '1') end
metrics_count(M, 'enqueued', 1)
metrics_flush(M)
local reply = {id, 1}
queue_record(K, 'queue.enqueue', reply)
return reply
