--[[
name: ratelimit.release
version: 1.1.0
summary: Release a concurrency lease by its id, freeing its slot at once.
flags: allow-oom
resend: safe
includes: ratelimit
keys:
  slots: zset; live lease ids scored by the server time their lease ends, and the concurrency marker
argv:
  lease: str 1..128; the lease id given to ratelimit.acquire
returns:
  {released (1, or 0 when the lease had already ended, never existed or was released before:
  a re-sent release changes nothing and replies 0), now_ms, in flight after}
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the key holds a sorted set that is not a concurrency limiter's (nothing changed)
  WRONGTYPE: the key holds another Redis type (nothing changed)
]]
-- allow-oom: releasing frees memory, and a refused release would hold a slot until its lease ends
local now = prl_now_ms()
local scores = rcall('ZMSCORE', slots_key, lease, RATELIMIT_SLOTS_MARK)
if scores[2] == false then
  ratelimit_zset_absent(slots_key, 'concurrency')
  return {0, now, 0}
end
local released = 0
if scores[1] then
  rcall('ZREM', slots_key, lease)
  if tonumber(scores[1]) > now then released = 1 end
end
return {released, now, rcall('ZCOUNT', slots_key, '(' .. now, '+inf')}
