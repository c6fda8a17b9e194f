--[[
asRead.lua: not a script of its own. What put.lua, delete.lua and batchApply.lua share to change
the entries of several keys of one partition as they read them ("written as read" in put.lua);
scripts.ts puts this file in place of their line `-- #include asRead.lua`, as it does
feedEntries.lua.

asRead(n, stride)            whether the script's n items may be changed as read: none has an
                             expected version (ARGV[stride * i + 2] is "") and all are of one
                             partition (one stream key, KEYS[2n + i])
readOrUndo(bucket, key, undo)
                             the key's packed entry and its header (version, createdAt ms,
                             updatedAt ms), or false when absent; a bucket of another type or an
                             entry shorter than its 18-byte header calls `undo` (which puts back
                             what the script changed so far), then raises the error
writeAsRead(n, o, a, stride, retention)
                             puts items 1..n, all of one partition and none with an expected
                             version, each entry written as soon as it is read, then their events
                             (appendFeeds), then their new index keys (applyIndexes); what failed
                             after a write is undone before the error is raised (put.lua, "Written
                             as read"). Item i's bucket, index, stream and counter are KEYS[o+i],
                             KEYS[o+n+i], KEYS[o+2n+i] and KEYS[o+3n+i]; its key and value
                             ARGV[a+stride*i] and ARGV[a+stride*i+1]. Returns put.lua's
                             {"OK", now_ms, version_1, created_ms_1, ...}. Used by put.lua and
                             batchApply.lua, after feedEntries.lua and indexChanges.lua.
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
local function writeAsRead(n, o, a, stride, retention)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local result = { 'OK', now }
  -- Each written item's entry before it (false: it had none).
  local before = {}
  local function undo()
    for i = #before, 1, -1 do
      local bucket, key = KEYS[o + i], ARGV[a + stride * i]
      if before[i] then redis.call('HSET', bucket, key, before[i]) else redis.call('HDEL', bucket, key) end
    end
  end
  for i = 1, n do
    local bucket, key, value = KEYS[o + i], ARGV[a + stride * i], ARGV[a + stride * i + 1]
    local packed, v, c = readOrUndo(bucket, key, undo)
    local version, created = 1, now
    if packed then version, created = v + 1, c end
    redis.call('HSET', bucket, key, struct.pack('<I6I6I6', version, created, now) .. value)
    before[i] = packed
    addEvent(KEYS[o + 2 * n + i], KEYS[o + 3 * n + i], 'P' .. struct.pack('<I6I6I6I4I4', version, created, now, #key, #value) .. key .. value)
    if version == 1 then indexAdd(KEYS[o + n + i], key) end
    result[2 * i + 1], result[2 * i + 2] = version, created
  end
  appendFeeds(retention, undo)
  applyIndexes()
  return result
end
