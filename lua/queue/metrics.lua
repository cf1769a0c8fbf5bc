--[[
name: queue.metrics
version: 1.0.0
summary: The queue's recorded metrics: per-minute counts over the last hour and the hour's wait and run histograms (safe on a replica).
flags: no-writes
includes: metrics
keys:
  metrics: hash; the queue's metrics, prl:q:{name}:metrics (the key the recording calls pass last)
argv:
returns:
  {minute, {counter, {60 counts}, ...}, {histogram, {17 counts}, ...}}: minute is the server's
  current minute (unix seconds // 60); each counter (enqueued, completed, failed, retried, dead)
  has 60 counts, oldest first, the last one the current minute, a minute nothing recorded into
  reading 0; each histogram (wait: enqueue to first lease, run: lease to ack) has 17 counts of
  log2 millisecond buckets (0: under 1 ms, b: 2^(b-1) to 2^b ms, 16: 2^15 ms and more) summed
  over the five-minute periods of the last hour
errors:
  BADARG: the key count is invalid
  WRONGTYPE: the key holds another Redis type
]]
return metrics_read(metrics_key, 'queue', prl_now_ms())
