--[[
name: queue.ack
version: 1.0.0
summary: Finish leased jobs: each id must come with its live lease token, else nothing changes.
flags: none
includes: queue
keys:
  ready: zset; ready job ids scored by priority (ties in id order = enqueue order)
  delayed: zset; delayed job ids scored by the server time they become ready
  active: zset; leased job ids scored by their lease deadline
  dead: zset; dead-lettered job ids scored by the time they died
  jobs: hash; job id to its msgpack record (priority, attempts, limits, lease token)
  payloads: hash; job id to its payload
  idem: hash; idempotency key to the id of its unfinished job
  prio: hash; priority to its number of unfinished jobs
  stats: hash; counters (job sequence, lease tokens, totals)
  marker: list; what idle consumers block on; enqueue pushes to it
argv:
  pairs: rest; id, token, id, token, ... (1..1000 jobs)
returns:
  the number of jobs finished
errors:
  BADARG: the pair list or the key count is invalid (nothing changed)
  STALE: a token is not its job's live lease: finished, expired, or re-delivered (nothing changed)
]]
local K = queue_K(KEYS)
local n = #ARGV - pairs_start + 1
if n == 0 or n % 2 ~= 0 or n > 2000 then
  prl_fail('BADARG', 'pairs must be 1..1000 (id, token) pairs, got ' .. n .. ' values')
end
for i = pairs_start, #ARGV, 2 do
  prl_str(ARGV, i, 'id', 1, 64, nil)
  prl_str(ARGV, i + 1, 'token', 1, 64, nil)
end
local now = prl_now_ms()
local ids, metas, seen = {}, {}, {}
for i = pairs_start, #ARGV, 2 do
  local id = ARGV[i]
  if seen[id] then prl_fail('BADARG', 'job ' .. id .. ' is listed twice') end
  seen[id] = true
  metas[#metas + 1] = queue_live(K, id, ARGV[i + 1], now)
  ids[#ids + 1] = id
end
local by_prio = {}
for i, id in ipairs(ids) do
  local m = metas[i]
  queue_release_idem(K, id, m)
  by_prio[m.p] = (by_prio[m.p] or 0) + 1
end
for p, c in pairs(by_prio) do queue_prio_add(K, p, -c) end
queue_chunked('ZREM', K.active, ids)
queue_chunked('HDEL', K.jobs, ids)
queue_chunked('HDEL', K.payloads, ids)
redis.call('HINCRBY', K.stats, 'acked', #ids)
return #ids
