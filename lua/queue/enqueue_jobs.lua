--[[
name: queue.enqueue_jobs
version: 1.1.0
summary: Add up to 1000 jobs in one call, all validated before the first is added; the caller says how many fields each job has (queue.enqueue_batch guesses it from the count).
flags: none
resend: safe
includes: queue, metrics, queue_enqueue
keys: keyset queue + request, metrics
argv:
  width: int 6..8; fields per job: 6 (payload, priority, delay_ms, max_attempts, backoff_ms, idem_key, as queue.enqueue, all required), 7 (then max_run_ms), 8 (then max_run_ms and trace_context: the producer's W3C trace context, "" for none, at most 1024 bytes)
  items: rest; width fields per job, 1..1000 jobs
returns:
  a flat list {id1, created1, id2, created2, ...} in argument order (created 0: an existing job's id)
errors:
  BADARG: a job field, the field count (not a multiple of width), the job count (1..1000) or the key count is invalid (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
return queue_enqueue_all(queue_K(KEYS), ARGV, items_start, width, 'queue.enqueue_jobs', metrics_key)
