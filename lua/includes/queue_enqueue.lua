-- Adding a batch of jobs: listed after the queue and metrics includes (it calls both).
-- The body of queue.enqueue_batch and queue.enqueue_jobs: `n` jobs of `width` fields from
-- argv[start], all checked before the first is added; recorded (request, metrics) as `op`.
local function queue_enqueue_all(K, argv, start, width, op, metrics_key)
  local n = #argv - start + 1
  if n == 0 or n % width ~= 0 then
    prl_fail('BADARG', 'items must be groups of ' .. width .. ' fields, got ' .. n .. ' fields')
  end
  if n / width > 1000 then prl_fail('BADARG', 'at most 1000 jobs per call, got ' .. (n / width)) end
  local batch = {}
  for i = start, #argv, width do
    batch[#batch + 1] = queue_check_job(argv, i, 'job ' .. ((i - start) / width + 1) .. ': ', width)
  end
  local first = queue_recorded(K, op)
  if first then return first end
  local now = prl_now_ms()
  local M = metrics_open(metrics_key, 'queue', now)
  local out, added = queue_add(K, batch, now)
  metrics_count(M, 'enqueued', added)
  metrics_flush(M)
  if added > 0 then queue_record(K, op, out) end
  return out
end
