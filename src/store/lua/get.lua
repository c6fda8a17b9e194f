#!lua flags=no-writes
--[[
get.lua: read the entries of several keys in one call, one snapshot: on one Redis keys of any
partitions, on a Redis Cluster the keys of one partition (a script reaches one slot).

One call instead of an HMGET per bucket: a getMany of 100 random keys touches about 100
buckets, and each command costs the client far more than Redis's HGET does.

KEYS   1..n      per key, the bucket hash it belongs to (keys.ts bucketOf; repeated when shared)
ARGV   1..n      the keys, in the same order
Returns
       {packed_1, ..., packed_n}: each key's packed entry as stored (keys.ts), nil when absent
Errors none
]]
local result = {}
for i = 1, #KEYS do
  result[i] = redis.call('HGET', KEYS[i], ARGV[i])
end
return result
