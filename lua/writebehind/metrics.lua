--[[
name: writebehind.metrics
version: 1.0.0
summary: The store's recorded metrics: per-minute counts over the last hour and the hour's lag histogram (safe on a replica).
flags: no-writes
includes: metrics
keys:
  metrics: hash; the store's metrics, prl:wb:{name}:metrics (the key write, claim, ack, fail and reap pass last)
argv:
returns:
  {minute, {counter, {60 counts}, ...}, {histogram, {17 counts}, ...}}: minute is the server's
  current minute (unix seconds // 60); each counter has 60 counts, oldest first, the last one
  the current minute, a minute nothing recorded into reading 0. Counters: written (records
  written or deleted), flushed (records acked clean), failed (records the sink rejected, and
  expired claims), dead (records dead-lettered). Histogram lag: per flushed record, from its
  oldest write the sink did not have yet to the ack, in 17 log2 millisecond buckets (0: under
  1 ms, b: 2^(b-1) to 2^b ms, 16: 2^15 ms and more) summed over the five-minute periods of the
  last hour
errors:
  BADARG: the key count is invalid
  WRONGTYPE: the key holds another Redis type
]]
return metrics_read(metrics_key, 'writebehind', prl_now_ms())
