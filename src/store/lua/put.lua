#!lua
--[[
put.lua: write one or more entries, all or nothing, and append one PUT event per entry to the
change feed of its partition, in the same atomic step: per partition written, one stream entry
per 64 KiB of its events (the format is in feedFormat.ts).

An entry is field <key> of its bucket hash; the field's value is the packed entry:
struct.pack('<I6I6I6', version, createdAt ms, updatedAt ms) (18 bytes) followed by the value.

KEYS   per item i of n, four keys:
       KEYS[i]          the bucket hash the item's key belongs to (keys.ts bucketOf)
       KEYS[n+i]        the index sorted set of the item's partition
       KEYS[2n+i]       the change-feed stream of the item's partition
       KEYS[3n+i]       the feed's sequence counter of the item's partition
ARGV   1         n, the number of items
       2         feed retention: each stream keeps at least about this many events (XADD MINID ~)
       then, per item i (three values from ARGV[3i]):
                 key, value, expected version ("" = any; "0" = must not exist)
Returns
       {"OK", now_ms, version_1, created_ms_1, ..., version_n, created_ms_n}
Errors (returned as the first element, nothing is written)
       {"VERSION_CONFLICT", key_a, actual_version_a, key_b, actual_version_b, ...}
       A stored entry shorter than its header (corruption), a bucket of another type, or a feed
       counter that is not a count (feedEntries.lua), raises a script error with the store as it
       was (see "written as read" below).

A PUT event: "P", version, createdAt ms, updatedAt ms, key length, value length, key, value.
Every compare-and-set is checked before anything is written, so a conflict leaves the store
untouched. The script has no allow-oom flag: at maxmemory Redis refuses it before it starts.
The feed's entries are appended before the entries are written: a stream holding an entry past
its counter (written by something other than kvql) makes XADD fail, and for a write within one
partition the script then stops having written nothing.

Written as read: for several items of one partition and no expected version (a batch within
one partition, a group of puts from writeGroups.ts), each entry is written as soon as it is
read, while its bucket is still in the CPU's cache, and the events follow. Reading every bucket
first and writing them all after cost Redis about 10% more per batch of 1,000 new keys on a
million (docs/layout.md, "Entries written as read"). Should an entry turn out unreadable, a
bucket of another type, a feed counter not a count, or XADD refuse, the entries written so far
are put back (old bytes, or the new field removed) before the script raises the same error:
the store is as it was, and the AOF holds the writes and their undoing in the script's one
MULTI/EXEC.

The new keys go into each index after the items, one ZADD per 500 (indexChanges.lua), and each
sequence counter moves with one INCRBY (feedEntries.lua's moveCounter, which falls back to one
INCR per event for an ACL user without INCRBY).
]]
-- The change feed's entries, addEvent(), appendFeeds() and appendEvent(): feedEntries.lua, put
-- here by scripts.ts.
-- #include feedEntries.lua
-- indexAdd() and applyIndexes(): indexChanges.lua, put here by scripts.ts.
-- #include indexChanges.lua
-- asRead(), readOrUndo() and writeAsRead(), for writing as read: asRead.lua, likewise.
-- #include asRead.lua
local n = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])

-- Several items of one partition, none with an expected version: written as read (see above).
if asRead(n, 3) then return writeAsRead(n, 0, 0, 3, retention) end

local versions = {}
local created = {}
local conflicts = { 'VERSION_CONFLICT' }

for i = 1, n do
  local key = ARGV[3 * i]
  local packed = redis.call('HGET', KEYS[i], key)
  local version = 0
  if packed then
    local v, c = struct.unpack('<I6I6', packed)
    version = v
    created[i] = c
  end
  versions[i] = version
  local expected = ARGV[3 * i + 2]
  if expected ~= '' and tonumber(expected) ~= version then
    conflicts[#conflicts + 1] = key
    conflicts[#conflicts + 1] = version
  end
end
if #conflicts > 1 then return conflicts end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = { 'OK', now }

-- One item (every put, the hot path of random writes): the same writes as below, in the same
-- order, without the per-stream tables, which cost Redis about 5 µs per call (INFO commandstats,
-- one run: 47.1 µs in Redis per put, against 52.2 for the general path and 46.0 for layout 2's
-- put.lua).
if n == 1 then
  local key, value = ARGV[3], ARGV[4]
  local version = versions[1] + 1
  if version == 1 then created[1] = now end
  appendEvent(KEYS[3], KEYS[4], 'P' .. struct.pack('<I6I6I6I4I4', version, created[1], now, #key, #value) .. key .. value, retention)
  redis.call('HSET', KEYS[1], key, struct.pack('<I6I6I6', version, created[1], now) .. value)
  if version == 1 then redis.call('ZADD', KEYS[2], 0, key) end
  result[3], result[4] = version, created[1]
  return result
end

for i = 1, n do
  local key, value = ARGV[3 * i], ARGV[3 * i + 1]
  local version = versions[i] + 1
  if version == 1 then created[i] = now end
  addEvent(KEYS[2 * n + i], KEYS[3 * n + i], 'P' .. struct.pack('<I6I6I6I4I4', version, created[i], now, #key, #value) .. key .. value)
end
appendFeeds(retention)

for i = 1, n do
  local key, value = ARGV[3 * i], ARGV[3 * i + 1]
  local version = versions[i] + 1
  if version == 1 then indexAdd(KEYS[n + i], key) end
  redis.call('HSET', KEYS[i], key, struct.pack('<I6I6I6', version, created[i], now) .. value)
  result[#result + 1] = version
  result[#result + 1] = created[i]
end
applyIndexes()
return result
