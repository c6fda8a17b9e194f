#!lua
--[[
put.lua: write one or more entries, all or nothing.

KEYS   1..n      the value hash of each item
       n+1..2n   the index sorted set of each item's partition (KEYS[n+i] belongs to KEYS[i])
ARGV   1         n, the number of items
       then, per item i (three values from ARGV[3i-1]):
                 key, value, expected version ("" = any; "0" = must not exist)
Returns
       {"OK", now_ms, version_1, created_ms_1, ..., version_n, created_ms_n}
Errors (returned as the first element, nothing is written)
       {"VERSION_CONFLICT", key_a, actual_version_a, key_b, actual_version_b, ...}

Every compare-and-set is checked before anything is written, so a conflict leaves the store
untouched. The script has no allow-oom flag: at maxmemory Redis refuses it before it starts.
]]
local n = tonumber(ARGV[1])
local versions = {}
local created = {}
local conflicts = { 'VERSION_CONFLICT' }

for i = 1, n do
  local current = redis.call('HMGET', KEYS[i], 'n', 'c')
  local version = tonumber(current[1]) or 0
  versions[i] = version
  created[i] = current[2]
  local expected = ARGV[3 * i + 1]
  if expected ~= '' and tonumber(expected) ~= version then
    conflicts[#conflicts + 1] = ARGV[3 * i - 1]
    conflicts[#conflicts + 1] = version
  end
end
if #conflicts > 1 then return conflicts end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = { 'OK', now }

for i = 1, n do
  local version = versions[i] + 1
  if version == 1 then
    redis.call('HSET', KEYS[i], 'v', ARGV[3 * i], 'n', version, 'c', now, 'u', now)
    redis.call('ZADD', KEYS[n + i], 0, ARGV[3 * i - 1])
    created[i] = now
  else
    redis.call('HSET', KEYS[i], 'v', ARGV[3 * i], 'n', version, 'u', now)
  end
  result[#result + 1] = version
  result[#result + 1] = tonumber(created[i])
end
return result
