// A kvql server object for a test file: its own key prefix on the shared Redis, the partition
// and bucket counts of the current test project (KV_TEST_PARTITIONS, KV_TEST_BUCKETS), and a
// helper to run GraphQL. In the cluster project (KV_TEST_CLUSTER=1) the shared Redis is the
// project's Redis Cluster (inject('clusterNodes')) instead of the standalone one.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ExecutionResult } from 'graphql';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { defaultLimits, defaultLoad, type Limits, type LoadConfig } from '../../src/config.js';
import { createRedis, isCluster, type ClusterTarget, type RedisClient } from '../../src/store/redis.js';
import { DEFAULT_BUCKETS, partitionOf } from '../../src/store/keys.js';
import { KvStore, type ReplicationOptions } from '../../src/store/store.js';
import type { BrowserPolicy } from '../../src/auth/browser.js';
import type { TrustedDocuments } from '../../src/auth/trustedDocuments.js';
import { createKvYoga, type KvYoga } from '../../src/yoga.js';
import { FeedHub } from '../../src/feed/hub.js';
import type { TokenEntry } from '../../src/auth/tokens.js';
import { attachWebSocket } from '../../src/websocket.js';
import { parseSeedList } from './cluster.js';
import { within } from './until.js';

/** A store and its connection on the Redis at `url`: for tests that restart or restore Redis under it. */
export interface OpenedStore {
  redis: Redis;
  store: KvStore;
}

export async function openStore(url: string, prefix: string, partitions: number): Promise<OpenedStore> {
  const redis = createRedis(url, { commandTimeoutMs: 5000 });
  redis.on('error', () => {});
  await redis.connect();
  return { redis, store: await KvStore.open(redis, { prefix, partitions }) };
}

export const PARTITIONS = Number(process.env.KV_TEST_PARTITIONS ?? '1');
/** Buckets per partition: the default (DEFAULT_BUCKETS) in one project, a handful in the other, so that
 * there most keys share their bucket with others. */
export const BUCKETS = Number(process.env.KV_TEST_BUCKETS ?? String(DEFAULT_BUCKETS));
/**
 * Whether this is the cluster project: test apps without a `redisUrl` then run on a Redis
 * Cluster, where a script reaches one partition. A batchPut over several partitions is then
 * written in steps (not isolated, each part with its own clock reading), and one that compares
 * versions is refused with CROSS_PARTITION_CAS; deleteRange deletes each partition's share
 * atomically; a multi-key raw command must keep its keys in one slot.
 */
export const ON_CLUSTER = process.env.KV_TEST_CLUSTER === '1';

/**
 * `n` keys `${base}<i>` that all fall in one partition (of `partitions`): the first partition
 * that `n` of them reach, for tests of what is atomic within a partition on every deployment.
 */
export function keysInOnePartition(base: string, n: number, partitions = PARTITIONS): string[] {
  const groups = new Map<number, string[]>();
  for (let i = 0; i < 100_000; i++) {
    const key = `${base}${i}`;
    const p = partitionOf(key, partitions);
    const group = groups.get(p) ?? [];
    group.push(key);
    groups.set(p, group);
    if (group.length === n) return group;
  }
  throw new Error(`no ${n} keys ${base}<i> in one partition`);
}

/** `n` keys `${base}<i>`, each in another partition (of `partitions`; at least `n` of them). */
export function keysInDistinctPartitions(base: string, n: number, partitions = PARTITIONS): string[] {
  if (n > partitions) throw new Error(`${n} keys cannot be in distinct partitions of ${partitions}`);
  const byPartition = new Map<number, string>();
  for (let i = 0; byPartition.size < n; i++) {
    if (i >= 100_000) throw new Error(`no ${n} keys ${base}<i> in distinct partitions`);
    const key = `${base}${i}`;
    const p = partitionOf(key, partitions);
    if (!byPartition.has(p)) byPartition.set(p, key);
  }
  return [...byPartition.values()];
}

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
  /** The shared Redis, or in the cluster project a Cluster client (its commands route by key). */
  redis: RedisClient;
  prefix: string;
  /** A POST over real HTTP through the fast lane, as production serves it (yoga's path for what it hands on). */
  gql<T = Record<string, any>>(query: string, variables?: Record<string, unknown>): Promise<GqlResult<T>>;
  close(): Promise<void>;
}

export interface TestAppOptions {
  limits?: Partial<Limits>;
  partitions?: number;
  buckets?: number;
  /** Another Redis than the shared one (crash tests start their own); a standalone Redis even in the cluster project. */
  redisUrl?: string;
  prefix?: string;
  errors?: unknown[];
  feedRetention?: number;
  feedBuffer?: number;
  /** KV_FEED_BUFFER_BYTES (16 MiB, its default, when absent). */
  feedBufferBytes?: number;
  /**
   * How `gql` reaches the server: "http" (default) over a real socket through `yoga.listener`, as
   * production serves it; "in-process" through `yoga.fetch`, for tests that need requests sent
   * together to reach the resolvers in the same tick (and so reach Redis's socket together).
   */
  transport?: 'http' | 'in-process';
  /** KV_MIN_REPLICAS and KV_REPLICATION_TIMEOUT_MS for the store. */
  replication?: ReplicationOptions;
  /** A Redis that answers reads asked with consistency EVENTUAL. */
  replicaUrl?: string;
  /** Admission control and the request deadline (the defaults for what is absent). */
  load?: Partial<LoadConfig>;
  /** Bearer tokens (KV_TOKENS): requests then need one (`gql` sends none: tests send their own). */
  tokens?: TokenEntry[];
  /** KV_GRAPHIQL and KV_INTROSPECTION (both on when absent, as outside production). */
  graphiql?: boolean;
  introspection?: boolean;
  /** Serve graphql-ws on the same server too, as server.ts does. */
  websocket?: boolean;
  /** KV_CORS_ORIGINS and KV_CSRF_PREVENTION (none and on when absent, as by default). */
  browser?: BrowserPolicy;
  /** KV_TRUSTED_DOCUMENTS. */
  trustedDocuments?: TrustedDocuments;
}

export function uniquePrefix(name: string): string {
  return `t-${name}-${randomBytes(4).toString('hex')}`;
}

/**
 * The cluster project's nodes (KV_TEST_CLUSTER=1, from the project's global setup), or undefined
 * in the other projects.
 */
export function clusterSeedsFromEnv(): ClusterTarget['clusterNodes'] | undefined {
  if (!ON_CLUSTER) return undefined;
  const list = inject('clusterNodes');
  if (!list) throw new Error('KV_TEST_CLUSTER=1 but no clusterNodes provided: run the "cluster" project (its globalSetup starts the cluster)');
  return parseSeedList(list);
}

export async function createTestApp(name: string, opts: TestAppOptions = {}): Promise<TestApp> {
  const prefix = opts.prefix ?? uniquePrefix(name);
  const seeds = opts.redisUrl === undefined ? clusterSeedsFromEnv() : undefined;
  const redis: RedisClient = seeds
    ? createRedis({ clusterNodes: seeds }, { commandTimeoutMs: 2000 })
    : createRedis(opts.redisUrl ?? inject('redisUrl'), { commandTimeoutMs: 2000 });
  const errors: string[] = [];
  redis.on('error', (err: Error) => void (errors.length < 20 && errors.push(err.message)));
  // Bounded below the hook timeout, so a stall says which step it was in (a fresh-clone run
  // once saw this function not return within 60 s, and did not say where).
  const step = <T>(what: string, p: Promise<T>) =>
    within(20_000, () => `createTestApp(${name}): ${what} (Redis client ${redis.status}; errors: ${[...new Set(errors)].join(' | ') || 'none'})`, p);
  await step('connecting', redis.connect());
  const limits = { ...defaultLimits(), ...opts.limits };
  let replica: Redis | undefined;
  if (opts.replicaUrl) {
    replica = createRedis(opts.replicaUrl, { commandTimeoutMs: 2000 });
    replica.on('error', () => {});
    await replica.connect();
  }
  const store = await step('opening the keyspace', KvStore.open(redis, {
    prefix,
    partitions: opts.partitions ?? PARTITIONS,
    buckets: opts.buckets ?? BUCKETS,
    feedRetention: opts.feedRetention,
    replication: opts.replication,
    replicaReader: replica,
  }));
  const feed = new FeedHub(store.feedReader(200), { bufferSize: opts.feedBuffer ?? 1000, bufferBytes: opts.feedBufferBytes ?? 16 * 1024 * 1024, blockMs: 200, batchSize: 100 });
  const yoga = createKvYoga({
    store,
    limits,
    feed,
    load: { ...defaultLoad(), ...opts.load },
    logger: { debug() {}, info() {}, warn() {}, error: (...args: unknown[]) => opts.errors?.push(args[0]) },
    tokens: opts.tokens,
    graphiql: opts.graphiql,
    introspection: opts.introspection,
    browser: opts.browser,
    trustedDocuments: opts.trustedDocuments,
  });
  const server = createServer(yoga.listener);
  const wss = opts.websocket ? attachWebSocket(server, yoga) : undefined;
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
      for (const client of wss?.clients ?? []) client.terminate();
      wss?.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      feed.close();
      store.close();
      replica?.disconnect();
      redis.disconnect();
    },
  };
}

/** The keys of one Redis that contain `prefix`. */
async function scanNode(redis: Redis, prefix: string, into: Set<string>): Promise<void> {
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `*${prefix}*`, 'COUNT', 1000);
    cursor = next;
    for (const k of batch) into.add(k);
  } while (cursor !== '0');
}

/**
 * Every Redis key of a test app's keyspace, for checks that nothing else was written. On a
 * cluster: every master's keys (as the client knows the masters), merged.
 */
export async function keysOf(redis: RedisClient, prefix: string): Promise<string[]> {
  const found = new Set<string>();
  if (isCluster(redis)) {
    const masters = redis.nodes('master');
    if (masters.length === 0) throw new Error('the cluster client knows no master (not connected?)');
    await Promise.all(masters.map((node) => scanNode(node, prefix, found)));
  } else {
    await scanNode(redis, prefix, found);
  }
  return [...found].sort();
}

/** The keyspace's keys that hold data: all but the change feed's stream and sequence keys. */
export async function dataKeysOf(redis: RedisClient, prefix: string): Promise<string[]> {
  return (await keysOf(redis, prefix)).filter((k) => !/\}:[sq]$/.test(k));
}

/**
 * What a test app's keyspace holds, for checks that a refused request wrote nothing: its Redis
 * keys other than the meta key, and for each bucket hash one line per field ("<bucket> <key>"),
 * since a write into an existing bucket adds no Redis key.
 */
export async function writtenOf(redis: RedisClient, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const k of await keysOf(redis, prefix)) {
    if (k === `${prefix}:meta`) continue;
    out.push(k);
    if (/\}:b:\d+$/.test(k)) for (const field of await redis.hkeys(k)) out.push(`${k} ${field}`);
  }
  return out.sort();
}

/** The user keys that have an entry in a bucket of a test app's keyspace, sorted. */
export async function storedKeysOf(redis: RedisClient, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const k of await keysOf(redis, prefix)) if (/\}:b:\d+$/.test(k)) out.push(...(await redis.hkeys(k)));
  return out.sort();
}

/**
 * How many events each partition of a test app's keyspace has ever had (its feed's sequence
 * counter): with writtenOf, a check that a refused write emitted no event either. One GET per
 * partition (each its own slot on a cluster).
 */
export async function feedSequencesOf(app: Pick<TestApp, 'redis' | 'store'>): Promise<number[]> {
  const ks = app.store.keys;
  return Promise.all(Array.from({ length: ks.partitions }, async (_, p) => Number((await app.redis.get(ks.sequence(p))) ?? 0)));
}
