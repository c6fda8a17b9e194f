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
Errors  a stored entry shorter than its header, a bucket of another type, a feed counter that is
        not a count, or a stream that refuses XADD raises a script error with the store as it
        was, the part not applied

The writes are put.lua's "written as read" (asRead.lua's writeAsRead): each entry written as
soon as it is read, then the events, one stream entry per 64 KiB, then the new index keys; a
failure after some writes puts them back before the error is raised.
]]
-- The change feed's entries, addEvent() and appendFeeds(): feedEntries.lua, put here by scripts.ts.
-- #include feedEntries.lua
-- indexAdd() and applyIndexes(): indexChanges.lua, likewise.
-- #include indexChanges.lua
-- writeAsRead(): asRead.lua, likewise.
-- #include asRead.lua
local state = redis.call('HGET', KEYS[1], 's')
if not state then return { 'GONE' } end
if state == 'applied' then
  local result = { 'OK' }
  for v in string.gmatch(redis.call('HGET', KEYS[1], 'r'), '[^,]+') do result[#result + 1] = tonumber(v) end
  return result
end

local n = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
-- A part's items are of one partition, none with an expected version: written as read, as
-- put.lua writes a batch within one partition.
local result = writeAsRead(n, 1, 1, 2, retention)
local stored = {}
for i = 2, #result do stored[#stored + 1] = result[i] end
redis.call('HSET', KEYS[1], 's', 'applied', 'r', table.concat(stored, ','))
redis.call('HDEL', KEYS[1], 'd')
return result
