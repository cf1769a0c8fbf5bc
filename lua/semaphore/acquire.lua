--[[
name: semaphore.acquire
version: 1.0.1
summary: Take count of a semaphore's permits under a lease (first come, first served behind queued waiters) and return a fencing token, or queue as a waiter.
flags: none
resend: safe
includes: semaphore
keys: keyset semaphore
argv:
  lease: str 1..128; the lease id, chosen by the client, unique per acquisition, without '#'; a repeat with the same id (a re-send, a renewal, a waiter claiming its grant) renews that lease with the same fence and never takes more permits
  permits: int 1..100000; N, how many permits the semaphore has; passed on every call, and each call decides with its own N (leases already held are never revoked when N shrinks)
  count: int 1..100000; how many permits to take, at most permits
  ttl_ms: int 1..86400000; the lease ends this long from now unless released or renewed
  wait_ms: int -1..86400000 = -1; -1: not a waiter; > 0: when not acquired, queue as a waiter (or stay queued, keeping the place in the queue) until this many ms from now; 0: leave the queue (a waiter giving up; still acquires if it can)
returns:
  {1, fence, permits in use, waiters queued, 0, now_ms} when the lease holds its permits: taken
  now, granted to it as a queued waiter, or a repeat (same fence, lease renewed);
  {0, 0, permits in use, waiters queued, retry_after_ms, now_ms} when not: retry_after_ms is
  when enough leases end on their own for this request, or, behind a queued waiter, when that
  waiter's registration ends (-1: unknown; a release or a grant will tell). Every call first drops ended leases and grants freed permits to the queue's head
errors:
  BADARG: an argument or the key count is invalid, count exceeds permits, the lease id contains '#', or the lease holds another count (nothing changed)
  BADSTATE: a key holds something else than this operation keeps there (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
]]
if string.find(lease, '#', 1, true) then prl_fail('BADARG', "lease must not contain '#'") end
if count > permits then
  prl_fail('BADARG', 'count must be at most permits, got ' .. count .. ' > ' .. permits)
end
local now = prl_now_ms()
local K = {permits = semaphore_key, leases = leases_key, fence = fence_key,
           signal = signal_key, waiters = waiters_key, waiting = waiting_key}
local s = sem_load(K, now, lease)
if s.live and s.info.k ~= count then
  prl_fail('BADARG', 'lease ' .. prl_shown(lease) .. ' holds ' .. s.info.k .. ' permits, not ' ..
    count)
end
-- Decide. A queued caller is live (it is calling) and asks for this call's count.
if s.queued_at and not s.live then
  for i, w in ipairs(s.queue) do
    if w == lease then s.queue_info[i] = {queued = true, ends = math.huge, k = count} end
  end
end
local leaving = (s.live or wait_ms == 0) and lease or nil
local grants, drops, remaining, free = sem_plan_grants(s, permits, permits - s.in_use, leaving)
local via_queue = false
for _, g in ipairs(grants) do
  if g.lease == lease then via_queue = true end
end
-- Not queued (or leaving): only when nobody is left waiting, and the permits are free.
local fresh = not s.live and not via_queue and remaining == 0 and free >= count
local acquired = s.live or via_queue or fresh

-- Write.
local wrote = #s.gone > 0 or #grants > 0 or #drops > 0 or acquired
sem_commit_prune(s)
if not s.exists and (#grants > 0 or acquired) then
  rcall('ZADD', semaphore_key, 0, SEM_MARK)
end
local granted_me = sem_commit_grants(s, grants, drops, acquired and lease or nil)
local fence = 0
if acquired then
  if s.live then
    fence = s.info.fence
    sem_put(semaphore_key, lease, count, now + ttl_ms + PRL_LEASE_SLACK_MS, 'XX')
  else
    if granted_me then
      fence = granted_me
    else
      fence = s.fence + 1
      rcall('INCR', fence_key)
    end
    sem_put(semaphore_key, lease, count, now + ttl_ms + PRL_LEASE_SLACK_MS)
    rcall('HSET', leases_key, lease, count .. ':' .. string.format('%d', fence))
  end
  if s.wait then
    rcall('HDEL', waiting_key, lease)
    if not s.wait.queued then rcall('LREM', signal_key, 1, sem_grant_string(s.wait.fence, lease)) end
  end
  if s.queued_at and not via_queue then rcall('ZREM', waiters_key, lease) end
elseif wait_ms > 0 then
  wrote = true
  if not s.queued_at then
    -- its place: behind the last one, in arrival order even within one ms
    local place = now
    if #s.tail > 0 then place = math.max(now, tonumber(s.tail[2]) + 1) end
    rcall('ZADD', waiters_key, string.format('%d', place), lease)
  end
  rcall('HSET', waiting_key, lease, 'w:' .. string.format('%d', now + wait_ms) .. ':' .. count)
  sem_keep(waiters_key, wait_ms)
  sem_keep(waiting_key, wait_ms)
elseif wait_ms == 0 and (s.queued_at or s.wait) then
  wrote = true
  rcall('ZREM', waiters_key, lease)
  rcall('HDEL', waiting_key, lease)
end
if wrote then sem_settle(s) end

local in_use = sem_in_use(semaphore_key, now)
local queued = rcall('ZCARD', waiters_key)
if acquired then return {1, fence, in_use, queued, 0, now} end
-- When to try again: at the head of the queue, when enough leases end on their own; behind
-- another waiter, when its registration ends (if it died, it is dropped then); -1: unknown
local retry = -1
if remaining == 0 or s.blocker == lease then
  retry = sem_free_in(semaphore_key, now, in_use, permits, count)
elseif s.blocker_ends then
  retry = math.max(1, s.blocker_ends - now)
end
return {0, 0, in_use, queued, retry, now}
