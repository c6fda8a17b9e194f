#!lua flags=no-writes
--[[
range.lua: read one partition's part of a page, index and entries in one atomic step, if it is
still the members the caller expects.

The buckets of a page's entries are only known once the index has been read, and every key a
script touches must arrive in KEYS. So a page is read in two rounds: the first (store.ts) reads
each partition's index with a plain ZRANGE and learns the page's members; this script is the
second, passed per member the bucket hash its key belongs to. It gives the entries only if the
window still holds exactly those members (otherwise the caller reads the page again).

KEYS   1         the partition's index sorted set
       2..k+1    per member the caller expects, in page order, the bucket hash of its key
                 (keys.ts bucketOf; members sharing a bucket repeat it)
ARGV   1, 2      window: ZRANGE BYLEX lower and upper bound ("-", "+", "[key", "(key"); the
                 caller cuts it at the page's last key, so that a member anywhere in the page
                 is seen, also in a partition expected to have none (k = 0)
       3         read at most this many members of the window: k + 1, so that one more than
                 expected is seen
       4         "f" for ascending from the lower bound, "r" for descending from the upper
       5, 6      the whole range's bounds, for the total count
       7, 8      the bounds of the part of the range beyond the window on the far side of the
                 cursor, for hasPreviousPage / hasNextPage ("" and "" when not needed)
       9..k+8    the k members the caller expects, in page order
Returns
       {total, beyond, matched (1 or 0), then
        when matched: packed_1 .. packed_k, each member's packed entry as stored (keys.ts), in
                      the order the caller passed them (it has the members already);
        otherwise:    nothing more}
       (an index member without its bucket field, which verify reports, gives a nil)
       The entries go out as stored, unpacked by the caller: unpacking them here (four reply
       elements each, and a copy of every value) doubled the script's time for a page of 100.
Errors none
]]
local limit = tonumber(ARGV[3])
local members
if ARGV[4] == 'f' then
  members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, limit)
else
  members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[1], 'BYLEX', 'REV', 'LIMIT', 0, limit)
end
local total = redis.call('ZLEXCOUNT', KEYS[1], ARGV[5], ARGV[6])
local beyond = 0
if ARGV[7] ~= '' then beyond = redis.call('ZLEXCOUNT', KEYS[1], ARGV[7], ARGV[8]) end

local k = #KEYS - 1
local matched = (#members == k)
if matched then
  for i = 1, k do
    if members[i] ~= ARGV[8 + i] then matched = false break end
  end
end

local result = { total, beyond, matched and 1 or 0 }
if matched then
  for i = 1, k do
    result[3 + i] = redis.call('HGET', KEYS[i + 1], members[i])
  end
end
return result
