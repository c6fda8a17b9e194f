// Backups as the README's Operations section says to take and restore them, with real
// redis-servers from the repo's redis.conf and kvql's own scripts:
// - a copy of appendonlydir/ taken while AOF rewrites are paused, with writes going on, restores
//   every write acknowledged before the copy began;
// - a BGSAVE snapshot, or one fetched with `redis-cli --rdb`, restored with `npm run
//   restore-rdb` (src/rdbRestore.ts), is the keyspace as it was at the snapshot, and nothing
//   written after it;
// - and why that tool exists: Redis with appendonly yes ignores a dump.rdb put in an empty data
//   directory and starts empty.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { backupAof } from '../../src/aofBackup.js';
import { repairTornAofTail } from '../../src/aofTail.js';
import { ADMIN_PASSWORD_FILE, redisServerOnPath, startManagedRedis } from '../../src/managedRedis.js';
import { restoreRdb } from '../../src/rdbRestore.js';
import { restoreToTime } from '../../src/pointInTimeRestore.js';
import { parseInfo } from '../../src/redisInfo.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore, type Entry } from '../../src/store/store.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { openStore, type OpenedStore } from '../harness/app.js';
import { runCommand } from '../harness/command.js';
import { freePort, startTestRedis, type TestRedis } from '../harness/redisServer.js';
import { until } from '../harness/until.js';

const PREFIX = 'backup';
const PARTITIONS = 2;
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

type Opened = OpenedStore;

async function open(url: string): Promise<Opened> {
  const o = await openStore(url, PREFIX, PARTITIONS);
  cleanups.push(async () => o.redis.disconnect());
  return o;
}

/** A Redis of the test's own (stop() removes its directory), on a new or a restored data directory. */
async function redisOn(dir?: string): Promise<TestRedis> {
  const server = await startTestRedis([], dir === undefined ? {} : { dir });
  cleanups.push(() => server.stop());
  return server;
}

const tempDir = (name: string) => {
  const dir = mkdtempSync(join(tmpdir(), `kvql-${name}-`));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

const persistence = async (redis: Redis) => parseInfo(await redis.info('persistence'));

/** Puts, a batch and deletes over both partitions; returns what the keyspace holds afterwards. */
async function writeSome(store: KvStore, tag: string, n = 40): Promise<Map<string, Entry>> {
  const held = new Map<string, Entry>();
  for (let i = 0; i < n; i++) held.set(`${tag}:${i}`, await store.put({ key: `${tag}:${i}`, value: `${tag} value ${i}` }));
  for (const e of await store.batchPut(Array.from({ length: n }, (_, i) => ({ key: `${tag}:b${i}`, value: `${tag} batch ${i}` })))) held.set(e.key, e);
  for (let i = 0; i < n; i += 4) {
    await store.delete(`${tag}:${i}`);
    held.delete(`${tag}:${i}`);
  }
  for (let i = 1; i < n; i += 4) held.set(`${tag}:${i}`, await store.put({ key: `${tag}:${i}`, value: `${tag} again ${i}` }));
  return held;
}

async function expectHolds(o: Opened, held: Map<string, Entry>, absent: string[] = []): Promise<void> {
  const keys = [...held.keys()];
  expect(await o.store.getMany(keys)).toEqual(keys.map((k) => held.get(k)));
  expect(await o.store.getMany(absent)).toEqual(absent.map(() => null));
  const report = await verifyKeyspace(o.redis, { prefix: PREFIX, partitions: PARTITIONS });
  expect(report.problems).toEqual([]);
}

/** Puts of `tag`:0..49 in a loop, one at a time, until stop(); `acknowledged` holds each key's last answer. */
async function keepWriting(store: KvStore, tag: string) {
  let writing = true;
  const acknowledged = new Map<string, Entry>();
  const loop = (async () => {
    for (let i = 0; writing; i++) {
      const e = await store.put({ key: `${tag}:${i % 50}`, value: `${tag} ${i}` });
      acknowledged.set(e.key, e);
    }
  })();
  await until(10_000, 'writes under way', () => (acknowledged.size >= 10 ? true : undefined));
  return {
    acknowledged,
    async stop() {
      writing = false;
      await loop;
    },
  };
}

/** Every key of `acknowledged` is there at least at that version (later writes may be in a copy too). */
async function expectAtLeast(o: Opened, acknowledged: Map<string, Entry>): Promise<void> {
  const keys = [...acknowledged.keys()];
  const got = await o.store.getMany(keys);
  got.forEach((e, i) => expect(e?.version ?? 0, keys[i]).toBeGreaterThanOrEqual(acknowledged.get(keys[i]!)!.version));
}

/** A Redis holding writeSome(tag, n), and its complete BGSAVE snapshot (`snapshot`, in its data directory). */
async function snapshotted(tag: string, n?: number) {
  const server = await redisOn();
  const o = await open(server.url);
  const held = await writeSome(o.store, tag, n);
  expect(Number((await persistence(o.redis)).rdb_changes_since_last_save)).toBeGreaterThan(0);
  await o.redis.bgsave();
  await until(10_000, 'the snapshot', async () => {
    const p = await persistence(o.redis);
    return p.rdb_bgsave_in_progress === '0' && p.rdb_changes_since_last_save === '0' ? true : undefined;
  });
  expect((await persistence(o.redis)).rdb_last_bgsave_status).toBe('ok');
  return { server, o, held, snapshot: join(server.dir, 'dump.rdb') };
}

describe.skipIf(!redisServerOnPath())('backups, taken and restored as the README says', () => {
  it('a copy of appendonlydir/ taken with rewrites paused, while writes go on, holds every write acknowledged before it', async () => {
    const server = await redisOn();
    const o = await open(server.url);
    const before = await writeSome(o.store, 'early');
    // A base file and an incremental file, as a Redis that has run a while has.
    await o.redis.bgrewriteaof();
    await until(10_000, 'the first rewrite', async () => ((await persistence(o.redis)).aof_rewrite_in_progress === '0' ? true : undefined));

    // Writes go on during the whole backup.
    const writes = await keepWriting(o.store, 'during');

    // The README's steps.
    const [, previous] = (await o.redis.config('GET', 'auto-aof-rewrite-percentage')) as [string, string];
    await o.redis.config('SET', 'auto-aof-rewrite-percentage', '0');
    await until(10_000, 'no rewrite running or scheduled', async () => {
      const p = await persistence(o.redis);
      return p.aof_rewrite_in_progress === '0' && p.aof_rewrite_scheduled === '0' ? true : undefined;
    });
    const beforeCopy = new Map(writes.acknowledged);
    const backup = tempDir('aof-backup');
    cpSync(join(server.dir, 'appendonlydir'), join(backup, 'appendonlydir'), { recursive: true });
    await o.redis.config('SET', 'auto-aof-rewrite-percentage', previous);
    await writes.stop();
    expect(previous).toBe('100');

    // Restore: the copy into an empty data directory, a torn tail cut (as npm start does), start.
    const restoredDir = tempDir('aof-restore');
    cpSync(join(backup, 'appendonlydir'), join(restoredDir, 'appendonlydir'), { recursive: true });
    expect(repairTornAofTail(restoredDir).state).not.toBe('corrupt');
    const restored = await redisOn(restoredDir);
    const r = await open(restored.url);
    await expectHolds(r, before);
    await expectAtLeast(r, beforeCopy);
    // And it goes on from there: the next put of a key is its next version.
    const next = await r.store.put({ key: 'early:1', value: 'after the restore' });
    expect(next.version).toBe(before.get('early:1')!.version + 1);
  });

  it('npm run backup copies the managed Redis\'s appendonlydir/ while writes go on, and puts its rewrite setting back', async () => {
    const dataDir = tempDir('managed-backup');
    const port = await freePort();
    const managed = await startManagedRedis({ dataDir, port, prefix: PREFIX, log: () => {} });
    cleanups.push(() => managed.stop());
    const o = await open(managed.kvqlUrl);
    const admin = await openStore(managed.url, PREFIX, PARTITIONS);
    cleanups.push(async () => admin.redis.disconnect());
    const before = await writeSome(o.store, 'managed');
    const beforeAt = new Date();
    // The busy writes begin in a later second than the first writes ended in.
    while (Math.floor(Date.now() / 1000) === Math.floor(beforeAt.getTime() / 1000)) await new Promise((r) => setTimeout(r, 20));
    const writes = await keepWriting(o.store, 'busy');
    const beforeBackup = new Map(writes.acknowledged);

    const dest = join(tempDir('managed-dest'), 'kvql-backup');
    const said: string[] = [];
    const password = readFileSync(join(dataDir, ADMIN_PASSWORD_FILE), 'utf8').trim();
    const copied = await backupAof({ port, auth: { password }, dataDir, dest, log: (m) => said.push(m) });
    await writes.stop();
    expect(copied.files.some((f) => f.endsWith('.manifest'))).toBe(true);
    expect(said.at(-1)).toContain(`${copied.bytes} bytes`);
    // Rewrites are on again, and no staging links are left in the data directory.
    expect(await admin.redis.config('GET', 'auto-aof-rewrite-percentage')).toEqual(['auto-aof-rewrite-percentage', '100']);
    expect(readdirSync(dataDir).filter((f) => f.startsWith('backup-in-progress'))).toEqual([]);

    const restoredDir = tempDir('managed-restore');
    cpSync(copied.dir, join(restoredDir, 'appendonlydir'), { recursive: true });
    expect(repairTornAofTail(restoredDir).state).not.toBe('corrupt');
    const r = await open((await redisOn(restoredDir)).url);
    await expectHolds(r, before);
    await expectAtLeast(r, beforeBackup);
    // The same copy cut back to the moment the first writes were done (Point-in-time restore):
    // those writes, and none of the busy writer's.
    const pitrDir = tempDir('managed-pitr');
    await restoreToTime(dest, pitrDir, beforeAt, () => {});
    await expectHolds(await open((await redisOn(pitrDir)).url), before, Array.from({ length: 50 }, (_, i) => `busy:${i}`));

    // The command itself: the same copy from the environment npm start reads; refusals.
    const cli = (args: string[], env: Record<string, string>) => runCommand('src/backupCli.ts', args, env);
    const env = { KV_DATA_DIR: dataDir, KV_MANAGED_REDIS_PORT: String(port) };
    const viaCli = join(tempDir('cli-dest'), 'b');
    const ran = await cli([viaCli], env);
    expect(ran.code, ran.out).toBe(0);
    expect(readdirSync(join(viaCli, 'appendonlydir')).sort()).toEqual(readdirSync(join(dataDir, 'appendonlydir')).sort());
    expect((await cli([viaCli], env)).out).toMatch(/exists: give a new directory/);
    const usage = await cli([], env);
    expect([usage.code, usage.out]).toEqual([2, expect.stringMatching(/usage: npm run backup --/)]);
    // The same Redis named by REDIS_URL, as a Redis of one's own: a snapshot over the network
    // instead (src/snapshotBackup.ts, tested in snapshotBackup.test.ts), as its admin user.
    const byUrl = join(viaCli, 'by-url');
    const snapshot = await cli([byUrl], { REDIS_URL: `redis://127.0.0.1:${port}`, REDIS_ADMIN_PASSWORD: password });
    expect(snapshot.code, snapshot.out).toBe(0);
    expect(readdirSync(byUrl).sort()).toEqual([`127.0.0.1-${port}.rdb`, 'manifest.json']);
  });

  it('a BGSAVE snapshot, restored with restore-rdb, is the keyspace as it was then and nothing after', async () => {
    const { o, held: atSnapshot, snapshot } = await snapshotted('snap');
    const backup = tempDir('rdb-backup');
    copyFileSync(snapshot, join(backup, 'dump.rdb'));
    const later = await writeSome(o.store, 'later', 8);

    // A directory name that redis.conf must quote (the tool hands Redis its paths as config lines).
    const restoredDir = join(tempDir('rdb-restore'), 'a "quoted" dir\\');
    const said: string[] = [];
    const result = await restoreRdb(join(backup, 'dump.rdb'), restoredDir, (m) => said.push(m));
    expect(result.keys).toBeGreaterThan(0);
    expect(said.at(-1)).toContain(`${result.keys} keys`);
    expect(readdirSync(join(restoredDir, 'appendonlydir')).some((f) => f.endsWith('.manifest'))).toBe(true);
    const restored = await redisOn(restoredDir);
    const r = await open(restored.url);
    await expectHolds(r, atSnapshot, [...later.keys()]);
    expect(await r.redis.dbsize()).toBe(result.keys);
  });

  it('a snapshot fetched over the network with redis-cli --rdb, restored with restore-rdb, holds the keyspace', async () => {
    const server = await redisOn();
    const o = await open(server.url);
    const atSnapshot = await writeSome(o.store, 'remote');
    const file = join(tempDir('remote-backup'), 'kvql.rdb');
    const fetched = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(server.port), '--rdb', file], { encoding: 'utf8', timeout: 60_000 });
    expect(fetched.status, fetched.stderr + fetched.stdout).toBe(0);
    const later = await writeSome(o.store, 'after', 8);

    const restoredDir = tempDir('remote-restore');
    await restoreRdb(file, restoredDir, () => {});
    const r = await open((await redisOn(restoredDir)).url);
    await expectHolds(r, atSnapshot, [...later.keys()]);
  });

  it('why restore-rdb: with appendonly yes, Redis ignores a dump.rdb put in an empty directory and starts empty', async () => {
    const { snapshot } = await snapshotted('lost', 8);
    const naive = tempDir('naive-restore');
    copyFileSync(snapshot, join(naive, 'dump.rdb'));
    const started = await redisOn(naive);
    const r = createRedis(started.url, { commandTimeoutMs: 5000 });
    r.on('error', () => {});
    cleanups.push(async () => r.disconnect());
    await r.connect();
    expect(await r.dbsize()).toBe(0);
  });

  it("npm start's managed Redis refuses a data directory with dump.rdb and no appendonlydir/, and starts once it is restored", async () => {
    const { snapshot, held } = await snapshotted('managed', 8);
    const dataDir = tempDir('managed-data');
    copyFileSync(snapshot, join(dataDir, 'dump.rdb'));
    const port = await freePort();
    const start = () => startManagedRedis({ dataDir, port, prefix: PREFIX, log: () => {} });
    await expect(start()).rejects.toThrow(/holds dump\.rdb but no appendonlydir\/: Redis would ignore the snapshot.*npm run restore-rdb/);
    expect(existsSync(join(dataDir, 'appendonlydir'))).toBe(false);

    await restoreRdb(join(dataDir, 'dump.rdb'), dataDir, () => {});
    const managed = await start();
    cleanups.push(() => managed.stop());
    // As the ACL user kvql, as the API connects.
    await expectHolds(await open(managed.kvqlUrl), held);
  });

  it('restore-rdb refuses a directory that holds appendonlydir/ or another dump.rdb, and changes nothing', async () => {
    const { server, snapshot } = await snapshotted('refused', 4);

    const withAof = tempDir('has-aof');
    mkdirSync(join(withAof, 'appendonlydir'));
    await expect(restoreRdb(snapshot, withAof, () => {})).rejects.toThrow(/appendonlydir exists/);
    expect(readdirSync(withAof)).toEqual(['appendonlydir']);
    expect(readdirSync(join(withAof, 'appendonlydir'))).toEqual([]);

    const withOther = tempDir('has-rdb');
    copyFileSync(join(server.dir, 'appendonlydir', readdirSync(join(server.dir, 'appendonlydir')).find((f) => f.endsWith('.manifest'))!), join(withOther, 'dump.rdb'));
    await expect(restoreRdb(snapshot, withOther, () => {})).rejects.toThrow(/dump\.rdb exists/);
    expect(readdirSync(withOther)).toEqual(['dump.rdb']);

    // A file that is no snapshot: Redis refuses it, and what the tool wrote is removed again.
    const bad = join(tempDir('bad-rdb'), 'dump.rdb');
    copyFileSync(join(withOther, 'dump.rdb'), bad);
    const target = tempDir('bad-target');
    await expect(restoreRdb(bad, target, () => {})).rejects.toThrow(/redis-server exited/);
    expect(readdirSync(target)).toEqual([]);
  });

  it('npm run restore-rdb: usage is exit 2; a refusal is exit 1 with the reason', async () => {
    const cli = (...args: string[]) => runCommand('src/rdbRestoreCli.ts', args, {});
    const usage = await cli();
    expect(usage.code).toBe(2);
    expect(usage.out).toMatch(/usage: npm run restore-rdb -- <dump\.rdb> <data dir/);
    const dir = tempDir('cli-refused');
    mkdirSync(join(dir, 'appendonlydir'));
    const refused = await cli(join(dir, 'missing.rdb'), dir);
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(/kvql restore-rdb: .*missing\.rdb is not a file/);
    expect(readdirSync(dir)).toEqual(['appendonlydir']);
  });
});
