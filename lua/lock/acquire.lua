--[[
name: lock.acquire
version: 1.4.1
summary: Take the lock for an owner token and return a fencing token, or report how long it stays busy.
flags: none
resend: safe
includes: lock, metrics
keys: keyset lock + metrics
argv:
  token: str 1..256; the owner token (unique per holder)
  ttl_ms: int 1..1000000000000; lease length in milliseconds
  wait_ms: int -1..86400000 = -1; -1 (or absent): the caller is not a waiter; > 0: when busy, register as a waiter until this many ms from now (the registration must outlive your BLPOP); 0: end your registration (a waiter giving up). A waiter passes >= 0 on every call until it holds the lock or gives up
  fence_ttl_ms: int 0..1000000000000 = 0; 0: the fence counter never expires (durable); > 0: it expires this long after the last acquire or grant (ephemeral)
returns:
  {1, fence, ttl_ms} when this token holds the lock: acquired (fence from the counter), took over a
  grant nobody popped (the grant's fence), or a repeat by the holder (same fence, lease renewed);
  {0, pttl} when busy, pttl being the milliseconds until the lease ends
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
  BADSTATE: the lock hash or the fence counter holds something else than this operation keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
-- The hot paths read one field: a free lock, and a busy one with no grant, need no other.
local owner = rcall('HGET', lock_key, 'owner')

if owner == token then
  -- A repeat by the holder (a call re-sent after a lost reply, or a renewal): same fence.
  local fence = tonumber(rcall('HGET', lock_key, 'fence'))
  if not fence then prl_fail('BADSTATE', 'the lock hash holds no valid fence') end
  rcall('PEXPIRE', lock_key, ttl_ms + PRL_LEASE_SLACK_MS)
  return {1, fence, ttl_ms}
end

local waits = wait_ms >= 0

if owner and owner == 'carry:' .. token then
  -- The caller's release kept the lock for it (turn_ms): its next hold, with the next fence.
  local previous = tonumber(rcall('HGET', lock_key, 'fence') or '')
  if not previous then prl_fail('BADSTATE', 'the lock hash holds no valid fence') end
  if waits then rcall('ZSCORE', waiters_key, token) end  -- its type, before the first write
  local M = metrics_key and metrics_open(metrics_key, 'lock', prl_now_ms())
  local fence = lock_next_fence(fence_key, previous)
  lock_own(lock_key, fence_key, token, fence, ttl_ms + PRL_LEASE_SLACK_MS,
           fence_ttl_ms > 0 and lock_int(ARGV[4], fence_ttl_ms) or nil)
  if waits then rcall('ZREM', waiters_key, token) end
  if M then
    metrics_count(M, 'acquired', 1)
    metrics_flush(M)
  end
  return {1, fence, ttl_ms}
end

if owner then
  local now, now_arg = lock_now()
  local takeover = false
  -- Only a release's grant makes the owner a 'grant:' token (a token chosen so has no grant
  -- fields, and stays busy as before).
  local held = string.sub(owner, 1, 6) == 'grant:' and
    rcall('HMGET', lock_key, 'fence', 'grant_until', 'granted_by', 'gw', 'gd')
  if held and held[2] and rcall('LINDEX', signal_key, 0) == owner then
    -- A grant still in the signal list: no waiter was blocked when it was made (BLPOP would have
    -- taken it at once) and none has popped it since. A waiter registering now takes it over
    -- instead of popping it later: its lease would then be counted from after the grant was made.
    -- A registered waiter other than the releaser may take it too, anyone once it is no longer
    -- reserved (its waiter died, or gave up).
    local reserved_until, consumed_until = tonumber(held[2]), tonumber(held[5] or '0')
    if not reserved_until or not consumed_until then
      prl_fail('BADSTATE', 'the lock hash holds a malformed grant')
    end
    if now >= reserved_until or wait_ms > 0 then
      takeover = true
    elseif token ~= held[3] then
      if token == held[4] and consumed_until > now then
        takeover = true
      elseif waits then
        takeover = tonumber(rcall('ZSCORE', waiters_key, token) or '0') > now
      end
    end
  end
  if not takeover then
    if wait_ms > 0 then
      -- A few expired registrations go with every new one: they never pile up.
      local gone = rcall('ZRANGEBYSCORE', waiters_key, 0, now_arg, 'LIMIT', 0, 4)
      local M = metrics_key and metrics_open(metrics_key, 'lock', now)
      if #gone > 0 then rcall('ZREM', waiters_key, unpack(gone)) end
      lock_register(waiters_key, token, now + wait_ms, lock_neg(ARGV[2], ttl_ms),
                    lock_int(ARGV[3], wait_ms))
      if M then
        -- the wait begins (at the first registration); expired registrations' waits end
        metrics_wait_forget(M, gone)
        metrics_wait_begin(M, token, now)
        metrics_flush(M)
      end
    elseif waits then
      local M = metrics_key and metrics_open(metrics_key, 'lock', now)
      rcall('ZREM', waiters_key, token)
      if M then metrics_wait_end(M, token, nil, now) end  -- gave up: no sample
    end
    return {0, rcall('PTTL', lock_key)}
  end
  -- Take over the unpopped grant: nobody ever held with its fence, so the taker gets it.
  local fence = tonumber(held[1])
  if not fence then prl_fail('BADSTATE', 'the lock hash holds no valid fence') end
  local fence_arg = lock_stored(held[1], fence)
  local registered = rcall('ZSCORE', waiters_key, token)
  if fence_ttl_ms > 0 then rcall('GET', fence_key) end
  local M = metrics_key and metrics_open(metrics_key, 'lock', now)
  local since = registered and metrics_wait_since(M, token)
  rcall('DEL', signal_key, lock_key)
  lock_own(lock_key, fence_key, token, fence_arg, ttl_ms + PRL_LEASE_SLACK_MS,
           fence_ttl_ms > 0 and lock_int(ARGV[4], fence_ttl_ms) or nil)
  if registered then rcall('ZREM', waiters_key, token) end
  local consumed, consumed_until = held[4], tonumber(held[5] or '0')
  if consumed and consumed ~= token and consumed_until > now then
    -- The waiter the grant was meant for is still waiting: it keeps its place.
    rcall('ZADD', waiters_key, 'NX', consumed_until, consumed)
    if rcall('PEXPIRE', waiters_key, consumed_until - now, 'GT') == 0 and
        rcall('PTTL', waiters_key) < 0 then
      rcall('PEXPIRE', waiters_key, consumed_until - now)
    end
  end
  if M then
    -- the grant was counted as an acquisition when it was made; the taker's wait ends here
    if registered then metrics_wait_end(M, token, since, now) end
    metrics_flush(M)
  end
  return {1, fence, ttl_ms}
end

-- Free. A waiter (wait_ms given) may be registered: read its entry first, so a mistyped waiters
-- key fails before anything is written; the fence counter fails (if it does) at the first write.
local registered = waits and rcall('ZSCORE', waiters_key, token)
local now = metrics_key and prl_now_ms()
local M = metrics_key and metrics_open(metrics_key, 'lock', now)
local since = registered and metrics_wait_since(M, token)
local fence = rcall('INCR', fence_key)
lock_own(lock_key, fence_key, token, fence, ttl_ms + PRL_LEASE_SLACK_MS,
         fence_ttl_ms > 0 and lock_int(ARGV[4], fence_ttl_ms) or nil)
if registered then rcall('ZREM', waiters_key, token) end
if M then
  -- an acquisition; contended when the caller was a registered waiter
  metrics_count(M, 'acquired', 1)
  if registered then
    metrics_count(M, 'contended', 1)
    metrics_wait_end(M, token, since, now)
  end
  metrics_flush(M)
end
return {1, fence, ttl_ms}
