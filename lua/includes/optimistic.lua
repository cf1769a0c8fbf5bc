-- Helpers of the optimistic operations (lua/optimistic/*.lua): compare-and-set on versioned values.
--
-- A versioned value is a hash of four fields:
--   t  the type marker 'prl:optimistic': a hash without it is not a versioned value, and every
--      operation refuses it (BADSTATE) before writing anything
--   n  the version, a positive decimal integer below 2^53. A write sets it to
--      max(n + 1, server time in microseconds): strictly increasing while the key lives, and a
--      key created again after a delete or an expiry, or written on a promoted replica that lost
--      the last writes, starts above any version it had (unless the server clock went back)
--   v  the value (bytes)
--   w  the request id of the write that made this version ('' when it gave none): a write re-sent
--      after a lost reply recognises its own version instead of reporting a mismatch
-- The key has no TTL unless a write gave one (then it expires as any key does).

local OPT_MARK = 'prl:optimistic'
local OPT_MAX_VERSION = 9007199254740991  -- 2^53 - 1: the largest integer a Lua number holds exactly

-- The state of `key`: version (0 when absent), value (false when absent), the writer's request
-- id. Refuses another Redis type (WRONGTYPE) and a hash that is not a well-formed versioned
-- value (BADSTATE).
local function opt_read(key)
  local f = redis.call('HMGET', key, 't', 'n', 'v', 'w')
  if not (f[1] or f[2] or f[3] or f[4]) then
    if redis.call('EXISTS', key) == 1 then
      prl_fail('BADSTATE', prl_shown(key) .. ' holds a hash that is not a versioned value')
    end
    return 0, false, ''
  end
  if f[1] ~= OPT_MARK then
    prl_fail('BADSTATE', prl_shown(key) .. ' holds a hash that is not a versioned value')
  end
  local n = f[2]
  if not n or #n > 16 or not string.find(n, '^[1-9]%d*$') or tonumber(n) > OPT_MAX_VERSION
      or not f[3] then
    prl_fail('BADSTATE', prl_shown(key) .. ' holds a malformed versioned value')
  end
  return tonumber(n), f[3], f[4] or ''
end

-- The version a write gives a value whose version is `current` (0: absent), at server time
-- `now_us` (microseconds).
local function opt_next(key, current, now_us)
  local v = current + 1
  if now_us > v then v = now_us end
  if v > OPT_MAX_VERSION then
    prl_fail('BADSTATE', 'the version of ' .. prl_shown(key) .. ' cannot grow any further')
  end
  return v
end

local function opt_now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Write `value` at `version` under `key` with the request id, then apply ttl_ms: > 0 sets the
-- TTL, 0 keeps the key's TTL (none for a new key), -1 removes it.
local function opt_write(key, value, version, request_id, ttl_ms)
  redis.call('HSET', key, 't', OPT_MARK, 'n', string.format('%.0f', version), 'v', value,
    'w', request_id)
  if ttl_ms > 0 then
    redis.call('PEXPIRE', key, ttl_ms)
  elseif ttl_ms < 0 then
    redis.call('PERSIST', key)
  end
end
