--[[
name: queue.enqueue
version: 1.1.0
summary: Add one job (payload, priority, delay, max attempts, backoff, idempotency key, max run time).
flags: none
includes: queue
keys:
  ready: zset; ready job ids scored by priority (ties in id order = enqueue order)
  delayed: zset; delayed job ids scored by the server time they become ready
  active: zset; leased job ids scored by their lease deadline
  dead: zset; dead-lettered job ids scored by the time they died
  jobs: hash; job id to its msgpack record (priority, attempts, limits, lease token)
  payloads: hash; job id to its payload
  idem: hash; idempotency key to the id of its unfinished job
  prio: hash; priority to its number of unfinished jobs
  stats: hash; counters (job sequence, lease tokens, totals)
  marker: list; what idle consumers block on; enqueue pushes to it
argv:
  payload: str 0..16777216; the job's payload (opaque bytes)
  priority: int -2147483648..2147483647 = 0; lower runs first
  delay_ms: int 0..31536000000 = 0; run no earlier than this many ms from now
  max_attempts: int 1..1000000 = 3; deliveries before the job is dead-lettered
  backoff_ms: int 0..86400000 = 1000; base of the exponential retry backoff (0: retry at once)
  idem_key: str 0..512 = ""; idempotency key ("" for none)
  max_run_ms: int 0..86400000 = 0; longest a worker may run the job per attempt (0: no limit of its own); dequeue returns it
returns:
  {job id, 1} when added; {existing job id, 0} when the idempotency key names an unfinished job
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local K = queue_K(KEYS)
local now = prl_now_ms()
local id, created = queue_add(K, {payload = payload, priority = priority, delay_ms = delay_ms,
  max_attempts = max_attempts, backoff_ms = backoff_ms, idem_key = idem_key,
  max_run_ms = max_run_ms}, now)
if created == 1 then
  redis.call('HINCRBY', K.stats, 'enqueued', 1)
  if delay_ms == 0 then queue_wake(K, 1) end
end
return {id, created}
