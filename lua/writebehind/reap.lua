--[[
name: writebehind.reap
version: 1.2.0
summary: Return up to limit expired claims to dirty, counting an attempt (dead-letter after max_attempts), and make due retries dirty (claim does this too).
flags: allow-oom
resend: safe
includes: writebehind, metrics
keys: keyset writebehind + metrics
argv:
  limit: int 1..1000 = 100; most expired claims (and due retries) to handle
  max_attempts: int 1..1000 = 5; dead-letter a record whose claims expired this many times (counted with its failed attempts)
returns:
  the number of expired claims handled (returned to dirty, or dead-lettered)
  A repeat handles only what expired since.
errors:
  BADARG: an argument or the key count is invalid (nothing changed)
]]
local K = wb_K(KEYS)
local now = prl_now_ms()
local c = wb_stats(K, {'reaped', 'dead'})
local u = wb_upkeep_read(K, now, limit)
local due = rcall('ZCARD', K.dirty)
if #u.keys > 0 then wb_check(K, 'dead') end
local queued = rcall('LLEN', K.signal)
local M = metrics_open(metrics_key, 'writebehind', now)
local w = wb_writes()
local reaped, died = wb_upkeep_write(K, u, w, now, max_attempts)
local wake = due + #w.dirty > 0
wb_flush_writes(K, w)
wb_stats_write(K, c, {reaped = reaped, dead = died})
wb_upkeep_forget(K, u)
if wake then wb_signal(K, queued) end
-- an expired claim is a failed flush (an attempt counted)
metrics_count(M, 'failed', reaped)
metrics_count(M, 'dead', died)
metrics_flush(M)
return reaped
