-- Metrics the operations record themselves (docs/design/metrics-in-redis.md), in one hash per
-- primitive, prl:<base>:{name}:metrics, under the primitive's hash tag: an optional trailing key
-- a call passes to record and leaves out to record nothing (no extra redis.call).
--
-- The minute ring: field '<counter>:<slot>' (slot = minute % 60) counts the minute that
-- 'm:<slot>' names. Histograms: field 'h:<name>:<bucket>:<slot5>' counts samples of the
-- five-minute period 'p:<slot5>' names (slot5 = period % 12, period = minute // 5), in log2
-- buckets of milliseconds: 0 under 1 ms, b in [2^(b-1), 2^b) ms, 16 everything from 2^15 ms.
--
-- A recording call reads both stamps (metrics_open, one HMGET) in its read phase: a metrics key
-- of another type fails there, before anything is written. Its writes come last
-- (metrics_flush): a stale minute stamp deletes that slot's counters (the area's fixed names),
-- restamps it and refreshes the TTL (61 minutes: a key nobody records into for an hour holds
-- nothing the reader would show); a stale period stamp deletes that period's buckets (an absent
-- stamp has nothing to delete: a slot's fields are written only after its stamp); the stamps
-- go in one HSET. Then one
-- HINCRBY per counter and per histogram bucket touched, through redis.pcall: a counter someone
-- overwrote with garbage is skipped, never an error after a write. The minute comes from TIME
-- (the caller's now_ms), never from the client.

local METRICS_TTL_MS = 3660000
local METRICS_BUCKETS = 17
local METRICS = {
  queue = {c = {'enqueued', 'completed', 'failed', 'retried', 'dead'}, h = {'wait', 'run'}},
  lock = {c = {'acquired', 'contended', 'handoffs', 'expired'}, h = {'wait'}},
  ratelimit = {c = {'allowed', 'denied'}, h = {}},
  writebehind = {c = {'written', 'flushed', 'failed', 'dead'}, h = {'lag'}},
  cache = {c = {'hits', 'misses', 'stale', 'recomputes'}, h = {}},
}

local function metrics_num(n)
  return string.format('%.0f', n)
end

-- The recording state of one call (nil when the call passed no metrics key): reads the stamps.
-- now_ms: the server time the operation read (nil: read it here).
local function metrics_open(key, kind, now_ms)
  if not key then return nil end
  now_ms = now_ms or prl_now_ms()
  local minute = math.floor(now_ms / 60000)
  local period = math.floor(minute / 5)
  local slot, slot5 = minute % 60, period % 12
  local stamps = redis.call('HMGET', key, 'm:' .. slot, 'p:' .. slot5)
  local m, p = metrics_num(minute), metrics_num(period)
  -- fresh: the slot counts this minute (period); unstamped: no field of the slot exists (a
  -- slot's fields are only ever written after its stamp), so there is nothing to reset
  return {key = key, spec = METRICS[kind], minute = m, period = p, slot = slot, slot5 = slot5,
          fresh = stamps[1] == m, fresh5 = stamps[2] == p, old = stamps[1] ~= false,
          old5 = stamps[2] ~= false, c = {}, h = {}, any = false}
end

-- Count n more of counter name (n > 0).
local function metrics_count(M, name, n)
  if not M or n <= 0 then return end
  M.c[name] = (M.c[name] or 0) + n
  M.any = true
end

-- The histogram bucket of a duration in ms.
local function metrics_bucket(ms)
  if ms < 1 then return 0 end
  local _, e = math.frexp(math.floor(ms))
  if e > 16 then return 16 end
  return e
end

-- One sample of histogram name.
local function metrics_sample(M, name, ms)
  if not M then return end
  local field = name .. ':' .. metrics_bucket(ms)
  M.h[field] = (M.h[field] or 0) + 1
  M.any = true
end

-- The writes: last, after the operation's own.
local function metrics_flush(M)
  if not M or not M.any then return end
  local key, spec = M.key, M.spec
  local stamp, stale = nil, nil
  if not M.fresh then
    stamp = {'m:' .. M.slot, M.minute}
    if M.old then
      stale = {}
      for i, c in ipairs(spec.c) do stale[i] = c .. ':' .. M.slot end
    end
  end
  if not M.fresh5 and next(M.h) then
    stamp = stamp or {}
    stamp[#stamp + 1] = 'p:' .. M.slot5
    stamp[#stamp + 1] = M.period
    if M.old5 then
      stale = stale or {}
      for _, h in ipairs(spec.h) do
        for b = 0, METRICS_BUCKETS - 1 do stale[#stale + 1] = 'h:' .. h .. ':' .. b .. ':' .. M.slot5 end
      end
    end
  end
  if stale then redis.call('HDEL', key, unpack(stale)) end
  if stamp then redis.call('HSET', key, unpack(stamp)) end
  if not M.fresh then redis.call('PEXPIRE', key, METRICS_TTL_MS) end
  for name, n in pairs(M.c) do redis.pcall('HINCRBY', key, name .. ':' .. M.slot, n) end
  for field, n in pairs(M.h) do redis.pcall('HINCRBY', key, 'h:' .. field .. ':' .. M.slot5, n) end
end

-- Waits (a lock's): when a waiter's wait began is kept in the metrics hash, 'ws:<token>' = the
-- server ms of its first registration, from its registration to the end of its wait (it
-- acquires, is granted the lock, gives up, or its registration is cleared as expired). Read in
-- the read phase (metrics_wait_since), written in the write phase.
local function metrics_wait_since(M, token)
  if not M then return nil end
  return tonumber(redis.call('HGET', M.key, 'ws:' .. token) or '')
end

-- A wait begins (kept from the first registration: HSETNX), and the key's stamps and TTL are
-- kept as any recording keeps them.
local function metrics_wait_begin(M, token, now)
  if not M then return end
  redis.call('HSETNX', M.key, 'ws:' .. token, metrics_num(now))
  M.any = true
end

-- A wait ends: one sample of 'wait' when it was known to have begun (since), and its mark goes.
local function metrics_wait_end(M, token, since, now)
  if not M then return end
  if since then metrics_sample(M, 'wait', now - since) end
  redis.call('HDEL', M.key, 'ws:' .. token)
  M.any = true
end

-- The marks of waits that ended without a sample (registrations cleared as expired).
local function metrics_wait_forget(M, tokens)
  if not M or #tokens == 0 then return end
  local fields = {}
  for i, t in ipairs(tokens) do fields[i] = 'ws:' .. t end
  redis.call('HDEL', M.key, unpack(fields))
end

-- Record n of one counter in a call that writes nothing else on this path (read, then write).
local function metrics_once(key, kind, counter, n)
  if not key then return end
  local M = metrics_open(key, kind)
  metrics_count(M, counter, n)
  metrics_flush(M)
end

-- The reply of an area's metrics operation: {minute, {counter, {60 counts, oldest first}, ...},
-- {histogram, {17 bucket counts summed over the periods of the last hour}, ...}}.
local function metrics_read(key, kind, now_ms)
  local spec = METRICS[kind]
  local flat = redis.call('HGETALL', key)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  local minute = math.floor(now_ms / 60000)
  local period = math.floor(minute / 5)
  local live = {}
  for i = 1, 60 do
    local m = minute - 60 + i
    if f['m:' .. (m % 60)] == metrics_num(m) then live[i] = ':' .. (m % 60) end
  end
  local counters = {}
  for _, c in ipairs(spec.c) do
    local series = {}
    for i = 1, 60 do series[i] = live[i] and math.max(tonumber(f[c .. live[i]]) or 0, 0) or 0 end
    counters[#counters + 1] = c
    counters[#counters + 1] = series
  end
  local periods = {}
  for s = 0, 11 do
    local p = tonumber(f['p:' .. s])
    if p and p <= period and p > period - 12 then periods[#periods + 1] = s end
  end
  local hists = {}
  for _, h in ipairs(spec.h) do
    local sums = {}
    for b = 0, METRICS_BUCKETS - 1 do
      local n = 0
      for _, s in ipairs(periods) do n = n + math.max(tonumber(f['h:' .. h .. ':' .. b .. ':' .. s]) or 0, 0) end
      sums[b + 1] = n
    end
    hists[#hists + 1] = h
    hists[#hists + 1] = sums
  end
  return {minute, counters, hists}
end
