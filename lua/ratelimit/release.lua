--[[
name: ratelimit.release
version: 1.0.0
summary: Release a concurrency lease by its id, freeing its slot at once.
flags: none
keys:
  slots: zset; live lease ids scored by the server time their lease ends
argv:
  lease: str 1..128; the lease id given to ratelimit.acquire
returns:
  {released (1, or 0 when the lease had already ended or never existed), now_ms, in flight after}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local now = prl_now_ms()
local score = rcall('ZSCORE', slots_key, lease)
local released = 0
if score then
  rcall('ZREM', slots_key, lease)
  if tonumber(score) > now then released = 1 end
end
return {released, now, rcall('ZCOUNT', slots_key, '(' .. now, '+inf')}
