#!lua flags=allow-oom
--[[
delete.lua: delete one or more entries, all or nothing.

KEYS   1..n      the value hash of each item
       n+1..2n   the index sorted set of each item's partition (KEYS[n+i] belongs to KEYS[i])
ARGV   1         n, the number of items
       then, per item i (two values from ARGV[2i]):
                 key, expected version ("" = any; "0" = must not exist)
Returns
       {"OK", then per item: value, version, created_ms, updated_ms}
       where an absent item has four `false` (nil) values
Errors (returned as the first element, nothing is deleted)
       {"VERSION_CONFLICT", key_a, actual_version_a, ...}

allow-oom: deleting frees memory, so it must keep working when Redis is at maxmemory.
]]
local n = tonumber(ARGV[1])
local previous = {}
local conflicts = { 'VERSION_CONFLICT' }

for i = 1, n do
  local current = redis.call('HMGET', KEYS[i], 'v', 'n', 'c', 'u')
  previous[i] = current
  local version = tonumber(current[2]) or 0
  local expected = ARGV[2 * i + 1]
  if expected ~= '' and tonumber(expected) ~= version then
    conflicts[#conflicts + 1] = ARGV[2 * i]
    conflicts[#conflicts + 1] = version
  end
end
if #conflicts > 1 then return conflicts end

local result = { 'OK' }
for i = 1, n do
  local p = previous[i]
  if p[2] then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[n + i], ARGV[2 * i])
  end
  for j = 1, 4 do result[#result + 1] = p[j] end
end
return result
