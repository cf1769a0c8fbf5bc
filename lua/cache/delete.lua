--[[
name: cache.delete
version: 1.0.1
summary: Delete a cache entry.
flags: allow-oom
resend: safe
keys:
  entry: hash; the cached entry
returns:
  1 when an entry was deleted, else 0
  A repeat deletes nothing more (0).
errors:
  BADARG: the key count is invalid
  WRONGTYPE: the key holds another Redis type than a cache entry (nothing changed)
]]
rcall('HLEN', entry_key)  -- an entry is a hash: a key of another type is not deleted blindly
return rcall('DEL', entry_key)
