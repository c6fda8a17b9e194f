// A Redis Cluster's backup and restore as the README's "Scaling out: Redis Cluster" says to take
// them, on real clusters of redis-servers from the repo's redis.conf and cluster.conf:
// `npm run backup` (src/clusterBackup.ts) takes one snapshot per master, of one moment, while
// multi-partition batches go on; `npm run restore-cluster` (src/clusterRestore.ts) puts them into
// another, empty cluster. Checked there: every batch acknowledged before the backup is whole,
// every batch is all or nothing once the API's roll-forward has run, and nothing is missing.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupCluster, CLUSTER_MANIFEST, type ClusterManifest } from '../../src/clusterBackup.js';
import { restoreCluster } from '../../src/clusterRestore.js';
import { redisServerOnPath } from '../../src/managedRedis.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { keysInDistinctPartitions } from '../harness/app.js';
import { runCommand } from '../harness/command.js';
import { startTestCluster, type TestCluster } from '../harness/cluster.js';

const PREFIX = 'clusterbackup';
const PARTITIONS = 16;
const BUCKETS = 64;
/** Items per batch, each in a partition of its own: every batch spans eight partitions. */
const PER_BATCH = 8;

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
}, 60_000);

const tempDir = (name: string) => {
  const dir = mkdtempSync(join(tmpdir(), `kvql-${name}-`));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

async function cluster(replicas: number): Promise<TestCluster> {
  const c = await startTestCluster({ replicas });
  cleanups.push(() => c.stop());
  return c;
}

async function openOn(c: TestCluster): Promise<{ redis: Cluster; store: KvStore }> {
  const redis = createRedis({ clusterNodes: c.seeds }, { commandTimeoutMs: 5000 }) as Cluster;
  redis.on('error', () => {});
  await redis.connect();
  cleanups.push(async () => redis.disconnect());
  return { redis, store: await KvStore.open(redis, { prefix: PREFIX, partitions: PARTITIONS, buckets: BUCKETS }) };
}

/** Batch n's keys: one per partition, so that its items land on every master. */
const batchKeys = (n: number) => keysInDistinctPartitions(`b${n}-`, PER_BATCH, PARTITIONS);

/** Writes batches 1, 2, ... until stopped; `acked` holds the numbers of those acknowledged. */
function keepWriting(store: KvStore, from: number) {
  const acked: number[] = [];
  let stop = false;
  let n = from;
  const done = (async () => {
    while (!stop) {
      const mine = n++;
      await store.batchPut(batchKeys(mine).map((key) => ({ key, value: `batch ${mine}` })));
      acked.push(mine);
    }
  })();
  return {
    acked,
    next: () => n,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

/** Per batch number below `upTo`: how many of its keys the store holds, each checked for its value. */
async function batchesIn(store: KvStore, upTo: number): Promise<Map<number, number>> {
  const held = new Map<number, number>();
  for (let n = 1; n < upTo; n++) {
    const entries = await store.getMany(batchKeys(n));
    for (const e of entries) if (e) expect(e.value).toBe(`batch ${n}`);
    held.set(n, entries.filter(Boolean).length);
  }
  return held;
}

describe.skipIf(!redisServerOnPath())('a Redis Cluster backup (npm run backup) and its restore (npm run restore-cluster)', () => {
  let source: TestCluster;
  let target: TestCluster;
  let written: { redis: Cluster; store: KvStore };
  beforeAll(async () => {
    [source, target] = await Promise.all([cluster(1), cluster(0)]);
    written = await openOn(source);
  }, 120_000);

  it('holds every batch acknowledged before it, each batch whole or absent, taken while batches go on', async () => {
    const masters = await source.masters();
    const settingsBefore = await Promise.all(masters.map((p) => source.direct(p, async (r) => [await r.config('GET', 'auto-aof-rewrite-percentage'), await r.config('GET', 'repl-diskless-sync-delay')])));
    const writer = keepWriting(written.store, 1);
    while (writer.acked.length < 30) await new Promise((r) => setTimeout(r, 20));
    const ackedBefore = writer.acked.length;
    const dest = join(tempDir('cluster-backup'), 'b');
    const lines: string[] = [];
    const manifest = await backupCluster({ seeds: source.seeds, auth: {}, dest, log: (m) => lines.push(m) });
    const ackedDuring = writer.acked.length;
    while (writer.acked.length < ackedDuring + 10) await new Promise((r) => setTimeout(r, 20));
    await writer.stop();
    const end = writer.next();

    // One snapshot per master, named in the manifest with the master's slots.
    expect(manifest.masters.map((m) => m.port).sort()).toEqual(masters);
    expect(manifest.masters.flatMap((m) => m.slots).reduce((n, [a, b]) => n + b - a + 1, 0)).toBe(16_384);
    expect(JSON.parse(readFileSync(join(dest, CLUSTER_MANIFEST), 'utf8'))).toEqual(manifest);
    expect(readdirSync(dest).sort()).toEqual([CLUSTER_MANIFEST, ...manifest.masters.map((m) => m.file)].sort());
    for (const m of manifest.masters) expect(readFileSync(join(dest, m.file)).subarray(0, 5).toString()).toBe('REDIS');
    expect(manifest.pausedMs).toBeLessThan(2000);
    expect(lines.join('\n')).toMatch(/writes paused \d+ ms while 3 masters forked/);
    // The source is as it was: its settings back, its writes no longer paused.
    expect(await Promise.all(masters.map((p) => source.direct(p, async (r) => [await r.config('GET', 'auto-aof-rewrite-percentage'), await r.config('GET', 'repl-diskless-sync-delay')])))).toEqual(settingsBefore);
    await written.store.put({ key: 'after-backup', value: 'x' });

    const restored = await restoreCluster({ backupDir: dest, seeds: target.seeds, auth: {}, log: () => {} });
    expect(restored.snapshots).toBe(3);
    const back = await openOn(target);
    // A batch the cut caught committed but not applied everywhere is completed, as the API does
    // at start; with one moment across masters, no part can be missing.
    const rolled = await back.store.rollForward(0);
    expect(rolled.missingParts).toEqual([]);

    const held = await batchesIn(back.store, end);
    for (let n = 1; n <= ackedBefore; n++) expect(held.get(n), `batch ${n}, acknowledged before the backup`).toBe(PER_BATCH);
    for (const [n, count] of held) expect([0, PER_BATCH], `batch ${n}: ${count} of its ${PER_BATCH} items`).toContain(count);
    // Some of the batches written after it began are not in it (the writer went on for 10 more).
    expect(held.get(end - 1)).toBe(0);
    expect(await back.store.get('after-backup')).toBeNull();

    const report = await verifyKeyspace(back.redis, { prefix: PREFIX, partitions: PARTITIONS, buckets: BUCKETS });
    expect(report.problems).toEqual([]);
    expect(report.keys).toBe([...held.values()].reduce((a, b) => a + b, 0));
    // Writes go on from the restored versions.
    const [first] = batchKeys(1);
    expect((await back.store.put({ key: first!, value: 'again' })).version).toBe(2);
  }, 120_000);

  it('refuses a cluster that holds keys, changing nothing', async () => {
    const dest = join(tempDir('cluster-backup'), 'b');
    await backupCluster({ seeds: source.seeds, auth: {}, dest, log: () => {} });
    const before = await keysOf(target);
    expect(before).toBeGreaterThan(0);
    await expect(restoreCluster({ backupDir: dest, seeds: target.seeds, auth: {}, log: () => {} })).rejects.toThrow(`the cluster holds ${before} keys: restore into an empty cluster`);
    expect(await keysOf(target)).toBe(before);
  }, 60_000);

  it('runs as npm run backup and npm run restore-cluster', async () => {
    const dest = join(tempDir('cluster-backup'), 'b');
    const env = { REDIS_CLUSTER_NODES: source.seedList, KV_PREFIX: PREFIX };
    const backup = await runCommand('src/backupCli.ts', [dest], env);
    expect(backup.code, backup.out).toBe(0);
    const manifest = JSON.parse(readFileSync(join(dest, CLUSTER_MANIFEST), 'utf8')) as ClusterManifest;
    expect(manifest.masters).toHaveLength(3);
    // An existing destination is refused before anything is paused or written.
    const again = await runCommand('src/backupCli.ts', [dest], env);
    expect(again.code).toBe(1);
    expect(again.out).toContain('exists: give a new directory');

    // Into a cluster that holds keys: refused (exit 1).
    const refused = await runCommand('src/clusterRestoreCli.ts', [dest], { REDIS_CLUSTER_NODES: target.seedList });
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('restore into an empty cluster');
    await Promise.all((await target.masters()).map((p) => target.direct(p, (r) => r.flushall())));
    const restore = await runCommand('src/clusterRestoreCli.ts', [dest], { REDIS_CLUSTER_NODES: target.seedList });
    expect(restore.code, restore.out).toBe(0);
    expect(restore.out).toMatch(/keys from 3 snapshots/);
    expect(await keysOf(target)).toBe(await keysOf(source));

    // Usage, and a deployment the command does not cover.
    expect((await runCommand('src/clusterRestoreCli.ts', [], { REDIS_CLUSTER_NODES: target.seedList })).code).toBe(2);
    const standalone = await runCommand('src/clusterRestoreCli.ts', [dest], {});
    expect(standalone.code).toBe(2);
    expect(standalone.out).toContain('REDIS_CLUSTER_NODES');
    expect(existsSync(dest)).toBe(true);
  }, 90_000);
});

async function keysOf(c: TestCluster): Promise<number> {
  const counts = await Promise.all((await c.masters()).map((p) => c.direct(p, (r) => r.dbsize())));
  return counts.reduce((a, b) => a + b, 0);
}
