// Restoring a backup of snapshots (src/snapshotBackup.ts) into an empty Redis, Sentinel primary or
// Redis Cluster (`npm run restore-snapshots`), over the network. Each master's snapshot is loaded
// into a redis-server of its own (the AOF off, a random password, loopback only: rdbRestore.ts's
// withRedis), and every key is copied to the target with DUMP and RESTORE, which keep a key's
// value and encoding exactly. On a cluster each key goes to the master of its slot, so the
// cluster restored into may have any number of masters and any slot layout: kvql's keys carry
// their partition's hash tag, and no nodes.conf is needed. RESTORE is a write like any other:
// the target fsyncs it to its AOF (appendfsync always) and its replicas get it.
//
// The target must hold no keys: a restore into live data would mix two keyspaces. Start the API
// after the restore; on a cluster it completes the multi-partition batches the backup caught
// committed but not yet applied (README, "Multi-partition batches").
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Redis } from 'ioredis';
import { askRedis, redisServerOnPath } from './managedRedis.js';
import { withRedis } from './rdbRestore.js';
import { checkRdb, SNAPSHOT_MANIFEST, type AdminAuth, type SnapshotManifest } from './snapshotBackup.js';
import { createRedis, isCluster, type RedisClient, type RedisTarget, type RedisTls } from './store/redis.js';

/** Keys read from a snapshot per SCAN. */
const KEYS_PER_ROUND = 500;
/** Bytes of keys (MEMORY USAGE's estimate) read and restored at once, unless told otherwise. */
const BYTES_PER_GROUP = 32 * 1024 * 1024;

export interface SnapshotRestoreOptions {
  /** A directory `npm run backup` wrote: manifest.json and one snapshot per master. */
  backupDir: string;
  /** Where to restore to, as kvql's configuration says; signed in to as `auth`, not as the target's own user. */
  target: RedisTarget;
  /** A user that may run RESTORE and DBSIZE (and the CLUSTER commands of a client) on every node. */
  auth: AdminAuth;
  tls?: RedisTls;
  /** Bytes of keys (MEMORY USAGE's estimate) read and restored at once; 32 MiB by default. */
  bytesPerGroup?: number;
  log?: (message: string) => void;
}

export interface SnapshotRestore {
  /** Redis keys restored, over every snapshot. */
  keys: number;
  snapshots: number;
}

export async function restoreSnapshots(opts: SnapshotRestoreOptions): Promise<SnapshotRestore> {
  const log = opts.log ?? console.log;
  const dir = resolve(opts.backupDir);
  const manifest = readManifest(dir);
  if (!redisServerOnPath()) throw new Error('redis-server is not on the PATH: each snapshot is read through one (Debian: apt-get install redis-server)');
  const target = createRedis(asUser(opts.target, opts.auth), { commandTimeoutMs: 30_000, ...(opts.tls ? { tls: opts.tls } : {}) });
  let lastError: Error | undefined;
  target.on('error', (err: Error) => (lastError = err));
  try {
    await target.connect().catch((err: Error) => {
      throw new Error(`could not reach the target: ${(lastError ?? err).message}`);
    });
    const before = await keysIn(target);
    if (before > 0) throw new Error(`the target holds ${before} keys: restore into an empty Redis (nothing was changed)`);

    let keys = 0;
    try {
      keys = await copyAll(dir, manifest, target, opts.bytesPerGroup ?? BYTES_PER_GROUP, log);
    } catch (err) {
      // Some keys may be in already: say so, since a second run refuses a target that holds keys.
      throw new Error(`${(err as Error).message} (the target may now hold part of the backup: empty it, e.g. FLUSHALL on every master, before trying again)`);
    }
    const after = await keysIn(target);
    if (after !== keys) throw new Error(`the target holds ${after} keys after the restore, not the backup's ${keys}`);
    log(`kvql restore-snapshots: ${keys} keys from ${manifest.masters.length === 1 ? 'a snapshot' : `${manifest.masters.length} snapshots`} (taken ${manifest.takenAt}); start kvql on them`);
    return { keys, snapshots: manifest.masters.length };
  } finally {
    target.disconnect();
  }
}

/** Every snapshot's keys into the target, one snapshot after another; returns how many. */
async function copyAll(dir: string, manifest: SnapshotManifest, target: RedisClient, bytesPerGroup: number, log: (message: string) => void): Promise<number> {
  let keys = 0;
  for (const m of manifest.masters) {
    const scratch = mkdtempSync(join(tmpdir(), 'kvql-restore-'));
    try {
      copyFileSync(join(dir, m.file), join(scratch, 'dump.rdb'));
      const auth = { password: randomBytes(24).toString('hex') };
      const copied = await withRedis(scratch, ['appendonly no'], auth, (port) => askRedis(port, (source) => copyKeys(source, target, bytesPerGroup), 24 * 3600_000, auth));
      log(`kvql restore-snapshots: ${m.file} (master ${m.host}:${m.port} at the backup): ${copied} keys restored`);
      keys += copied;
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  return keys;
}

/** The target, signing in to its Redis servers as `auth` (the sentinels keep their own credentials). */
function asUser(target: RedisTarget, auth: AdminAuth): RedisTarget {
  const { username, password } = auth;
  if (typeof target !== 'string') {
    const { username: _user, password: _password, ...rest } = target;
    return { ...rest, ...(password ? { password, ...(username ? { username } : {}) } : {}) };
  }
  const url = new URL(target);
  url.username = password && username ? encodeURIComponent(username) : '';
  url.password = password ? encodeURIComponent(password) : '';
  return url.toString();
}

function readManifest(dir: string): SnapshotManifest {
  const file = join(dir, SNAPSHOT_MANIFEST);
  if (!existsSync(file)) throw new Error(`${file} does not exist: give a directory that \`npm run backup\` wrote (for REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES)`);
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as SnapshotManifest;
  if (manifest.format !== 1 || !Array.isArray(manifest.masters) || manifest.masters.length === 0) throw new Error(`${file}: not a backup manifest this version reads`);
  for (const m of manifest.masters) {
    if (typeof m.file !== 'string' || m.file.includes('/') || m.file.includes('\\')) throw new Error(`${file}: ${JSON.stringify(m.file)} is not a snapshot's file name`);
    checkRdb(join(dir, m.file));
  }
  return manifest;
}

/** Keys on the target: on a cluster, on every master its slot map names. */
async function keysIn(target: RedisClient): Promise<number> {
  if (!isCluster(target)) return target.dbsize();
  const counts = await Promise.all(target.nodes('master').map((node) => node.dbsize()));
  return counts.reduce((a, b) => a + b, 0);
}

/**
 * Every key of `source` into the target, with its time to live; returns how many. Keys go in
 * groups of at most `bytesPerGroup` by MEMORY USAGE's estimate (a key larger than that alone), so
 * the payloads held at once stay bounded however large the keys: a partition's change-feed stream
 * can hold tens of megabytes.
 */
async function copyKeys(source: Redis, target: RedisClient, bytesPerGroup: number): Promise<number> {
  let copied = 0;
  let cursor = '0';
  do {
    const [next, keys] = await source.scan(cursor, 'COUNT', KEYS_PER_ROUND);
    cursor = next;
    if (keys.length === 0) continue;
    const sizing = source.pipeline();
    for (const key of keys) sizing.call('MEMORY', 'USAGE', key);
    const sizes = (await sizing.exec())!.map(([err, bytes]) => {
      if (err) throw err;
      return Number(bytes ?? 0);
    });
    let from = 0;
    while (from < keys.length) {
      let to = from + 1;
      let bytes = sizes[from]!;
      while (to < keys.length && bytes + sizes[to]! <= bytesPerGroup) bytes += sizes[to++]!;
      copied += await copyGroup(source, target, keys.slice(from, to));
      from = to;
    }
  } while (cursor !== '0');
  return copied;
}

async function copyGroup(source: Redis, target: RedisClient, keys: string[]): Promise<number> {
  const read = source.pipeline();
  for (const key of keys) read.dumpBuffer(key).pttl(key);
  const replies = (await read.exec())!;
  const writes: Promise<unknown>[] = [];
  keys.forEach((key, i) => {
    const [dumpErr, payload] = replies[2 * i]!;
    const [ttlErr, ttl] = replies[2 * i + 1]!;
    if (dumpErr || ttlErr) throw dumpErr ?? ttlErr;
    // The scratch Redis takes no writes, so a key is gone only if it expired meanwhile.
    if (payload === null || (ttl as number) === -2) return;
    writes.push(target.restore(key, Math.max(0, ttl as number), payload as Buffer));
  });
  await Promise.all(writes);
  return writes.length;
}
