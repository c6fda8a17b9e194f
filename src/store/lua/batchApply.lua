#!lua flags=allow-oom
--[[
batchApply.lua: on a Redis Cluster, apply one prepared part of a committed multi-partition batch
(see batchPrepare.lua), once: applying it again returns the first application's reply.

The writes are put.lua's, without compare-and-set (a batch with expected versions must stay in
one partition on a cluster). It is a script of its own because script flags are per script:
allow-oom, since the part's memory was taken when it was prepared (its items, dropped here),
and a committed batch must complete even if the node filled up meanwhile.

KEYS   1          the part hash {<prefix>:<p>}:x:<batch id>
       per item i of n, four keys, as put.lua:
       KEYS[1+i]         the bucket hash the item's key belongs to
       KEYS[1+n+i]       the index sorted set of the item's partition
       KEYS[1+2n+i]      the change-feed stream of the item's partition
       KEYS[1+3n+i]      the feed's sequence counter of the item's partition
ARGV   1         n, the number of items
       2         feed retention (XADD MINID ~)
       then per item i (two values from ARGV[2i+1]): key, value
Returns
       {"OK", now_ms, version_1, created_ms_1, ..., version_n, created_ms_n}, the same reply
       every time once applied
       {"GONE"}  the part hash does not exist: never prepared, forgotten, or expired
Errors  a stored entry shorter than its header, or a feed counter that is not a count, raises a
        script error before anything is written

Events as put.lua: one stream entry per stream, appended before the entries are written.
]]
-- The change feed's entries, addEvent() and appendFeeds(): feedEntries.lua, put here by scripts.ts.
-- #include feedEntries.lua
-- indexAdd() and applyIndexes(): indexChanges.lua, likewise.
-- #include indexChanges.lua
local state = redis.call('HGET', KEYS[1], 's')
if not state then return { 'GONE' } end
if state == 'applied' then
  local result = { 'OK' }
  for v in string.gmatch(redis.call('HGET', KEYS[1], 'r'), '[^,]+') do result[#result + 1] = tonumber(v) end
  return result
end

local n = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = { 'OK', now }
local versions, created = {}, {}
for i = 1, n do
  local key, value = ARGV[2 * i + 1], ARGV[2 * i + 2]
  local packed = redis.call('HGET', KEYS[1 + i], key)
  versions[i], created[i] = 1, now
  if packed then
    local v, c = struct.unpack('<I6I6', packed)
    versions[i], created[i] = v + 1, c
  end
  addEvent(KEYS[1 + 2 * n + i], KEYS[1 + 3 * n + i], 'P' .. struct.pack('<I6I6I6I4I4', versions[i], created[i], now, #key, #value) .. key .. value)
end
appendFeeds(retention)
for i = 1, n do
  local key, value = ARGV[2 * i + 1], ARGV[2 * i + 2]
  if versions[i] == 1 then indexAdd(KEYS[1 + n + i], key) end
  redis.call('HSET', KEYS[1 + i], key, struct.pack('<I6I6I6', versions[i], created[i], now) .. value)
  result[#result + 1] = versions[i]
  result[#result + 1] = created[i]
end
applyIndexes()
local stored = {}
for i = 2, #result do stored[#stored + 1] = result[i] end
redis.call('HSET', KEYS[1], 's', 'applied', 'r', table.concat(stored, ','))
redis.call('HDEL', KEYS[1], 'd')
return result
