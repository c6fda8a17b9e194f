#!lua
--[[
batchPrepare.lua: on a Redis Cluster, record one partition's part of a batch that spans
partitions, before any of it is applied (README, "Scaling out": multi-partition batches).

A batch over several partitions cannot be one script on a cluster (its keys live in several
slots). It is written in three steps: every part but the coordinator's (the partition of the
batch's first item) is prepared; then the coordinator's part is prepared together with the
commit record (the batch's id in the coordinator's pending set), which is the commit point;
then every part is applied (batchApply.lua) and the batch forgotten (batchForget.lua). A batch
committed but not forgotten (its writer crashed) is rolled forward by any API process.

Preparing stores the part's items, so every node involved has taken the part's memory before
anything is applied: a full node refuses here (no allow-oom flag), when nothing is applied yet.

KEYS   1   the part hash {<prefix>:<p>}:x:<batch id>
       2   (commit only) the coordinator's pending set {<prefix>:<p>}:xq
ARGV   1   seconds a part prepared but not forgotten is kept (its safety expiry)
       2   the part's items, JSON: [key, value, key, value, ...]
       3   (commit only) the batch id
       4   (commit only) every partition of the batch, comma-separated
       5   (commit only) the commit time in ms, the pending set's score
Returns {"OK"}
Errors  none of its own (OOM from Redis when the node is at maxmemory)

The part hash: s "prepared", d the items; and on the coordinator's part, p the partitions. The
coordinator's part has no expiry: it is the record roll-forward starts from.
]]
redis.call('HSET', KEYS[1], 's', 'prepared', 'd', ARGV[2])
if #KEYS == 2 then
  redis.call('HSET', KEYS[1], 'p', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
else
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return { 'OK' }
