// The benchmark's baselines without GraphQL: the same reads and writes as kvql, straight through
// ioredis. The driver runs them in its own process ("raw Redis", the limit) and bench/baseline.ts
// serves them over plain node:http ("bare Node"). One implementation for both.
//
// Reads read kvql's own data (the bucket hashes and the index of the keyspace the benchmark
// loaded, with the default KV_BUCKETS), with the commands kvql's store sends: HGET of the key's
// field in its bucket, unpacked; a range is ZRANGE BYLEX LIMIT then the page's HGETs, pipelined.
// Writes go to a keyspace of their own (RAW_PREFIX), so they cannot disturb kvql's: one EVAL per
// put that makes the same Redis writes as put.lua (the packed entry into its bucket, ZADD to the
// index, the change feed's INCR and XADD of the same entry format and retention, a version and
// a timestamp from TIME), without its compare-and-set check and its argument handling. Under
// appendfsync always each is fsynced before Redis answers, as kvql's writes are. A batch groups
// its index and feed writes as put.lua does: one EVAL per item without the ZADD and the XADD
// (it appends its packed event to a scratch string instead), then one ZADD of every key and one
// EVAL that appends the scratch string to the stream as one entry (kvql's script makes one per
// 64 KiB of events) and deletes it (a key already in the index keeps its score 0: no change).
// A delete is one EVAL that makes delete.lua's writes for one key: the DELETE event (INCR and
// XADD), then HDEL from the bucket and ZREM from the index.
import type { Redis } from 'ioredis';
import { Keyspace, unpackEntry } from '../src/store/keys.js';
import { DEFAULT_FEED_RETENTION } from '../src/store/store.js';

/** The keyspace the benchmark loads and kvql serves (KV_PREFIX); one partition. */
export const KV_PREFIX = 'bench';
/** Where the baselines write. */
export const RAW_PREFIX = 'rawbench';

export interface RawEntry {
  key: string;
  value: string;
  version: number;
  createdAt: string;
  updatedAt: string;
}

export interface RawOps {
  get(key: string): Promise<RawEntry | null>;
  getMany(keys: readonly string[]): Promise<(RawEntry | null)[]>;
  /** Resolves to the key's new version. */
  put(key: string, value: string): Promise<number>;
  /** Resolves to whether the key was there. */
  delete(key: string): Promise<boolean>;
  /**
   * The puts of every item, pipelined in one MULTI/EXEC: atomic, and one fsync for the whole
   * batch, as kvql's batchPut (one script) is. (Without MULTI, Redis reads a large pipeline in
   * several chunks and fsyncs after each.)
   */
  batchPut(items: readonly { key: string; value: string }[]): Promise<number[]>;
  /** At most `first` entries from `start` (inclusive) on, in byte order. */
  range(start: string, first: number): Promise<RawEntry[]>;
}

/**
 * A put; ARGV[4] "1" leaves the ZADD and the XADD to the caller (a batch's one ZADD and FEED_LUA):
 * its event goes to the end of the scratch string KEYS[5] instead.
 */
const PUT_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, value = ARGV[1], ARGV[2]
local packed = redis.call('HGET', KEYS[1], key)
local version, created = 1, now
if packed then
  local v, c = struct.unpack('<I6I6', packed)
  version, created = v + 1, c
elseif ARGV[4] ~= '1' then
  redis.call('ZADD', KEYS[2], 0, key)
end
redis.call('HSET', KEYS[1], key, struct.pack('<I6I6I6', version, created, now) .. value)
local seq = redis.call('INCR', KEYS[4])
local event = 'P' .. struct.pack('<I6I6I6I4I4', version, created, now, #key, #value) .. key .. value
if ARGV[4] == '1' then
  redis.call('APPEND', KEYS[5], event)
else
  redis.call('XADD', KEYS[3], 'MINID', '~', string.format('0-%d', math.max(1, seq - tonumber(ARGV[3]) + 1)), string.format('0-%d', seq), 'q', seq, 'e', event)
end
return version`;

/** A delete: the key's DELETE event, then the key leaves its bucket and the index. Returns 1, or 0 when absent. */
const DELETE_LUA = `
local key = ARGV[1]
local packed = redis.call('HGET', KEYS[1], key)
if not packed then return 0 end
local version = struct.unpack('<I6', packed)
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MINID', '~', string.format('0-%d', math.max(1, seq - tonumber(ARGV[2]) + 1)), string.format('0-%d', seq),
  'q', seq, 'e', 'D' .. struct.pack('<I6I4', version, #key) .. key)
redis.call('HDEL', KEYS[1], key)
redis.call('ZREM', KEYS[2], key)
return 1`;

/** A batch's feed entry: the events its puts left in the scratch string KEYS[3] (ARGV[1] of them). */
const FEED_LUA = `
local events = redis.call('GET', KEYS[3])
redis.call('DEL', KEYS[3])
local last = tonumber(redis.call('GET', KEYS[2]))
redis.call('XADD', KEYS[1], 'MINID', '~', string.format('0-%d', math.max(1, last - tonumber(ARGV[2]) + 1)), string.format('0-%d', last),
  'q', last - tonumber(ARGV[1]) + 1, 'e', events)
return 1`;

type PutCommand<R> = (
  bucketKey: string,
  indexKey: string,
  streamKey: string,
  sequenceKey: string,
  scratchKey: string,
  key: string,
  value: string,
  retention: number,
  indexLater: '0' | '1',
) => R;
type FeedCommand<R> = (streamKey: string, sequenceKey: string, scratchKey: string, events: number, retention: number) => R;
type DeleteCommand<R> = (bucketKey: string, indexKey: string, streamKey: string, sequenceKey: string, key: string, retention: number) => R;
type WithCommands = Redis & { benchPut: PutCommand<Promise<number>>; benchDelete: DeleteCommand<Promise<number>> };

function toEntry(key: string, packed: Buffer | null): RawEntry | null {
  const e = packed == null ? null : unpackEntry(packed);
  if (e == null) return null;
  return {
    key,
    value: e.value,
    version: e.version,
    createdAt: new Date(e.createdAt).toISOString(),
    updatedAt: new Date(e.updatedAt).toISOString(),
  };
}

function unwrap<T>(replies: [Error | null, unknown][] | null): T[] {
  return (replies ?? []).map(([err, v]) => {
    if (err) throw err;
    return v as T;
  });
}

/** The operations on `redis` (a connection made with src/store/redis.ts's createRedis). */
export function rawOps(redis: Redis): RawOps {
  const kv = new Keyspace(KV_PREFIX, 1);
  const raw = new Keyspace(RAW_PREFIX, 1);
  if (!('benchPut' in redis)) redis.defineCommand('benchPut', { numberOfKeys: 5, lua: PUT_LUA });
  if (!('benchFeed' in redis)) redis.defineCommand('benchFeed', { numberOfKeys: 3, lua: FEED_LUA });
  if (!('benchDelete' in redis)) redis.defineCommand('benchDelete', { numberOfKeys: 4, lua: DELETE_LUA });
  // Under the partition's tag, so that it would share the stream's slot on a cluster.
  const scratch = `${raw.stream(0)}:batch`;
  const client = redis as WithCommands;
  const readMany = async (keys: readonly string[]) => {
    const pipe = client.pipeline();
    for (const k of keys) pipe.hgetBuffer(kv.bucket(k, 0), k);
    return unwrap<Buffer | null>(await pipe.exec()).map((f, i) => toEntry(keys[i]!, f));
  };
  return {
    async get(key) {
      return toEntry(key, await client.hgetBuffer(kv.bucket(key, 0), key));
    },
    getMany: readMany,
    put(key, value) {
      return client.benchPut(raw.bucket(key, 0), raw.index(0), raw.stream(0), raw.sequence(0), scratch, key, value, DEFAULT_FEED_RETENTION, '0');
    },
    async delete(key) {
      return (await client.benchDelete(raw.bucket(key, 0), raw.index(0), raw.stream(0), raw.sequence(0), key, DEFAULT_FEED_RETENTION)) === 1;
    },
    async batchPut(items) {
      if (items.length === 0) return [];
      const pipe = client.multi() as ReturnType<Redis['multi']> & { benchPut: PutCommand<unknown>; benchFeed: FeedCommand<unknown> };
      for (const { key, value } of items) pipe.benchPut(raw.bucket(key, 0), raw.index(0), raw.stream(0), raw.sequence(0), scratch, key, value, DEFAULT_FEED_RETENTION, '1');
      pipe.zadd(raw.index(0), ...items.flatMap(({ key }) => [0, key]));
      pipe.benchFeed(raw.stream(0), raw.sequence(0), scratch, items.length, DEFAULT_FEED_RETENTION);
      return unwrap<number>(await pipe.exec()).slice(0, items.length);
    },
    async range(start, first) {
      const keys = await client.zrange(kv.index(0), `[${start}`, '+', 'BYLEX', 'LIMIT', 0, first);
      return (await readMany(keys)).filter((e): e is RawEntry => e !== null);
    },
  };
}
