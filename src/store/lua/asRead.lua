--[[
asRead.lua: not a script of its own. What put.lua and delete.lua share to change the entries of
several keys of one partition as they read them ("written as read" in put.lua); scripts.ts puts
this file in place of their line `-- #include asRead.lua`, as it does feedEntries.lua.

asRead(n, stride)            whether the script's n items may be changed as read: none has an
                             expected version (ARGV[stride * i + 2] is "") and all are of one
                             partition (one stream key, KEYS[2n + i])
readOrUndo(bucket, key, undo)
                             the key's packed entry and its header (version, createdAt ms,
                             updatedAt ms), or false when absent; a bucket of another type or an
                             entry shorter than its 18-byte header calls `undo` (which puts back
                             what the script changed so far), then raises the error
]]
local function asRead(n, stride)
  if n < 2 then return false end
  for i = 1, n do
    if ARGV[stride * i + 2] ~= '' or KEYS[2 * n + i] ~= KEYS[2 * n + 1] then return false end
  end
  return true
end
local function readOrUndo(bucket, key, undo)
  local packed = redis.pcall('HGET', bucket, key)
  if type(packed) == 'table' then
    undo()
    error(packed)
  end
  if not packed then return false end
  local ok, v, c, u = pcall(struct.unpack, '<I6I6I6', packed)
  if not ok then
    undo()
    error(v)
  end
  return packed, v, c, u
end
