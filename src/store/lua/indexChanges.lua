--[[
indexChanges.lua: not a script of its own. How put.lua, batchApply.lua and delete.lua change the
partitions' indexes; scripts.ts puts this file in place of their line
`-- #include indexChanges.lua`, as it does feedEntries.lua.

indexAdd(index, key)      queues `key` to join the index sorted set `index` (score 0)
indexRemove(index, key)   queues `key` to leave `index`
applyIndexes()            sends what is queued: per index, one ZADD (or ZREM) per INDEX_CHUNK keys
Both `index` keys arrive in KEYS. A script queues its keys as it writes its items and applies
them after the items: every redis.call costs Redis a dispatch and a command in the AOF, so a
batch of 1,000 new keys costs two ZADDs instead of 1,000.
]]
local INDEX_CHUNK = 500
local indexAdds, indexRemoves = {}, {}
local function indexAdd(index, key)
  local args = indexAdds[index]
  if not args then
    args = {}
    indexAdds[index] = args
  end
  args[#args + 1], args[#args + 2] = 0, key
end
local function indexRemove(index, key)
  local keys = indexRemoves[index]
  if not keys then
    keys = {}
    indexRemoves[index] = keys
  end
  keys[#keys + 1] = key
end
local function applyIndexes()
  for index, args in pairs(indexAdds) do
    for from = 1, #args, 2 * INDEX_CHUNK do
      redis.call('ZADD', index, unpack(args, from, math.min(from + 2 * INDEX_CHUNK - 1, #args)))
    end
  end
  for index, keys in pairs(indexRemoves) do
    for from = 1, #keys, INDEX_CHUNK do
      redis.call('ZREM', index, unpack(keys, from, math.min(from + INDEX_CHUNK - 1, #keys)))
    end
  end
end
