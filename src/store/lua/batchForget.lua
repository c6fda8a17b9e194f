#!lua flags=allow-oom
--[[
batchForget.lua: on a Redis Cluster, drop one part of a multi-partition batch whose parts are all
applied (see batchPrepare.lua); on the coordinator's part, also take the batch out of the
pending set, which ends it. The coordinator's part is forgotten first: once it is gone nothing
rolls the batch forward, so the other parts are never needed again. Also drops the parts of
a batch that was never committed (a prepare failed).

KEYS   1   the part hash {<prefix>:<p>}:x:<batch id>
       2   (coordinator only) the pending set {<prefix>:<p>}:xq
ARGV   1   the batch id
Returns {"OK", 1 if the part existed else 0}
allow-oom: it only frees memory.
]]
if #KEYS == 2 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return { 'OK', redis.call('DEL', KEYS[1]) }
