--[[
name: stream.produce
version: 1.1.0
summary: Append up to 1000 entries to the stream (creating the consumer group on first use).
flags: none
resend: safe
includes: stream
keys: keyset streamqueue + request
argv:
  group: str 1..256; the consumer group (created reading from the start if missing)
  payloads: rest; 1..1000 payloads
returns:
  the list of entry ids
errors:
  BADARG: an argument, the payload count or the key count is invalid (nothing changed)
  WRONGTYPE: a key holds another Redis type (nothing changed)
  BADSTATE: a key holds something else than the queue keeps there (nothing changed)
]]
local n = #ARGV - payloads_start + 1
if n < 1 or n > 1000 then prl_fail('BADARG', 'payloads must be 1..1000 entries, got ' .. n) end
for i = payloads_start, #ARGV do prl_str(ARGV, i, 'payload', 0, 16777216, nil) end
local first = stream_recorded(request_key, 'stream.produce')
if first then return first end
stream_group(stream_key, group)
local ids = {}
for i = payloads_start, #ARGV do
  ids[#ids + 1] = rcall('XADD', stream_key, '*', 'p', ARGV[i])
end
stream_record(request_key, 'stream.produce', ids)
return ids
