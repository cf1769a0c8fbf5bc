--[[
name: ratelimit.reset
version: 1.1.0
summary: Forget the state of one or more rate limiter keys (back to full); refuses keys that hold anything else.
flags: allow-oom
resend: safe
includes: ratelimit
keys: variadic
  each: any; 1..16 ratelimit keys of any algorithm (or concurrency limiters), all under one hash tag
argv:
returns:
  the number of keys that existed
errors:
  BADARG: the key count is invalid (nothing changed)
  BADSTATE: a key holds something that is not rate limiter state (nothing deleted)
]]
-- allow-oom: deleting frees memory. Every key is checked before the first is deleted.
if #KEYS < 1 or #KEYS > 16 then prl_fail('BADARG', 'takes 1..16 keys, got ' .. #KEYS) end
local existing = {}
for _, key in ipairs(KEYS) do
  local kind, t = ratelimit_kind(key)
  if not kind then
    prl_fail('BADSTATE', 'key ' .. prl_shown(key) .. ' holds a ' .. t ..
      ' that is not rate limiter state (nothing deleted)')
  end
  if kind ~= 'none' then existing[#existing + 1] = key end
end
if #existing == 0 then return 0 end
return rcall('DEL', unpack(existing))
