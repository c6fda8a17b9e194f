#!lua flags=allow-oom
--[[
delete.lua: delete one or more entries, all or nothing, and append one DELETE event per deleted
entry to the change feed of its partition, in the same atomic step.

KEYS   per item i of n, four keys:
       KEYS[i]          the value hash
       KEYS[n+i]        the index sorted set of the item's partition
       KEYS[2n+i]       the change-feed stream of the item's partition
       KEYS[3n+i]       the feed's sequence counter of the item's partition
ARGV   1         n, the number of items
       2         feed retention: each stream keeps about this many events (XADD MAXLEN ~)
       then, per item i (two values from ARGV[2i+1]):
                 key, expected version ("" = any; "0" = must not exist)
Returns
       {"OK", then per item: value, version, created_ms, updated_ms}
       where an absent item has four `false` (nil) values (and no event)
Errors (returned as the first element, nothing is deleted)
       {"VERSION_CONFLICT", key_a, actual_version_a, ...}

Event fields: t "D", k key, n the deleted version, q sequence.
allow-oom: deleting frees memory, so it must keep working when Redis is at maxmemory (the
event it appends is small, and the stream is capped).
]]
local n = tonumber(ARGV[1])
local retention = ARGV[2]
local previous = {}
local conflicts = { 'VERSION_CONFLICT' }

for i = 1, n do
  local current = redis.call('HMGET', KEYS[i], 'v', 'n', 'c', 'u')
  previous[i] = current
  local version = tonumber(current[2]) or 0
  local expected = ARGV[2 * i + 2]
  if expected ~= '' and tonumber(expected) ~= version then
    conflicts[#conflicts + 1] = ARGV[2 * i + 1]
    conflicts[#conflicts + 1] = version
  end
end
if #conflicts > 1 then return conflicts end

local result = { 'OK' }
for i = 1, n do
  local p = previous[i]
  if p[2] then
    local key = ARGV[2 * i + 1]
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[n + i], key)
    local seq = redis.call('INCR', KEYS[3 * n + i])
    redis.call('XADD', KEYS[2 * n + i], 'MAXLEN', '~', retention, '*', 't', 'D', 'k', key, 'n', p[2], 'q', seq)
  end
  for j = 1, 4 do result[#result + 1] = p[j] end
end
return result
