--[[
name: queue.enqueue
version: 1.1.0
summary: Add one job (payload, priority, delay, max attempts, backoff, idempotency key).
flags: none
resend: safe
includes: queue
keys:
  ready: zset; ready job ids scored by priority (ties in id order = enqueue order)
  delayed: zset; delayed job ids scored by the server time they become ready
  active: zset; leased job ids scored by their lease deadline
  dead: zset; dead-lettered job ids scored by the time they died
  jobs: hash; job id to its msgpack record (priority, attempts, limits, lease token, deliveries)
  payloads: hash; job id to its payload
  idem: hash; idempotency key to the id of its unfinished job
  prio: hash; priority to its number of unfinished jobs
  stats: hash; counters (job sequence, totals); durable
  marker: list; what idle consumers block on: enqueue pushes to it (at most 1000), a dequeue with nothing to do deletes it
  request: optional string; this call's request record, a key of your choosing under the queue's hash tag, unique per call (prl:q:{name}:req:<random>): a call that changed something keeps its reply there for 120 s, and the same call re-sent (after a lost reply) replies the same and changes nothing
argv:
  payload: str 0..16777216; the job's payload (opaque bytes)
  priority: int -2147483648..2147483647 = 0; lower runs first
  delay_ms: int 0..31536000000 = 0; run no earlier than this many ms from now
  max_attempts: int 1..1000000 = 3; deliveries before the job is dead-lettered
  backoff_ms: int 0..86400000 = 1000; base of the exponential retry backoff (0: retry at once)
  idem_key: str 0..512 = ""; idempotency key ("" for none)
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
local out, added = queue_add(K, { {payload = payload, priority = priority, delay_ms = delay_ms,
  max_attempts = max_attempts, backoff_ms = backoff_ms, idem_key = idem_key} }, now)
if added > 0 then queue_record(K, 'queue.enqueue', out) end
return out
