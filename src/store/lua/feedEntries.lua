--[[
feedEntries.lua: not a script of its own. The change feed's entries as put.lua, delete.lua and
batchApply.lua append them (the format is in feedFormat.ts); scripts.ts puts this file in place
of their line `-- #include feedEntries.lua`, since a Lua script cannot load another.

addEvent(stream, counter, event)  queues one packed event for `stream`, whose sequence counter
                                  is `counter` (both keys the script was given in KEYS)
appendFeeds(retention, undo)      appends the queued events: per stream in first-seen order, one
                                  entry per FEED_ENTRY_BYTES of events, ID 0-<its last event's
                                  number>, trimming to about `retention` events (XADD MINID ~);
                                  then moves the counter on: one INCRBY per stream (one INCR per
                                  event where the ACL user lacks INCRBY, see below). With `undo` (a
                                  function), a refused XADD calls it before raising XADD's error:
                                  for a caller that wrote entries before its events, within one
                                  stream (whose first XADD is the only one that can be refused)
appendEvent(stream, counter, event, retention)
                                  appends one event as an entry of its own, at once, without the
                                  queue's tables (a single put or delete: about 5 µs less in Redis)
XADD fails only when the stream holds an entry past its counter (not written by kvql): called
before any other write, it then stops a write within one partition having written nothing; a
caller that wrote first passes `undo`. Both read every counter first and raise, having written
nothing (or after `undo`), for a counter that is not a whole number or not a string (a foreign
write): "kvql: the feed counter <key> holds "<value>", not a count", or Redis's WRONGTYPE.
]]
-- Events go into entries of at most FEED_ENTRY_BYTES (an event larger than that gets an entry of
-- its own), so a reader's memory per entry stays bounded however large the batch, and a batch of
-- 1,000 small items costs a few XADDs instead of 1,000.
local FEED_ENTRY_BYTES = 65536
local feeds, streams = {}, {}
local function addEvent(stream, counter, event)
  local feed = feeds[stream]
  if not feed then
    feed = { counter = counter, n = 0, entries = {} }
    feeds[stream] = feed
    streams[#streams + 1] = stream
  end
  local entry = feed.entries[#feed.entries]
  if not entry or entry.bytes + #event > FEED_ENTRY_BYTES then
    entry = { n = 0, bytes = 0 }
    feed.entries[#feed.entries + 1] = entry
  end
  entry.n, entry.bytes = entry.n + 1, entry.bytes + #event
  entry[entry.n] = event
  feed.n = feed.n + 1
end
-- One entry of events first..last, packed back to back in `events`. IDs are written with %d:
-- Lua writes numbers of 10^14 and above with an exponent, which XADD refuses.
local function xaddEntry(stream, first, last, events, retention, undo)
  local minid, id = string.format('0-%d', math.max(1, last - retention + 1)), string.format('0-%d', last)
  if not undo then return redis.call('XADD', stream, 'MINID', '~', minid, id, 'q', first, 'e', events) end
  local reply = redis.pcall('XADD', stream, 'MINID', '~', minid, id, 'q', first, 'e', events)
  if type(reply) == 'table' and reply.err then
    undo()
    error(reply)
  end
end
-- One INCRBY for a write's events, not one INCR each: every write command of a script is a
-- command in the AOF as well as a call, and 1,000 INCRs cost Redis about 6% of a batch of 1,000
-- new keys (docs/layout.md, "One INCRBY per stream"). An ACL user made by hand from a users.acl
-- of before INCRBY was granted is refused it (NOPERM, in the ACL LOG): one INCR per event then,
-- as before, so an upgrade never stops its writes.
local function moveCounter(counter, n)
  -- (pcall answers an error as a table, a count as a number)
  if n > 1 and type(redis.pcall('INCRBY', counter, n)) ~= 'table' then return end
  for _ = 1, n do redis.call('INCR', counter) end
end
-- A sequence counter's value. Only kvql writes it, always a whole number; one that is not (a
-- foreign write) would make the event numbers nonsense, or INCRBY refuse after the events are in
-- the stream. So it is read strictly (Lua's tonumber takes " 1", "1e3", "0x10"), and anything
-- else raises, after `undo` (if given) has put back what the caller wrote.
local function counterValue(counter, undo)
  local raw = redis.pcall('GET', counter)
  if raw == false then return 0 end
  if type(raw) == 'string' and string.match(raw, '^%d+$') then return tonumber(raw) end
  if undo then undo() end
  if type(raw) == 'table' then error(raw) end
  error('kvql: the feed counter ' .. counter .. ' holds "' .. raw .. '", not a count')
end
local function appendFeeds(retention, undo)
  -- Every counter is read before the first XADD, so a bad one stops the write with no event in
  -- any stream.
  local lasts = {}
  for i, stream in ipairs(streams) do lasts[i] = counterValue(feeds[stream].counter, undo) end
  for i, stream in ipairs(streams) do
    local feed = feeds[stream]
    local last = lasts[i]
    for _, entry in ipairs(feed.entries) do
      last = last + entry.n
      xaddEntry(stream, last - entry.n + 1, last, table.concat(entry, '', 1, entry.n), retention, undo)
    end
    moveCounter(feed.counter, feed.n)
  end
end
local function appendEvent(stream, counter, event, retention)
  local seq = counterValue(counter) + 1
  xaddEntry(stream, seq, seq, event, retention)
  redis.call('INCR', counter)
end
