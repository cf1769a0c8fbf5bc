--[[
name: writebehind.get
version: 1.0.0
summary: Read records' current values and versions (what the application wrote, flushed or not).
flags: no-writes
includes: writebehind
keys:
  values: hash; record key to its current value
  versions: hash; record key to the version of its latest write (negative: a delete)
argv:
  items: rest; 1..1000 record keys
returns:
  {{value (nil: deleted or never written), version (0: unknown; negative: deleted)}, ...} in order
errors:
  BADARG: a key or the key count is invalid
]]
local count = wb_groups(ARGV, items_start, 1, 'items', function(i) wb_key(ARGV[i]) end)
local keys = {}
for i = items_start, #ARGV do keys[#keys + 1] = ARGV[i] end
local values = rcall('HMGET', values_key, unpack(keys))
local versions = rcall('HMGET', versions_key, unpack(keys))
local out = {}
for i = 1, count do out[i] = {values[i], tonumber(versions[i] or '0')} end
return out
