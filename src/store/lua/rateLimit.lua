#!lua flags=allow-oom
--[[
rateLimit.lua: one request (or a lease of several) of one token against its rate limits, requests per second and bytes
per second, both checked in one atomic step on the Redis clock. Every API process calls it for
the same key, so the limits hold across processes.

The algorithm is GCRA (the generic cell rate algorithm, i.e. a token bucket kept as a time):
each dimension has a backlog, the time in microseconds its bucket needs to drain at its rate.
A request of cost c adds c / rate seconds to it; the request passes when every backlog stays
within the burst window (burstSeconds), and it then consumes both. Otherwise it consumes
nothing, in neither dimension, and the answer is how long until it would pass (the larger of
the two waits: backlogs drain at the same speed). The backlogs are stored relative to `t`, the
Redis time of the last pass, so their precision does not depend on the epoch (a microsecond
timestamp of ~1.7e15 keeps only ~0.25 us in a double; a backlog under an hour keeps ~1e-6 us).

KEYS   1         the token's rate-limit hash (keys.ts rateLimitKey), fields:
                   t  Redis time of the last pass, whole microseconds (TIME)
                   r  request backlog at t, microseconds
                   b  byte backlog at t, microseconds
ARGV   1         requests per second, "0" = not limited
       2         bytes per second, "0" = not limited
       3         burstSeconds: each dimension may run ahead of its rate by this much (> 0)
       4         the byte cost (a whole number >= 0)
       5         the request count (a whole number >= 1; more than 1: a lease an API process
                 spends locally, auth/rateLimit.ts)
Returns
       0         allowed: both dimensions consumed
       n > 0     refused, nothing consumed: it would pass in n milliseconds (ceil, >= 1)
       -1        refused, nothing consumed: the byte cost alone exceeds the byte burst
                 (bytesPerSecond * burstSeconds), so the request can never pass
Errors
       none of its own (a malformed ARGV raises a script error; nothing is written)

A burst of less than one request (requestsPerSecond * burstSeconds < 1) still lets one request
through every 1 / requestsPerSecond: the request dimension's window is at least one request.
The key expires (PEXPIRE) when both backlogs have drained, when it would read as absent anyway:
an idle token leaves nothing behind. A clock that went backwards (a failover to a master whose
clock is behind) counts as no time elapsed.

TIME before a write is allowed: Redis 7 replicates scripts by their effects only (HSET and
PEXPIRE, the latter as PEXPIREAT), never by re-running them.

allow-oom: the limits must go on holding when Redis is at maxmemory, where reads still work.
Without it Redis would refuse the script there (OOM) and the caller, which lets a request
through when the check fails (auth/rateLimit.ts), would stop limiting exactly then. What it may
add past maxmemory is bounded: one small hash per configured token with a limit (token ids come
from the configuration, never from requests), overwritten in place, written only when a request
passes (a refusal writes nothing), and gone once the token is idle.
]]
local rps = tonumber(ARGV[1])
local bps = tonumber(ARGV[2])
local burst = tonumber(ARGV[3]) * 1000000
local bytes = tonumber(ARGV[4])
local count = tonumber(ARGV[5])
-- Slack for float rounding (3 requests of 1/3 s must fit in a 1 s burst): a nanosecond.
local EPS = 0.001

local costB = 0
if bps > 0 then
  costB = bytes * 1000000 / bps
  if costB > burst + EPS then return -1 end
end
local costR = 0
local capR = burst
if rps > 0 then
  -- The window is at least one request wide, whatever the count.
  if 1000000 / rps > capR then capR = 1000000 / rps end
  costR = count * 1000000 / rps
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local r, b = 0, 0
local state = redis.call('HMGET', KEYS[1], 't', 'r', 'b')
if state[1] then
  local elapsed = now - tonumber(state[1])
  if elapsed < 0 then elapsed = 0 end
  r = math.max(0, (tonumber(state[2]) or 0) - elapsed)
  b = math.max(0, (tonumber(state[3]) or 0) - elapsed)
end

local wait = 0
if rps > 0 then
  r = r + costR
  wait = math.max(wait, r - capR)
end
if bps > 0 then
  b = b + costB
  wait = math.max(wait, b - burst)
end
if wait > EPS then return math.max(1, math.ceil(wait / 1000)) end

redis.call('HSET', KEYS[1], 't', string.format('%.0f', now), 'r', string.format('%.17g', r), 'b', string.format('%.17g', b))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(math.max(r, b) / 1000) + 1))
return 0
