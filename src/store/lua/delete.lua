#!lua flags=allow-oom
--[[
delete.lua: delete one or more entries, all or nothing, and append one DELETE event per deleted
entry to the change feed of its partition, in the same atomic step: per partition deleted from,
one stream entry per 64 KiB of its events (the format is in feedFormat.ts).

An entry is field <key> of its bucket hash, packed as put.lua writes it (an 18-byte header of
version, createdAt, updatedAt, then the value). Removing a bucket's last field removes the bucket.

KEYS   per item i of n, four keys:
       KEYS[i]          the bucket hash the item's key belongs to (keys.ts bucketOf)
       KEYS[n+i]        the index sorted set of the item's partition
       KEYS[2n+i]       the change-feed stream of the item's partition
       KEYS[3n+i]       the feed's sequence counter of the item's partition
ARGV   1         n, the number of items
       2         feed retention: each stream keeps at least about this many events (XADD MINID ~)
       then, per item i (two values from ARGV[2i+1]):
                 key, expected version ("" = any; "0" = must not exist)
Returns
       {"OK", then per item: value, version, created_ms, updated_ms}
       where an absent item has four `false` (nil) values (and no event)
Errors (returned as the first element, nothing is deleted)
       {"VERSION_CONFLICT", key_a, actual_version_a, ...}
       A stored entry shorter than its header (corruption), a bucket of another type, or a feed
       counter that is not a count (feedEntries.lua), raises a script error with the store as it
       was.

A DELETE event: "D", the deleted version, key length, key. As in put.lua, the feed's entries
are appended before anything is deleted, except where several keys of one partition are
deleted without an expected version (a deleteRange within one partition, a group of deletes):
as put.lua writes as read, each entry is deleted as soon as it is read, while its bucket is
still in the CPU's cache, and the events follow; should an entry turn out unreadable, a bucket
of another type, a feed counter not a count, or XADD refuse, the entries deleted so far are put
back (their old bytes) before the script raises the same error, so the store is as it was.
allow-oom: deleting frees memory, so it must keep working when Redis is at maxmemory (the
event it appends is small, and the stream is capped).
]]
-- The change feed's entries, addEvent(), appendFeeds() and appendEvent(): feedEntries.lua, put
-- here by scripts.ts.
-- #include feedEntries.lua
-- indexRemove() and applyIndexes(): indexChanges.lua, likewise.
-- #include indexChanges.lua
-- asRead() and readOrUndo(), for deleting as read: asRead.lua, likewise.
-- #include asRead.lua
local n = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])

-- Several keys of one partition, none with an expected version: deleted as read (see above).
local function deleteAsRead()
  local result = { 'OK' }
  -- Each deleted item's entry, and how many items were done, for the undo.
  local removed, done = {}, 0
  local function undo()
    for i = done, 1, -1 do
      if removed[i] then redis.call('HSET', KEYS[i], ARGV[2 * i + 1], removed[i]) end
    end
  end
  for i = 1, n do
    local key = ARGV[2 * i + 1]
    local packed, v, c, u = readOrUndo(KEYS[i], key, undo)
    -- Item i's four reply elements start at 4i - 2 (after "OK").
    local r = 4 * i - 2
    if packed then
      redis.call('HDEL', KEYS[i], key)
      removed[i] = packed
      addEvent(KEYS[2 * n + i], KEYS[3 * n + i], 'D' .. struct.pack('<I6I4', v, #key) .. key)
      indexRemove(KEYS[n + i], key)
      result[r], result[r + 1], result[r + 2], result[r + 3] = string.sub(packed, 19), v, c, u
    else
      result[r], result[r + 1], result[r + 2], result[r + 3] = false, false, false, false
    end
    done = i
  end
  appendFeeds(retention, undo)
  applyIndexes()
  return result
end

if asRead(n, 2) then return deleteAsRead() end

local previous = {}
local conflicts = { 'VERSION_CONFLICT' }

for i = 1, n do
  local key = ARGV[2 * i + 1]
  local packed = redis.call('HGET', KEYS[i], key)
  local version = 0
  if packed then
    local v, c, u = struct.unpack('<I6I6I6', packed)
    version = v
    previous[i] = { string.sub(packed, 19), v, c, u }
  end
  local expected = ARGV[2 * i + 2]
  if expected ~= '' and tonumber(expected) ~= version then
    conflicts[#conflicts + 1] = key
    conflicts[#conflicts + 1] = version
  end
end
if #conflicts > 1 then return conflicts end

-- One key (every delete): the same writes as below, in the same order, without the per-stream
-- tables, as in put.lua (INFO commandstats, one run: 28.5 µs in Redis per delete, against 43.5
-- for the general path and 28.4 for layout 2's delete.lua).
if n == 1 then
  local p = previous[1]
  if not p then return { 'OK', false, false, false, false } end
  local key = ARGV[3]
  appendEvent(KEYS[3], KEYS[4], 'D' .. struct.pack('<I6I4', p[2], #key) .. key, retention)
  redis.call('HDEL', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
  return { 'OK', p[1], p[2], p[3], p[4] }
end

for i = 1, n do
  local p = previous[i]
  if p then
    local key = ARGV[2 * i + 1]
    addEvent(KEYS[2 * n + i], KEYS[3 * n + i], 'D' .. struct.pack('<I6I4', p[2], #key) .. key)
  end
end
appendFeeds(retention)

-- As put.lua: the deleted keys leave each index after the items, one ZREM per 500.
local result = { 'OK' }
for i = 1, n do
  local p = previous[i]
  if p then
    local key = ARGV[2 * i + 1]
    redis.call('HDEL', KEYS[i], key)
    indexRemove(KEYS[n + i], key)
    for j = 1, 4 do result[#result + 1] = p[j] end
  else
    for j = 1, 4 do result[#result + 1] = false end
  end
end
applyIndexes()
return result
