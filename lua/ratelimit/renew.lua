--[[
name: ratelimit.renew
version: 1.0.0
summary: Extend a live concurrency lease to end ttl_ms from now (a holder still working).
flags: none
keys:
  slots: zset; live lease ids scored by the server time their lease ends
argv:
  lease: str 1..128; the lease id given to ratelimit.acquire
  ttl_ms: int 1..86400000; the lease now ends this long from now
returns:
  {renewed (1, or 0 when the lease already ended: its slot may be someone else's), now_ms}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local now = prl_now_ms()
local score = rcall('ZSCORE', slots_key, lease)
if not score or tonumber(score) <= now then return {0, now} end
rcall('ZADD', slots_key, now + ttl_ms, lease)
if rcall('PTTL', slots_key) < ttl_ms then rcall('PEXPIRE', slots_key, ttl_ms) end
return {1, now}
