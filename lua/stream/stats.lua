--[[
name: stream.stats
version: 1.0.0
summary: Entries in the stream, pending deliveries of the group (per consumer, at most 100), dead letters.
flags: no-writes
includes: stream
keys: keyset streamqueue
argv:
  group: str 1..256; the consumer group
returns:
  {length, pending, {consumer, pending, ...}, dead}; pending is -1 when the group does not exist
errors:
  BADARG: an argument or the key count is invalid
]]
local length = rcall('XLEN', stream_key)
local dead = rcall('XLEN', dead_key)
local summary = redis.pcall('XPENDING', stream_key, group)
if type(summary) == 'table' and summary.err then return {length, -1, {}, dead} end
local per = {}
for i, row in ipairs(summary[4] or {}) do
  if i > 100 then break end
  per[#per + 1] = row[1]
  per[#per + 1] = tonumber(row[2])
end
return {length, summary[1], per, dead}
