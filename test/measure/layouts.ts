// `npm run measure:layouts`: Redis memory per key, write throughput and point-read cost of
// candidate storage layouts, for 16-byte keys and 100-byte values, each written by a Lua script
// shaped like put.lua (compare-and-set check, Redis clock, change-feed INCR + XADD, batches of
// BATCH items per EVALSHA while loading).
//
// Usage: npm run measure:layouts [-- <keys> [<layout filter substring>] [<ops>]]
//        defaults: 1000000 keys, every layout, 20000 ops per throughput phase.
//
// Each layout gets its own redis-server (startTestRedis: a copy of redis.conf, so appendonly yes
// and appendfsync always, plus the layout's extra args), one at a time. Extra args common to all:
// --auto-aof-rewrite-percentage 0 (no AOF rewrite fork in the middle of a measurement).
// The change feed is written by every put (as put.lua does) with retention 1 (MAXLEN ~ 1), so it
// holds a constant few KB and the memory delta is the data layout alone.
//
// Per layout:
//   bytes/key   (used_memory - client buffers - AOF buffer) after loading N keys, minus before,
//               divided by N. Loading: sequential keys key:000000000000.., BATCH per script call,
//               two calls in flight (one for range pages).
//   puts/s      single-key put scripts (updates of random existing keys, with the feed), OPS of
//               them with CONCURRENCY in flight on one connection (createRedis), fsync always.
//   put us      Redis-side time per put script (INFO commandstats usec_per_call): the CPU a write
//               costs inside Redis, without the fsync and the network; less noisy than puts/s.
//   reads/s     single-key point reads of random existing keys, same concurrency; read us is their
//               Redis-side time per call.
import { Command, type Redis } from 'ioredis';
import { createRedis } from '../../src/store/redis.js';
import { startTestRedis } from '../harness/redisServer.js';

const N = Number(process.argv[2] ?? 1_000_000);
const FILTER = process.argv[3] ?? '';
const OPS = Number(process.argv[4] ?? 20_000);
const BATCH = 1000;
const CONCURRENCY = 32;
const PHASE_DEADLINE_MS = 20_000; // a throughput phase stops early past this
const LOAD_DEADLINE_MS = 120_000; // a load stops early past this (the row says so)
const VALUE = 'v'.repeat(100);
const keyOf = (i: number) => `key:${String(i).padStart(12, '0')}`; // 16 bytes
const TAG = '{m:0}'; // one partition: every key of the layout shares this hash tag
const STREAM = `${TAG}:s`;
const SEQ = `${TAG}:q`;
const INDEX = `${TAG}:i`;
const COMMON_ARGS = ['--auto-aof-rewrite-percentage', '0'];

// ---------------------------------------------------------------------------------------------
// Lua. Every put script: KEYS[1] stream, KEYS[2] sequence, then layout keys; ARGV[1] n, then per
// item key, value, expected version ("" = any) at ARGV[base+3i-2 .. base+3i]. Replies like
// put.lua: {"OK", now, version_1, created_1, ...} or {"VERSION_CONFLICT", key, actual, ...}.
// Packed entry: struct.pack('<I6I6I6', version, createdAt ms, updatedAt ms) .. value (18 + value
// bytes); I6 holds 2^48, beyond any ms timestamp or version count we will see.

/** The common shape of a put script, with the layout's read/write of one item spliced in. */
function putScript(opts: { prelude?: string; keysPerItem: number; firstItemKey: number; read: string; write: string }): string {
  return `#!lua
local n = tonumber(ARGV[1])
local K0 = ${opts.firstItemKey}
local KP = ${opts.keysPerItem}
${opts.prelude ?? ''}
local versions, created = {}, {}
local conflicts = { 'VERSION_CONFLICT' }
for i = 1, n do
  local key = ARGV[3 * i - 1]
  local k = K0 + KP * (i - 1)
  local version, c
  ${opts.read}
  versions[i] = version
  created[i] = c
  local expected = ARGV[3 * i + 1]
  if expected ~= '' and tonumber(expected) ~= version then
    conflicts[#conflicts + 1] = key
    conflicts[#conflicts + 1] = version
  end
end
if #conflicts > 1 then return conflicts end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = { 'OK', now }
for i = 1, n do
  local key, value = ARGV[3 * i - 1], ARGV[3 * i]
  local k = K0 + KP * (i - 1)
  local version = versions[i] + 1
  if version == 1 then created[i] = now end
  ${opts.write}
  local seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1, '*',
    't', 'P', 'k', key, 'n', version, 'v', value, 'c', created[i], 'u', now, 'q', seq)
  result[#result + 1] = version
  result[#result + 1] = tonumber(created[i])
end
return result`;
}

const ZADD_IF_NEW = `if version == 1 then redis.call('ZADD', KEYS[3], 0, key) end`;

/** Today's layout: hash {v,n,c,u} per key + index zset. KEYS: stream, seq, index, hash_i... */
const CURRENT_PUT = putScript({
  keysPerItem: 1,
  firstItemKey: 4,
  read: `local r = redis.call('HMGET', KEYS[k], 'n', 'c')
  version = tonumber(r[1]) or 0
  c = r[2]`,
  write: `if version == 1 then
    redis.call('HSET', KEYS[k], 'v', value, 'n', version, 'c', now, 'u', now)
  else
    redis.call('HSET', KEYS[k], 'v', value, 'n', version, 'u', now)
  end
  ${ZADD_IF_NEW}`,
});

/** String per key, packed header + value. Reads only the 18-byte header (GETRANGE). */
const STRING_PUT = putScript({
  keysPerItem: 1,
  firstItemKey: 4,
  read: `local h = redis.call('GETRANGE', KEYS[k], 0, 11)
  version = 0
  if #h == 12 then version, c = struct.unpack('<I6I6', h) end`,
  write: `redis.call('SET', KEYS[k], struct.pack('<I6I6I6', version, created[i], now) .. value)
  ${ZADD_IF_NEW}`,
});

/** Hash per key with one packed field "d". */
const HASH1_PUT = putScript({
  keysPerItem: 1,
  firstItemKey: 4,
  read: `local h = redis.call('HGET', KEYS[k], 'd')
  version = 0
  if h then version, c = struct.unpack('<I6I6', h) end`,
  write: `redis.call('HSET', KEYS[k], 'd', struct.pack('<I6I6I6', version, created[i], now) .. value)
  ${ZADD_IF_NEW}`,
});

/**
 * Bucketed hashes (Instagram): the entry is field <key> of bucket hash {tag}:b:<bucket>, value
 * packed. KEYS per item: bucket, spill key {tag}:x:<key>. A value longer than INLINE (ARGV[... ]
 * constant below) is stored in the spill string and the bucket keeps the header plus one marker
 * byte, so one big value cannot turn a whole bucket into a hashtable (or make its listpack huge).
 * The inline entry is header .. "=" .. value; a spilled one is header .. ">".
 */
const BUCKET_PUT = putScript({
  keysPerItem: 2,
  firstItemKey: 4,
  prelude: 'local INLINE = 1024',
  read: `local h = redis.call('HGET', KEYS[k], key)
  version = 0
  if h then version, c = struct.unpack('<I6I6', h) end`,
  write: `local header = struct.pack('<I6I6I6', version, created[i], now)
  if #value > INLINE then
    redis.call('SET', KEYS[k + 1], value)
    redis.call('HSET', KEYS[k], key, header .. '>')
  else
    if versions[i] > 0 then redis.call('UNLINK', KEYS[k + 1]) end
    redis.call('HSET', KEYS[k], key, header .. '=' .. value)
  end
  ${ZADD_IF_NEW}`,
});

/** The floor: the index zset alone (no value, no metadata: not a layout). */
const ZSET_ONLY_PUT = putScript({
  keysPerItem: 0,
  firstItemKey: 4,
  read: `version = 0`,
  write: `redis.call('ZADD', KEYS[3], 0, key)`,
});

/**
 * Range pages (a B+-tree of listpacks): keys are split into pages by key range. The directory
 * zset {tag}:d holds each page's lower bound (the first page's is ""), the hash {tag}:D maps a
 * lower bound to the page id; page <id> is a zset {tag}:k:<id> of its keys (score 0, listpack,
 * so it is ordered) and a hash {tag}:h:<id> key -> packed entry (listpack). A page that reaches
 * CAP keys (the listpack limit, so it never converts) is split in half into a spare page. Nothing is addressed by a fixed hash, so the
 * store grows without resizing; the index zset of the other layouts is gone (the page zsets are it).
 *
 * The client caches the directory and declares the pages it expects in KEYS (every key a script
 * touches is declared, all under one hash tag). The script looks each key up in the directory
 * itself and answers MOVED (writing nothing) when a key's page is not among the declared ones; the
 * client refreshes its cache and retries. Splits may only use the spare pages the client declared
 * (fresh ids, checked absent), enough for the worst case.
 *
 * KEYS  1 stream, 2 seq, 3 directory zset, 4 directory hash, then per declared page j (m of them):
 *       KEYS[3+2j] page zset, KEYS[4+2j] page hash. Pages 1..g are the existing pages the client
 *       expects, g+1..m spares.
 * ARGV  1 n, 2 m, 3 g, 4..3+m page ids, then per item key, value, expected version.
 * Reply {"OK", now, version_1, created_1, ..., then per split: lower bound, page id}
 *       or {"MOVED", key...} or {"VERSION_CONFLICT", key, actual, ...}.
 */
const PAGE_CAP = 128; // = zset-max-listpack-entries and hash-max-listpack-entries: split on reaching it
const PAGES_PUT = `#!lua
local n, m, g = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local CAP = ${PAGE_CAP}
local base = 3 + m
local slot = {}
for j = 1, m do slot[ARGV[3 + j]] = j end
for j = g + 1, m do
  if redis.call('EXISTS', KEYS[3 + 2 * j]) == 1 then return redis.error_reply('SPARE_TAKEN') end
end
local function pageOf(key)
  local low = redis.call('ZRANGE', KEYS[3], '[' .. key, '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)[1]
  return slot[redis.call('HGET', KEYS[4], low)]
end
local versions, created = {}, {}
local conflicts, moved = { 'VERSION_CONFLICT' }, { 'MOVED' }
for i = 1, n do
  local key = ARGV[base + 3 * i - 2]
  local j = pageOf(key)
  if not j or j > g then
    moved[#moved + 1] = key
  else
    local h = redis.call('HGET', KEYS[4 + 2 * j], key)
    local version, c = 0, nil
    if h then version, c = struct.unpack('<I6I6', h) end
    versions[i], created[i] = version, c
    local expected = ARGV[base + 3 * i]
    if expected ~= '' and tonumber(expected) ~= version then
      conflicts[#conflicts + 1] = key
      conflicts[#conflicts + 1] = version
    end
  end
end
if #moved > 1 then return moved end
if #conflicts > 1 then return conflicts end
-- Each split needs CAP/2 new keys in a page, or one key in a full page: never more splits than this.
if m - g < math.min(n, g + math.ceil(n / (CAP / 2))) then return redis.error_reply('TOO_FEW_SPARES') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = { 'OK', now }
local splits = {}
local spare = g
for i = 1, n do
  local key, value = ARGV[base + 3 * i - 2], ARGV[base + 3 * i - 1]
  local version = versions[i] + 1
  if version == 1 then created[i] = now end
  local j = pageOf(key) -- again: a split earlier in this script may have moved it to a spare
  local zk, hk = KEYS[3 + 2 * j], KEYS[4 + 2 * j]
  redis.call('HSET', hk, key, struct.pack('<I6I6I6', version, created[i], now) .. value)
  if version == 1 then
    redis.call('ZADD', zk, 0, key)
    local size = redis.call('ZCARD', zk)
    if size >= CAP then
      spare = spare + 1
      local keep = math.floor(size / 2)
      local upper = redis.call('ZRANGE', zk, keep, -1)
      local vals = redis.call('HMGET', hk, unpack(upper))
      local pairs_, members = {}, {}
      for x = 1, #upper do
        pairs_[#pairs_ + 1] = upper[x]
        pairs_[#pairs_ + 1] = vals[x]
        members[#members + 1] = 0
        members[#members + 1] = upper[x]
      end
      redis.call('HSET', KEYS[4 + 2 * spare], unpack(pairs_))
      redis.call('ZADD', KEYS[3 + 2 * spare], unpack(members))
      redis.call('ZREMRANGEBYRANK', zk, keep, -1)
      redis.call('HDEL', hk, unpack(upper))
      redis.call('ZADD', KEYS[3], 0, upper[1])
      redis.call('HSET', KEYS[4], upper[1], ARGV[3 + spare])
      splits[#splits + 1] = upper[1]
      splits[#splits + 1] = ARGV[3 + spare]
    end
  end
  local seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1, '*',
    't', 'P', 'k', key, 'n', version, 'v', value, 'c', created[i], 'u', now, 'q', seq)
  result[#result + 1] = version
  result[#result + 1] = tonumber(created[i])
end
for x = 1, #splits do result[#result + 1] = splits[x] end
return result`;

/** Point read in range pages: KEYS dir zset, dir hash, page hash; ARGV key, page id. */
const PAGES_GET = `#!lua flags=no-writes
local low = redis.call('ZRANGE', KEYS[1], '[' .. ARGV[1], '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)[1]
if redis.call('HGET', KEYS[2], low) ~= ARGV[2] then return { 'MOVED' } end
return { 'OK', redis.call('HGET', KEYS[3], ARGV[1]) }`;

// ---------------------------------------------------------------------------------------------
// Layouts.

interface PutItem {
  key: string;
  value: string;
  expected?: string;
}

interface Layout {
  name: string;
  notes: string;
  /** redis-server args besides COMMON_ARGS. */
  extra: string[];
  /** Create what must exist before the first put (not counted: measured before "before"). */
  init?(r: Redis): Promise<void>;
  put(r: Redis, items: PutItem[]): Promise<void>;
  /** A point read; returns the value, checked by the caller. */
  get(r: Redis, key: string): Promise<string | null>;
  /** What the read command shows as in INFO commandstats. */
  readCmd: string;
  /** After loading: a check that the layout holds what was written, and any extra note. */
  check?(r: Redis): Promise<string>;
  floorOnly?: boolean;
  /** Load one batch at a time. */
  serialLoad?: boolean;
}

const SCRIPTS = new Map<string, string>(); // source -> sha, per server (reloaded per layout)

async function evalScript(r: Redis, src: string, keys: string[], args: (string | number)[]): Promise<unknown[]> {
  let sha = SCRIPTS.get(src);
  if (!sha) {
    sha = (await r.script('LOAD', src)) as string;
    SCRIPTS.set(src, sha);
  }
  const reply = (await r.evalsha(sha, keys.length, ...keys, ...args)) as unknown[];
  if (reply[0] !== 'OK') throw new Error(`script replied ${String(reply[0])}`);
  return reply;
}

async function evalScriptBuffer(r: Redis, src: string, keys: string[], args: (string | number)[]): Promise<unknown[]> {
  const sha = SCRIPTS.get(src) ?? ((await r.script('LOAD', src)) as string);
  SCRIPTS.set(src, sha);
  return (await r.sendCommand(new Command('evalsha', [sha, keys.length, ...keys, ...args], { replyEncoding: null }))) as unknown[];
}

function itemArgs(items: PutItem[]): string[] {
  const args = [String(items.length)];
  for (const it of items) args.push(it.key, it.value, it.expected ?? '');
  return args;
}

function unpackEntry(b: Buffer | null, headerExtra = 0): { version: number; value: string } | null {
  if (!b) return null;
  return { version: b.readUIntLE(0, 6), value: b.subarray(18 + headerExtra).toString('utf8') };
}

const current = (name: string, extra: string[], notes: string): Layout => ({
  name,
  notes,
  extra,
  readCmd: 'hmget',
  put: async (r, items) => {
    await evalScript(r, CURRENT_PUT, [STREAM, SEQ, INDEX, ...items.map((i) => `${TAG}:v:${i.key}`)], itemArgs(items));
  },
  get: async (r, key) => {
    const [v, n] = await r.hmget(`${TAG}:v:${key}`, 'v', 'n', 'c', 'u');
    return n == null ? null : v!;
  },
});

const stringPacked: Layout = {
  name: 'string per key, packed + zset',
  notes: 'SET {t}:v:<key> = header(18 B) .. value',
  extra: [],
  readCmd: 'get',
  put: async (r, items) => {
    await evalScript(r, STRING_PUT, [STREAM, SEQ, INDEX, ...items.map((i) => `${TAG}:v:${i.key}`)], itemArgs(items));
  },
  get: async (r, key) => unpackEntry(await r.getBuffer(`${TAG}:v:${key}`))?.value ?? null,
};

const hashPacked: Layout = {
  name: 'hash per key, 1 packed field + zset',
  notes: 'HSET {t}:v:<key> d header..value',
  extra: [],
  readCmd: 'hget',
  put: async (r, items) => {
    await evalScript(r, HASH1_PUT, [STREAM, SEQ, INDEX, ...items.map((i) => `${TAG}:v:${i.key}`)], itemArgs(items));
  },
  get: async (r, key) => unpackEntry(await r.hgetBuffer(`${TAG}:v:${key}`, 'd'))?.value ?? null,
};

/** 32-bit FNV-1a of the key's UTF-8 bytes, then murmur3's finalizer (independent of partitionOf). */
function bucketHash(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Keys per bucket that keeps every bucket <= entries (Poisson tail: mean + 6 sigma). */
function meanPerBucket(entries: number): number {
  return ((-6 + Math.sqrt(36 + 4 * entries)) / 2) ** 2;
}

function bucketed(entries: number, sizedFor: number, label: string): Layout {
  const B = Math.ceil(sizedFor / meanPerBucket(entries));
  const bucketKey = (key: string) => `${TAG}:b:${(bucketHash(key) % B).toString(36)}`;
  return {
    name: `bucketed lp<=${entries}${label} + zset`,
    notes: `B=${B} (${(N / B).toFixed(0)} keys/bucket)`,
    extra: ['--hash-max-listpack-entries', String(entries)],
    readCmd: 'hget',
    put: async (r, items) => {
      const keys = [STREAM, SEQ, INDEX];
      for (const it of items) keys.push(bucketKey(it.key), `${TAG}:x:${it.key}`);
      await evalScript(r, BUCKET_PUT, keys, itemArgs(items));
    },
    get: async (r, key) => unpackEntry(await r.hgetBuffer(bucketKey(key), key), 1)?.value ?? null,
    check: async (r) => {
      let hashtables = 0;
      let largest = 0;
      for (let b0 = 0; b0 < B; b0 += 1000) {
        const pipe = r.pipeline();
        for (let b = b0; b < Math.min(B, b0 + 1000); b++) {
          pipe.object('ENCODING', `${TAG}:b:${b.toString(36)}`);
          pipe.hlen(`${TAG}:b:${b.toString(36)}`);
        }
        const res = (await pipe.exec())!;
        for (let x = 0; x < res.length; x += 2) {
          if (res[x]![1] === 'hashtable') hashtables++;
          largest = Math.max(largest, Number(res[x + 1]![1]));
        }
      }
      return `largest bucket ${largest}; ${hashtables} of ${B} buckets hashtable`;
    },
  };
}

const zsetOnly: Layout = {
  name: 'zset index alone (floor)',
  notes: 'ZADD key only: no value, no metadata',
  extra: [],
  readCmd: 'zscore',
  floorOnly: true,
  put: async (r, items) => {
    await evalScript(r, ZSET_ONLY_PUT, [STREAM, SEQ, INDEX], itemArgs(items));
  },
  get: async (r, key) => ((await r.zscore(INDEX, key)) == null ? null : VALUE),
};

/** Range pages: the client side (directory cache, declared pages, spares, MOVED retry). */
function rangePages(): Layout {
  const DIR = `${TAG}:d`;
  const DIRH = `${TAG}:D`;
  const pz = (id: string) => `${TAG}:k:${id}`;
  const ph = (id: string) => `${TAG}:h:${id}`;
  let dir: { low: Buffer; id: string }[] = [];
  const run = Math.random().toString(36).slice(2, 6);
  let nextId = 0;
  const freshId = () => `${run}${(nextId++).toString(36)}`;
  const find = (key: string) => {
    const k = Buffer.from(key, 'utf8');
    let lo = 0;
    let hi = dir.length - 1; // dir[0].low is "", <= every key
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (Buffer.compare(dir[mid]!.low, k) <= 0) lo = mid;
      else hi = mid - 1;
    }
    return dir[lo]!.id;
  };
  const learn = (low: Buffer, id: string) => {
    let lo = 0;
    let hi = dir.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (Buffer.compare(dir[mid]!.low, low) < 0) lo = mid + 1;
      else hi = mid;
    }
    dir.splice(lo, 0, { low, id });
  };
  const refresh = async (r: Redis) => {
    const lows = await r.zrangeBuffer(DIR, 0, -1);
    const ids = lows.length ? await r.hmget(DIRH, ...lows) : [];
    dir = lows.map((low, x) => ({ low, id: ids[x]! }));
  };
  return {
    name: 'range pages (B+-tree of listpacks)',
    notes: `pages of <${PAGE_CAP} keys: zset+hash listpacks; no index zset`,
    extra: ['--zset-max-listpack-value', '1024'],
    readCmd: 'evalsha',
    serialLoad: true,
    init: async (r) => {
      await r.zadd(DIR, 0, '');
      await r.hset(DIRH, '', '0');
      dir = [{ low: Buffer.alloc(0), id: '0' }];
    },
    put: async (r, items) => {
      for (let attempt = 0; ; attempt++) {
        const ids = [...new Set(items.map((i) => find(i.key)))];
        const g = ids.length;
        const spares = Math.min(items.length, g + Math.ceil(items.length / (PAGE_CAP / 2)));
        for (let s = 0; s < spares; s++) ids.push(freshId());
        const keys = [STREAM, SEQ, DIR, DIRH];
        for (const id of ids) keys.push(pz(id), ph(id));
        const args: string[] = [String(items.length), String(ids.length), String(g), ...ids];
        for (const it of items) args.push(it.key, it.value, it.expected ?? '');
        const sha = SCRIPTS.get(PAGES_PUT) ?? ((await r.script('LOAD', PAGES_PUT)) as string);
        SCRIPTS.set(PAGES_PUT, sha);
        const reply = (await r.evalsha(sha, keys.length, ...keys, ...args)) as string[];
        if (reply[0] === 'MOVED') {
          if (attempt > 5) throw new Error('range pages: MOVED again and again');
          await refresh(r);
          continue;
        }
        if (reply[0] !== 'OK') throw new Error(`script replied ${reply[0]}`);
        for (let x = 2 + 2 * items.length; x < reply.length; x += 2) learn(Buffer.from(reply[x]!, 'utf8'), reply[x + 1]!);
        return;
      }
    },
    get: async (r, key) => {
      for (let attempt = 0; ; attempt++) {
        const id = find(key);
        const reply = await evalScriptBuffer(r, PAGES_GET, [DIR, DIRH, ph(id)], [key, id]);
        if (String(reply[0]) === 'MOVED') {
          if (attempt > 5) throw new Error('range pages: MOVED again and again');
          await refresh(r);
          continue;
        }
        return unpackEntry((reply[1] as Buffer | null) ?? null)?.value ?? null;
      }
    },
    check: async (r) => {
      // Every key once, in order: walk the pages in directory order (a range read does the same,
      // atomically, with the pages in a script's KEYS).
      await refresh(r);
      let count = 0;
      let last: Buffer = Buffer.alloc(0);
      let ok = true;
      for (let x = 0; x < dir.length; x += 200) {
        const pipe = r.pipeline();
        for (const d of dir.slice(x, x + 200)) pipe.zrangeBuffer(pz(d.id), 0, -1);
        for (const [err, members] of (await pipe.exec())!) {
          if (err) throw err;
          for (const m of members as Buffer[]) {
            if (count > 0 && Buffer.compare(last, m) >= 0) ok = false;
            last = m;
            count++;
          }
        }
      }
      const pages = dir.length;
      const sample = await r.object('ENCODING', pz(dir[Math.floor(pages / 2)]!.id));
      const sampleH = await r.object('ENCODING', ph(dir[Math.floor(pages / 2)]!.id));
      if (!ok || count !== N + 1) throw new Error(`range pages: walk found ${count} keys, ordered: ${ok}`);
      return `${pages} pages (${(count / pages).toFixed(0)} keys/page, ${sample}/${sampleH}); walk: ${count} keys (incl. warmup) in order`;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Measurement.

interface Row {
  layout: string;
  bytesPerKey: string;
  putsPerSec: string;
  putUs: string;
  readsPerSec: string;
  readUs: string;
  notes: string;
}

async function info(r: Redis, section: string): Promise<string> {
  return (await r.info(section)) as string;
}

function field(text: string, name: string): number {
  const m = new RegExp(`^${name}:(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** used_memory without what depends on the moment: client buffers and the AOF buffer. */
async function dataMemory(r: Redis): Promise<number> {
  const m = await info(r, 'memory');
  return field(m, 'used_memory') - field(m, 'mem_clients_normal') - field(m, 'mem_aof_buffer');
}

async function usecPerCall(r: Redis, cmd: string): Promise<number> {
  const m = new RegExp(`^cmdstat_${cmd}:calls=(\\d+),usec=(\\d+)`, 'm').exec(await info(r, 'commandstats'));
  return m ? Number(m[2]) / Number(m[1]) : NaN;
}

/** OPS operations, CONCURRENCY in flight, stopping early at the deadline; returns ops/s. */
async function closedLoop(op: (i: number) => Promise<void>): Promise<{ rate: number; done: number }> {
  let next = 0;
  const start = performance.now();
  const deadline = start + PHASE_DEADLINE_MS;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < OPS && performance.now() < deadline) await op(next++);
    }),
  );
  return { rate: (next / (performance.now() - start)) * 1000, done: next };
}

async function measure(layout: Layout): Promise<Row> {
  SCRIPTS.clear();
  const server = await startTestRedis([...COMMON_ARGS, ...layout.extra]);
  const r: Redis = createRedis(server.url, { commandTimeoutMs: 120_000 });
  await r.connect();
  try {
    await layout.init?.(r);
    // Load every script once and write one throwaway key, so caches exist before "before".
    await layout.put(r, [{ key: '~warmup', value: VALUE }]);
    const before = await dataMemory(r);
    const t0 = performance.now();
    // Two batches in flight (Node builds one while Redis runs the other), except where batches
    // would race for the same page (range pages: the second would get MOVED after every split).
    let loaded = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: layout.serialLoad ? 1 : 2 }, async () => {
        while (next < N && performance.now() - t0 < LOAD_DEADLINE_MS) {
          const from = next;
          const items = Array.from({ length: Math.min(BATCH, N - from) }, (_, j) => ({ key: keyOf(from + j), value: VALUE }));
          next += items.length;
          await layout.put(r, items);
          loaded += items.length;
        }
      }),
    );
    const loadS = (performance.now() - t0) / 1000;
    const bytes = ((await dataMemory(r)) - before) / loaded;
    const notes = [layout.notes, `load ${loadS.toFixed(1)} s${loaded < N ? ` (stopped at ${loaded} keys)` : ''}`];
    if (layout.check) notes.push(await layout.check(r));
    for (const i of [0, loaded >> 1, loaded - 1]) {
      const v = await layout.get(r, keyOf(i));
      if (v !== VALUE) throw new Error(`${layout.name}: ${keyOf(i)} read back ${JSON.stringify(v)}`);
    }
    const rnd = () => keyOf(Math.floor(Math.random() * loaded));
    let putsPerSec = '-';
    let putUs = '-';
    let readsPerSec = '-';
    let readUs = '-';
    if (!layout.floorOnly) {
      await r.config('RESETSTAT');
      const puts = await closedLoop(() => layout.put(r, [{ key: rnd(), value: VALUE }]));
      putsPerSec = puts.rate.toFixed(0);
      putUs = (await usecPerCall(r, 'evalsha')).toFixed(1);
      await r.config('RESETSTAT');
      const reads = await closedLoop(async () => {
        if ((await layout.get(r, rnd())) !== VALUE) throw new Error(`${layout.name}: bad read`);
      });
      readsPerSec = reads.rate.toFixed(0);
      readUs = (await usecPerCall(r, layout.readCmd)).toFixed(1);
      if (puts.done < OPS || reads.done < OPS) notes.push(`deadline: ${puts.done} puts, ${reads.done} reads`);
    }
    return { layout: layout.name, bytesPerKey: bytes.toFixed(1), putsPerSec, putUs, readsPerSec, readUs, notes: notes.join('; ') };
  } finally {
    r.disconnect();
    await server.stop();
  }
}

const LAYOUTS: Layout[] = [
  current('current: hash {v,n,c,u} + zset', [], 'redis.conf: hash-max-listpack-value 4096'),
  current('current, Redis default listpack', ['--hash-max-listpack-value', '64'], 'value > 64 B: hashtable'),
  stringPacked,
  hashPacked,
  bucketed(128, N, ''),
  bucketed(256, N, ''),
  bucketed(512, N, ''),
  bucketed(1024, N, ''),
  bucketed(1024, 10 * N, ', B for 10N'),
  bucketed(512, N / 2, ', B for N/2'),
  rangePages(),
  zsetOnly,
];

const rows: Row[] = [];
const started = performance.now();
for (const layout of LAYOUTS.filter((l) => l.name.includes(FILTER))) {
  const row = await measure(layout);
  rows.push(row);
  console.error(`[${((performance.now() - started) / 1000).toFixed(0)} s] ${row.layout}: ${row.bytesPerKey} B/key`);
}

const head: Row = { layout: 'layout', bytesPerKey: 'B/key', putsPerSec: 'puts/s', putUs: 'put us', readsPerSec: 'reads/s', readUs: 'read us', notes: 'notes' };
const cols = Object.keys(head) as (keyof Row)[];
const width = (c: keyof Row) => Math.max(...[head, ...rows].map((row) => row[c].length));
const line = (row: Row) =>
  cols.map((c, x) => (x === 0 || c === 'notes' ? row[c].padEnd(c === 'notes' ? 0 : width(c)) : row[c].padStart(width(c)))).join('  ');
console.log(`\n${N} keys (16-byte keys, 100-byte values; raw data 116 B/key). Throughput: ${OPS} single-key ops, ${CONCURRENCY} in flight, appendfsync always; ` +
  `put us / read us = Redis-side usec per call (INFO commandstats).`);
console.log(line(head));
for (const row of rows) console.log(line(row));
console.log(`total ${((performance.now() - started) / 1000).toFixed(0)} s`);
