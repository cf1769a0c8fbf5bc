--[[
name: queue.extend
version: 1.0.2
summary: Extend a live lease to lease_ms from now (never resurrects an expired one).
flags: allow-oom
resend: safe
includes: queue
keys: keyset queue
argv:
  id: str 1..64; the job id
  token: str 1..64; its live lease token
  lease_ms: int 1..86400000; new lease length from now
returns:
  the new deadline (server time, ms)
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  STALE: the token is not the job's live lease (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local K = queue_K(KEYS)
local now = prl_now_ms()
queue_live_one(K, id, token, now)
rcall('ZADD', K.active, now + lease_ms, id)
return now + lease_ms
