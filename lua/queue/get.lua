--[[
name: queue.get
version: 1.1.0
summary: Look up one job by id: its state, score, attempts, limits, last reason and payload.
flags: no-writes
includes: queue
keys: keyset queue
argv:
  id: str 1..64; the job id
returns:
  nil when the job does not exist (finished or purged), else {id, state, score, priority,
  attempts, max_attempts, reason, payload, backoff_ms, idem_key, enqueued_at}
errors:
  BADARG: an argument or the key count is invalid
  BADSTATE: a key holds something else than the queue keeps there
  WRONGTYPE: a key holds another Redis type
]]
local K = queue_K(KEYS)
if not queue_is_id(id) then return nil end
local raw, payload = queue_read_one(K, id)
if not raw then return nil end
return queue_job(K, id, raw, payload)
