--[[
name: ratelimit.reset
version: 1.0.0
summary: Forget the state of one or more rate limiter keys (back to full).
flags: none
keys: variadic
  each: any; 1..16 ratelimit keys, all under one hash tag
argv:
returns:
  the number of keys that existed
errors:
  BADARG: the key count is invalid (nothing changed)
]]
if #KEYS < 1 or #KEYS > 16 then prl_fail('BADARG', 'takes 1..16 keys, got ' .. #KEYS) end
return rcall('DEL', unpack(KEYS))
