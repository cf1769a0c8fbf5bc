--[[
name: queue.get_by_key
version: 1.1.0
summary: Look up the unfinished job that holds an idempotency key: its state, score, attempts, limits, last reason and payload (as queue.get).
flags: no-writes
includes: queue
keys: keyset queue
argv:
  idem_key: str 1..512; the idempotency key given at enqueue
returns:
  nil when no unfinished job holds the key (none was enqueued with it, or its job finished,
  died or was purged), else {id, state, score, priority, attempts, max_attempts, reason, payload,
  backoff_ms, idem_key, enqueued_at} as queue.get
errors:
  BADARG: an argument or the key count is invalid
  BADSTATE: a key holds something else than the queue keeps there
  WRONGTYPE: a key holds another Redis type
]]
local K = queue_K(KEYS)
local id = rcall('HGET', K.idem, idem_key)
if not id then return nil end
local raw, payload = queue_read_one(K, id)
if not raw then
  return prl_fail('BADSTATE', 'idempotency key ' .. idem_key .. ' names job ' .. id .. ', which has no record')
end
return queue_job(K, id, raw, payload)
