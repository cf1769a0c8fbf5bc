--[[
name: queue.nack
version: 1.1.0
summary: Give a leased job back: retry it with backoff, dead-letter it, or release it uncounted.
flags: allow-oom
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
local outcome, at = queue_settle_one(K, id, m, now, reason, action, delay_ms)
local reply = {outcome, at, m.a}
queue_record(K, 'queue.nack', reply)
return reply
