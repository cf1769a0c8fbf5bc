--[[
name: writebehind.reap
version: 1.0.0
summary: Return up to limit expired claims to dirty and make due retries dirty (claim does this too).
flags: none
includes: writebehind
keys:
  values: hash; record key to its current value (absent: deleted)
  versions: hash; record key to the version of its latest write (negative: a delete)
  meta: hash; record key to its msgpack state {s, a, q, p, e, dt} while not clean
  dirty: zset; due dirty keys scored by the time they turned dirty
  retry: zset; keys in retry backoff scored by the time they are due
  claimed: zset; claimed keys scored by claim id (lease deadline ms * 1000 + sequence)
  dead: zset; dead-lettered keys scored by the time they died
  stats: hash; counters (seq is the version sequence)
  signal: list; what an idle flusher blocks on
argv:
  limit: int 1..1000 = 100; most expired claims (and due retries) to handle
returns:
  the number of expired claims returned to dirty
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local reaped = wb_upkeep(K, prl_now_ms(), limit)
if rcall('ZCARD', K.dirty) > 0 then wb_signal(K) end
return reaped
