// A kvql server object for a test file: its own key prefix on the shared Redis, the partition
// and bucket counts of the current test project (KV_TEST_PARTITIONS, KV_TEST_BUCKETS), and a
// helper to run GraphQL.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ExecutionResult } from 'graphql';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { defaultLimits, defaultLoad, type Limits, type LoadConfig } from '../../src/config.js';
import { createRedis } from '../../src/store/redis.js';
import { DEFAULT_BUCKETS } from '../../src/store/keys.js';
import { KvStore, type ReplicationOptions } from '../../src/store/store.js';
import { createKvYoga, type KvYoga } from '../../src/yoga.js';
import { FeedHub } from '../../src/feed/hub.js';

export const PARTITIONS = Number(process.env.KV_TEST_PARTITIONS ?? '1');
/** Buckets per partition: the default (16384) in one project, a handful in the other, so that
 * there most keys share their bucket with others. */
export const BUCKETS = Number(process.env.KV_TEST_BUCKETS ?? String(DEFAULT_BUCKETS));

export interface GqlResult<T = Record<string, any>> {
  status: number;
  data?: T | null;
  errors?: { message: string; extensions?: Record<string, any>; path?: (string | number)[] }[];
}

export interface TestApp {
  yoga: KvYoga;
  /** http://127.0.0.1:<port>/graphql: a real node:http server on `yoga.listener`, as server.ts serves. */
  url: string;
  store: KvStore;
  feed: FeedHub;
  redis: Redis;
  prefix: string;
  /** A POST over real HTTP through the fast lane, as production serves it (yoga's path for what it hands on). */
  gql<T = Record<string, any>>(query: string, variables?: Record<string, unknown>): Promise<GqlResult<T>>;
  close(): Promise<void>;
}

export interface TestAppOptions {
  limits?: Partial<Limits>;
  partitions?: number;
  buckets?: number;
  /** Another Redis than the shared one (crash tests start their own). */
  redisUrl?: string;
  prefix?: string;
  errors?: unknown[];
  feedRetention?: number;
  feedBuffer?: number;
  /**
   * How `gql` reaches the server: "http" (default) over a real socket through `yoga.listener`, as
   * production serves it; "in-process" through `yoga.fetch`, for tests that need requests sent
   * together to reach the resolvers in the same tick (and so share one Redis auto-pipeline).
   */
  transport?: 'http' | 'in-process';
  /** KV_MIN_REPLICAS and KV_REPLICATION_TIMEOUT_MS for the store. */
  replication?: ReplicationOptions;
  /** A Redis that answers reads asked with consistency EVENTUAL. */
  replicaUrl?: string;
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
  let replica: Redis | undefined;
  if (opts.replicaUrl) {
    replica = createRedis(opts.replicaUrl, { commandTimeoutMs: 2000 });
    replica.on('error', () => {});
    await replica.connect();
  }
  const store = await KvStore.open(redis, {
    prefix,
    partitions: opts.partitions ?? PARTITIONS,
    buckets: opts.buckets ?? BUCKETS,
    feedRetention: opts.feedRetention,
    replication: opts.replication,
    replicaReader: replica,
  });
  const feed = new FeedHub(store.feedReader(200), { bufferSize: opts.feedBuffer ?? 1000, blockMs: 200, batchSize: 100 });
  const yoga = createKvYoga({
    store,
    limits,
    feed,
    load: { ...defaultLoad(), ...opts.load },
    logger: { debug() {}, info() {}, warn() {}, error: (...args: unknown[]) => opts.errors?.push(args[0]) },
  });
  const server = createServer(yoga.listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`;
  return {
    yoga,
    url,
    store,
    feed,
    redis,
    prefix,
    async gql(query, variables) {
      const send = opts.transport === 'in-process' ? (u: string, init: RequestInit) => yoga.fetch(u, init) : fetch;
      const res = await send(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await res.json()) as ExecutionResult;
      return { status: res.status, ...(body as object) } as GqlResult<any>;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      feed.close();
      store.close();
      replica?.disconnect();
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

/**
 * What a test app's keyspace holds, for checks that a refused request wrote nothing: its Redis
 * keys other than the meta key, and for each bucket hash one line per field ("<bucket> <key>"),
 * since a write into an existing bucket adds no Redis key.
 */
export async function writtenOf(redis: Redis, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const k of await keysOf(redis, prefix)) {
    if (k === `${prefix}:meta`) continue;
    out.push(k);
    if (/\}:b:\d+$/.test(k)) for (const field of await redis.hkeys(k)) out.push(`${k} ${field}`);
  }
  return out.sort();
}

/** The user keys that have an entry in a bucket of a test app's keyspace, sorted. */
export async function storedKeysOf(redis: Redis, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const k of await keysOf(redis, prefix)) if (/\}:b:\d+$/.test(k)) out.push(...(await redis.hkeys(k)));
  return out.sort();
}
