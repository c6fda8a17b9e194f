#!lua
--[[
put.lua: write one or more entries, all or nothing, and append one PUT event per entry to the
change feed of its partition, in the same atomic step.

An entry is field <key> of its bucket hash; the field's value is the packed entry:
struct.pack('<I6I6I6', version, createdAt ms, updatedAt ms) (18 bytes) followed by the value.

KEYS   per item i of n, four keys:
       KEYS[i]          the bucket hash the item's key belongs to (keys.ts bucketOf)
       KEYS[n+i]        the index sorted set of the item's partition
       KEYS[2n+i]       the change-feed stream of the item's partition
       KEYS[3n+i]       the feed's sequence counter of the item's partition
ARGV   1         n, the number of items
       2         feed retention: each stream keeps about this many events (XADD MAXLEN ~)
       then, per item i (three values from ARGV[3i]):
                 key, value, expected version ("" = any; "0" = must not exist)
Returns
       {"OK", now_ms, version_1, created_ms_1, ..., version_n, created_ms_n}
Errors (returned as the first element, nothing is written)
       {"VERSION_CONFLICT", key_a, actual_version_a, key_b, actual_version_b, ...}
       A stored entry shorter than its header (corruption) raises a script error before
       anything is written.

Event fields: t "P", k key, n version, v value, c createdAt ms, u updatedAt ms, q sequence.
Every compare-and-set is checked before anything is written, so a conflict leaves the store
untouched. The script has no allow-oom flag: at maxmemory Redis refuses it before it starts.

The new keys go into each index with one ZADD per ZADD_CHUNK members, after the items: every
redis.call costs Redis a dispatch and a command in the AOF. (The sequence counters still move
with one INCR per item: INCRBY would be one call per counter, but kvql's ACL user (users.acl)
has no INCRBY, and hand-made ACL lines copied from it would refuse every batch after an upgrade.)
]]
local ZADD_CHUNK = 500
local n = tonumber(ARGV[1])
local retention = ARGV[2]
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

-- Per index key, its new members as ZADD arguments (0, key, 0, key, ...).
local added = {}

for i = 1, n do
  local key, value = ARGV[3 * i], ARGV[3 * i + 1]
  local version = versions[i] + 1
  if version == 1 then
    created[i] = now
    local args = added[KEYS[n + i]] or {}
    added[KEYS[n + i]] = args
    args[#args + 1], args[#args + 2] = 0, key
  end
  redis.call('HSET', KEYS[i], key, struct.pack('<I6I6I6', version, created[i], now) .. value)
  local seq = redis.call('INCR', KEYS[3 * n + i])
  redis.call('XADD', KEYS[2 * n + i], 'MAXLEN', '~', retention, '*',
    't', 'P', 'k', key, 'n', version, 'v', value, 'c', created[i], 'u', now, 'q', seq)
  result[#result + 1] = version
  result[#result + 1] = created[i]
end
for index, args in pairs(added) do
  for from = 1, #args, 2 * ZADD_CHUNK do
    redis.call('ZADD', index, unpack(args, from, math.min(from + 2 * ZADD_CHUNK - 1, #args)))
  end
end
return result
