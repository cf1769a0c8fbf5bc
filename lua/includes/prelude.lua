-- Shared runtime helpers: error replies, argument checks and server time.
-- Included once at the top of every rendered script and once in the Functions library.
-- Errors are raised as Redis error tables and returned by prl_guard, so a reply reads
-- "PYREDISLUA:<CODE> <message>" with no script location appended.
-- redis.call is only reachable at run time in a Functions library, so each operation binds
-- `local rcall = redis.call` in its own prologue.
local function prl_fail(code, message)
  error({err = 'PYREDISLUA:' .. code .. ' ' .. message}, 0)
end

local function prl_shown(value)
  if #value > 40 then value = string.sub(value, 1, 40) .. '...' end
  return string.format('%q', value)
end

local function prl_int_checked(v, name, lo, hi)
  -- Decimal integers only: '1.5', '1e3', ' 7', '0x10' and '-0' are rejected, not coerced.
  if #v > 17 or not string.match(v, '^%-?%d+$') or string.match(v, '^%-0') then
    prl_fail('BADARG', name .. ' must be an integer, got ' .. prl_shown(v))
  end
  local n = tonumber(v)
  if n < lo or n > hi then
    prl_fail('BADARG', name .. ' must be in ' .. string.format('%d..%d', lo, hi) .. ', got ' .. v)
  end
  return n
end

local function prl_int(argv, i, name, lo, hi, default)
  local v = argv[i]
  if v == nil then
    if default ~= nil then return default end
    prl_fail('BADARG', name .. ' is missing')
  end
  -- The common case costs one anchored find and one conversion: plain digits (no sign, so never
  -- '-0') of at most 17 characters, in range. Arithmetic converts such a string exactly as
  -- tonumber does, once (tonumber converts twice); a single digit (a cost of 1, a flag) is read
  -- from its byte. Anything else gets the full check above, which accepts or rejects exactly as
  -- it always did, with its message.
  local len = #v
  if len == 1 then
    local n = string.byte(v) - 48
    if n >= 0 and n <= 9 and n >= lo and n <= hi then return n end
  elseif len <= 17 and string.find(v, '^%d+$') then
    local n = v + 0
    if n >= lo and n <= hi then return n end
  end
  return prl_int_checked(v, name, lo, hi)
end

local function prl_str(argv, i, name, lo, hi, default)
  local v = argv[i]
  if v == nil then
    if default ~= nil then return default end
    prl_fail('BADARG', name .. ' is missing')
  end
  if #v < lo or #v > hi then
    if lo == 1 and #v == 0 then prl_fail('BADARG', name .. ' must not be empty') end
    prl_fail('BADARG', name .. ' must be ' .. lo .. '..' .. hi .. ' bytes long, got ' .. #v)
  end
  return v
end

local function prl_enum(argv, i, name, choices, default)
  local v = argv[i]
  if v == nil then
    if default ~= nil then return default end
    prl_fail('BADARG', name .. ' is missing')
  end
  for _, c in ipairs(choices) do
    if v == c then return v end
  end
  prl_fail('BADARG', name .. ' must be one of ' .. table.concat(choices, '|') .. ', got ' .. prl_shown(v))
end

local function prl_arity(op, keys, argv, nkeys, min_args, max_args)
  if nkeys >= 0 and #keys ~= nkeys then
    prl_fail('BADARG', op .. ' takes ' .. nkeys .. ' keys, got ' .. #keys)
  end
  if #argv < min_args or (max_args >= 0 and #argv > max_args) then
    local range = max_args < 0 and (min_args .. ' or more') or
      (min_args == max_args and tostring(min_args) or (min_args .. '..' .. max_args))
    prl_fail('BADARG', op .. ' takes ' .. range .. ' arguments, got ' .. #argv)
  end
end

-- Milliseconds since the epoch from the server clock; never from a client.
-- TIME replies decimal strings: arithmetic converts each once (tonumber converts twice), the
-- seconds only when they changed since the last call (strings compare by identity), and
-- us - us % 1000 is exact.
local prl_last_s, prl_last_s_ms = nil, 0
local function prl_now_ms()
  local t = redis.call('TIME')
  local s, us = t[1], t[2] + 0
  if s ~= prl_last_s then prl_last_s, prl_last_s_ms = s, s * 1000 end
  return prl_last_s_ms + (us - us % 1000) / 1000
end

-- A lease's holder counts it from before its call was sent, so the server must keep a lease of
-- `ttl` ms for longer than `ttl` after any instant of the call. Two things cut it short by up to
-- a millisecond: `now` above is a whole ms (a lease scored `now + ttl` and ending there ends up
-- to 1 ms early), and Redis 7.0 deletes a key at once when it is given an expiry that is not
-- after the current ms, where a key otherwise lives on through the ms of its expiry: PEXPIREAT
-- `now + 1` deletes the key when the clock has reached the next ms since TIME was read, and even
-- `PEXPIRE k 1` does when a ms ends while the command runs. So a lease lasts one ms more on the
-- server: PEXPIRE key ttl + PRL_LEASE_SLACK_MS; an exclusive end scored `now + ttl +
-- PRL_LEASE_SLACK_MS`; a key holding an inclusive end kept until that end + PRL_LEASE_SLACK_MS.
local PRL_LEASE_SLACK_MS = 1

-- Runs an operation and turns what it raised into an error reply that always carries a code.
-- Redis hands pcall the message as a string. Our own codes pass through; Redis' WRONGTYPE (a
-- declared key holds another type) becomes WRONGTYPE; any other Redis error raised inside an
-- operation ("ERR value is not an integer", NOGROUP, ...) comes from stored state the operation
-- could not use and becomes BADSTATE; a Lua bug ("user_script:3: attempt to ...") is INTERNAL.
-- Operations read and check before their first write, so an error reply means nothing changed.
local function prl_guard(fn, keys, argv)
  local ok, result = pcall(fn, keys, argv)
  if ok then return result end
  if type(result) == 'table' and result.err then result = result.err end
  result = tostring(result)
  if string.sub(result, 1, 11) == 'PYREDISLUA:' then return redis.error_reply(result) end
  if string.sub(result, 1, 10) == 'WRONGTYPE ' then
    return redis.error_reply('PYREDISLUA:' .. result)
  end
  if string.match(result, '^[A-Z][A-Z]+ ') then
    return redis.error_reply('PYREDISLUA:BADSTATE ' .. result)
  end
  return redis.error_reply('PYREDISLUA:INTERNAL ' .. result)
end
