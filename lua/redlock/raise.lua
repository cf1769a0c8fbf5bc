--[[
name: redlock.raise
version: 1.0.0
summary: Raise a held lock's fence counter (and the holder's fence) to a fence the holder got on other nodes; Redlock's second step when its nodes' counters differ.
flags: none
resend: safe
includes: lock
keys:
  lock: hash; {owner, fence}; the lock of lock.acquire on this node
  fence: string; the lock's fence counter; never goes backwards
argv:
  token: str 1..256; the owner token
  to: int 1..1000000000000000; the highest fence the holder got from a majority of the nodes
returns:
  1 when the token holds the lock here and the counter is now at least `to` (raised when it
  was lower; the holder's fence here becomes `to`, what a repeated acquire by it replies);
  0 when the token does not hold the lock here (nothing changed). Running it twice is running it once
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the fence counter holds something else than a counter (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
local owner = rcall('HGET', lock_key, 'owner')
local current = rcall('GET', fence_key)
local count = 0
if current then
  if not string.find(current, '^%d+$') then
    prl_fail('BADSTATE', 'the fence counter holds no counter')
  end
  count = tonumber(current)
end
if owner ~= token then return 0 end
local value = lock_int(ARGV[2], to)
if count < to then
  -- KEEPTTL: an ephemeral counter stays ephemeral
  rcall('SET', fence_key, value, 'KEEPTTL')
end
local held = tonumber(rcall('HGET', lock_key, 'fence') or '0')
if not held or held < to then rcall('HSET', lock_key, 'fence', value) end
return 1
