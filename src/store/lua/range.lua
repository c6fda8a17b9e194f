#!lua flags=no-writes
--[[
range.lua: read the entries of a page, index and entries of every partition given in one atomic
step, if the page is still the members the caller expects.

The buckets of a page's entries are only known once the index has been read, and every key a
script touches must arrive in KEYS. So a page is read in two rounds: the first (store.ts) reads
each partition's index with a plain ZRANGE and learns the page's members; this script is the
second, passed per member the bucket hash its key belongs to. It gives the entries only if the
window still holds exactly those members in every partition (otherwise the caller reads the
page again). On one Redis one call covers every partition, so a page is one snapshot; on a
Redis Cluster a call reaches one slot, so there is one call per partition.

KEYS   1..m      the index sorted set of each of the m partitions
       m+1..     per member the caller expects, partition by partition in the order of the
                 indexes, in page order within each, the bucket hash of its key (keys.ts
                 bucketOf; members sharing a bucket repeat it)
ARGV   1         m, the number of partitions
       2, 3      window: ZRANGE BYLEX lower and upper bound ("-", "+", "[key", "(key"); the
                 caller cuts it at the page's last key, so that a member anywhere in the page
                 is seen, also in a partition expected to have none
       4         1 to read one member more than expected from each partition (so that one more
                 is seen), 0 for a page of size 0, which spans nothing
       5         "f" for ascending from the lower bound, "r" for descending from the upper
       6, 7      the whole range's bounds, for the total count
       8, 9      the bounds of the part of the range beyond the window on the far side of the
                 cursor, for hasPreviousPage / hasNextPage ("" and "" when not needed)
       10..9+m   k_j, how many members the caller expects of partition j
       then      the members the caller expects, in the order of their buckets in KEYS
Returns
       {total, beyond, 1, packed_1 .. packed_k} when every partition still holds the members
       expected: total and beyond summed over the m partitions, then each member's packed entry
       as stored (keys.ts), in the order the caller passed them (it has the members already)
       {0, 0, 0} otherwise
       (an index member without its bucket field, which verify reports, gives a nil)
       The entries go out as stored, unpacked by the caller: unpacking them here (four reply
       elements each, and a copy of every value) doubled the script's time for a page of 100.
Errors none
]]
local m = tonumber(ARGV[1])
local extra = tonumber(ARGV[4])
local forward = ARGV[5] == 'f'
-- at: how many expected members the partitions before partition j have; partition j's are
-- members (ARGV) and buckets (KEYS) at + 1 .. at + k of them.
local at = 0
for j = 1, m do
  local k = tonumber(ARGV[9 + j])
  local members
  if forward then
    members = redis.call('ZRANGE', KEYS[j], ARGV[2], ARGV[3], 'BYLEX', 'LIMIT', 0, k + extra)
  else
    members = redis.call('ZRANGE', KEYS[j], ARGV[3], ARGV[2], 'BYLEX', 'REV', 'LIMIT', 0, k + extra)
  end
  if #members ~= k then return { 0, 0, 0 } end
  for i = 1, k do
    if members[i] ~= ARGV[9 + m + at + i] then return { 0, 0, 0 } end
  end
  at = at + k
end

local total, beyond = 0, 0
for j = 1, m do
  total = total + redis.call('ZLEXCOUNT', KEYS[j], ARGV[6], ARGV[7])
  if ARGV[8] ~= '' then beyond = beyond + redis.call('ZLEXCOUNT', KEYS[j], ARGV[8], ARGV[9]) end
end
local result = { total, beyond, 1 }
for i = 1, at do
  result[3 + i] = redis.call('HGET', KEYS[m + i], ARGV[9 + m + i])
end
return result
