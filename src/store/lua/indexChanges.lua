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
-- Per index key, the arguments queued for it: ZADD's (0, key, 0, key, ...) and ZREM's (key, ...).
local indexAdds, indexRemoves = {}, {}
local function queued(queues, index)
  local args = queues[index]
  if not args then
    args = {}
    queues[index] = args
  end
  return args
end
local function indexAdd(index, key)
  local args = queued(indexAdds, index)
  args[#args + 1], args[#args + 2] = 0, key
end
local function indexRemove(index, key)
  local args = queued(indexRemoves, index)
  args[#args + 1] = key
end
-- One command per `per` arguments (INDEX_CHUNK keys) of each index's queue.
local function sendQueued(command, queues, per)
  for index, args in pairs(queues) do
    for from = 1, #args, per do
      redis.call(command, index, unpack(args, from, math.min(from + per - 1, #args)))
    end
  end
end
local function applyIndexes()
  sendQueued('ZADD', indexAdds, 2 * INDEX_CHUNK)
  sendQueued('ZREM', indexRemoves, INDEX_CHUNK)
end
