// The cluster experiment (`npm run cluster-test [-- --phases compare,capacity,failover,reshard
// --seed S --minutes M --ops N --partitions P --maxmemory-mb 64 --value-bytes B --batch-items N
// --capacity-partitions P --small-keys N --pages N --node-timeout MS --preload N --backups N]`): kvql's API on
// a real Redis Cluster (test/harness/cluster.ts: every node its own redis-server from redis.conf
// and cluster.conf, on loopback), the API as its own process (REDIS_CLUSTER_NODES), clients in
// this process speaking GraphQL over HTTP. Four phases, each on a cluster of its own:
//
//   compare   a 3+3 cluster and one standalone Redis, an API process on each (same KV_PREFIX,
//             KV_PARTITIONS, KV_BUCKETS). One seeded random sequence of operations over a small
//             key alphabet (so they collide) goes to both, one at a time, in the same order:
//             put (with right and wrong expectedVersion), get, getMany, batchPut (over several
//             partitions without expectedVersion, within one partition with it), delete,
//             deleteRange with small limits, range pages forward and backward following their
//             cursors. Every answer must be identical once createdAt/updatedAt are removed
//             (data, error codes, paths and extensions, HTTP status). A batch over several
//             partitions WITH expectedVersion is sent to the cluster only: it must be refused
//             with CROSS_PARTITION_CAS and change nothing (the documented difference). A
//             `changes` subscription over SSE on each must give, per key, the same ordered
//             events (type, key, version, value).
//   capacity  a 3+3 cluster with --maxmemory on every node (noeviction, from redis.conf): a
//             dataset of twice one node's maxmemory (raw key and value bytes: 16-byte keys,
//             2000-byte values) loaded through the API in batchPuts of 500, every key read back;
//             each master's memory, and what the keyspace's buckets, index and change feed take
//             of it; range page latency on it against a small keyspace in the same cluster. 12
//             partitions, under a prefix chosen so that they fall 4 on each master (a partition
//             is one slot: a few partitions spread only as evenly as their slots fall). Then one
//             standalone Redis with the same maxmemory and the same load: it must end in
//             CAPACITY_EXCEEDED, and still serve reads.
//   failover  a 3+3 cluster, the API with KV_MIN_REPLICAS=1. Writers (puts of unique keys,
//             batchPuts over several partitions) record every answer; kill -9 of a master; its
//             replica is promoted; the killed node is restarted and must rejoin as a replica of
//             the new master. Every write acknowledged without error must be there afterwards;
//             answers the README does not document for a failover are printed as such.
//   reshard   a 3+3 cluster, the API with KV_MIN_REPLICAS=0, writers and readers running while
//             a fourth master is added and `redis-cli --cluster rebalance` moves slots to it.
//             Readers re-read keys whose acknowledged version they know: never older, never
//             missing. Few, full partitions (16 of 1024 buckets): redis-cli moves a slot's keys
//             10 at a time, so a partition's slot is partly on each master for a while, and two
//             sweepers read every partition in turn so that some reads land in that moment.
//             Every acknowledged write must be there afterwards. While slots move, `npm run
//             backup`'s snapshots of every master are taken (--backups, default 2; a refusal
//             is counted, not a failure); afterwards each is restored into a fresh 3+3 cluster,
//             where every write acknowledged before the backup began must be, multi-partition
//             batches whole once rolled forward, and verifyKeyspace must find no problem.
//
// The run fails on any mismatch, lost write, or stale or missing read. Bounded: every request,
// every wait, each phase and the whole run (--minutes, default 8). Everything it starts is
// stopped, also on failure.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { askRedis } from '../../src/managedRedis.js';
import { backupSnapshots } from '../../src/snapshotBackup.js';
import { restoreSnapshots } from '../../src/snapshotRestore.js';
import { Keyspace } from '../../src/store/keys.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { startApiProcess, type ApiProcess } from '../harness/apiProcess.js';
import { parseClusterNodes, parseInfo, startTestCluster, type ClusterNodeLine, type TestCluster } from '../harness/cluster.js';
import { freePort, startTestRedis, type TestRedis } from '../harness/redisServer.js';
import { sseSubscribe } from '../harness/sse.js';
import type { SubscriptionStream } from '../harness/stream.js';
import { arg, commonOptions, runExperimentCli, summaryEnd } from './cli.js';
import { codeOf, post, random, sleep, type Reply } from './tools.js';

export const PHASES = ['compare', 'capacity', 'failover', 'reshard'] as const;
export type Phase = (typeof PHASES)[number];

export interface CompareOptions {
  /** Requests sent to both (a range walk's pages count one each); default 2000. */
  ops?: number;
  /** KV_PARTITIONS of both API processes; default 16. */
  partitions?: number;
  /** KV_BUCKETS; default 5, so that most keys of a partition share a bucket. */
  buckets?: number;
}

export interface CapacityOptions {
  /** --maxmemory of every node (and of the standalone Redis), MiB; default 64. */
  maxmemoryMb?: number;
  /** Raw key + value bytes loaded, as a multiple of one node's maxmemory; default 2. */
  factor?: number;
  /** Value size, bytes; default 2000. */
  valueBytes?: number;
  /** Items per batchPut (also KV_MAX_BATCH_ITEMS and KV_FEED_RETENTION); default 500. */
  batchItems?: number;
  /** KV_PARTITIONS; default 12 (4 per master). */
  partitions?: number;
  /** Keys of the small keyspace the page latency is compared with; default 2000. */
  smallKeys?: number;
  /** range pages timed on each keyspace; default 200. */
  pages?: number;
  /** Concurrent loaders; default 2. */
  loaders?: number;
}

export interface FailoverOptions {
  /** KV_PARTITIONS; default 64 (the default on a cluster). */
  partitions?: number;
  /** cluster-node-timeout of every node (ms); default cluster.conf's (5000). */
  nodeTimeoutMs?: number;
  /** Writing before the kill, and after the killed node has rejoined (ms); defaults 3000 and 4000. */
  beforeMs?: number;
  afterMs?: number;
  /** Concurrent writers of single puts, and of batchPuts; defaults 3 and 1. */
  putWriters?: number;
  batchWriters?: number;
}

export interface ReshardOptions {
  /**
   * KV_PARTITIONS; default 16. Few, full partitions: each is one slot, which redis-cli moves
   * 10 Redis keys at a time, so the fuller a partition the longer its slot is partly on each
   * side, which is the moment readers must not notice.
   */
  partitions?: number;
  /** KV_BUCKETS; default 1024 (so a partition's slot holds hundreds of Redis keys). */
  buckets?: number;
  /** Keys written before the new master joins (they are what the migration moves); default 12000. */
  preloadKeys?: number;
  /** Concurrent writers and readers (of random keys); defaults 3 and 4. */
  writers?: number;
  readers?: number;
  /**
   * Readers that go round the partitions in turn, each time a getMany of many keys of one
   * partition, so that every partition is read every few hundred milliseconds: also while its
   * slot moves. Default 2.
   */
  sweepers?: number;
  /** Keys each writer keeps rewriting; default 40. */
  keysPerWriter?: number;
  /** Running before the new master is added, and after the rebalance (ms); defaults 1500 and 2000. */
  beforeMs?: number;
  afterMs?: number;
  /** Backups (`npm run backup`'s snapshots) taken while slots move, each restored afterwards; default 2. */
  backups?: number;
}

/** One backup taken during the rebalance, and what its restore held. */
export interface ReshardBackup {
  /** Whether slots were still moving when the snapshots had all arrived. */
  duringRebalance: boolean;
  pausedMs: number;
  /** Why the backup refused (a fork still running, a master forking again), instead of the rest. */
  refused: string | null;
  redisKeysRestored: number;
  /** Keys whose write was acknowledged before the backup began, and of them absent or older in the restore. */
  ackedChecked: number;
  ackedMissing: number;
  /** Multi-partition batches the restore's roll-forward completed, and parts it found missing. */
  rolledForward: number;
  missingParts: number;
  verifyProblems: string[];
}

export interface ClusterExperimentOptions {
  phases?: readonly Phase[];
  seed?: number;
  /** The whole run's limit (default 8 minutes); a phase is cut short at it, and the run fails. */
  timeLimitMs?: number;
  compare?: CompareOptions;
  capacity?: CapacityOptions;
  failover?: FailoverOptions;
  reshard?: ReshardOptions;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface CompareSummary {
  partitions: number;
  /** Requests sent to both, answers compared. */
  ops: number;
  /** By kind: how many of them. */
  opsByKind: Record<string, number>;
  /** Answers by outcome (on the standalone side): ok or the error code. */
  outcomes: Record<string, number>;
  mismatches: number;
  /** Cross-partition batches with expectedVersion sent to the cluster only, refused as documented. */
  documentedDifferences: number;
  /** Change events compared (each side), over how many keys; keys whose event lists differ. */
  eventsCompared: number;
  eventsStandalone: number;
  eventsCluster: number;
  eventKeys: number;
  eventMismatchKeys: number;
  durationMs: number;
}

export interface CapacitySummary {
  maxmemoryMb: number;
  partitions: number;
  valueBytes: number;
  batchItems: number;
  /** How the keyspace's partitions fall on the masters (by port). */
  partitionsPerMaster: Record<string, number>;
  keys: number;
  /** Raw key + value bytes loaded and acknowledged on the cluster. */
  bytesLoaded: number;
  loadMs: number;
  /** Batches that failed on the cluster (and were retried), by code. */
  clusterLoadErrors: Record<string, number>;
  /** Each master's memory, and what the keyspace's keys on it take (MEMORY USAGE): buckets, index, change feed. */
  masters: { port: number; usedMemory: number; maxmemory: number; startup: number; backlog: number; keys: number; buckets: number; index: number; feed: number }[];
  readBack: { checked: number; wrong: number; missing: number };
  pageLatency: { big: Latency; small: Latency; bigKeys: number; smallKeys: number };
  standalone: {
    batchesAcknowledged: number;
    bytesAcknowledged: number;
    /** Raw bytes acknowledged when the first batch was refused, and Redis's used_memory then. */
    firstRefusalAtBytes: number | null;
    usedMemoryAtFirstRefusal: number | null;
    capacityRefusals: number;
    otherErrors: Record<string, number>;
    usedMemory: number;
    readsChecked: number;
    readsFailed: number;
    rangeServed: boolean;
    /** The same range pages on one Redis with the same partitions (what a page costs there, for comparison). */
    pageLatency?: ReturnType<typeof latency>;
  } | null;
  durationMs: number;
}

export interface Latency {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export interface FailoverSummary {
  partitions: number;
  nodeTimeoutMs: number;
  killedMaster: number;
  promotedReplica: number;
  killedPartitions: number;
  /** kill -9 → the replica says it is a master; → every live node agrees (waitHealthy). */
  promotedMs: number | null;
  healthyMs: number | null;
  /** restart of the killed node → it is a linked replica of the new master. */
  rejoinMs: number | null;
  rejoinedAsReplicaOf: number | null;
  /** kill -9 → first write (sent after the kill) to a key of the killed master's partitions: applied (acknowledged or REPLICATION_TIMEOUT), acknowledged. */
  firstAppliedToKilledMs: number | null;
  firstAckToKilledMs: number | null;
  /** The longest time any writer went without an acknowledgement, by writer kind. */
  longestAckGapMs: { put: number; batch: number };
  /** Answers by code, per request. */
  answers: Record<string, number>;
  errorSamples: Record<string, string>;
  /** What the API logged for the errors it masked as INTERNAL_SERVER_ERROR (the end of its log). */
  internalErrors: Record<string, number>;
  keyWrites: number;
  ackedChecked: number;
  ackedLost: number;
  /** What became of the writes not acknowledged, by their code. */
  unacked: Record<string, { present: number; absent: number }>;
  /** batchPuts not acknowledged, by code: every key there, some, none (when read back, seconds later). */
  unackedBatches: Record<string, { whole: number; part: number; none: number }>;
  durationMs: number;
}

export interface ReshardSummary {
  partitions: number;
  preloadKeys: number;
  newMaster: number;
  /** The new master's slots after the rebalance (slots moved to it). */
  newMasterSlots: number;
  /** The keyspace's partitions that moved to the new master. */
  partitionsMoved: number;
  addMasterMs: number;
  rebalanceMs: number;
  requests: { writes: number; reads: number };
  /** Answers by code, per request, readers and writers together; and those seen during the rebalance. */
  errors: Record<string, number>;
  errorsDuringRebalance: Record<string, number>;
  errorSamples: Record<string, string>;
  /** What the API logged for the errors it masked as INTERNAL_SERVER_ERROR (the end of its log). */
  internalErrors: Record<string, number>;
  ackedChecked: number;
  ackedLost: number;
  /** Keys read and checked against what was acknowledged before the read was sent. */
  readsChecked: number;
  staleReads: number;
  missingReads: number;
  /** Read requests with a stale or missing key, and how many of them were sent during add + rebalance. */
  badReadRequests: number;
  badReadRequestsDuringRebalance: number;
  backups: ReshardBackup[];
  durationMs: number;
}

export interface ClusterExperimentSummary {
  seed: number;
  phases: Phase[];
  durationMs: number;
  compare: CompareSummary | null;
  capacity: CapacitySummary | null;
  failover: FailoverSummary | null;
  reshard: ReshardSummary | null;
  aborted: string | null;
  failures: string[];
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP
// ---------------------------------------------------------------------------------------------

const messageOf = (r: Reply) => r.transport ?? r.body?.errors?.[0]?.message ?? '';

const Q = {
  put: `mutation($key: String!, $value: String!, $ev: Int) { put(key: $key, value: $value, expectedVersion: $ev) { key value version createdAt updatedAt } }`,
  get: `query($key: String!) { get(key: $key) { key value version createdAt updatedAt } }`,
  getMany: `query($keys: [String!]!) { getMany(keys: $keys) { key value version createdAt updatedAt } }`,
  getManyLean: `query($keys: [String!]!) { getMany(keys: $keys) { key value version } }`,
  batch: `mutation($items: [PutInput!]!) { batchPut(items: $items) { key value version createdAt updatedAt } }`,
  batchLean: `mutation($items: [PutInput!]!) { batchPut(items: $items) { key version } }`,
  del: `mutation($key: String!, $ev: Int) { delete(key: $key, expectedVersion: $ev) { deleted previous { key value version createdAt updatedAt } } }`,
  delRange: `mutation($prefix: String, $start: String, $end: String, $limit: Int) { deleteRange(prefix: $prefix, start: $start, end: $end, limit: $limit) { deleted hasMore } }`,
  range: `query($prefix: String, $start: String, $end: String, $first: Int, $last: Int, $after: String, $before: String) {
    range(prefix: $prefix, start: $start, end: $end, first: $first, last: $last, after: $after, before: $before) {
      totalCount edges { cursor node { key value version createdAt updatedAt } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }`,
  page: `query($after: String, $first: Int) { range(first: $first, after: $after) { edges { node { key value } } pageInfo { hasNextPage } } }`,
  prefixPage: `query($prefix: String!, $first: Int) { range(prefix: $prefix, first: $first) { edges { node { key value version } } } }`,
  changes: `subscription { changes { type key version entry { value } } }`,
};

/** A range cursor as the API makes them: base64url of the key's UTF-8 bytes (src/graphql/range.ts). */
const cursorOf = (key: string) => Buffer.from(key, 'utf8').toString('base64url');

// ---------------------------------------------------------------------------------------------
// Small tools
// ---------------------------------------------------------------------------------------------


/** JSON with object keys sorted, so that two equal values print the same. */
function canon(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(canon).join(',')}]`;
  if (x !== null && typeof x === 'object') {
    return `{${Object.keys(x)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canon((x as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(x) ?? 'undefined';
}

/** `x` without createdAt/updatedAt at any depth (they come from each node's clock). */
function withoutTimestamps(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(withoutTimestamps);
  if (x !== null && typeof x === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(x)) if (k !== 'createdAt' && k !== 'updatedAt') out[k] = withoutTimestamps(v);
    return out;
  }
  return x;
}

/** What of an answer must be identical on both: status, data without timestamps, each error's code, path and extensions. */
function comparable(r: Reply): string {
  if (r.transport) return canon({ transport: r.transport });
  return canon({
    status: r.status,
    data: withoutTimestamps(r.body?.data ?? null),
    errors: (r.body?.errors ?? []).map((e) => ({ path: e.path ?? null, extensions: e.extensions ?? null })),
  });
}

function latency(samples: number[]): Latency {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => (s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!);
  return { count: s.length, p50: at(0.5), p99: at(0.99), max: s.at(-1) ?? 0 };
}

function countInto(m: Record<string, number>, k: string, n = 1): void {
  m[k] = (m[k] ?? 0) + n;
}

function fmtCodes(c: Record<string, number>): string {
  return Object.entries(c).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const secs = (ms: number | null) => (ms === null ? 'never' : `${(ms / 1000).toFixed(2)} s`);

/** A phase's limits: its own budget, within the run's. */
interface PhaseContext {
  seed: number;
  rand: () => number;
  log: (line: string) => void;
  fail: (m: string) => void;
  /** ms since the epoch after which the phase must wrap up. */
  deadline: number;
  signal?: AbortSignal;
}

function timeLeft(ctx: PhaseContext): number {
  return ctx.deadline - Date.now();
}

function checkTime(ctx: PhaseContext, what: string): void {
  if (Date.now() > ctx.deadline) throw new Error(`time limit reached ${what}`);
}

/** CLUSTER NODES from the first given node that answers. */
async function clusterView(cluster: TestCluster, ports?: number[]): Promise<ClusterNodeLine[]> {
  let last: unknown = new Error('no node answered');
  for (const port of ports ?? cluster.nodes.filter((n) => n.running()).map((n) => n.port)) {
    try {
      return parseClusterNodes(String(await cluster.direct(port, (c) => c.call('CLUSTER', 'NODES'))));
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

/**
 * A cluster just created by redis-cli: waits (bounded) until every live node's view has each
 * master with slots and every other node as a replica of one (right after `--cluster create`
 * returns, some views still show the replicas-to-be as masters without slots).
 */
async function startCluster(extra: string[], ctx: PhaseContext): Promise<TestCluster> {
  const cluster = await startTestCluster({ extra: ['--repl-diskless-sync-delay', '0', ...extra] });
  const until = Date.now() + Math.min(30_000, Math.max(5000, timeLeft(ctx)));
  let why = 'not checked';
  while (Date.now() < until) {
    why = '';
    for (const n of cluster.nodes) {
      const lines = await clusterView(cluster, [n.port]).catch(() => []);
      const empty = lines.filter((l) => l.flags.includes('master') && slotCount(l) === 0);
      const orphans = lines.filter((l) => l.flags.includes('master') && slotCount(l) > 0 && !lines.some((r) => r.masterId === l.id));
      if (lines.length !== cluster.nodes.length || empty.length > 0 || orphans.length > 0) {
        why = `node ${n.port} sees ${lines.length} nodes, ${empty.length} masters without slots, ${orphans.length} masters without a replica`;
        break;
      }
    }
    if (why === '') return cluster;
    await sleep(200);
  }
  await cluster.stop();
  throw new Error(`the new cluster's roles did not settle: ${why}`);
}

/** The masters that serve slots, in a CLUSTER NODES view. */
const mastersOf = (lines: ClusterNodeLine[]) => lines.filter((l) => l.flags.includes('master') && !l.flags.includes('fail') && slotCount(l) > 0);

/** The hash slot of each of the keyspace's partitions (CLUSTER KEYSLOT of its hash tag). */
async function partitionSlots(cluster: TestCluster, prefix: string, partitions: number): Promise<number[]> {
  const port = cluster.nodes.find((n) => n.running())!.port;
  return cluster.direct(
    port,
    async (c) => {
      const out: number[] = [];
      for (let p = 0; p < partitions; p++) out.push(Number(await c.call('CLUSTER', 'KEYSLOT', `{${prefix}:${p}}`)));
      return out;
    },
    10_000,
  );
}

/** The master (port) serving `slot` in a CLUSTER NODES view. */
function ownerOf(lines: ClusterNodeLine[], slot: number): number | undefined {
  return lines.find((l) => l.flags.includes('master') && !l.flags.includes('fail') && l.slots.some(([a, b]) => slot >= a && slot <= b))?.port;
}

const slotCount = (l: ClusterNodeLine | undefined) => (l?.slots ?? []).reduce((n, [a, b]) => n + b - a + 1, 0);

interface ApiOptions {
  prefix: string;
  partitions: number;
  buckets: number;
  env?: Record<string, string>;
}

/** The API as its own process on the cluster (REDIS_CLUSTER_NODES) or on one Redis (REDIS_URL). */
async function startApi(target: { cluster: TestCluster } | { redis: TestRedis }, o: ApiOptions, work: string): Promise<ApiProcess> {
  const cluster = 'cluster' in target;
  return startApiProcess({
    redisUrl: cluster ? '' : target.redis.url,
    prefix: o.prefix,
    partitions: o.partitions,
    env: {
      ...(cluster ? { REDIS_CLUSTER_NODES: target.cluster.seedList } : {}),
      KV_BUCKETS: String(o.buckets),
      LOG_LEVEL: 'warn',
      // Never used (REDIS_URL or REDIS_CLUSTER_NODES is given), but never the repo's ./data either.
      KV_DATA_DIR: join(work, 'managed'),
      KV_MANAGED_REDIS_PORT: String(await freePort()),
      ...o.env,
    },
  });
}

/**
 * The errors an API process masked as INTERNAL_SERVER_ERROR, as its log names them (the last
 * 64 KiB of its output): distinct messages, numbers blanked, with how often each appears there.
 */
function maskedErrors(api: ApiProcess | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of api?.output().split('\n') ?? []) {
    if (!line.includes('unexpected error, masked for the client')) continue;
    try {
      const entry = JSON.parse(line) as { msg?: string; path?: unknown };
      const msg = String(entry.msg ?? '').replace('unexpected error, masked for the client: ', '');
      countInto(out, `${entry.path !== undefined ? `${String(entry.path)}: ` : ''}${msg.replace(/\d+/g, 'N').slice(0, 160)}`);
    } catch {
      // a line cut by the 64 KiB window
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the same operations on a cluster and on one Redis
// ---------------------------------------------------------------------------------------------

/** The key alphabet: few keys, sharing prefixes, some beyond ASCII, so that operations collide. */
const ALPHABET = [
  'a', 'a0', 'a1', 'a10', 'a2', 'ab', 'abc',
  'b', 'b/x', 'b/y', 'b/z', 'b0', 'b1',
  'c', 'c:0', 'c:1', 'c:2', 'c:10',
  'd', 'd-1', 'd-2', 'dd',
  'k1', 'k2', 'k3', 'k4', 'k5', 'k6',
  'z', 'zz',
  'é', 'é1', 'ü', '😀', '😀1', '\u{10FFFF}x',
];
const PREFIXES = ['', 'a', 'a1', 'ab', 'b', 'b/', 'c', 'c:', 'c:1', 'd', 'k', 'z', 'é', '😀', 'q', 'b/x'];
const BOUNDS = [...ALPHABET, 'a5', 'b/', 'c:', 'd-', 'k', 'k35', 'y', 'ê', '\u{1F600}', ''];

interface ChangeEventRecord {
  type: string;
  key: string;
  version: number;
  value: string | null;
}

/** A `changes` subscription over SSE, collecting every event as it arrives. */
async function followChanges(url: string): Promise<{ events: ChangeEventRecord[]; problems: string[]; stop: () => Promise<void> }> {
  const stream: SubscriptionStream = await sseSubscribe(url, Q.changes, {}, { connectTimeoutMs: 10_000 });
  const events: ChangeEventRecord[] = [];
  const problems: string[] = [];
  let stopped = false;
  const reading = (async () => {
    while (!stopped) {
      const p = await stream.poll(200);
      if (p === undefined) {
        const ended = await stream.ended(1).then((e) => e.kind, () => null);
        if (ended !== null && !stopped) {
          problems.push(`the subscription ended (${ended})`);
          return;
        }
        continue;
      }
      if (p.errors?.length) problems.push(`subscription error: ${String(p.errors[0]?.extensions?.code ?? p.errors[0]?.message)}`);
      const c = p.data?.changes as { type: string; key: string; version: number; entry: { value: string } | null } | undefined;
      if (c) events.push({ type: c.type, key: c.key, version: c.version, value: c.entry?.value ?? null });
    }
  })();
  return {
    events,
    problems,
    async stop() {
      stopped = true;
      await reading;
      await stream.close().catch(() => {});
    },
  };
}

async function comparePhase(ctx: PhaseContext, o: CompareOptions): Promise<CompareSummary> {
  const t0 = performance.now();
  const partitions = o.partitions ?? 16;
  const buckets = o.buckets ?? 5;
  const maxOps = o.ops ?? 2000;
  const { rand, log, fail } = ctx;
  const prefix = `cmp-${randomBytes(3).toString('hex')}`;
  const ks = new Keyspace(prefix, partitions, buckets);
  const s: CompareSummary = {
    partitions,
    ops: 0,
    opsByKind: {},
    outcomes: {},
    mismatches: 0,
    documentedDifferences: 0,
    eventsCompared: 0,
    eventsStandalone: 0,
    eventsCluster: 0,
    eventKeys: 0,
    eventMismatchKeys: 0,
    durationMs: 0,
  };
  const work = mkdtempSync(join(tmpdir(), 'kvql-cluster-cmp-'));
  let cluster: TestCluster | undefined;
  let redis: TestRedis | undefined;
  let apiC: ApiProcess | undefined;
  let apiS: ApiProcess | undefined;
  let subC: Awaited<ReturnType<typeof followChanges>> | undefined;
  let subS: Awaited<ReturnType<typeof followChanges>> | undefined;

  // The alphabet by partition: single-partition batches draw from one group.
  const groups = [...ks.byPartition(ALPHABET, (k) => k).values()].filter((g) => g.length >= 2);
  /** The current version of each key (0: absent), as the standalone's answers tell it. */
  const model = new Map<string, number>();
  const version = (k: string) => model.get(k) ?? 0;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const pickKeys = (n: number) => {
    const out = new Set<string>();
    while (out.size < n) out.add(pick(ALPHABET));
    return [...out];
  };
  let valueSeq = 0;
  const value = () => {
    const n = ++valueSeq;
    const r = rand();
    return r < 0.05 ? '' : r < 0.15 ? `v${n} ü😀\n"q"` : `v${n}`;
  };
  const wrong = (k: string) => (version(k) === 0 ? 1 + Math.floor(rand() * 3) : rand() < 0.5 ? 0 : version(k) + 1 + Math.floor(rand() * 2));

  /** Learns versions from an answer of the standalone. */
  const learn = (kind: string, vars: Record<string, any>, r: Reply) => {
    const d = r.body?.data;
    const e = r.body?.errors?.[0];
    if (e?.extensions?.code === 'VERSION_CONFLICT') {
      const conflicts = (e.extensions.conflicts as { key: string; actualVersion: number }[] | undefined) ?? [];
      for (const c of conflicts) model.set(c.key, c.actualVersion);
      return;
    }
    if (!d) return;
    const entry = (x: { key: string; version: number } | null, key?: string) => {
      if (x) model.set(x.key, x.version);
      else if (key !== undefined) model.set(key, 0);
    };
    if (kind.startsWith('put')) entry(d.put);
    else if (kind === 'get') entry(d.get, vars.key);
    else if (kind.startsWith('getMany')) (d.getMany as any[]).forEach((x, i) => entry(x, vars.keys[i]));
    else if (kind.startsWith('batch')) for (const x of d.batchPut) entry(x);
    else if (kind === 'delete' || kind.startsWith('delete-')) model.set(vars.key, 0);
    else if (kind.startsWith('range')) for (const edge of d.range.edges) entry(edge.node);
  };

  /** Sends one operation to both, compares the answers; returns the standalone's. */
  const both = async (kind: string, query: string, vars: Record<string, unknown>): Promise<Reply> => {
    const [rs, rc] = await Promise.all([post(apiS!.url, query, vars), post(apiC!.url, query, vars)]);
    s.ops++;
    countInto(s.opsByKind, kind.split(' ')[0]!);
    countInto(s.outcomes, codeOf(rs) ?? 'ok');
    const a = comparable(rs);
    const b = comparable(rc);
    if (a !== b) {
      s.mismatches++;
      fail(`compare: op ${s.ops} ${kind} ${JSON.stringify(vars)}: standalone ${a.slice(0, 600)} | cluster ${b.slice(0, 600)}`);
    }
    learn(kind, vars, rs);
    return rs;
  };

  const rangeBounds = (): Record<string, string | null> => {
    const r = rand();
    if (r < 0.45) return { prefix: pick(PREFIXES), start: null, end: null };
    if (r < 0.85) {
      const a = rand() < 0.8 ? pick(BOUNDS) : null;
      const b = rand() < 0.8 ? pick(BOUNDS) : null;
      return { prefix: null, start: a, end: b };
    }
    return { prefix: null, start: null, end: null };
  };

  /** A walk over a range's pages, forward (first/after) or backward (last/before), following the cursors. */
  const rangeWalk = async (backward: boolean) => {
    const bounds = rangeBounds();
    const size = 1 + Math.floor(rand() * 5);
    let cursor: string | null = null;
    for (let page = 0; page < 8 && s.ops < maxOps; page++) {
      const vars = backward ? { ...bounds, last: size, before: cursor } : { ...bounds, first: size, after: cursor };
      const r = await both(backward ? 'range-back' : 'range', Q.range, vars);
      const info = r.body?.data?.range?.pageInfo;
      if (!info) return;
      const more = backward ? info.hasPreviousPage : info.hasNextPage;
      cursor = backward ? info.startCursor : info.endCursor;
      if (!more || cursor == null) return;
    }
  };

  /**
   * A batch over several partitions WITH expectedVersion: the cluster refuses it
   * (CROSS_PARTITION_CAS) and writes nothing; the standalone would apply it. Sent to the cluster
   * only, between two getMany of its keys sent to both.
   */
  const crossPartitionCas = async () => {
    let keys = pickKeys(2 + Math.floor(rand() * 4));
    while (new Set(keys.map((k) => ks.partition(k))).size < 2) keys = pickKeys(3);
    const items = keys.map((key, i) => ({ key, value: value(), expectedVersion: i === 0 || rand() < 0.5 ? version(key) : null }));
    const before = await post(apiC!.url, Q.getMany, { keys });
    await both('getMany-around-cas', Q.getMany, { keys });
    const r = await post(apiC!.url, Q.batch, { items });
    s.documentedDifferences++;
    if (codeOf(r) !== 'CROSS_PARTITION_CAS' || r.body?.data != null) {
      fail(`compare: a cross-partition batch with expectedVersion on the cluster was answered ${codeOf(r) ?? 'ok'} (${comparable(r).slice(0, 300)}), not CROSS_PARTITION_CAS without data`);
    }
    const after = await post(apiC!.url, Q.getMany, { keys });
    // Nothing changed, timestamps included; and the standalone agrees on what is there.
    if (canon(before.body) !== canon(after.body)) fail(`compare: a refused cross-partition batch changed the cluster: ${canon(before.body)} -> ${canon(after.body)}`);
    await both('getMany-around-cas', Q.getMany, { keys });
  };

  const ops: [weight: number, run: () => Promise<void>][] = [
    [16, async () => void (await both('put', Q.put, { key: pick(ALPHABET), value: value(), ev: null }))],
    [7, async () => {
      const key = pick(ALPHABET);
      await both('put-cas-right', Q.put, { key, value: value(), ev: version(key) });
    }],
    [4, async () => {
      const key = pick(ALPHABET);
      await both('put-cas-wrong', Q.put, { key, value: value(), ev: wrong(key) });
    }],
    [8, async () => void (await both('get', Q.get, { key: pick(ALPHABET) }))],
    [5, async () => {
      const keys = Array.from({ length: 1 + Math.floor(rand() * 8) }, () => pick(ALPHABET)); // repeats allowed
      await both('getMany', Q.getMany, { keys });
    }],
    [8, async () => {
      // Over several partitions, without expectedVersion.
      const items = pickKeys(2 + Math.floor(rand() * 6)).map((key) => ({ key, value: value() }));
      await both('batch-multi', Q.batch, { items });
    }],
    [6, async () => {
      // Within one partition, with expectedVersion (right, or now and then one wrong).
      const g = pick(groups);
      const keys = g.filter(() => rand() < 0.7);
      if (keys.length === 0) keys.push(g[0]!);
      const spoil = rand() < 0.3 ? pick(keys) : null;
      const items = keys.map((key) => ({ key, value: value(), expectedVersion: key === spoil ? wrong(key) : rand() < 0.8 ? version(key) : null }));
      await both('batch-single-cas', Q.batch, { items });
    }],
    [2, () => crossPartitionCas()],
    [4, async () => void (await both('delete', Q.del, { key: pick(ALPHABET), ev: null }))],
    [3, async () => {
      const key = pick(ALPHABET);
      await both('delete-cas-right', Q.del, { key, ev: version(key) });
    }],
    [2, async () => {
      const key = pick(ALPHABET);
      await both('delete-cas-wrong', Q.del, { key, ev: wrong(key) });
    }],
    [4, async () => {
      await both('deleteRange', Q.delRange, { ...rangeBounds(), limit: 1 + Math.floor(rand() * 3) });
      // Which keys went is not in the answer: ask for them all (compared like any read).
      await both('getMany-all', Q.getMany, { keys: ALPHABET });
    }],
    [6, () => rangeWalk(false)],
    [4, () => rangeWalk(true)],
    [3, async () => {
      // A page from a cursor no page returned (any key's cursor is valid).
      const at = cursorOf(pick(BOUNDS.filter((b) => b !== '')));
      const vars = rand() < 0.5 ? { ...rangeBounds(), first: 1 + Math.floor(rand() * 6), after: at } : { ...rangeBounds(), last: 1 + Math.floor(rand() * 6), before: at };
      await both('range-cursor', Q.range, vars);
    }],
    [2, async () => {
      // Refused input: both must refuse it alike.
      const r = rand();
      if (r < 0.2) await both('bad-put-empty-key', Q.put, { key: '', value: 'x', ev: null });
      else if (r < 0.4) {
        const [a, b] = pickKeys(2);
        await both('bad-batch-repeat', Q.batch, { items: [{ key: a, value: 'x' }, { key: b, value: 'y' }, { key: a, value: 'z' }] });
      } else if (r < 0.6) await both('bad-range-first-last', Q.range, { prefix: null, start: null, end: null, first: 2, last: 2 });
      else if (r < 0.8) await both('bad-range-prefix-start', Q.range, { prefix: 'a', start: 'a', end: null, first: 2 });
      else await both('bad-range-cursor', Q.range, { prefix: null, start: null, end: null, first: 2, after: 'not a cursor!' });
    }],
  ];
  const total = ops.reduce((n, [w]) => n + w, 0);

  try {
    const [c, r] = await Promise.all([startCluster([], ctx), startTestRedis()]);
    cluster = c;
    redis = r;
    const api = { prefix, partitions, buckets, env: { KV_FEED_RETENTION: '1000000' } };
    [apiC, apiS] = await Promise.all([startApi({ cluster }, api, work), startApi({ redis }, api, work)]);
    log(`[compare] cluster ${cluster.seedList} and standalone ${redis.url}; prefix ${prefix}, ${partitions} partitions of ${buckets} buckets; ${maxOps} operations`);

    // Subscriptions from the start: a probe key is put on both until each has delivered the
    // same probe; events up to it are dropped (a subscription set up late would miss some).
    [subS, subC] = await Promise.all([followChanges(apiS.url), followChanges(apiC.url)]);
    let synced = false;
    for (let round = 0; round < 50 && !synced; round++) {
      const v = `sync${round}`;
      await both('put-probe', Q.put, { key: '~sync', value: v, ev: null });
      const end = Date.now() + 1000;
      while (Date.now() < end) {
        const is = subS.events.findIndex((e) => e.key === '~sync' && e.value === v);
        const ic = subC.events.findIndex((e) => e.key === '~sync' && e.value === v);
        if (is >= 0 && ic >= 0) {
          subS.events.splice(0, is + 1);
          subC.events.splice(0, ic + 1);
          synced = true;
          break;
        }
        await sleep(20);
      }
    }
    if (!synced) throw new Error('the change-feed subscriptions did not deliver a probe write within 50 rounds');
    s.ops = 0;
    s.opsByKind = {};
    s.outcomes = {};
    await crossPartitionCas(); // at least one, whatever the seed

    while (s.ops < maxOps) {
      checkTime(ctx, `after ${s.ops} of ${maxOps} operations`);
      let x = rand() * total;
      const op = ops.find(([w]) => (x -= w) < 0)![1];
      await op();
    }
    await both('getMany-all', Q.getMany, { keys: [...ALPHABET, '~sync'] });

    // Every event of both: wait until neither stream grows for a while (bounded).
    let last = -1;
    const until = Date.now() + Math.min(20_000, Math.max(timeLeft(ctx), 3000));
    for (let stable = 0; stable < 8 && Date.now() < until; ) {
      await sleep(250);
      const n = subS.events.length * 1_000_000 + subC.events.length;
      stable = n === last ? stable + 1 : 0;
      last = n;
    }
    for (const p of [...subS.problems.map((m) => `standalone: ${m}`), ...subC.problems.map((m) => `cluster: ${m}`)]) fail(`compare: change feed ${p}`);
    const perKey = (events: ChangeEventRecord[]) => {
      const m = new Map<string, string[]>();
      for (const e of events) {
        let l = m.get(e.key);
        if (!l) m.set(e.key, (l = []));
        l.push(canon([e.type, e.key, e.version, e.value]));
      }
      return m;
    };
    const es = perKey(subS.events);
    const ec = perKey(subC.events);
    s.eventsStandalone = subS.events.length;
    s.eventsCluster = subC.events.length;
    const keys = new Set([...es.keys(), ...ec.keys()]);
    s.eventKeys = keys.size;
    for (const k of keys) {
      const a = es.get(k) ?? [];
      const b = ec.get(k) ?? [];
      if (canon(a) === canon(b)) {
        s.eventsCompared += a.length;
        continue;
      }
      s.eventMismatchKeys++;
      const i = a.findIndex((x, j) => x !== b[j]);
      const at = i < 0 ? Math.min(a.length, b.length) : i;
      fail(`compare: change events of ${JSON.stringify(k)} differ at #${at}: standalone ${a.length} events (${a[at] ?? 'none'}), cluster ${b.length} (${b[at] ?? 'none'})`);
    }
    log(
      `[compare] ${s.ops} operations, ${s.mismatches} mismatches, ${s.documentedDifferences} cross-partition CAS batches (cluster only, refused); ` +
        `events: standalone ${s.eventsStandalone}, cluster ${s.eventsCluster}, ${s.eventKeys} keys, ${s.eventMismatchKeys} keys differ`,
    );
  } finally {
    await Promise.all([subS?.stop(), subC?.stop()]).catch(() => {});
    await Promise.all([apiC?.stop().catch(() => {}), apiS?.stop().catch(() => {})]);
    await Promise.all([cluster?.stop().catch(() => {}), redis?.stop().catch(() => {})]);
    rmSync(work, { recursive: true, force: true });
    s.durationMs = performance.now() - t0;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Phase 2: capacity
// ---------------------------------------------------------------------------------------------

/**
 * A prefix whose partitions fall as evenly as possible on the masters (slots by CLUSTER
 * KEYSLOT of each partition's hash tag): at most one partition more on one master than on
 * another. A partition is one slot, so the data of a keyspace with few partitions spreads only
 * as evenly as their slots happen to fall.
 */
async function balancedPrefix(cluster: TestCluster, base: string, partitions: number): Promise<{ prefix: string; perMaster: Record<string, number> }> {
  const view = await clusterView(cluster);
  const masters = mastersOf(view).map((l) => l.port);
  const spread = partitions % masters.length === 0 ? 0 : 1;
  let best: { prefix: string; perMaster: Record<string, number>; range: number } | undefined;
  for (let attempt = 0; attempt < 300; attempt++) {
    const prefix = `${base}-${randomBytes(3).toString('hex')}`;
    const slots = await partitionSlots(cluster, prefix, partitions);
    const perMaster: Record<string, number> = Object.fromEntries(masters.map((m) => [String(m), 0]));
    for (const slot of slots) countInto(perMaster, String(ownerOf(view, slot)));
    const counts = Object.values(perMaster);
    const range = Math.max(...counts) - Math.min(...counts);
    if (!best || range < best.range) best = { prefix, perMaster, range };
    if (range <= spread) break;
  }
  return { prefix: best!.prefix, perMaster: best!.perMaster };
}

/** INFO memory's used_memory and maxmemory, and DBSIZE, of one node. */
async function memoryOf(
  ask: <T>(f: (c: import('ioredis').Redis) => Promise<T>) => Promise<T>,
): Promise<{ usedMemory: number; maxmemory: number; startup: number; backlog: number; keys: number }> {
  return ask(async (c) => {
    const info = parseInfo(await c.info('memory'));
    return {
      usedMemory: Number(info.used_memory),
      maxmemory: Number(info.maxmemory),
      startup: Number(info.used_memory_startup),
      backlog: Number(info.mem_replication_backlog),
      keys: await c.dbsize(),
    };
  });
}

async function capacityPhase(ctx: PhaseContext, o: CapacityOptions): Promise<CapacitySummary> {
  const t0 = performance.now();
  const { rand, log, fail } = ctx;
  const mb = o.maxmemoryMb ?? 64;
  const factor = o.factor ?? 2;
  const valueBytes = o.valueBytes ?? 2000;
  const batchItems = o.batchItems ?? 500;
  const partitions = o.partitions ?? 12;
  const smallKeys = o.smallKeys ?? 2000;
  const pages = o.pages ?? 200;
  const loaders = o.loaders ?? 2;
  const KEY_BYTES = 16;
  const keys = Math.ceil((factor * mb * 1024 * 1024) / (KEY_BYTES + valueBytes));
  // About 30 keys per bucket (README, "The Redis layout": 20-400 per bucket).
  const bucketsFor = (n: number) => Math.max(1, Math.ceil(n / partitions / 30));
  const s: CapacitySummary = {
    maxmemoryMb: mb,
    partitions,
    valueBytes,
    batchItems,
    partitionsPerMaster: {},
    keys,
    bytesLoaded: 0,
    loadMs: 0,
    clusterLoadErrors: {},
    masters: [],
    readBack: { checked: 0, wrong: 0, missing: 0 },
    pageLatency: { big: latency([]), small: latency([]), bigKeys: keys, smallKeys },
    standalone: null,
    durationMs: 0,
  };

  // Keys of exactly 16 bytes; values of exactly valueBytes, different for each key, made from
  // one seeded random string, so nothing needs to be kept to check them.
  const keyOf = (i: number) => `k${String(i).padStart(KEY_BYTES - 1, '0')}`;
  const smallKeyOf = (i: number) => `s${String(i).padStart(KEY_BYTES - 1, '0')}`;
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const base = Array.from({ length: valueBytes + 1024 }, () => alphabet[Math.floor(rand() * alphabet.length)]).join('');
  const valueOf = (i: number) => `${i}|${base.slice(i % 1024, (i % 1024) + valueBytes)}`.slice(0, valueBytes);
  const chunks = (n: number) => Array.from({ length: Math.ceil(n / batchItems) }, (_, c) => [c * batchItems, Math.min(n, (c + 1) * batchItems)] as const);
  const itemsOf = (from: number, to: number, key: (i: number) => string) =>
    Array.from({ length: to - from }, (_, j) => ({ key: key(from + j), value: valueOf(from + j) }));

  /**
   * Loads keys [0, n) in batches, `loaders` at a time. `onAnswer` sees every answer and says
   * whether to send the batch again (the cluster, on a failure that is not a refusal).
   */
  const load = async (
    url: string,
    n: number,
    key: (i: number) => string,
    onAnswer: (chunk: readonly [number, number], r: Reply, attempt: number) => boolean,
  ) => {
    const todo = chunks(n);
    let next = 0;
    await Promise.all(
      Array.from({ length: loaders }, async () => {
        while (next < todo.length) {
          checkTime(ctx, `while loading (${next} of ${todo.length} batches sent)`);
          const chunk = todo[next++]!;
          for (let attempt = 1; ; attempt++) {
            const r = await post(url, Q.batchLean, { items: itemsOf(chunk[0], chunk[1], key) }, 60_000);
            if (!onAnswer(chunk, r, attempt)) break;
            await sleep(200 * attempt);
          }
        }
      }),
    );
  };

  const work = mkdtempSync(join(tmpdir(), 'kvql-cluster-cap-'));
  let cluster: TestCluster | undefined;
  let redis: TestRedis | undefined;
  const apis: ApiProcess[] = [];
  try {
    cluster = await startCluster(['--maxmemory', `${mb}mb`], ctx);
    const big = await balancedPrefix(cluster, 'cap', partitions);
    const small = await balancedPrefix(cluster, 'cap-small', partitions);
    s.partitionsPerMaster = big.perMaster;
    const apiEnv = { KV_MAX_BATCH_ITEMS: String(batchItems), KV_FEED_RETENTION: String(batchItems) };
    const [apiBig, apiSmall] = await Promise.all([
      startApi({ cluster }, { prefix: big.prefix, partitions, buckets: bucketsFor(keys), env: apiEnv }, work),
      startApi({ cluster }, { prefix: small.prefix, partitions, buckets: bucketsFor(smallKeys), env: apiEnv }, work),
    ]);
    apis.push(apiBig, apiSmall);
    log(
      `[capacity] cluster of 3 masters (+3 replicas) with maxmemory ${mb} MiB each; ${keys} keys of ${KEY_BYTES} bytes with ${valueBytes}-byte values ` +
        `(${mib(keys * (KEY_BYTES + valueBytes))} raw, ${factor}x one node's maxmemory) in batches of ${batchItems}; prefix ${big.prefix}, ` +
        `${partitions} partitions, per master ${Object.entries(big.perMaster).map(([p, n]) => `${p}:${n}`).join(' ')}`,
    );

    // The small keyspace first, then the big one.
    let clusterRefused = false;
    let loadedBig = 0;
    const clusterAnswer = (bytesPerItem: number, count: boolean) => (chunk: readonly [number, number], r: Reply, attempt: number) => {
      const code = codeOf(r);
      if (code === null) {
        if (count) {
          loadedBig += chunk[1] - chunk[0];
          s.bytesLoaded += (chunk[1] - chunk[0]) * bytesPerItem;
        }
        return false;
      }
      countInto(s.clusterLoadErrors, code);
      if (code === 'CAPACITY_EXCEEDED') {
        if (!clusterRefused) fail(`capacity: the cluster refused a batch for memory after ${mib(s.bytesLoaded)} loaded: ${messageOf(r).slice(0, 200)}`);
        clusterRefused = true;
        return false;
      }
      if (attempt >= 5) {
        fail(`capacity: a batch failed 5 times on the cluster: ${code} ${messageOf(r).slice(0, 200)}`);
        return false;
      }
      return true;
    };
    await load(apiSmall.url, smallKeys, smallKeyOf, clusterAnswer(KEY_BYTES + valueBytes, false));
    const tLoad = performance.now();
    await load(apiBig.url, keys, keyOf, clusterAnswer(KEY_BYTES + valueBytes, true));
    s.loadMs = performance.now() - tLoad;
    const view = await clusterView(cluster);
    const bigSlots = await partitionSlots(cluster, big.prefix, partitions);
    const bigKs = new Keyspace(big.prefix, partitions, bucketsFor(keys));
    for (const m of mastersOf(view).sort((a, b) => a.port - b.port)) {
      const mine = bigSlots.map((slot, p) => (ownerOf(view, slot) === m.port ? p : -1)).filter((p) => p >= 0);
      const usage = await cluster.direct(
        m.port,
        async (c) => {
          const sizeOf = async (names: string[]) => {
            const pipe = c.pipeline();
            for (const n of names) pipe.call('MEMORY', 'USAGE', n, 'SAMPLES', '0');
            return ((await pipe.exec()) ?? []).reduce((sum, [, v]) => sum + Number(v ?? 0), 0);
          };
          return {
            buckets: await sizeOf(mine.flatMap((p) => Array.from({ length: bigKs.buckets }, (_, b) => bigKs.bucket('', p, b)))),
            index: await sizeOf(mine.map((p) => bigKs.index(p))),
            feed: await sizeOf(mine.map((p) => bigKs.stream(p))),
          };
        },
        30_000,
      );
      s.masters.push({ port: m.port, ...(await memoryOf((f) => cluster!.direct(m.port, f, 10_000))), ...usage });
    }
    log(
      `[capacity] loaded ${loadedBig} keys, ${mib(s.bytesLoaded)} raw, in ${secs(s.loadMs)} (batch errors: ${fmtCodes(s.clusterLoadErrors)}); ` +
        s.masters.map((m) => `master ${m.port}: used_memory ${mib(m.usedMemory)} of ${mib(m.maxmemory)}, ${m.keys} Redis keys`).join('; '),
    );

    // Every key reads back, in getMany chunks.
    const readBack = async (url: string, n: number, key: (i: number) => string) => {
      // getMany takes at most KV_MAX_BATCH_ITEMS keys.
      const chunk = Math.min(500, batchItems);
      for (let from = 0; from < n; from += chunk) {
        checkTime(ctx, `while reading back (${from} of ${n})`);
        const to = Math.min(n, from + chunk);
        const list = Array.from({ length: to - from }, (_, j) => key(from + j));
        const r = await post(url, Q.getManyLean, { keys: list }, 60_000);
        const code = codeOf(r);
        if (code !== null) {
          fail(`capacity: reading back keys ${from}-${to} failed: ${code} ${messageOf(r).slice(0, 200)}`);
          s.readBack.missing += list.length;
          continue;
        }
        (r.body!.data.getMany as ({ value: string } | null)[]).forEach((e, j) => {
          s.readBack.checked++;
          if (e === null) {
            s.readBack.missing++;
            if (s.readBack.missing <= 3) fail(`capacity: ${list[j]} is missing`);
          } else if (e.value !== valueOf(from + j)) {
            s.readBack.wrong++;
            if (s.readBack.wrong <= 3) fail(`capacity: ${list[j]} reads back another value`);
          }
        });
      }
    };
    await readBack(apiSmall.url, smallKeys, smallKeyOf);
    await readBack(apiBig.url, keys, keyOf);
    log(`[capacity] read back ${s.readBack.checked} keys: ${s.readBack.missing} missing, ${s.readBack.wrong} wrong`);

    // Page latency: range(first: 100, after: a random key), big and small keyspace in turn.
    const bigMs: number[] = [];
    const smallMs: number[] = [];
    for (let i = 0; i < pages; i++) {
      checkTime(ctx, `while timing pages (${i} of ${pages})`);
      for (const [url, n, key, out] of [[apiBig.url, keys, keyOf, bigMs], [apiSmall.url, smallKeys, smallKeyOf, smallMs]] as const) {
        const t = performance.now();
        const r = await post(url, Q.page, { first: 100, after: cursorOf(key(Math.floor(rand() * n))) });
        const ms = performance.now() - t;
        if (codeOf(r) !== null) fail(`capacity: a range page failed: ${codeOf(r)} ${messageOf(r).slice(0, 200)}`);
        else out.push(ms);
      }
    }
    s.pageLatency.big = latency(bigMs);
    s.pageLatency.small = latency(smallMs);
    log(
      `[capacity] range(first: 100, after: random key): ${keys} keys p50 ${s.pageLatency.big.p50.toFixed(2)} ms p99 ${s.pageLatency.big.p99.toFixed(2)} ms; ` +
        `${smallKeys} keys p50 ${s.pageLatency.small.p50.toFixed(2)} ms p99 ${s.pageLatency.small.p99.toFixed(2)} ms`,
    );
    await Promise.all(apis.splice(0).map((a) => a.stop().catch(() => {})));
    await cluster.stop();
    cluster = undefined;

    // The same load on one Redis with the same maxmemory: it must fill up and refuse.
    checkTime(ctx, 'before the standalone load');
    redis = await startTestRedis(['--maxmemory', `${mb}mb`]);
    const apiOne = await startApi({ redis }, { prefix: big.prefix, partitions, buckets: bucketsFor(keys), env: apiEnv }, work);
    apis.push(apiOne);
    const st: NonNullable<CapacitySummary['standalone']> = {
      batchesAcknowledged: 0,
      bytesAcknowledged: 0,
      firstRefusalAtBytes: null,
      usedMemoryAtFirstRefusal: null,
      capacityRefusals: 0,
      otherErrors: {},
      usedMemory: 0,
      readsChecked: 0,
      readsFailed: 0,
      rangeServed: false,
    };
    s.standalone = st;
    const acked: number[] = [];
    const ask = <T>(f: (c: import('ioredis').Redis) => Promise<T>) => askStandalone(redis!, f);
    await load(apiOne.url, keys, keyOf, (chunk, r) => {
      const code = codeOf(r);
      if (code === null) {
        st.batchesAcknowledged++;
        st.bytesAcknowledged += (chunk[1] - chunk[0]) * (KEY_BYTES + valueBytes);
        for (let i = chunk[0]; i < chunk[1]; i++) acked.push(i);
      } else if (code === 'CAPACITY_EXCEEDED') {
        st.capacityRefusals++;
        if (st.firstRefusalAtBytes === null) {
          st.firstRefusalAtBytes = st.bytesAcknowledged;
          void memoryOf(ask).then((m) => (st.usedMemoryAtFirstRefusal = m.usedMemory), () => {});
        }
      } else countInto(st.otherErrors, code);
      return false;
    });
    st.usedMemory = (await memoryOf(ask)).usedMemory;
    if (st.capacityRefusals === 0) fail(`capacity: the standalone Redis (maxmemory ${mb} MiB) took the whole load of ${mib(keys * (KEY_BYTES + valueBytes))} without a CAPACITY_EXCEEDED`);
    if (Object.keys(st.otherErrors).length > 0) fail(`capacity: the standalone load saw other errors: ${fmtCodes(st.otherErrors)}`);
    // Full, it still serves reads: get of loaded keys, and a range page.
    for (let i = 0; i < Math.min(200, acked.length); i++) {
      const k = acked[Math.floor(rand() * acked.length)]!;
      const r = await post(apiOne.url, Q.get, { key: keyOf(k) });
      st.readsChecked++;
      if (codeOf(r) !== null || r.body?.data?.get?.value !== valueOf(k)) {
        st.readsFailed++;
        if (st.readsFailed <= 3) fail(`capacity: on the full standalone Redis, get ${keyOf(k)} was answered ${codeOf(r) ?? 'with another value'} ${messageOf(r).slice(0, 200)}`);
      }
    }
    const page = await post(apiOne.url, Q.page, { first: 100, after: null });
    st.rangeServed = codeOf(page) === null && page.body!.data.range.edges.length === 100;
    if (!st.rangeServed) fail(`capacity: on the full standalone Redis a range page was answered ${codeOf(page) ?? 'short'} ${messageOf(page).slice(0, 200)}`);
    // The baseline for the cluster's page latency: the same pages on one Redis, same partitions.
    const oneMs: number[] = [];
    for (let i = 0; i < pages && acked.length > 0; i++) {
      const t = performance.now();
      const r = await post(apiOne.url, Q.page, { first: 100, after: cursorOf(keyOf(acked[Math.floor(rand() * acked.length)]!)) });
      if (codeOf(r) === null) oneMs.push(performance.now() - t);
    }
    st.pageLatency = latency(oneMs);
    log(
      `[capacity] standalone (maxmemory ${mb} MiB): ${st.batchesAcknowledged} batches acknowledged (${mib(st.bytesAcknowledged)} raw), first CAPACITY_EXCEEDED after ` +
        `${st.firstRefusalAtBytes === null ? 'never' : mib(st.firstRefusalAtBytes)} raw (used_memory ${st.usedMemoryAtFirstRefusal === null ? '?' : mib(st.usedMemoryAtFirstRefusal)}), ` +
        `${st.capacityRefusals} batches refused; reads of loaded keys ${st.readsChecked - st.readsFailed}/${st.readsChecked} served, range page ${st.rangeServed ? 'served' : 'NOT served'}`,
    );
  } finally {
    await Promise.all(apis.map((a) => a.stop().catch(() => {})));
    await Promise.all([cluster?.stop().catch(() => {}), redis?.stop().catch(() => {})]);
    rmSync(work, { recursive: true, force: true });
    s.durationMs = performance.now() - t0;
  }
  return s;
}

/** A short-lived direct connection to a standalone test Redis. */
function askStandalone<T>(redis: TestRedis, f: (c: import('ioredis').Redis) => Promise<T>): Promise<T> {
  return askRedis(redis.port, f, 10_000);
}

// ---------------------------------------------------------------------------------------------
// Phase 3: failover
// ---------------------------------------------------------------------------------------------

interface KeyWrite {
  key: string;
  value: string;
  kind: 'put' | 'batch';
  writer: number;
  sentAt: number;
  answeredAt: number;
  /** null: acknowledged (or not answered yet: see answeredAt). */
  code: string | null;
  ackVersion?: number;
}

/** Reads `keys` through the API (getMany in chunks): key → {value, version} or null. */
async function readAll(url: string, keys: readonly string[], ctx: PhaseContext): Promise<Map<string, { value: string; version: number } | null>> {
  const out = new Map<string, { value: string; version: number } | null>();
  for (let i = 0; i < keys.length; i += 500) {
    const chunk = keys.slice(i, i + 500);
    let r: Reply | undefined;
    // A read right after a failover or a migration may meet a moment of unavailability: a few tries.
    for (let attempt = 0; attempt < 10; attempt++) {
      r = await post(url, Q.getManyLean, { keys: chunk }, 30_000);
      if (codeOf(r) === null) break;
      await sleep(500);
    }
    if (codeOf(r!) !== null) throw new Error(`reading back through the API failed: ${codeOf(r!)} ${messageOf(r!).slice(0, 300)}`);
    chunk.forEach((k, j) => out.set(k, r!.body!.data.getMany[j] ?? null));
    checkTime(ctx, `while reading back (${i} of ${keys.length})`);
  }
  return out;
}

async function failoverPhase(ctx: PhaseContext, o: FailoverOptions): Promise<FailoverSummary> {
  const t0 = performance.now();
  const { rand, log, fail } = ctx;
  const partitions = o.partitions ?? 64;
  const prefix = `fo-${randomBytes(3).toString('hex')}`;
  const ks = new Keyspace(prefix, partitions, 16);
  const s: FailoverSummary = {
    partitions,
    nodeTimeoutMs: o.nodeTimeoutMs ?? 5000,
    killedMaster: 0,
    promotedReplica: 0,
    killedPartitions: 0,
    promotedMs: null,
    healthyMs: null,
    rejoinMs: null,
    rejoinedAsReplicaOf: null,
    firstAppliedToKilledMs: null,
    firstAckToKilledMs: null,
    longestAckGapMs: { put: 0, batch: 0 },
    answers: {},
    errorSamples: {},
    internalErrors: {},
    keyWrites: 0,
    ackedChecked: 0,
    ackedLost: 0,
    unacked: {},
    unackedBatches: {},
    durationMs: 0,
  };
  const work = mkdtempSync(join(tmpdir(), 'kvql-cluster-fo-'));
  let cluster: TestCluster | undefined;
  let api: ApiProcess | undefined;
  const writes: KeyWrite[] = [];
  let running = true;
  let loops: Promise<void>[] = [];
  let seq = 0;

  const answer = (r: Reply) => {
    const code = codeOf(r);
    countInto(s.answers, code ?? 'ok');
    if (code !== null && !(code in s.errorSamples)) s.errorSamples[code] = messageOf(r);
    return code;
  };
  /** One writer: sends requests until stopped, tracks the longest time between its acknowledgements. */
  const writer = (kind: 'put' | 'batch', n: number) =>
    (async () => {
      let lastAck: number | null = null;
      const gap = (t: number) => {
        if (lastAck !== null) s.longestAckGapMs[kind] = Math.max(s.longestAckGapMs[kind], t - lastAck);
      };
      for (let i = 0; running && i < 100_000; i++) {
        const id = ++seq;
        const keys = kind === 'put' ? [`fo:p${n}:${id}`] : Array.from({ length: 4 + Math.floor(rand() * 9) }, (_, j) => `fo:b${n}:${id}:${j}`);
        const sentAt = performance.now();
        const batch: KeyWrite[] = keys.map((key) => ({ key, value: `${key}#${Math.floor(rand() * 1e9)}`, kind, writer: n, sentAt, answeredAt: 0, code: null }));
        writes.push(...batch);
        const r =
          kind === 'put'
            ? await post(api!.url, Q.put, { key: batch[0]!.key, value: batch[0]!.value, ev: null })
            : await post(api!.url, Q.batchLean, { items: batch.map((w) => ({ key: w.key, value: w.value })) });
        const code = answer(r);
        const t = performance.now();
        batch.forEach((w, j) => {
          w.answeredAt = t;
          w.code = code;
          if (code === null) w.ackVersion = kind === 'put' ? r.body!.data.put.version : r.body!.data.batchPut[j].version;
        });
        if (code === null) {
          gap(t);
          lastAck = t;
        } else await sleep(20 + rand() * 30);
      }
      gap(performance.now()); // a writer still waiting at the end
    })();

  try {
    cluster = await startCluster(o.nodeTimeoutMs ? ['--cluster-node-timeout', String(o.nodeTimeoutMs)] : [], ctx);
    api = await startApi({ cluster }, { prefix, partitions, buckets: 16, env: { KV_MIN_REPLICAS: '1', KV_REPLICATION_TIMEOUT_MS: '1000' } }, work);
    const slots = await partitionSlots(cluster, prefix, partitions);
    const view = await clusterView(cluster);
    const masters = mastersOf(view).map((l) => l.port).sort((a, b) => a - b);
    const victim = masters[Math.floor(rand() * masters.length)]!;
    const [replica] = await cluster.replicasOf(victim);
    if (replica === undefined) throw new Error(`master ${victim} has no replica`);
    s.killedMaster = victim;
    s.promotedReplica = replica;
    const killedParts = new Set(slots.map((slot, p) => (ownerOf(view, slot) === victim ? p : -1)).filter((p) => p >= 0));
    s.killedPartitions = killedParts.size;
    log(`[failover] prefix ${prefix}, ${partitions} partitions, KV_MIN_REPLICAS=1, cluster-node-timeout ${s.nodeTimeoutMs} ms; master ${victim} (replica ${replica}) serves ${killedParts.size} partitions and will be killed`);

    loops = [
      ...Array.from({ length: o.putWriters ?? 3 }, (_, n) => writer('put', n)),
      ...Array.from({ length: o.batchWriters ?? 1 }, (_, n) => writer('batch', n)),
    ];
    await sleep(o.beforeMs ?? 3000);
    const node = cluster.node(victim);
    const tKill = performance.now();
    await node.kill9();
    // Promoted: the replica calls itself master.
    const promoteBy = Date.now() + Math.min(60_000, Math.max(5000, timeLeft(ctx)));
    while (Date.now() < promoteBy) {
      const me = await cluster
        .direct(replica, (c) => c.call('CLUSTER', 'NODES'))
        .then((t) => parseClusterNodes(String(t)).find((l) => l.flags.includes('myself')), () => undefined);
      if (me?.flags.includes('master')) {
        s.promotedMs = performance.now() - tKill;
        break;
      }
      await sleep(50);
    }
    if (s.promotedMs === null) throw new Error(`replica ${replica} was not promoted within ${(promoteBy - Date.now() + (performance.now() - tKill)) / 1000} s of the kill`);
    await cluster.waitHealthy(Math.min(60_000, Math.max(5000, timeLeft(ctx))));
    s.healthyMs = performance.now() - tKill;
    // The killed node again, from its own nodes.conf: it must rejoin as a replica of the new
    // master, in every live node's view (views converge a moment after waitHealthy, which
    // accepts a master without slots), with its replication link up.
    const tRestart = performance.now();
    await node.restart();
    await cluster.waitHealthy(Math.min(60_000, Math.max(5000, timeLeft(ctx))));
    const rejoinBy = Date.now() + Math.min(60_000, Math.max(5000, timeLeft(ctx)));
    let why = 'not checked';
    while (Date.now() < rejoinBy) {
      why = '';
      for (const n of cluster.nodes.filter((x) => x.running())) {
        const lines = await clusterView(cluster, [n.port]).catch(() => []);
        const master = lines.find((l) => l.port === replica);
        const me = lines.find((l) => l.port === victim);
        if (!master || !me || !me.flags.includes('slave') || me.masterId !== master.id || me.flags.some((f) => f.startsWith('fail'))) {
          why = `node ${n.port} sees ${victim} as ${me ? `${me.flags.join(',')} of ${lines.find((l) => l.id === me.masterId)?.port ?? me.masterId}` : 'nothing'}`;
          break;
        }
      }
      if (why === '') {
        const link = await cluster.direct(victim, (c) => c.info('replication')).then((t) => parseInfo(t).master_link_status, () => undefined);
        if (link !== 'up') why = `${victim}: master_link_status ${link}`;
      }
      if (why === '') break;
      await sleep(100);
    }
    if (why === '') {
      s.rejoinMs = performance.now() - tRestart;
      s.rejoinedAsReplicaOf = replica;
    } else fail(`failover: the restarted node ${victim} did not rejoin as a replica of the new master ${replica}: ${why}`);
    log(
      `[failover] kill -9 ${victim}: ${replica} master after ${secs(s.promotedMs)}, cluster healthy after ${secs(s.healthyMs)}; ` +
        `restarted ${victim}: replica of ${s.rejoinedAsReplicaOf ?? '?'} after ${secs(s.rejoinMs)}`,
    );
    await sleep(Math.min(o.afterMs ?? 4000, Math.max(0, timeLeft(ctx) - 10_000)));
    running = false;
    await Promise.all(loops);

    const toKilled = writes.filter((w) => w.sentAt > tKill && killedParts.has(ks.partition(w.key)) && w.answeredAt > 0);
    const firstOf = (ws: KeyWrite[]) => (ws.length === 0 ? null : Math.min(...ws.map((w) => w.answeredAt)) - tKill);
    s.firstAppliedToKilledMs = firstOf(toKilled.filter((w) => w.code === null || w.code === 'REPLICATION_TIMEOUT'));
    s.firstAckToKilledMs = firstOf(toKilled.filter((w) => w.code === null));
    if (s.firstAckToKilledMs === null) fail(`failover: no write to the killed master's partitions was acknowledged after the kill`);

    // Every acknowledged write is there; what became of the others.
    const stored = await readAll(api.url, writes.map((w) => w.key), ctx);
    for (const w of writes) {
      s.keyWrites++;
      const e = stored.get(w.key) ?? null;
      const present = e !== null && e.value === w.value;
      if (w.code === null) {
        s.ackedChecked++;
        if (!(e !== null && (e.version > w.ackVersion! || (e.version === w.ackVersion && e.value === w.value)))) {
          s.ackedLost++;
          if (s.ackedLost <= 5) fail(`failover: acknowledged ${w.kind} ${w.key} v${w.ackVersion} lost: stored ${e ? `v${e.version} ${e.value}` : 'absent'}`);
        }
      } else {
        const u = (s.unacked[w.code] ??= { present: 0, absent: 0 });
        u[present ? 'present' : 'absent']++;
      }
    }
    const batches = new Map<string, KeyWrite[]>();
    for (const w of writes) {
      if (w.kind !== 'batch' || w.code === null) continue;
      const id = `${w.writer}:${w.sentAt}`;
      batches.set(id, [...(batches.get(id) ?? []), w]);
    }
    for (const ws of batches.values()) {
      const there = ws.filter((w) => stored.get(w.key)?.value === w.value).length;
      const b = (s.unackedBatches[ws[0]!.code!] ??= { whole: 0, part: 0, none: 0 });
      b[there === ws.length ? 'whole' : there > 0 ? 'part' : 'none']++;
    }
    log(
      `[failover] first write to the killed master's partitions applied ${secs(s.firstAppliedToKilledMs)} after the kill, acknowledged after ${secs(s.firstAckToKilledMs)}; ` +
        `longest gap between acknowledgements: puts ${secs(s.longestAckGapMs.put)}, batches ${secs(s.longestAckGapMs.batch)}; answers ${fmtCodes(s.answers)}; ` +
        `${s.ackedChecked} acknowledged key writes checked, ${s.ackedLost} lost`,
    );
  } finally {
    running = false;
    await Promise.all(loops);
    s.internalErrors = maskedErrors(api);
    await api?.stop().catch(() => {});
    await cluster?.stop().catch(() => {});
    rmSync(work, { recursive: true, force: true });
    s.durationMs = performance.now() - t0;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Phase 4: resharding under load
// ---------------------------------------------------------------------------------------------

async function reshardPhase(ctx: PhaseContext, o: ReshardOptions): Promise<ReshardSummary> {
  const t0 = performance.now();
  const { rand, log, fail } = ctx;
  const partitions = o.partitions ?? 16;
  const preloadKeys = o.preloadKeys ?? 12_000;
  const writers = o.writers ?? 3;
  const readers = o.readers ?? 4;
  const keysPerWriter = o.keysPerWriter ?? 40;
  // Enough buckets that a partition's slot holds hundreds of Redis keys: redis-cli moves a
  // slot's keys 10 at a time, so for a while some of a partition's keys are on each side.
  const buckets = o.buckets ?? 1024;
  const sweepers = o.sweepers ?? 2;
  const filler = 'x'.repeat(200);
  const prefix = `rs-${randomBytes(3).toString('hex')}`;
  const ks = new Keyspace(prefix, partitions, buckets);
  const s: ReshardSummary = {
    partitions,
    preloadKeys,
    newMaster: 0,
    newMasterSlots: 0,
    partitionsMoved: 0,
    addMasterMs: 0,
    rebalanceMs: 0,
    requests: { writes: 0, reads: 0 },
    errors: {},
    errorsDuringRebalance: {},
    errorSamples: {},
    internalErrors: {},
    ackedChecked: 0,
    ackedLost: 0,
    readsChecked: 0,
    staleReads: 0,
    missingReads: 0,
    badReadRequests: 0,
    badReadRequestsDuringRebalance: 0,
    backups: [],
    durationMs: 0,
  };
  const work = mkdtempSync(join(tmpdir(), 'kvql-cluster-rs-'));
  /** Each backup taken: its directory, and the highest version acknowledged per key before it began. */
  const taken: { dir: string; before: Map<string, number>; summary: ReshardBackup }[] = [];
  let cluster: TestCluster | undefined;
  let api: ApiProcess | undefined;
  let running = true;
  let loops: Promise<void>[] = [];
  /** The highest acknowledged version of each key, and its value. */
  const known = new Map<string, { version: number; value: string }>();
  const acked: { key: string; version: number; value: string }[] = [];
  const byPartition = new Map<number, string[]>();
  let window: [number, number] | null = null;
  const inWindow = (t: number) => window !== null && t >= window[0] && (window[1] === 0 || t <= window[1]);

  const note = (r: Reply, sentAt: number, kind: 'writes' | 'reads') => {
    s.requests[kind]++;
    const code = codeOf(r);
    if (code === null) return null;
    countInto(s.errors, code);
    if (inWindow(sentAt)) countInto(s.errorsDuringRebalance, code);
    if (!(code in s.errorSamples)) s.errorSamples[code] = messageOf(r);
    return code;
  };
  const ack = (key: string, version: number, value: string) => {
    acked.push({ key, version, value });
    if ((known.get(key)?.version ?? 0) < version) known.set(key, { version, value });
    if (version === 1) {
      const p = ks.partition(key);
      let l = byPartition.get(p);
      if (!l) byPartition.set(p, (l = []));
      l.push(key);
    }
  };
  const preKey = (i: number) => `rs:pre:${String(i).padStart(6, '0')}`;
  let seq = 0;

  /** Writer n: puts to its own keys and to preloaded keys of its residue class; the last also batchPuts. Never two writers on one key. */
  const writer = (n: number) =>
    (async () => {
      for (let i = 0; running && i < 100_000; i++) {
        const id = ++seq;
        let items: { key: string; value: string }[];
        if (n === writers - 1 && i % 3 === 0) {
          const keys = new Set<string>();
          const size = 4 + Math.floor(rand() * 7);
          while (keys.size < size) keys.add(`rs:w${n}:${String(Math.floor(rand() * keysPerWriter)).padStart(3, '0')}`);
          items = [...keys].map((key) => ({ key, value: `${key}#${id}` }));
        } else {
          const key =
            rand() < 0.5
              ? `rs:w${n}:${String(Math.floor(rand() * keysPerWriter)).padStart(3, '0')}`
              : preKey(n + writers * Math.floor((rand() * preloadKeys) / writers));
          if (key.startsWith('rs:pre:') && !known.has(key)) continue; // beyond the preload
          items = [{ key, value: `${key}#${id}` }];
        }
        const sentAt = performance.now();
        const r = items.length === 1 ? await post(api!.url, Q.put, { key: items[0]!.key, value: items[0]!.value, ev: null }) : await post(api!.url, Q.batchLean, { items });
        if (note(r, sentAt, 'writes') === null) {
          items.forEach((it, j) => ack(it.key, items.length === 1 ? r.body!.data.put.version : r.body!.data.batchPut[j].version, it.value));
        } else await sleep(20 + rand() * 30);
      }
    })();

  /** Checks what a read returned against what was acknowledged before it was sent; false if stale or missing. */
  const check = (key: string, before: { version: number; value: string } | undefined, got: { value: string; version: number } | null | undefined, how: string, sentAt: number) => {
    if (!before) return true;
    s.readsChecked++;
    const during = inWindow(sentAt) ? ' (sent during add + rebalance)' : '';
    if (got == null) {
      s.missingReads++;
      if (s.missingReads <= 5) fail(`reshard: ${how} of ${key} found nothing; v${before.version} was acknowledged before the read was sent${during}`);
      return false;
    }
    if (got.version < before.version || (got.version === before.version && got.value !== before.value)) {
      s.staleReads++;
      if (s.staleReads <= 5) fail(`reshard: ${how} of ${key} returned v${got.version}, older than the acknowledged v${before.version}${during}`);
      return false;
    }
    return true;
  };
  const checkAll = (results: boolean[], sentAt: number) => {
    if (results.every(Boolean)) return;
    s.badReadRequests++;
    if (inWindow(sentAt)) s.badReadRequestsDuringRebalance++;
  };

  /** A getMany of up to `n` known keys of partition `p`, checked; false if there were none. */
  const readPartition = async (p: number, n: number) => {
    const list = byPartition.get(p) ?? [];
    const keys = [...new Set(Array.from({ length: Math.min(n, list.length) }, () => list[Math.floor(rand() * list.length)]!))];
    if (keys.length === 0) return false;
    const before = keys.map((k) => known.get(k));
    const sentAt = performance.now();
    const r = await post(api!.url, Q.getManyLean, { keys });
    if (note(r, sentAt, 'reads') === null) checkAll(keys.map((k, j) => check(k, before[j], r.body!.data.getMany[j], 'getMany', sentAt)), sentAt);
    return true;
  };

  /** Sweeper n: every partition in turn, from its own starting point. */
  const sweeper = (n: number) =>
    (async () => {
      for (let i = 0; running && i < 1_000_000; i++) {
        if (!(await readPartition((Math.floor((n * partitions) / sweepers) + i) % partitions, 60))) await sleep(5);
      }
    })();

  /**
   * Reader: getMany of many keys of one partition (they span its buckets, so while its slot
   * moves some are on each side), get of one key, or a range page of a writer's keys.
   */
  const reader = () =>
    (async () => {
      for (let i = 0; running && i < 1_000_000; i++) {
        const mode = rand();
        const sentAt = performance.now();
        if (mode < 0.7) {
          const parts = [...byPartition.keys()];
          if (!(await readPartition(parts[Math.floor(rand() * parts.length)]!, 40))) continue;
        } else if (mode < 0.9) {
          const keys = [...known.keys()];
          const key = keys[Math.floor(rand() * keys.length)];
          if (key === undefined) continue;
          const before = known.get(key);
          const r = await post(api!.url, Q.get, { key });
          if (note(r, sentAt, 'reads') === null) checkAll([check(key, before, r.body!.data.get, 'get', sentAt)], sentAt);
        } else {
          const w = Math.floor(rand() * writers);
          const p = `rs:w${w}:`;
          const before = new Map([...known].filter(([k]) => k.startsWith(p)));
          const r = await post(api!.url, Q.prefixPage, { prefix: p, first: 1000 });
          if (note(r, sentAt, 'reads') === null) {
            const got = new Map((r.body!.data.range.edges as { node: { key: string; value: string; version: number } }[]).map((e) => [e.node.key, e.node]));
            checkAll([...before].map(([k, b]) => check(k, b, got.get(k) ?? null, 'a range page', sentAt)), sentAt);
          }
        }
      }
    })();

  try {
    cluster = await startCluster([], ctx);
    api = await startApi({ cluster }, { prefix, partitions, buckets }, work);
    // The preload: what the migration will move.
    for (let from = 0; from < preloadKeys; from += 500) {
      checkTime(ctx, 'while preloading');
      const items = Array.from({ length: Math.min(500, preloadKeys - from) }, (_, j) => ({ key: preKey(from + j), value: `pre${from + j}:${filler}` }));
      const r = await post(api.url, Q.batchLean, { items }, 60_000);
      if (codeOf(r) !== null) throw new Error(`preload failed: ${codeOf(r)} ${messageOf(r)}`);
      items.forEach((it, j) => ack(it.key, r.body!.data.batchPut[j].version, it.value));
    }
    log(`[reshard] prefix ${prefix}, ${partitions} partitions of ${buckets} buckets, ${preloadKeys} keys preloaded (${Math.round(preloadKeys / partitions)} per partition); ${writers} writers, ${readers} readers, ${sweepers} sweepers; KV_MIN_REPLICAS=0`);
    loops = [
      ...Array.from({ length: writers }, (_, n) => writer(n)),
      ...Array.from({ length: readers }, () => reader()),
      ...Array.from({ length: sweepers }, (_, n) => sweeper(n)),
    ];
    await sleep(o.beforeMs ?? 1500);

    const tAdd = performance.now();
    window = [tAdd, 0];
    const added = await cluster.addMaster();
    s.newMaster = added.port;
    s.addMasterMs = performance.now() - tAdd;
    const tRebalance = performance.now();
    let rebalancing = true;
    const rebalance = cluster.rebalance(Math.min(180_000, Math.max(10_000, timeLeft(ctx) - 15_000))).finally(() => (rebalancing = false));
    // Backups while slots move, each of one moment across the masters.
    for (let i = 0; i < (o.backups ?? 2) && rebalancing; i++) {
      await Promise.race([sleep(300), rebalance.catch(() => {})]);
      if (!rebalancing) break;
      const before = new Map([...known].map(([k, v]) => [k, v.version]));
      const dir = join(work, `backup-${i}`);
      const b: ReshardBackup = { duringRebalance: false, pausedMs: 0, refused: null, redisKeysRestored: 0, ackedChecked: 0, ackedMissing: 0, rolledForward: 0, missingParts: 0, verifyProblems: [] };
      try {
        b.pausedMs = (await backupSnapshots({ target: { clusterNodes: cluster.seeds }, auth: {}, dest: dir, log: () => {} })).pausedMs;
        b.duringRebalance = rebalancing;
        taken.push({ dir, before, summary: b });
      } catch (err) {
        b.refused = err instanceof Error ? err.message : String(err);
      }
      s.backups.push(b);
      log(`[reshard] backup ${i + 1}: ${b.refused ? `refused: ${b.refused}` : `writes paused ${b.pausedMs} ms${b.duringRebalance ? ', slots still moving' : ', after the rebalance ended'}`}`);
    }
    await rebalance;
    s.rebalanceMs = performance.now() - tRebalance;
    window = [tAdd, performance.now()];
    const view = await clusterView(cluster);
    s.newMasterSlots = slotCount(view.find((l) => l.port === added.port));
    const slots = await partitionSlots(cluster, prefix, partitions);
    s.partitionsMoved = slots.filter((slot) => ownerOf(view, slot) === added.port).length;
    log(
      `[reshard] master ${added.port} added in ${secs(s.addMasterMs)}; rebalance moved ${s.newMasterSlots} slots (${s.partitionsMoved} of ${partitions} partitions) to it in ${secs(s.rebalanceMs)}; ` +
        `errors during it: ${fmtCodes(s.errorsDuringRebalance)}`,
    );
    await sleep(Math.min(o.afterMs ?? 2000, Math.max(0, timeLeft(ctx) - 10_000)));
    running = false;
    await Promise.all(loops);

    const stored = await readAll(api.url, [...known.keys()], ctx);
    for (const w of acked) {
      s.ackedChecked++;
      const e = stored.get(w.key) ?? null;
      if (!(e !== null && (e.version > w.version || (e.version === w.version && e.value === w.value)))) {
        s.ackedLost++;
        if (s.ackedLost <= 5) fail(`reshard: acknowledged write ${w.key} v${w.version} lost: stored ${e ? `v${e.version} ${e.value}` : 'absent'}`);
      }
    }
    log(
      `[reshard] ${s.requests.writes} write and ${s.requests.reads} read requests, errors ${fmtCodes(s.errors)}; ${s.readsChecked} reads checked: ${s.staleReads} stale, ${s.missingReads} missing; ` +
        `${s.ackedChecked} acknowledged key writes checked, ${s.ackedLost} lost`,
    );
    if (taken.length > 0) await restoreBackups(ctx, taken, { prefix, partitions, buckets });
  } finally {
    running = false;
    await Promise.all(loops);
    s.internalErrors = maskedErrors(api);
    await api?.stop().catch(() => {});
    await cluster?.stop().catch(() => {});
    rmSync(work, { recursive: true, force: true });
    s.durationMs = performance.now() - t0;
  }
  return s;
}

/**
 * Restores each backup taken during the reshard into one fresh 3+3 cluster (emptied between
 * them), completes the batches it caught between their steps as the API does at start, and
 * checks it: every key acknowledged before the backup began, at that version or later, and no
 * problem for verifyKeyspace.
 */
async function restoreBackups(ctx: PhaseContext, taken: { dir: string; before: Map<string, number>; summary: ReshardBackup }[], ks: { prefix: string; partitions: number; buckets: number }): Promise<void> {
  const into = await startCluster([], ctx);
  try {
    for (const [i, { dir, before, summary: b }] of taken.entries()) {
      checkTime(ctx, 'while restoring the backups');
      for (const port of await into.masters()) await into.direct(port, (r) => r.flushall());
      b.redisKeysRestored = (await restoreSnapshots({ backupDir: dir, target: { clusterNodes: into.seeds }, auth: {}, log: () => {} })).keys;
      const redis = createRedis({ clusterNodes: into.seeds }, { commandTimeoutMs: 10_000 });
      await redis.connect();
      try {
        const store = await KvStore.open(redis, ks);
        const rolled = await store.rollForward(0);
        b.rolledForward = rolled.completed;
        b.missingParts = rolled.missingParts.length;
        if (b.missingParts > 0) ctx.fail(`reshard: backup ${i + 1}'s restore misses parts of batches: ${rolled.missingParts.slice(0, 5).join(', ')}`);
        const keys = [...before.keys()];
        for (let from = 0; from < keys.length; from += 500) {
          const chunk = keys.slice(from, from + 500);
          const got = await store.getMany(chunk);
          chunk.forEach((key, j) => {
            b.ackedChecked++;
            const e = got[j];
            if (e == null || e.version < before.get(key)!) {
              b.ackedMissing++;
              if (b.ackedMissing <= 5) ctx.fail(`reshard: backup ${i + 1} lacks ${key} v${before.get(key)}, acknowledged before it began: restored ${e ? `v${e.version}` : 'absent'}`);
            }
          });
        }
        b.verifyProblems = (await verifyKeyspace(redis, ks)).problems.map((p) => `${p.kind}: ${p.message}`);
        for (const p of b.verifyProblems.slice(0, 5)) ctx.fail(`reshard: backup ${i + 1}'s restore: verify found ${p}`);
      } finally {
        redis.disconnect();
      }
      ctx.log(`[reshard] backup ${i + 1} restored: ${b.redisKeysRestored} Redis keys, ${b.rolledForward} batches rolled forward, ${b.ackedChecked} keys acknowledged before it checked, ${b.ackedMissing} missing; verify: ${b.verifyProblems.length} problems`);
    }
  } finally {
    await into.stop().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/** Each phase's own limit (it also ends at the run's). */
const PHASE_BUDGET_MS: Record<Phase, number> = { compare: 120_000, capacity: 240_000, failover: 150_000, reshard: 150_000 };

export async function runClusterExperiment(opts: ClusterExperimentOptions = {}): Promise<ClusterExperimentSummary> {
  const t0 = performance.now();
  const log = opts.log ?? ((line: string) => console.log(line));
  const seed = opts.seed ?? randomBytes(4).readUInt32LE();
  const phases = [...(opts.phases ?? PHASES)];
  const runDeadline = Date.now() + (opts.timeLimitMs ?? 8 * 60_000);
  const summary: ClusterExperimentSummary = {
    seed,
    phases,
    durationMs: 0,
    compare: null,
    capacity: null,
    failover: null,
    reshard: null,
    aborted: null,
    failures: [],
    ok: false,
  };
  const fail = (m: string) => {
    if (summary.failures.length < 100) summary.failures.push(m);
    if (summary.failures.length <= 20) log(`  FAILURE: ${m}`);
  };
  log(`cluster experiment: seed ${seed}, phases ${phases.join(', ')}`);
  for (const phase of phases) {
    if (opts.signal?.aborted) {
      summary.aborted = `interrupted before ${phase}`;
      break;
    }
    if (Date.now() > runDeadline) {
      summary.aborted = `time limit reached before ${phase}`;
      break;
    }
    // Each phase its own random stream, so that one phase's choices do not depend on another's.
    const ctx: PhaseContext = {
      seed,
      rand: random(seed + 7919 * (PHASES.indexOf(phase) + 1)),
      log,
      fail,
      deadline: Math.min(runDeadline, Date.now() + PHASE_BUDGET_MS[phase]),
      ...(opts.signal ? { signal: opts.signal } : {}),
    };
    try {
      if (phase === 'compare') summary.compare = await comparePhase(ctx, opts.compare ?? {});
      else if (phase === 'capacity') summary.capacity = await capacityPhase(ctx, opts.capacity ?? {});
      else if (phase === 'failover') summary.failover = await failoverPhase(ctx, opts.failover ?? {});
      else summary.reshard = await reshardPhase(ctx, opts.reshard ?? {});
    } catch (err) {
      const m = `${phase}: ${err instanceof Error ? err.message : String(err)}`;
      summary.aborted ??= m;
      fail(`aborted: ${m}`);
    }
  }
  summary.durationMs = performance.now() - t0;
  const c = summary.compare;
  const cap = summary.capacity;
  const f = summary.failover;
  const r = summary.reshard;
  summary.ok =
    summary.aborted === null &&
    summary.failures.length === 0 &&
    phases.every((p) => summary[p] !== null) &&
    (c === null || (c.ops > 0 && c.mismatches === 0 && c.eventMismatchKeys === 0 && c.eventsCompared > 0)) &&
    (cap === null ||
      (cap.readBack.missing === 0 && cap.readBack.wrong === 0 && cap.readBack.checked >= cap.keys && (cap.standalone?.capacityRefusals ?? 0) > 0 && cap.standalone?.readsFailed === 0)) &&
    (f === null || (f.ackedLost === 0 && f.ackedChecked > 0)) &&
    (r === null || (r.ackedLost === 0 && r.staleReads === 0 && r.missingReads === 0 && r.ackedChecked > 0));
  return summary;
}

const ms2 = (x: number) => x.toFixed(2);

/** What a write may be answered during a failover, as the README's error table says. */
const FAILOVER_CODES = ['ok', 'STORE_UNAVAILABLE', 'REPLICATION_TIMEOUT'];

/** The summary as `npm run cluster-test` prints it. */
export function formatSummary(s: ClusterExperimentSummary): string {
  const lines = [`cluster experiment summary (seed ${s.seed}, phases ${s.phases.join(',')}, ${(s.durationMs / 1000).toFixed(0)} s)`];
  const c = s.compare;
  if (c) {
    lines.push(
      `  compare (3 masters + 3 replicas vs one Redis, ${c.partitions} partitions, ${(c.durationMs / 1000).toFixed(0)} s):`,
      `    operations sent to both: ${c.ops} (${fmtCodes(c.opsByKind)})`,
      `    standalone answers: ${fmtCodes(c.outcomes)}`,
      `    mismatches: ${c.mismatches}`,
      `    documented differences: ${c.documentedDifferences} cross-partition batches with expectedVersion, sent to the cluster only: CROSS_PARTITION_CAS, nothing changed`,
      `    change events compared: ${c.eventsCompared} (standalone ${c.eventsStandalone}, cluster ${c.eventsCluster}) over ${c.eventKeys} keys; keys whose events differ: ${c.eventMismatchKeys}`,
    );
  }
  const cap = s.capacity;
  if (cap) {
    const raw = cap.keys * (16 + cap.valueBytes);
    lines.push(
      `  capacity (3 masters + 3 replicas, maxmemory ${cap.maxmemoryMb} MiB each, ${cap.partitions} partitions: ${Object.entries(cap.partitionsPerMaster).map(([p, n]) => `${n} on ${p}`).join(', ')} ` +
        `(prefix chosen for that); ${(cap.durationMs / 1000).toFixed(0)} s):`,
      `    loaded: ${cap.keys} keys of 16 bytes, values ${cap.valueBytes} bytes, batches of ${cap.batchItems}: ${mib(cap.bytesLoaded)} raw of ${mib(raw)} (${(cap.bytesLoaded / (cap.maxmemoryMb * 1024 * 1024)).toFixed(2)}x one node's maxmemory) in ${secs(cap.loadMs)}` +
        (Object.keys(cap.clusterLoadErrors).length ? `; batch errors ${fmtCodes(cap.clusterLoadErrors)}` : ''),
      ...cap.masters.map(
        (m) =>
          `    master ${m.port}: used_memory ${mib(m.usedMemory)} of ${mib(m.maxmemory)} (${((100 * m.usedMemory) / m.maxmemory).toFixed(0)}%), ${m.keys} Redis keys; ` +
          `big keyspace: buckets ${mib(m.buckets)}, index ${mib(m.index)}, change feed ${mib(m.feed)}; Redis at startup ${mib(m.startup)}, replication backlog ${mib(m.backlog)}`,
      ),
      `    read back: ${cap.readBack.checked} keys, ${cap.readBack.missing} missing, ${cap.readBack.wrong} wrong`,
      `    range(first: 100, after: random key), ${cap.pageLatency.big.count} pages each: ${cap.pageLatency.bigKeys} keys p50 ${ms2(cap.pageLatency.big.p50)} ms, p99 ${ms2(cap.pageLatency.big.p99)} ms; ` +
        `${cap.pageLatency.smallKeys} keys p50 ${ms2(cap.pageLatency.small.p50)} ms, p99 ${ms2(cap.pageLatency.small.p99)} ms`,
    );
    const st = cap.standalone;
    if (st) {
      lines.push(
        `    one Redis, maxmemory ${cap.maxmemoryMb} MiB, same load: ${st.batchesAcknowledged} batches acknowledged (${mib(st.bytesAcknowledged)} raw); ` +
          `first CAPACITY_EXCEEDED with ${st.firstRefusalAtBytes === null ? 'none' : mib(st.firstRefusalAtBytes)} raw loaded (used_memory ${st.usedMemoryAtFirstRefusal === null ? '?' : mib(st.usedMemoryAtFirstRefusal)}); ` +
          `${st.capacityRefusals} batches refused${Object.keys(st.otherErrors).length ? `, other errors ${fmtCodes(st.otherErrors)}` : ''}; used_memory at the end ${mib(st.usedMemory)}`,
        `    full, it served ${st.readsChecked - st.readsFailed}/${st.readsChecked} gets of loaded keys and ${st.rangeServed ? 'a' : 'NOT a'} range page`,
        ...(st.pageLatency ? [`    the same range pages there (one Redis, same partitions, ${st.pageLatency.count} pages): p50 ${ms2(st.pageLatency.p50)} ms, p99 ${ms2(st.pageLatency.p99)} ms`] : []),
      );
    }
  }
  const f = s.failover;
  if (f) {
    lines.push(
      `  failover (3+3, KV_MIN_REPLICAS=1, ${f.partitions} partitions, cluster-node-timeout ${f.nodeTimeoutMs} ms; ${(f.durationMs / 1000).toFixed(0)} s):`,
      `    kill -9 master ${f.killedMaster} (${f.killedPartitions} partitions): replica ${f.promotedReplica} master after ${secs(f.promotedMs)}, cluster healthy after ${secs(f.healthyMs)}`,
      `    restarted ${f.killedMaster}: replica of ${f.rejoinedAsReplicaOf ?? 'NOTHING'} after ${secs(f.rejoinMs)}`,
      `    kill -> first write to the killed master's partitions applied ${secs(f.firstAppliedToKilledMs)}, acknowledged ${secs(f.firstAckToKilledMs)}`,
      `    longest gap between acknowledgements: single puts ${secs(f.longestAckGapMs.put)}, batchPuts ${secs(f.longestAckGapMs.batch)}`,
      `    answers (requests): ${fmtCodes(f.answers)}`,
      ...(Object.keys(f.answers).some((c) => !FAILOVER_CODES.includes(c))
        ? [
            `    NOT AS DOCUMENTED (README: STORE_UNAVAILABLE during a failover, REPLICATION_TIMEOUT when replicas do not confirm): ` +
              fmtCodes(Object.fromEntries(Object.entries(f.answers).filter(([c]) => !FAILOVER_CODES.includes(c)))),
          ]
        : []),
      ...Object.entries(f.errorSamples).map(([code, m]) => `      e.g. ${code}: ${m.slice(0, 200)}`),
      ...Object.entries(f.internalErrors).map(([m, n]) => `      INTERNAL_SERVER_ERROR in the API's log (${n}x in its last 64 KiB): ${m}`),
      `    key writes: ${f.keyWrites}; acknowledged writes checked: ${f.ackedChecked}, lost: ${f.ackedLost}`,
      `    not acknowledged: ${Object.entries(f.unacked).map(([code, u]) => `${code} ${u.present} present / ${u.absent} absent`).join('; ') || 'none'}`,
      `    batchPuts not acknowledged (read back seconds later): ${
        Object.entries(f.unackedBatches).map(([code, b]) => `${code} ${b.whole} wholly there, ${b.part} partly, ${b.none} not at all`).join('; ') || 'none'
      }`,
    );
  }
  const r = s.reshard;
  if (r) {
    lines.push(
      `  reshard (3+3 plus one master, KV_MIN_REPLICAS=0, ${r.partitions} partitions, ${r.preloadKeys} keys preloaded; ${(r.durationMs / 1000).toFixed(0)} s):`,
      `    add master ${r.newMaster}: ${secs(r.addMasterMs)}; rebalance: ${r.newMasterSlots} slots (${r.partitionsMoved} partitions) moved to it in ${secs(r.rebalanceMs)}`,
      `    requests: ${r.requests.writes} writes, ${r.requests.reads} reads; errors seen by clients: ${fmtCodes(r.errors)} (during add + rebalance: ${fmtCodes(r.errorsDuringRebalance)})`,
      ...Object.entries(r.errorSamples).map(([code, m]) => `      e.g. ${code}: ${m.slice(0, 200)}`),
      ...Object.entries(r.internalErrors).map(([m, n]) => `      INTERNAL_SERVER_ERROR in the API's log (${n}x in its last 64 KiB): ${m}`),
      `    acknowledged writes checked: ${r.ackedChecked}, lost: ${r.ackedLost}`,
      `    key reads checked: ${r.readsChecked}; stale: ${r.staleReads}, missing: ${r.missingReads}` +
        (r.badReadRequests ? ` (in ${r.badReadRequests} read requests, ${r.badReadRequestsDuringRebalance} of them sent during add + rebalance)` : ''),
      ...r.backups.map(
        (b, i) =>
          `    backup ${i + 1}: ${b.refused ? `refused (${b.refused})` : `writes paused ${b.pausedMs} ms${b.duringRebalance ? ' while slots moved' : ''}; restored ${b.redisKeysRestored} Redis keys, ${b.rolledForward} batches rolled forward, ${b.missingParts} parts missing; ${b.ackedChecked} keys acknowledged before it: ${b.ackedMissing} missing; verify: ${b.verifyProblems.length} problems`}`,
      ),
    );
  }
  lines.push(...summaryEnd(s));
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const phases = arg('phases');
  const num = (name: string) => (arg(name) !== undefined ? Number(arg(name)) : undefined);
  const def = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  if (phases) {
    const bad = phases.split(',').filter((p) => !(PHASES as readonly string[]).includes(p));
    if (bad.length) {
      console.error(`unknown phase(s) ${bad.join(', ')}; known: ${PHASES.join(', ')}`);
      process.exit(2);
    }
  }
  const { rounds: _, ...common } = commonOptions();
  runExperimentCli(
    'cluster experiment',
    (signal) =>
      runClusterExperiment({
        signal,
        ...common,
        ...(phases ? { phases: phases.split(',') as Phase[] } : {}),
        compare: def({ ops: num('ops'), partitions: num('partitions') }),
        capacity: def({
          maxmemoryMb: num('maxmemory-mb'),
          pages: num('pages'),
          valueBytes: num('value-bytes'),
          batchItems: num('batch-items'),
          partitions: num('capacity-partitions'),
          smallKeys: num('small-keys'),
        }),
        failover: def({ nodeTimeoutMs: num('node-timeout') }),
        reshard: def({ preloadKeys: num('preload'), backups: num('backups') }),
      }),
    formatSummary,
  );
}
