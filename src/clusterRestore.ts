// Restoring a cluster backup (src/clusterBackup.ts) into an empty Redis Cluster (`npm run
// restore-cluster`). Each master's snapshot is loaded into a redis-server of its own (the AOF
// off, a random password, loopback only: rdbRestore.ts's withRedis), and every key is copied
// into the cluster with DUMP and RESTORE, which keep a key's value and encoding exactly; the
// cluster sends each key to the master of its slot. So the cluster restored into may have any
// number of masters and any slot layout: kvql's keys carry their partition's hash tag, and no
// nodes.conf is needed. RESTORE is a write like any other: each master fsyncs it to its AOF
// (appendfsync always) and replicates it.
//
// The cluster must hold no keys: a restore into live data would mix two keyspaces. Start the API
// after the restore; it completes the multi-partition batches the backup caught committed but
// not yet applied (README, "Multi-partition batches").
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Cluster, Redis } from 'ioredis';
import { CLUSTER_MANIFEST, checkRdb, type AdminAuth, type ClusterManifest } from './clusterBackup.js';
import { askRedis } from './managedRedis.js';
import { withRedis } from './rdbRestore.js';
import { createRedis } from './store/redis.js';

/** Keys read from a snapshot, and restored, per round. */
const KEYS_PER_ROUND = 500;

export interface ClusterRestoreOptions {
  /** A directory `npm run backup` wrote: manifest.json and one snapshot per master. */
  backupDir: string;
  /** A few of the target cluster's nodes (REDIS_CLUSTER_NODES). */
  seeds: { host: string; port: number }[];
  /** A user that may run RESTORE, DBSIZE and CLUSTER commands on every node (not kvql's ACL user). */
  auth: AdminAuth;
  log?: (message: string) => void;
}

export interface ClusterRestore {
  /** Redis keys restored, over every snapshot. */
  keys: number;
  snapshots: number;
}

export async function restoreCluster(opts: ClusterRestoreOptions): Promise<ClusterRestore> {
  const log = opts.log ?? console.log;
  const dir = resolve(opts.backupDir);
  const manifest = readManifest(dir);
  const cluster = createRedis({ clusterNodes: opts.seeds, ...opts.auth }, { commandTimeoutMs: 30_000 }) as Cluster;
  let lastError: Error | undefined;
  cluster.on('error', (err: Error) => (lastError = err));
  try {
    await cluster.connect().catch((err: Error) => {
      throw new Error(`could not reach the cluster: ${(lastError ?? err).message}`);
    });
    const before = await keysIn(cluster);
    if (before > 0) throw new Error(`the cluster holds ${before} keys: restore into an empty cluster (nothing was changed)`);

    let keys = 0;
    for (const m of manifest.masters) {
      const scratch = mkdtempSync(join(tmpdir(), 'kvql-restore-'));
      try {
        copyFileSync(join(dir, m.file), join(scratch, 'dump.rdb'));
        const auth = { password: randomBytes(24).toString('hex') };
        const copied = await withRedis(scratch, ['appendonly no'], auth, (port) =>
          askRedis(port, (source) => copyKeys(source, cluster), 24 * 3600_000, auth),
        );
        log(`kvql restore-cluster: ${m.file} (master ${m.host}:${m.port} at the backup): ${copied} keys restored`);
        keys += copied;
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
    }
    const after = await keysIn(cluster);
    if (after !== keys) throw new Error(`the cluster holds ${after} keys after the restore, not the backup's ${keys}`);
    log(`kvql restore-cluster: ${keys} keys from ${manifest.masters.length} snapshots (taken ${manifest.takenAt}); start kvql on the cluster`);
    return { keys, snapshots: manifest.masters.length };
  } finally {
    cluster.disconnect();
  }
}

function readManifest(dir: string): ClusterManifest {
  const file = join(dir, CLUSTER_MANIFEST);
  if (!existsSync(file)) throw new Error(`${file} does not exist: give a directory that \`npm run backup\` wrote for a cluster`);
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as ClusterManifest;
  if (manifest.format !== 1 || !Array.isArray(manifest.masters) || manifest.masters.length === 0) throw new Error(`${file}: not a cluster backup manifest this version reads`);
  for (const m of manifest.masters) {
    if (typeof m.file !== 'string' || m.file.includes('/') || m.file.includes('\\')) throw new Error(`${file}: ${JSON.stringify(m.file)} is not a snapshot's file name`);
    checkRdb(join(dir, m.file));
  }
  return manifest;
}

/** Keys on every master of the cluster, as its slot map names them. */
async function keysIn(cluster: Cluster): Promise<number> {
  const counts = await Promise.all(cluster.nodes('master').map((node) => node.dbsize()));
  return counts.reduce((a, b) => a + b, 0);
}

/** Every key of `source` into the cluster, with its time to live; returns how many. */
async function copyKeys(source: Redis, cluster: Cluster): Promise<number> {
  let copied = 0;
  let cursor = '0';
  do {
    const [next, keys] = await source.scan(cursor, 'COUNT', KEYS_PER_ROUND);
    cursor = next;
    if (keys.length === 0) continue;
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
      writes.push(cluster.restore(key, Math.max(0, ttl as number), payload as Buffer));
    });
    await Promise.all(writes);
    copied += writes.length;
  } while (cursor !== '0');
  return copied;
}
