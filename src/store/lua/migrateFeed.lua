#!lua flags=allow-oom
--[[
migrateFeed.lua: move one partition's change feed from layout 2 (one stream entry per event,
time-based IDs, fields t k n v c u q) to layout 3's entries (feedFormat.ts), in one step. The
events it retained are dropped: they are a window of history, not data. In their place an entry
of no events marks where the feed goes on (ID 0-<count>, q count + 1), so a cursor from before
the move learns that its events expired (CURSOR_EXPIRED) instead of waiting for them.

KEYS   1  the partition's change-feed stream
       2  the partition's sequence counter
ARGV   none
Returns 1 when it moved the stream; 0 when it was in layout 3's format already (its last entry
has a 0-<seq> ID), so running it again, or from two servers at once, changes nothing more.
allow-oom: it frees memory, and a full Redis must still be upgradable.
]]
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last and string.sub(last[1], 1, 2) == '0-' then return 0 end
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('DEL', KEYS[1])
if count > 0 then redis.call('XADD', KEYS[1], string.format('0-%d', count), 'q', count + 1, 'e', '') end
return 1
