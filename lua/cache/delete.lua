--[[
name: cache.delete
version: 1.0.0
summary: Delete a cache entry.
flags: none
keys:
  entry: hash; the cached entry
returns:
  1 when an entry was deleted, else 0
errors:
  BADARG: the key count is invalid
]]
return rcall('DEL', entry_key)
