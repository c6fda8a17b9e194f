// The benchmark's baselines without GraphQL: the same reads and writes as kvql, straight through
// ioredis. The driver runs them in its own process ("raw Redis", the limit) and bench/baseline.ts
// serves them over plain node:http ("bare Node"). One implementation for both.
//
// Reads read kvql's own data (the value hashes and the index of the keyspace the benchmark
// loaded), with the commands kvql's store sends: HMGET v n c u of the value hash; a range is
// ZRANGE BYLEX LIMIT then the page's HMGETs, pipelined. Writes go to a keyspace of their own
// (RAW_PREFIX), so they cannot disturb kvql's: one EVAL per put that does what put.lua does for
// the value and the index (HSET of the value hash, ZADD to the index, a version and a timestamp
// from TIME), without compare-and-set and without the change feed's INCR and XADD. Under
// appendfsync always each is fsynced before Redis answers, as kvql's writes are.
import type { Redis } from 'ioredis';
import { Keyspace } from '../src/store/keys.js';

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
  /**
   * The puts of every item, pipelined in one MULTI/EXEC: atomic, and one fsync for the whole
   * batch, as kvql's batchPut (one script) is. (Without MULTI, Redis reads a large pipeline in
   * several chunks and fsyncs after each.)
   */
  batchPut(items: readonly { key: string; value: string }[]): Promise<number[]>;
  /** At most `first` entries from `start` (inclusive) on, in byte order. */
  range(start: string, first: number): Promise<RawEntry[]>;
}

const PUT_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local version = redis.call('HINCRBY', KEYS[1], 'n', 1)
if version == 1 then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'c', now, 'u', now)
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'u', now)
end
return version`;

type WithPut = Redis & {
  benchPut(valueKey: string, indexKey: string, key: string, value: string): Promise<number>;
};

const FIELDS = ['v', 'n', 'c', 'u'] as const;

function toEntry(key: string, f: (string | null)[]): RawEntry | null {
  if (f[0] == null) return null;
  return {
    key,
    value: f[0],
    version: Number(f[1]),
    createdAt: new Date(Number(f[2])).toISOString(),
    updatedAt: new Date(Number(f[3])).toISOString(),
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
  if (!('benchPut' in redis)) redis.defineCommand('benchPut', { numberOfKeys: 2, lua: PUT_LUA });
  const client = redis as WithPut;
  const readMany = async (keys: readonly string[]) => {
    const pipe = client.pipeline();
    for (const k of keys) pipe.hmget(kv.value(k, 0), ...FIELDS);
    return unwrap<(string | null)[]>(await pipe.exec()).map((f, i) => toEntry(keys[i]!, f));
  };
  return {
    async get(key) {
      return toEntry(key, await client.hmget(kv.value(key, 0), ...FIELDS));
    },
    getMany: readMany,
    put(key, value) {
      return client.benchPut(raw.value(key, 0), raw.index(0), key, value);
    },
    async batchPut(items) {
      const pipe = client.multi() as ReturnType<Redis['multi']> & {
        benchPut(valueKey: string, indexKey: string, key: string, value: string): unknown;
      };
      for (const { key, value } of items) pipe.benchPut(raw.value(key, 0), raw.index(0), key, value);
      return unwrap<number>(await pipe.exec());
    },
    async range(start, first) {
      const keys = await client.zrange(kv.index(0), `[${start}`, '+', 'BYLEX', 'LIMIT', 0, first);
      return (await readMany(keys)).filter((e): e is RawEntry => e !== null);
    },
  };
}
