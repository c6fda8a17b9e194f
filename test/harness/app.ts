// A kvql server object for a test file: its own key prefix on the shared Redis, the partition
// count of the current test project (KV_TEST_PARTITIONS), and a helper to run GraphQL.
import { randomBytes } from 'node:crypto';
import type { ExecutionResult } from 'graphql';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { defaultLimits, defaultLoad, type Limits, type LoadConfig } from '../../src/config.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { createKvYoga, type KvYoga } from '../../src/yoga.js';
import { FeedHub } from '../../src/feed/hub.js';

export const PARTITIONS = Number(process.env.KV_TEST_PARTITIONS ?? '1');

export interface GqlResult<T = Record<string, any>> {
  status: number;
  data?: T | null;
  errors?: { message: string; extensions?: Record<string, any>; path?: (string | number)[] }[];
}

export interface TestApp {
  yoga: KvYoga;
  store: KvStore;
  feed: FeedHub;
  redis: Redis;
  prefix: string;
  gql<T = Record<string, any>>(query: string, variables?: Record<string, unknown>): Promise<GqlResult<T>>;
  close(): Promise<void>;
}

export interface TestAppOptions {
  limits?: Partial<Limits>;
  partitions?: number;
  /** Another Redis than the shared one (crash tests start their own). */
  redisUrl?: string;
  prefix?: string;
  errors?: unknown[];
  feedRetention?: number;
  feedBuffer?: number;
  /** Admission control and the request deadline (the defaults for what is absent). */
  load?: Partial<LoadConfig>;
}

export function uniquePrefix(name: string): string {
  return `t-${name}-${randomBytes(4).toString('hex')}`;
}

export async function createTestApp(name: string, opts: TestAppOptions = {}): Promise<TestApp> {
  const prefix = opts.prefix ?? uniquePrefix(name);
  const redis = createRedis(opts.redisUrl ?? inject('redisUrl'), { commandTimeoutMs: 2000 });
  redis.on('error', () => {});
  await redis.connect();
  const limits = { ...defaultLimits(), ...opts.limits };
  const store = await KvStore.open(redis, { prefix, partitions: opts.partitions ?? PARTITIONS, feedRetention: opts.feedRetention });
  const feed = new FeedHub(store.feedReader(200), { bufferSize: opts.feedBuffer ?? 1000, blockMs: 200, batchSize: 100 });
  const yoga = createKvYoga({
    store,
    limits,
    feed,
    load: { ...defaultLoad(), ...opts.load },
    logger: { debug() {}, info() {}, warn() {}, error: (...args: unknown[]) => opts.errors?.push(args[0]) },
  });
  return {
    yoga,
    store,
    feed,
    redis,
    prefix,
    async gql(query, variables) {
      const res = await yoga.fetch('http://kvql.test/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await res.json()) as ExecutionResult;
      return { status: res.status, ...(body as object) } as GqlResult<any>;
    },
    async close() {
      feed.close();
      redis.disconnect();
    },
  };
}

/** Every Redis key of a test app's keyspace, for checks that nothing else was written. */
export async function keysOf(redis: Redis, prefix: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `*${prefix}*`, 'COUNT', 1000);
    cursor = next;
    found.push(...batch);
  } while (cursor !== '0');
  return found.sort();
}

/** The keyspace's keys that hold data: all but the change feed's stream and sequence keys. */
export async function dataKeysOf(redis: Redis, prefix: string): Promise<string[]> {
  return (await keysOf(redis, prefix)).filter((k) => !/\}:[sq]$/.test(k));
}
