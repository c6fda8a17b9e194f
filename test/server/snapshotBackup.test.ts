// Backups of a Redis kvql does not manage, taken over the network and restored as the README says
// (Operations, "Backups"; Scaling out, "Backups"), on real redis-servers from the repo's config
// files. `npm run backup` (src/snapshotBackup.ts) takes one snapshot per master, of one moment;
// `npm run restore-snapshots` (src/snapshotRestore.ts) puts them into an empty target.
// - A cluster, while multi-partition batches go on, restored into another cluster: every batch
//   acknowledged before the backup is whole, every batch all or nothing once the API's
//   roll-forward has run, and no part missing.
// - A Sentinel deployment's primary, restored into one Redis by URL and back into the deployment,
//   whose replicas then hold it too.
// - Over TLS with a client certificate, as an ACL admin user (and refused without one, or
//   without redis-cli), and a restore that fails partway, which says so.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupSnapshots, SNAPSHOT_MANIFEST, type SnapshotManifest } from '../../src/snapshotBackup.js';
import { restoreSnapshots } from '../../src/snapshotRestore.js';
import { redisServerOnPath } from '../../src/managedRedis.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { keysInDistinctPartitions, openStore } from '../harness/app.js';
import { runCommand } from '../harness/command.js';
import { startTestCluster, type TestCluster } from '../harness/cluster.js';
import { startTestRedis } from '../harness/redisServer.js';
import { makePki, once, opensslOnPath, startAclRedis, startTlsRedis } from '../harness/secureRedis.js';
import { startSentinelDeployment, type SentinelDeployment } from '../harness/sentinel.js';
import { until } from '../harness/until.js';

const PREFIX = 'snapshotbackup';
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

describe.skipIf(!redisServerOnPath())('a Redis Cluster backup (npm run backup) and its restore (npm run restore-snapshots)', () => {
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
    const manifest = await backupSnapshots({ target: { clusterNodes: source.seeds }, auth: {}, dest, log: (m) => lines.push(m) });
    const ackedDuring = writer.acked.length;
    while (writer.acked.length < ackedDuring + 10) await new Promise((r) => setTimeout(r, 20));
    await writer.stop();
    const end = writer.next();

    // One snapshot per master, named in the manifest with the master's slots.
    expect(manifest.masters.map((m) => m.port).sort((a, b) => a - b)).toEqual(masters);
    expect(manifest.masters.flatMap((m) => m.slots).reduce((n, [a, b]) => n + b - a + 1, 0)).toBe(16_384);
    expect(JSON.parse(readFileSync(join(dest, SNAPSHOT_MANIFEST), 'utf8'))).toEqual(manifest);
    expect(readdirSync(dest).sort()).toEqual([SNAPSHOT_MANIFEST, ...manifest.masters.map((m) => m.file)].sort());
    for (const m of manifest.masters) expect(readFileSync(join(dest, m.file)).subarray(0, 5).toString()).toBe('REDIS');
    expect(manifest.pausedMs).toBeLessThan(2000);
    expect(lines.join('\n')).toMatch(/writes paused \d+ ms while 3 masters forked/);
    // The source is as it was: its settings back, its writes no longer paused.
    expect(await Promise.all(masters.map((p) => source.direct(p, async (r) => [await r.config('GET', 'auto-aof-rewrite-percentage'), await r.config('GET', 'repl-diskless-sync-delay')])))).toEqual(settingsBefore);
    await written.store.put({ key: 'after-backup', value: 'x' });

    const restored = await restoreSnapshots({ backupDir: dest, target: { clusterNodes: target.seeds }, auth: {}, log: () => {} });
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
    await backupSnapshots({ target: { clusterNodes: source.seeds }, auth: {}, dest, log: () => {} });
    const before = await keysOf(target);
    expect(before).toBeGreaterThan(0);
    await expect(restoreSnapshots({ backupDir: dest, target: { clusterNodes: target.seeds }, auth: {}, log: () => {} })).rejects.toThrow(`the target holds ${before} keys: restore into an empty Redis`);
    expect(await keysOf(target)).toBe(before);
  }, 60_000);

  it('runs as npm run backup and npm run restore-snapshots', async () => {
    const dest = join(tempDir('cluster-backup'), 'b');
    const env = { REDIS_CLUSTER_NODES: source.seedList, KV_PREFIX: PREFIX };
    const backup = await runCommand('src/backupCli.ts', [dest], env);
    expect(backup.code, backup.out).toBe(0);
    const manifest = JSON.parse(readFileSync(join(dest, SNAPSHOT_MANIFEST), 'utf8')) as SnapshotManifest;
    expect(manifest.masters).toHaveLength(3);
    // An existing destination is refused before anything is paused or written.
    const again = await runCommand('src/backupCli.ts', [dest], env);
    expect(again.code).toBe(1);
    expect(again.out).toContain('exists: give a new directory');

    // Into a cluster that holds keys: refused (exit 1).
    const refused = await runCommand('src/snapshotRestoreCli.ts', [dest], { REDIS_CLUSTER_NODES: target.seedList });
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('restore into an empty Redis');
    await Promise.all((await target.masters()).map((p) => target.direct(p, (r) => r.flushall())));
    const restore = await runCommand('src/snapshotRestoreCli.ts', [dest], { REDIS_CLUSTER_NODES: target.seedList });
    expect(restore.code, restore.out).toBe(0);
    expect(restore.out).toMatch(/keys from 3 snapshots/);
    expect(await keysOf(target)).toBe(await keysOf(source));

    // Usage, and the managed Redis, which it does not restore into (restore-rdb does).
    expect((await runCommand('src/snapshotRestoreCli.ts', [], { REDIS_CLUSTER_NODES: target.seedList })).code).toBe(2);
    const managed = await runCommand('src/snapshotRestoreCli.ts', [dest], {});
    expect(managed.code).toBe(2);
    expect(managed.out).toContain('npm run restore-rdb');
    expect(existsSync(dest)).toBe(true);
  }, 90_000);
});

describe.skipIf(!redisServerOnPath())('a Sentinel deployment\'s backup (npm run backup with REDIS_SENTINELS), restored by URL and into the deployment', () => {
  let d: SentinelDeployment;
  beforeAll(async () => {
    d = await startSentinelDeployment();
    cleanups.push(() => d.stop());
  }, 90_000);

  it('snapshots the primary the sentinels name; restores it into an empty Redis, and back into the deployment and its replicas', async () => {
    const primary = await d.currentPrimary();
    const redis = createRedis({ sentinels: d.sentinelAddresses, masterName: d.masterName }, { commandTimeoutMs: 5000 });
    redis.on('error', () => {});
    await redis.connect();
    cleanups.push(async () => redis.disconnect());
    const store = await KvStore.open(redis, { prefix: PREFIX, partitions: 2 });
    const held = new Map<string, number>();
    for (let i = 0; i < 40; i++) held.set(`s${i}`, (await store.put({ key: `s${i}`, value: `v${i}` })).version);
    for (const e of await store.batchPut(Array.from({ length: 20 }, (_, i) => ({ key: `s${i}`, value: `w${i}` })))) held.set(e.key, e.version);

    const dest = join(tempDir('sentinel-backup'), 'b');
    const env = { REDIS_SENTINELS: d.sentinels, REDIS_MASTER_NAME: d.masterName };
    const backup = await runCommand('src/backupCli.ts', [dest], env);
    expect(backup.code, backup.out).toBe(0);
    expect(backup.out).toMatch(/: a snapshot, \d+ bytes/);
    await store.put({ key: 'after-backup', value: 'x' });
    const manifest = JSON.parse(readFileSync(join(dest, SNAPSHOT_MANIFEST), 'utf8')) as SnapshotManifest;
    expect(manifest.masters).toHaveLength(1);
    expect(manifest.masters[0]).toMatchObject({ port: primary.port, slots: [], id: expect.stringMatching(/^[0-9a-f]{40}$/) });
    // One master: its fork is one moment by itself, and writes were never paused.
    expect(manifest.pausedMs).toBe(0);

    const expectHeld = async (where: KvStore) => {
      const entries = await where.getMany([...held.keys()]);
      expect(entries.map((e) => [e?.key, e?.version])).toEqual([...held.entries()]);
      expect(await where.get('after-backup')).toBeNull();
    };
    // Into one empty Redis, by URL.
    const single = await startTestRedis();
    cleanups.push(() => single.stop());
    const byUrl = await runCommand('src/snapshotRestoreCli.ts', [dest], { REDIS_URL: single.url });
    expect(byUrl.code, byUrl.out).toBe(0);
    expect(byUrl.out).toMatch(/\d+ keys from a snapshot \(taken /);
    const restored = await openStore(single.url, PREFIX, 2);
    cleanups.push(async () => restored.redis.disconnect());
    await expectHeld(restored.store);
    expect((await verifyKeyspace(restored.redis, { prefix: PREFIX, partitions: 2 })).problems).toEqual([]);
    // Again: the target now holds keys, and is left as it is.
    const keys = await restored.redis.dbsize();
    const again = await runCommand('src/snapshotRestoreCli.ts', [dest], { REDIS_URL: single.url });
    expect([again.code, again.out]).toEqual([1, expect.stringContaining(`the target holds ${keys} keys`)]);
    expect(await restored.redis.dbsize()).toBe(keys);

    // Back into the deployment, emptied (the test's own servers): the primary takes it, its replicas follow.
    await d.direct(primary.port, (r) => r.flushall());
    const intoSentinel = await runCommand('src/snapshotRestoreCli.ts', [dest], env);
    expect(intoSentinel.code, intoSentinel.out).toBe(0);
    await expectHeld(store);
    for (const node of d.nodes.filter((n) => n.port !== primary.port)) {
      await until(10_000, `replica ${node.port} holds the restored keys`, async () => ((await d.direct(node.port, (r) => r.dbsize())) === keys ? true : undefined));
    }
  }, 90_000);
});

describe.skipIf(!redisServerOnPath() || !opensslOnPath())('npm run backup and restore-snapshots over TLS, and as REDIS_ADMIN_USERNAME', () => {
  /** A hash, a string with a time to live and a stream: what a snapshot must carry, by raw commands. */
  const seed = async (r: Redis) => {
    await r.hset('{kv:0}:b:1', 'a', '1', 'b', '2');
    await r.set('{kv:0}:q', '7', 'PX', 3_600_000);
    await r.xadd('{kv:0}:s', '0-1', 'q', '1', 'e', 'x');
  };
  const expectSeeded = async (r: Redis) => {
    expect(await r.hgetall('{kv:0}:b:1')).toEqual({ a: '1', b: '2' });
    expect(await r.get('{kv:0}:q')).toBe('7');
    expect(await r.pttl('{kv:0}:q')).toBeGreaterThan(3_000_000);
    expect(await r.xrange('{kv:0}:s', '-', '+')).toEqual([['0-1', ['q', '1', 'e', 'x']]]);
  };

  it('reaches a Redis that wants a client certificate with KV_REDIS_TLS_CA, _CERT and _KEY', async () => {
    const pki = makePki();
    cleanups.push(async () => pki.cleanup());
    const server = await startTlsRedis(pki, true);
    cleanups.push(() => server.stop());
    const tls = { port: server.port, tls: { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) } };
    await once(tls, seed);
    const env = { REDIS_URL: `rediss://127.0.0.1:${server.port}`, KV_REDIS_TLS_CA: pki.ca, KV_REDIS_TLS_CERT: pki.clientCert, KV_REDIS_TLS_KEY: pki.clientKey };
    const dest = join(tempDir('tls-backup'), 'b');
    const backup = await runCommand('src/backupCli.ts', [dest], env);
    expect(backup.code, backup.out).toBe(0);
    // redis-cli was given the PEM files in a directory of its own, removed afterwards.
    expect(readdirSync(tmpdir()).filter((n) => n.startsWith('kvql-backup-tls-'))).toEqual([]);
    await once(tls, (r) => r.flushall());
    const restore = await runCommand('src/snapshotRestoreCli.ts', [dest], env);
    expect(restore.code, restore.out).toBe(0);
    await once(tls, expectSeeded);
  }, 60_000);

  it('signs in as REDIS_ADMIN_USERNAME, never as kvql\'s user of the URL (which may not take a snapshot)', async () => {
    const admin = 'a'.repeat(32);
    const server = await startAclRedis(PREFIX, 'k'.repeat(32), admin);
    cleanups.push(() => server.stop());
    await once(server.admin, seed);
    const asKvql = { REDIS_URL: server.kvqlUrl };
    const dest = join(tempDir('acl-backup'), 'b');
    // Without REDIS_ADMIN_*: the default user, which is off here.
    const refused = await runCommand('src/backupCli.ts', [dest], asKvql);
    expect([refused.code, refused.out]).toEqual([1, expect.stringMatching(/NOAUTH/)]);
    expect(existsSync(dest)).toBe(false);
    const env = { ...asKvql, REDIS_ADMIN_USERNAME: 'admin', REDIS_ADMIN_PASSWORD: admin };
    // Without redis-cli to fetch the snapshot: refused before anything on the server is changed.
    const noCli = await runCommand('src/backupCli.ts', [dest], { ...env, PATH: tempDir('empty-path') });
    expect([noCli.code, noCli.out]).toEqual([1, expect.stringContaining('redis-cli is not on the PATH')]);
    expect(existsSync(dest)).toBe(false);
    const backup = await runCommand('src/backupCli.ts', [dest], env);
    expect(backup.code, backup.out).toBe(0);
    // Nothing left changed on the server by the backup.
    expect(await once(server.admin, async (r) => [await r.config('GET', 'auto-aof-rewrite-percentage'), await r.config('GET', 'repl-diskless-sync-delay')])).toEqual([
      ['auto-aof-rewrite-percentage', '100'],
      ['repl-diskless-sync-delay', '5'],
    ]);
    await once(server.admin, (r) => r.flushall());
    const restore = await runCommand('src/snapshotRestoreCli.ts', [dest], env);
    expect(restore.code, restore.out).toBe(0);
    await once(server.admin, expectSeeded);
  }, 60_000);
});

describe.skipIf(!redisServerOnPath())('a restore of keys larger than its group of bytes', () => {
  it('restores keys larger than its group of bytes, and many small ones, every byte as it was', async () => {
    const source = await startTestRedis();
    cleanups.push(() => source.stop());
    const big = (i: number) => `${i}`.padEnd(200_000, 'b');
    await once({ port: source.port }, async (r) => {
      const fill = r.pipeline();
      for (let i = 0; i < 100; i++) fill.hset(`{kv:0}:b:${i}`, 'f', `${i}`.padEnd(10_000, 's'));
      for (let i = 0; i < 3; i++) fill.set(`{kv:0}:big:${i}`, big(i));
      await fill.exec();
    });
    const dest = join(tempDir('groups'), 'b');
    await backupSnapshots({ target: source.url, auth: {}, dest, log: () => {} });
    const into = await startTestRedis();
    cleanups.push(() => into.stop());
    // 64 KiB a group: about five of the small keys, and each 200 KB key over it on its own.
    const restored = await restoreSnapshots({ backupDir: dest, target: into.url, auth: {}, bytesPerGroup: 64 * 1024, log: () => {} });
    expect(restored.keys).toBe(103);
    await once({ port: into.port }, async (r) => {
      for (let i = 0; i < 3; i++) expect(await r.get(`{kv:0}:big:${i}`)).toBe(big(i));
      for (let i = 0; i < 100; i++) expect(await r.hget(`{kv:0}:b:${i}`, 'f')).toBe(`${i}`.padEnd(10_000, 's'));
    });
  }, 60_000);
});

describe.skipIf(!redisServerOnPath())('a restore that fails partway', () => {
  it('says the target may hold part of the backup, and how to start again', async () => {
    const source = await startTestRedis();
    cleanups.push(() => source.stop());
    await once({ port: source.port }, async (r) => {
      const fill = r.pipeline();
      for (let i = 0; i < 2000; i++) fill.hset(`{kv:0}:b:${i}`, 'f', 'x'.repeat(1000));
      await fill.exec();
    });
    const dest = join(tempDir('partial'), 'b');
    await backupSnapshots({ target: source.url, auth: {}, dest, log: () => {} });
    // A target with room for only part of it: RESTORE is refused with OOM once it is full.
    const small = await startTestRedis(['--maxmemory', '1500kb']);
    cleanups.push(() => small.stop());
    await expect(restoreSnapshots({ backupDir: dest, target: small.url, auth: {}, log: () => {} })).rejects.toThrow(
      /OOM.*\(the target may now hold part of the backup: empty it, e\.g\. FLUSHALL on every master, before trying again\)/,
    );
    const held = await once({ port: small.port }, (r) => r.dbsize());
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThan(2000);
  }, 60_000);
});

async function keysOf(c: TestCluster): Promise<number> {
  const counts = await Promise.all((await c.masters()).map((p) => c.direct(p, (r) => r.dbsize())));
  return counts.reduce((a, b) => a + b, 0);
}
