-- Rate limiting: one decision function per algorithm, and the all-or-none driver.
--
-- Arithmetic is exact: every quantity is an integer below 2^53 (limit <= 10^6, period <= 31 days,
-- so limit*period, burst*period and cost*period fit), and divisions go through ratelimit_div,
-- which corrects the float quotient with integer products. So "retry after R ms" is exact: a
-- request at now+R is admitted, one at now+R-1 is not (with no other traffic).
--
-- A decision is a table {ok, remaining, retry, reset, commit}: retry is -1 when the cost can never
-- be admitted (above the limit/burst), 0 when admitted now; commit() writes the charge. Deciding
-- only reads (and checks what it read); every caller decides every key first and commits after,
-- so an error reply (BADSTATE, WRONGTYPE) comes before the first write and changes nothing.
--
-- State carries its algorithm, so no limiter ever reads another's state (a key reused by a
-- different algorithm, or holding anything else, is BADSTATE before anything is written). The
-- marker rides in data each decision reads anyway, so checking it costs no extra redis.call:
--   gcra            string "gcra:<tat_ms>:<frac>:<limit>"
--   token_bucket    string "tb:<tokens*period>:<ts_ms>:<period>"
--   fixed_window    string "fw:<window index>:<count>"
--   sliding_window  string "sw:<window index>:<count>:<previous count>"
--   sliding_log     zset, one member per admitted unit ("<ms>:<n>" scored by ms) and the
--                   marker member "" scored 0 (read with ZREVRANK, which also counts the entries)
--   concurrency     zset of lease ids scored by lease end, and the marker member
--                   RATELIMIT_SLOTS_MARK scored 0 (longer than any lease id, so never one)

-- (a literal: the library's main chunk runs without the string library at FUNCTION LOAD)
local RATELIMIT_SLOTS_MARK =
  '~pyredislua:concurrency:~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'

local function ratelimit_div(a, b)
  -- floor(a / b) for integers 0 <= a < 2^53, 1 <= b < 2^53, exactly. (q - q % 1 floors a
  -- non-negative q without a call to math.floor.)
  local q = a / b
  q = q - q % 1
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

local function ratelimit_int(x)
  return string.format('%d', x)
end

local function ratelimit_ceil_div(a, b)
  if a <= 0 then return 0 end
  local q = ratelimit_div(a, b)
  if q * b < a then q = q + 1 end
  return q
end

-- What a stored value is, for error messages (the slow path only).
local function ratelimit_kind_of(stored, algo)
  local prefix = string.match(stored, '^(%l+):')
  local names = {gcra = 'gcra', tb = 'token_bucket', fw = 'fixed_window', sw = 'sliding_window'}
  local name = prefix and names[prefix]
  if name == algo then return 'malformed ' .. algo .. ' state' end
  if name then return name .. ' state' end
  return 'something else'
end

local function ratelimit_not_mine(key, algo, what)
  prl_fail('BADSTATE', 'key ' .. prl_shown(key) .. ' holds ' .. what .. ', not ' .. algo ..
    ' rate limiter state (nothing changed)')
end

-- A string that is not this algorithm's state (the slow path only).
local function ratelimit_bad_string(key, algo, stored)
  ratelimit_not_mine(key, algo, ratelimit_kind_of(stored, algo))
end

-- A zset without its marker: absent (false) or someone else's (BADSTATE). Only reached when the
-- marker is missing, i.e. on an identity's first call of a period.
local function ratelimit_zset_absent(key, algo)
  if redis.call('EXISTS', key) == 1 then
    ratelimit_not_mine(key, algo, 'a sorted set without its marker')
  end
  return false
end

-- GCRA: "gcra:tat_ms:frac:limit", the theoretical arrival time tat = tat_ms + frac/limit.
-- In units of 1/limit ms, the emission interval is `period` and the tolerance burst*period.
local function ratelimit_gcra(s, cost, now)
  local L, P, B = s.limit, s.period, s.burst
  local d = 0 -- (tat - now) * L, clamped at 0: how far the bucket is drained
  local stored = redis.call('GET', s.key)
  if stored then
    local ms, frac, lim = string.match(stored, '^gcra:(%-?%d+):(%d+):([1-9]%d*)$')
    if not ms then ratelimit_bad_string(s.key, 'gcra', stored) end
    ms, frac, lim = ms + 0, frac + 0, lim + 0
    if lim ~= L then frac = math.ceil(frac * L / lim) end -- the limit changed: rescale
    local ahead = math.min(ms - now, ratelimit_ceil_div(B * P, L) + 1)
    if ahead > 0 then d = math.min(ahead * L + frac, B * P) elseif ahead == 0 then d = frac end
  end
  local r = {ok = false, retry = -1}
  local after = d
  if cost <= B then
    local nd = d + cost * P
    if nd <= B * P then
      r.ok, r.retry, after = true, 0, nd
      r.commit = function()
        local q = ratelimit_div(nd, L)
        redis.call('SET', s.key, string.format('gcra:%d:%d:%d', now + q, nd - q * L, L),
          'PX', ratelimit_int(math.max(1, ratelimit_ceil_div(nd, L))))
      end
    else
      r.retry = ratelimit_ceil_div(nd - B * P, L)
    end
  end
  r.remaining = ratelimit_div(B * P - after, P)
  r.reset = ratelimit_ceil_div(after, L)
  return r
end

-- Token bucket: "tb:u:ts:p"; u = tokens * period (so one ms refills `limit` units exactly).
local function ratelimit_token_bucket(s, cost, now)
  local L, P, B = s.limit, s.period, s.burst
  local cap = B * P
  local u, ts = cap, now
  local stored = redis.call('GET', s.key)
  if stored then
    local su, sts, sp = string.match(stored, '^tb:(%d+):(%d+):([1-9]%d*)$')
    if not su then ratelimit_bad_string(s.key, 'token_bucket', stored) end
    u, ts = su + 0, sts + 0
    local p = sp + 0
    if p ~= P then u = math.floor(u / p * P) end -- the period changed: rescale
    if now > ts then
      local elapsed = math.min(now - ts, ratelimit_ceil_div(cap, L) + 1)
      u = math.min(cap, u + elapsed * L)
      ts = now
    end
    u = math.min(cap, u)
  end
  local r = {ok = false, retry = -1}
  local after = u
  if cost <= B then
    local need = cost * P
    if u >= need then
      r.ok, r.retry, after = true, 0, u - need
      r.commit = function()
        redis.call('SET', s.key, string.format('tb:%d:%d:%d', after, ts, P),
          'PX', ratelimit_int(math.max(1, (ts - now) + ratelimit_ceil_div(cap - after, L))))
      end
    else
      r.retry = (ts - now) + ratelimit_ceil_div(need - u, L)
    end
  end
  r.remaining = ratelimit_div(after, P)
  r.reset = math.max(0, (ts - now) + ratelimit_ceil_div(cap - after, L))
  return r
end

-- Sliding log: sorted set, one member "<ms>:<n>" per unit of cost scored by its server time, and
-- the marker member "" scored 0, below every entry. An entry counts while now - score < period:
-- never more than `limit` in any window of `period` ms. The ZREVRANK of the marker checks it and
-- counts the entries (live or not) in one call; live entries are the highest, so the k-th oldest
-- live one sits at a rank computed from that total alone. A hit far from the limit needs no count
-- (the trim's reply makes it exact); a denial of cost 1 reads one entry instead of counting.
local function ratelimit_sliding_log(s, cost, now)
  local L, P = s.limit, s.period
  local floor_score = now - P -- entries scored <= floor_score have left the window
  local total = redis.call('ZREVRANK', s.key, '')
  if not total then
    total = 0
    ratelimit_zset_absent(s.key, 'sliding_log')
  end
  local count, exact = total, total == 0 -- the live entries; an upper bound while not exact
  local function count_live()
    if not exact then
      count = redis.call('ZCOUNT', s.key, string.format('(%d', floor_score), '+inf')
      exact = true
    end
  end
  local function newest()
    return redis.call('ZRANGE', s.key, '-1', '-1', 'WITHSCORES')[2] + 0
  end
  local r = {ok = false, retry = -1, reset = 0}
  local retry_score = nil -- the entry whose leaving admits this cost
  if cost > L then
    count_live()
  elseif count + cost > L then
    -- the (count + cost - L)-th oldest live entry sits at rank total + cost - L (the marker is 0)
    local rank = ratelimit_int(total + cost - L)
    local score = redis.call('ZRANGE', s.key, rank, rank, 'WITHSCORES')[2] + 0
    if score > floor_score then
      retry_score = score
      -- denied: count >= L - cost + 1; with cost 1 nothing remains, else count them
      if cost == 1 then count, exact = L, true else count_live() end
    else
      count = L - cost -- at most this many are live: admitted (counted below if need be)
    end
  end
  if not s.write then count_live() end
  if cost <= L and not retry_score then
    r.ok, r.retry = true, 0
    r.remaining = L - count - cost -- exact once counted or committed
    if cost > 0 then r.reset = P elseif count > 0 then r.reset = newest() + P - now end
    if not exact then
      r.settle = function() -- another limit of the call denies: report this one exactly
        count_live()
        r.remaining = L - count - cost
      end
    end
    r.commit = function()
      local args = {}
      if total > 0 then
        count, exact = total - redis.call('ZREMRANGEBYSCORE', s.key, '(0',
          ratelimit_int(floor_score)), true
      else
        args[1], args[2] = '0', ''
      end
      -- members "<ms>:<n>": n counts on from the live entries, so members of one ms never repeat
      local stamp = ratelimit_int(now)
      local seq = count
      for i = 1, cost do
        seq = seq + 1
        args[#args + 1] = stamp
        args[#args + 1] = string.format('%s:%d', stamp, seq)
        if #args >= 1000 or i == cost then
          redis.call('ZADD', s.key, unpack(args))
          args = {}
        end
      end
      redis.call('PEXPIRE', s.key, ratelimit_int(P))
      r.remaining = L - count - cost
    end
    return r
  end
  if retry_score then r.retry = retry_score + P - now end
  r.remaining = math.max(0, L - count)
  if count > 0 then r.reset = math.max(0, newest() + P - now) end
  return r
end

-- Windows aligned on multiples of `period` since the epoch: fixed window "fw:w:c" (count in
-- window w), sliding window "sw:w:c:p" (and p, the count of window w-1).
local function ratelimit_window_state(s, now, sliding)
  local idx = math.floor(now / s.period)
  local stored = redis.call('GET', s.key)
  local cur, prev, same = 0, 0, false
  if stored then
    local w, c, p
    if sliding then
      w, c, p = string.match(stored, '^sw:(%d+):(%d+):(%d+)$')
      if not w then ratelimit_bad_string(s.key, 'sliding_window', stored) end
    else
      w, c = string.match(stored, '^fw:(%d+):(%d+)$')
      if not w then ratelimit_bad_string(s.key, 'fixed_window', stored) end
    end
    w = w + 0
    if w == idx then
      cur, prev, same = c + 0, (p or 0) + 0, true
    elseif w == idx - 1 then
      prev = c + 0
    end
  end
  return idx, now - idx * s.period, cur, prev, same
end

-- Fixed window: at most `limit` per aligned window, but up to 2*limit across a boundary.
local function ratelimit_fixed_window(s, cost, now)
  local L, P = s.limit, s.period
  local idx, e, cur, _, same = ratelimit_window_state(s, now, false)
  local r = {ok = false, retry = -1}
  local after = cur
  if cost <= L then
    if cur + cost <= L then
      r.ok, r.retry, after = true, 0, cur + cost
      r.commit = function() -- (this window's key already expires at its end)
        if same then
          redis.call('SET', s.key, string.format('fw:%d:%d', idx, after), 'KEEPTTL')
        else
          redis.call('SET', s.key, string.format('fw:%d:%d', idx, after), 'PX',
            ratelimit_int(P - e))
        end
      end
    else
      r.retry = P - e
    end
  end
  r.remaining = L - after
  r.reset = after > 0 and (P - e) or 0
  return r
end

-- Sliding window counter: estimate = prev * (P - e) / P + cur, compared exactly as
-- prev * (P - e) + (cur + cost) * P <= L * P.
local function ratelimit_sliding_window(s, cost, now)
  local L, P = s.limit, s.period
  local idx, e, cur, prev, same = ratelimit_window_state(s, now, true)
  local r = {ok = false, retry = -1}
  local after = cur
  if cost <= L then
    if prev * (P - e) + (cur + cost) * P <= L * P then
      r.ok, r.retry, after = true, 0, cur + cost
      r.commit = function() -- (this window's key already expires at the end of the next)
        if same then
          redis.call('SET', s.key, string.format('sw:%d:%d:%d', idx, after, prev), 'KEEPTTL')
        else
          redis.call('SET', s.key, string.format('sw:%d:%d:%d', idx, after, prev), 'PX',
            ratelimit_int(2 * P - e))
        end
      end
    else
      -- first instant e2 >= e in this window with prev*(P-e2) <= (L-cur-cost)*P ...
      local room = L - cur - cost
      local e2 = P
      if room >= 0 then e2 = P - ratelimit_div(room * P, prev) end
      if e2 < P then
        r.retry = math.max(1, e2 - e)
      else
        -- ... else in the next window, where prev becomes cur and cur is 0
        local e3 = 0
        if cur > 0 then e3 = math.max(0, P - ratelimit_div((L - cost) * P, cur)) end
        r.retry = (P - e) + e3
      end
    end
  end
  r.remaining = math.max(0, ratelimit_div(math.max(0, L * P - prev * (P - e) - after * P), P))
  r.reset = 0
  if after > 0 then r.reset = 2 * P - e elseif prev > 0 then r.reset = P - e end
  return r
end

-- (functions and branches, not tables: a script runs this whole file on every call)
local function ratelimit_algorithm(name)
  if name == 'gcra' then return ratelimit_gcra end
  if name == 'token_bucket' then return ratelimit_token_bucket end
  if name == 'sliding_log' then return ratelimit_sliding_log end
  if name == 'sliding_window' then return ratelimit_sliding_window end
  return ratelimit_fixed_window
end

local function ratelimit_algorithm_arg(argv, j)
  return prl_enum(argv, j, 'algorithm', {'gcra', 'token_bucket', 'sliding_log', 'sliding_window',
    'fixed_window'}, nil)
end

-- Validate one limit's arguments (limit, period_ms, burst at argv[j..j+2]).
local function ratelimit_spec(key, a, argv, j, write)
  local limit = prl_int(argv, j, 'limit', 1, 1000000, nil)
  local period = prl_int(argv, j + 1, 'period_ms', 1, 2678400000, nil)
  local burst = prl_int(argv, j + 2, 'burst', 0, 1000000, nil)
  if a == 'sliding_log' and limit > 10000 then
    prl_fail('BADARG', 'limit of a sliding log must be in 1..10000, got ' .. limit)
  end
  if burst > 0 and a ~= 'gcra' and a ~= 'token_bucket' then
    prl_fail('BADARG', 'burst applies to gcra and token_bucket only; send 0 for ' .. a)
  end
  if burst == 0 then burst = limit end
  return {key = key, algo = a, limit = limit, period = period, burst = burst, write = write}
end

-- Validate the per-limit arguments (all of them, before any write): `per` is 3 for
-- (limit, period_ms, burst) with a fixed algorithm, 4 for (algorithm, limit, period_ms, burst).
local function ratelimit_specs(keys, argv, start, per, algo, write)
  local n = #keys
  if n < 1 or n > 16 then
    prl_fail('BADARG', 'takes 1..16 keys (one per limit), got ' .. n)
  end
  if #argv - start + 1 ~= n * per then
    prl_fail('BADARG', 'takes ' .. per .. ' arguments per key after cost (' .. n * per ..
      ' for ' .. n .. ' keys), got ' .. (#argv - start + 1))
  end
  local specs, seen = {}, {}
  for i = 1, n do
    local key = keys[i]
    if seen[key] then prl_fail('BADARG', 'key ' .. prl_shown(key) .. ' is given twice') end
    seen[key] = true
    local j = start + (i - 1) * per
    local a = algo
    if per == 4 then
      a = ratelimit_algorithm_arg(argv, j)
      j = j + 1
    end
    specs[i] = ratelimit_spec(key, a, argv, j, write)
  end
  return specs
end

-- Decide every limit, charge all or none. Reply:
-- {allowed, remaining, retry_after_ms, reset_after_ms, now_ms, binding limit (1-based),
--  then per limit: allowed, remaining, retry_after_ms, reset_after_ms}
local function ratelimit_decide(keys, argv, start, per, algo, cost, write)
  local specs = ratelimit_specs(keys, argv, start, per, algo, write)
  local now = prl_now_ms()
  local decisions, all_ok = {}, true
  for i, s in ipairs(specs) do
    local d = ratelimit_algorithm(s.algo)(s, cost, now)
    decisions[i] = d
    if not d.ok then all_ok = false end
  end
  if write and all_ok then
    for _, d in ipairs(decisions) do d.commit() end
  elseif not all_ok then
    for _, d in ipairs(decisions) do
      if d.settle then d.settle() end
    end
  end
  local out = {all_ok and 1 or 0, 0, 0, 0, now, 1}
  local remaining, retry, reset, binding = nil, 0, 0, 1
  for i, d in ipairs(decisions) do
    if remaining == nil or d.remaining < remaining then remaining = d.remaining end
    if all_ok then
      if d.remaining == remaining then binding = i end
    elseif not d.ok and retry ~= -1 and (d.retry == -1 or d.retry > retry) then
      retry, binding = d.retry, i
    end
    if d.reset > reset then reset = d.reset end
    out[#out + 1] = d.ok and 1 or 0
    out[#out + 1] = d.remaining
    out[#out + 1] = d.retry
    out[#out + 1] = d.reset
  end
  out[2], out[3], out[4], out[6] = remaining, retry, reset, binding
  return out
end

-- One limit: the common call, without the generic tables and closures above. The same checks in
-- the same order (arguments, then TIME, then read and check the state, then write) and the same
-- replies as ratelimit_decide with one key; each function returns allowed (1|0), remaining,
-- retry_after_ms and reset_after_ms, and writes the charge itself when admitted and `write`.
--
-- What a call costs inside Redis is mostly fixed (the FCALL, TIME, one read, one write, the
-- reply), so these paths spend little besides: no tables but the reply, no closures, numbers
-- turned into strings with one string.format each (Lua's own number-to-string conversion, also
-- used for a number passed to redis.call, is a slower %.14g/%.17g), strings into numbers by
-- arithmetic (one conversion; tonumber makes two), the limit and period written from their
-- argument strings, and stored fields compared as strings where equality is all that matters.
-- A window's first write sets its key's expiry to the end of the window (fixed) or of the next
-- one (sliding); a later write in the same window is `SET ... KEEPTTL`, which keeps that very
-- expiry (re-setting it would write the same instant at twice the cost).

local function ratelimit_gcra_one(key, cost, L, P, B, ls, now, write)
  local BP = B * P
  local d = 0 -- (tat - now) * L, clamped at 0: how far the bucket is drained
  local stored = redis.call('GET', key)
  if stored then
    local ms, frac, lim = string.match(stored, '^gcra:(%-?%d+):(%d+):([1-9]%d*)$')
    if not ms then ratelimit_bad_string(key, 'gcra', stored) end
    frac = frac + 0
    if lim ~= ls then -- written for another limit (or spelt otherwise): rescale if it differs
      lim = lim + 0
      if lim ~= L then frac = math.ceil(frac * L / lim) end
    end
    local ahead = ms - now
    if ahead > 0 then
      d = ahead * L + frac -- a float far above BP when ahead is huge: clamped all the same
      if d > BP then d = BP end
    elseif ahead == 0 then
      d = frac
    end
  end
  if cost <= B then
    local nd = d + cost * P
    if nd <= BP then
      local q = ratelimit_div(nd, L)
      local reset = q
      if q * L < nd then reset = q + 1 end
      if write then
        redis.call('SET', key, string.format('gcra:%d:%d:%s', now + q, nd - q * L, ls), 'PX',
          reset > 1 and string.format('%d', reset) or '1')
      end
      return 1, ratelimit_div(BP - nd, P), 0, reset
    end
    return 0, ratelimit_div(BP - d, P), ratelimit_ceil_div(nd - BP, L), ratelimit_ceil_div(d, L)
  end
  return 0, ratelimit_div(BP - d, P), -1, ratelimit_ceil_div(d, L)
end

local function ratelimit_token_bucket_one(key, cost, L, P, B, ps, now, write)
  local cap = B * P
  local u, ts = cap, now
  local stored = redis.call('GET', key)
  if stored then
    local su, sts, sp = string.match(stored, '^tb:(%d+):(%d+):([1-9]%d*)$')
    if not su then ratelimit_bad_string(key, 'token_bucket', stored) end
    u, ts = su + 0, sts + 0
    if sp ~= ps then -- written for another period (or spelt otherwise): rescale if it differs
      local p = sp + 0
      if p ~= P then u = math.floor(u / p * P) end
    end
    if now > ts then
      u = u + (now - ts) * L -- a float far above cap after a long idle: clamped all the same
      ts = now
    end
    if u > cap then u = cap end
  end
  local ok, retry, after = 0, -1, u
  if cost <= B then
    local need = cost * P
    if u >= need then
      ok, retry, after = 1, 0, u - need
    else
      retry = (ts - now) + ratelimit_ceil_div(need - u, L)
    end
  end
  local reset = (ts - now) + ratelimit_ceil_div(cap - after, L)
  if ok == 1 and write then
    redis.call('SET', key, string.format('tb:%d:%d:%s', after, ts, ps), 'PX',
      reset > 1 and string.format('%d', reset) or '1')
  end
  return ok, ratelimit_div(after, P), retry, reset > 0 and reset or 0
end

local function ratelimit_fixed_window_one(key, cost, L, P, now, write)
  local e = now % P -- exact: now < 2^53 (and so is idx * P below)
  local idx = (now - e) / P
  local left = P - e -- ms until the window ends
  local cur, w = 0, nil
  local stored = redis.call('GET', key)
  if stored then
    local c
    w, c = string.match(stored, '^fw:(%d+):(%d+)$')
    if not w then ratelimit_bad_string(key, 'fixed_window', stored) end
    if w + 0 == idx then cur = c + 0 else w = nil end
  end
  if cost <= L then
    if cur + cost <= L then
      if write then
        if w then -- this window's key already expires at its end
          redis.call('SET', key, string.format('fw:%s:%d', w, cur + cost), 'KEEPTTL')
        else
          redis.call('SET', key, string.format('fw:%d:%d', idx, cur + cost), 'PX',
            string.format('%d', left))
        end
      end
      return 1, L - cur - cost, 0, (cur + cost > 0) and left or 0
    end
    return 0, L - cur, left, cur > 0 and left or 0
  end
  return 0, L - cur, -1, cur > 0 and left or 0
end

local function ratelimit_sliding_window_one(key, cost, L, P, now, write)
  local e = now % P -- exact, as above
  local idx = (now - e) / P
  local cur, prev = 0, 0
  local w, c, p -- the stored strings; w stays set only when the state is of this window
  local stored = redis.call('GET', key)
  if stored then
    w, c, p = string.match(stored, '^sw:(%d+):(%d+):(%d+)$')
    if not w then ratelimit_bad_string(key, 'sliding_window', stored) end
    local wn = w + 0
    if wn == idx then
      cur, prev = c + 0, p + 0
    else
      if wn == idx - 1 then prev = c + 0 end
      w = nil
    end
  end
  local ok, retry, after = 0, -1, cur
  if cost <= L then
    if prev * (P - e) + (cur + cost) * P <= L * P then
      ok, retry, after = 1, 0, cur + cost
      if write then
        if w then -- this window's key already expires at the end of the next
          redis.call('SET', key, string.format('sw:%s:%d:%s', w, after, p), 'KEEPTTL')
        else
          redis.call('SET', key, string.format('sw:%d:%d:%d', idx, after, prev), 'PX',
            string.format('%d', 2 * P - e))
        end
      end
    else
      local room = L - cur - cost
      local e2 = P
      if room >= 0 then e2 = P - ratelimit_div(room * P, prev) end
      if e2 < P then
        retry = e2 - e
        if retry < 1 then retry = 1 end
      else
        local e3 = 0
        if cur > 0 then e3 = math.max(0, P - ratelimit_div((L - cost) * P, cur)) end
        retry = (P - e) + e3
      end
    end
  end
  local reset = 0
  if after > 0 then reset = 2 * P - e elseif prev > 0 then reset = P - e end
  local remaining = L * P - prev * (P - e) - after * P
  if remaining > 0 then remaining = ratelimit_div(remaining, P) else remaining = 0 end
  return ok, remaining, retry, reset
end

local function ratelimit_sliding_log_one(key, cost, L, P, ps, now, write)
  local floor_score = now - P -- entries scored <= floor_score have left the window
  local total = redis.call('ZREVRANK', key, '')
  if not total then
    total = 0
    ratelimit_zset_absent(key, 'sliding_log')
  end
  local count, exact = total, total == 0 -- the live entries; an upper bound while not exact
  local retry_score = nil -- the entry whose leaving admits this cost
  if cost > L then
    if not exact then
      count, exact = redis.call('ZCOUNT', key, string.format('(%d', floor_score), '+inf'), true
    end
  elseif count + cost > L then
    -- the (count + cost - L)-th oldest live entry sits at rank total + cost - L (the marker is 0)
    local rank = string.format('%d', total + cost - L)
    local score = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')[2] + 0
    if score > floor_score then
      retry_score = score
      -- denied: count >= L - cost + 1; with cost 1 nothing remains, else count them
      if cost == 1 then
        count, exact = L, true
      else
        count, exact = redis.call('ZCOUNT', key, string.format('(%d', floor_score), '+inf'), true
      end
    else
      count = L - cost -- at most this many are live: admitted (counted below if need be)
    end
  end
  if not write and not exact then
    count, exact = redis.call('ZCOUNT', key, string.format('(%d', floor_score), '+inf'), true
  end
  if cost <= L and not retry_score then
    if not write then
      local reset = 0
      if cost > 0 then
        reset = P
      elseif count > 0 then
        reset = redis.call('ZRANGE', key, '-1', '-1', 'WITHSCORES')[2] + P - now
      end
      return 1, L - count - cost, 0, reset
    end
    local stamp = string.format('%d', now)
    if total > 0 then
      count = total - redis.call('ZREMRANGEBYSCORE', key, '(0', string.format('%d', floor_score))
      if cost == 1 then
        redis.call('ZADD', key, stamp, string.format('%s:%d', stamp, count + 1))
      end
    elseif cost == 1 then
      redis.call('ZADD', key, '0', '', stamp, stamp .. ':1')
    end
    if cost > 1 then
      -- members "<ms>:<n>": n counts on from the live entries, so members of one ms never repeat
      local args = total > 0 and {} or {'0', ''}
      local seq = count
      for i = 1, cost do
        seq = seq + 1
        args[#args + 1] = stamp
        args[#args + 1] = string.format('%s:%d', stamp, seq)
        if #args >= 1000 or i == cost then
          redis.call('ZADD', key, unpack(args))
          args = {}
        end
      end
    end
    redis.call('PEXPIRE', key, ps)
    return 1, L - count - cost, 0, P
  end
  local reset = 0
  if count > 0 then
    reset = redis.call('ZRANGE', key, '-1', '-1', 'WITHSCORES')[2] + P - now
    if reset < 0 then reset = 0 end
  end
  if count > L then count = L end
  return 0, L - count, retry_score and (retry_score + P - now) or -1, reset
end

-- Argument strings already seen to be plain digits without leading zeros (or '0'), with their
-- numbers: a limiter sends the same limit, period and burst on every call, so after its first
-- call they cost three table reads and the range checks instead of a pattern match and three
-- conversions. Such a string is its number's own spelling, so limit and period are written as
-- they came. At most RATELIMIT_SEEN_MAX strings, all forgotten when full. The table lives as
-- long as the library; a script's would live for one call, so scripts never fill it (the
-- library's main chunk runs once, at FUNCTION LOAD, where redis.register_function exists; a
-- script's runs on every call, where it does not).
local RATELIMIT_SEEN_MAX = 1024
local ratelimit_seen, ratelimit_seen_n = {}, 0
local ratelimit_remembers = redis.register_function ~= nil

local function ratelimit_remember(ls, limit, ps, period, bs, burst)
  if ratelimit_seen_n >= RATELIMIT_SEEN_MAX then ratelimit_seen, ratelimit_seen_n = {}, 0 end
  local seen = ratelimit_seen
  seen[ls], seen[ps] = limit, period
  -- (a burst other than 0 with a leading zero is not its number's spelling)
  if #bs == 1 or string.find(bs, '^[1-9]') then seen[bs] = burst end
  ratelimit_seen_n = ratelimit_seen_n + 3
end

-- The reply of a one-limit decision: as ratelimit_decide's, whose totals are this limit's own.
-- Arguments that are not plain digits in range are checked by prl_int, argument by argument in
-- order, with its messages, exactly as before.
local function ratelimit_one(key, argv, algo, cost, write)
  local ls, ps, bs = argv[2], argv[3], argv[4]
  local seen = ratelimit_seen
  local limit, period, burst = seen[ls], seen[ps], seen[bs]
  if not (limit and period and burst) then
    limit, period, burst = nil, nil, nil
    if #ls <= 7 and #ps <= 10 and #bs <= 7 and
        string.find(ls .. ' ' .. ps .. ' ' .. bs, '^[1-9]%d* [1-9]%d* %d+$') then
      limit, period, burst = ls + 0, ps + 0, bs + 0
      if ratelimit_remembers then ratelimit_remember(ls, limit, ps, period, bs, burst) end
    end
  end
  if not limit or limit < 1 or limit > 1000000 or period < 1 or period > 2678400000 or
      burst > 1000000 then
    limit = prl_int(argv, 2, 'limit', 1, 1000000, nil)
    period = prl_int(argv, 3, 'period_ms', 1, 2678400000, nil)
    burst = prl_int(argv, 4, 'burst', 0, 1000000, nil)
    ls, ps = ratelimit_int(limit), ratelimit_int(period)
  end
  if algo == 'sliding_log' and limit > 10000 then
    prl_fail('BADARG', 'limit of a sliding log must be in 1..10000, got ' .. limit)
  end
  if burst > 0 and algo ~= 'gcra' and algo ~= 'token_bucket' then
    prl_fail('BADARG', 'burst applies to gcra and token_bucket only; send 0 for ' .. algo)
  end
  if burst == 0 then burst = limit end
  local now = prl_now_ms()
  local ok, remaining, retry, reset
  if algo == 'gcra' then
    ok, remaining, retry, reset = ratelimit_gcra_one(key, cost, limit, period, burst, ls, now,
      write)
  elseif algo == 'token_bucket' then
    ok, remaining, retry, reset = ratelimit_token_bucket_one(key, cost, limit, period, burst, ps,
      now, write)
  elseif algo == 'fixed_window' then
    ok, remaining, retry, reset = ratelimit_fixed_window_one(key, cost, limit, period, now, write)
  elseif algo == 'sliding_window' then
    ok, remaining, retry, reset = ratelimit_sliding_window_one(key, cost, limit, period, now,
      write)
  else
    ok, remaining, retry, reset = ratelimit_sliding_log_one(key, cost, limit, period, ps, now,
      write)
  end
  return {ok, remaining, retry, reset > 0 and reset or 0, now, 1, ok, remaining, retry, reset}
end

-- What a key holds, for reset and inspect: 'none', an algorithm name, 'concurrency', or nil
-- (something that is not rate limiter state). Returns the Redis type too.
local function ratelimit_kind(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return 'none', t end
  if t == 'string' then
    local prefix = string.match(redis.call('GET', key), '^(%l+):')
    local names = {gcra = 'gcra', tb = 'token_bucket', fw = 'fixed_window',
      sw = 'sliding_window'}
    return prefix and names[prefix], t
  end
  if t == 'zset' then
    if redis.call('ZSCORE', key, '') then return 'sliding_log', t end
    if redis.call('ZSCORE', key, RATELIMIT_SLOTS_MARK) then return 'concurrency', t end
  end
  return nil, t
end
