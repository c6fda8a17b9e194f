// A backup over the network of a Redis that kvql does not manage (`npm run backup` with
// REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES): one RDB snapshot per master, taken with
// `redis-cli --rdb` (Redis sends a fresh snapshot as it would to a new replica), all of one
// moment, and a manifest.json. One Redis, or Sentinel's primary, is one master; a cluster has several.
//
// Why one moment matters on a cluster: a batch over several partitions is written to several
// masters in steps (README, "Multi-partition batches"). Snapshots taken one master after another,
// as `redis-cli --cluster backup` takes them, can hold one batch's items on one master and not on
// another, for good. So with several masters, writes are paused on every master (CLIENT PAUSE
// WRITE) until each has forked the process that writes its snapshot, which takes milliseconds,
// then resumed; the snapshots are then sent while kvql goes on. A batch caught between its steps
// restores as it was: prepared but not committed (nothing applied; its parts expire), or
// committed, which the API's roll-forward completes at start. What a snapshot holds is fixed when
// its fork happens, so an AOF rewrite (another fork) must not be running then: rewrites are paused
// on every master (auto-aof-rewrite-percentage 0) for the whole backup, and the snapshots wait for
// any already running. Every setting changed is put back, and the pause lifted, whatever happens;
// the pause also lifts itself after `pauseMs` should this process die.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Redis } from 'ioredis';
import { parseClusterNodes, parseInfo, untilPersistence } from './redisInfo.js';
import { oneShotClient, sentinelPrimary, type RedisTarget, type RedisTls } from './store/redis.js';

/** How long a running AOF rewrite or snapshot may take to finish before the backup gives up. */
const CHILD_WAIT_MS = 30 * 60_000;
/** How long one snapshot may take to arrive. */
const TRANSFER_MS = 60 * 60_000;
/** Each command to a master. */
const COMMAND_MS = 10_000;

export const SNAPSHOT_MANIFEST = 'manifest.json';

export interface AdminAuth {
  /** A user that may run CONFIG, CLIENT PAUSE, INFO, ROLE, CLUSTER and SYNC (not kvql's ACL user). */
  username?: string;
  password?: string;
}

export interface SnapshotBackupOptions {
  /**
   * Where Redis is, as kvql's configuration says: its masters are the URL's Redis, the primary
   * the sentinels name (signing in to them with the target's sentinel credentials), or the
   * cluster's masters. The target's own Redis credentials are not used: `auth` is.
   */
  target: RedisTarget;
  auth: AdminAuth;
  /** TLS to every Redis (and sentinel), as kvql speaks it (KV_REDIS_TLS*). */
  tls?: RedisTls;
  /** A new directory: one <host>-<port>.rdb per master and manifest.json go into it. */
  dest: string;
  /** How long writes may stay paused for the masters to fork; beyond it the backup fails (2 s). */
  pauseMs?: number;
  log?: (message: string) => void;
}

/** manifest.json: what the backup holds, for `npm run restore-snapshots` and for people. */
export interface SnapshotManifest {
  format: 1;
  /** When the snapshots were asked for (ISO 8601): every write acknowledged before it is in the backup. */
  takenAt: string;
  /** How long writes were paused, in ms (0 with one master: its fork is one moment by itself). */
  pausedMs: number;
  /** Each master's id (a cluster node id, or the run_id of one Redis), address, slots (none outside a cluster) and snapshot. */
  masters: { id: string; host: string; port: number; slots: [number, number][]; file: string; bytes: number }[];
}

/** A master to take a snapshot of. */
interface MasterAddress {
  id: string;
  host: string;
  port: number;
  slots: [number, number][];
}

interface Master {
  line: MasterAddress;
  client: Redis;
  file: string;
  /** Settings to put back, by name. */
  saved: Map<string, string>;
}

export async function backupSnapshots(opts: SnapshotBackupOptions): Promise<SnapshotManifest> {
  const log = opts.log ?? console.log;
  const pauseMs = opts.pauseMs ?? 2000;
  const dest = resolve(opts.dest);
  if (existsSync(dest)) throw new Error(`${dest} exists: give a new directory for the backup`);
  // Before anything on the servers is changed: the snapshots are fetched by redis-cli.
  if (spawnSync('redis-cli', ['--version'], { stdio: 'ignore' }).status !== 0) {
    throw new Error('redis-cli is not on the PATH: install it (Debian: apt-get install redis-tools) on the machine that runs the backup');
  }
  const reach = { ...opts.auth, ...(opts.tls ? { tls: opts.tls } : {}) };
  const lines = await mastersOf(opts.target, reach);
  const masters: Master[] = [];
  const transfers: Transfer[] = [];
  const cli = redisCliTls(opts.tls);
  let paused = false;
  try {
    for (const line of lines) {
      const { client, emitted } = oneShotClient({ host: line.host, port: line.port, ms: COMMAND_MS, ...reach });
      masters.push({ line, client, file: `${line.host.replace(/[^A-Za-z0-9.-]/g, '_')}-${line.port}.rdb`, saved: new Map() });
      await client.connect().catch((err: Error) => {
        throw emitted() ?? err;
      });
      const role = (await client.call('ROLE')) as [string, ...unknown[]];
      if (role[0] !== 'master') throw new Error(`${line.host}:${line.port} is not a master (a failover?): try again`);
      if (line.id === '') line.id = parseInfo(await client.info('server')).run_id ?? '';
    }
    // Rewrites off everywhere first, and the snapshots forked at once when asked for.
    for (const m of masters) {
      await setFor(m, 'auto-aof-rewrite-percentage', '0');
      await setFor(m, 'repl-diskless-sync-delay', '0');
    }
    mkdirSync(dest, { recursive: true });

    let pausedFor = 0;
    let takenAt = '';
    let forksAtUnpause: number[] = [];
    if (masters.length === 1) {
      // One master: the fork for its snapshot is one moment by itself.
      await noChild(masters[0]!);
      takenAt = new Date().toISOString();
      transfers.push(fetchSnapshot(masters[0]!, join(dest, masters[0]!.file), opts.auth, cli.args));
    }
    for (let attempt = 1; masters.length > 1; attempt++) {
      await Promise.all(masters.map((m) => noChild(m)));
      const forks = await Promise.all(masters.map((m) => totalForks(m)));
      const started = Date.now();
      takenAt = new Date(started).toISOString();
      // The pause lifts itself after pauseMs even if this process dies; unpaused below sooner.
      await Promise.all(masters.map((m) => m.client.call('CLIENT', 'PAUSE', String(pauseMs), 'WRITE')));
      paused = true;
      // A fork that began before the pause (another replica's sync, an operator's BGSAVE) would
      // not be of this moment, and a snapshot asked for now would wait for it: start over.
      const busy = (await Promise.all(masters.map(async (m) => ((await hasChild(m)) ? m : undefined)))).find(Boolean);
      if (busy) {
        await unpause(masters);
        paused = false;
        if (attempt === 3) throw new Error(`${where(busy)} kept forking (a replica syncing, or BGSAVE): try again later`);
        continue;
      }
      for (const m of masters) transfers.push(fetchSnapshot(m, join(dest, m.file), opts.auth, cli.args));
      // Each master forks as its snapshot is asked for; once all have, the moment is fixed.
      const deadline = started + pauseMs - 200;
      for (;;) {
        const now = await Promise.all(masters.map((m) => totalForks(m)));
        if (now.every((n, i) => n > forks[i]!)) {
          forksAtUnpause = now;
          break;
        }
        if (Date.now() > deadline) {
          const late = masters.filter((_, i) => now[i]! <= forks[i]!).map(where);
          throw new Error(`${late.join(', ')} did not start a snapshot within ${pauseMs} ms of pausing writes: nothing is kept`);
        }
        await sleep(2);
      }
      await unpause(masters);
      paused = false;
      pausedFor = Date.now() - started;
      log(`kvql backup: writes paused ${pausedFor} ms while ${masters.length} masters forked their snapshots; sending them`);
      break;
    }
    await Promise.all(transfers.map((t) => t.done));
    // The fork seen in the pause may have been another replica's full sync, which this snapshot
    // could not join (a diskless transfer takes no late-comers): then it waited for a fork after
    // the pause, of another moment. Forks are rare here (rewrites are off), so any fork since is
    // taken as that, and the backup is refused rather than kept.
    if (masters.length > 1) {
      const since = await Promise.all(masters.map((m) => totalForks(m)));
      const late = masters.filter((_, i) => since[i]! > forksAtUnpause[i]!);
      if (late.length > 0) throw new Error(`${late.map(where).join(', ')} forked again after the pause (a replica syncing?): the snapshots may not be of one moment; try again`);
    }

    const manifest: SnapshotManifest = {
      format: 1,
      takenAt,
      pausedMs: pausedFor,
      masters: masters.map((m) => ({ id: m.line.id, host: m.line.host, port: m.line.port, slots: m.line.slots, file: m.file, bytes: statSync(join(dest, m.file)).size })),
    };
    for (const m of manifest.masters) checkRdb(join(dest, m.file));
    writeFileSync(join(dest, SNAPSHOT_MANIFEST), JSON.stringify(manifest, null, 2) + '\n', { flag: 'wx' });
    log(`kvql backup: ${dest}: ${manifest.masters.length === 1 ? 'a snapshot' : `${manifest.masters.length} snapshots`}, ${manifest.masters.reduce((n, m) => n + m.bytes, 0)} bytes`);
    return manifest;
  } catch (err) {
    if (paused) await unpause(masters).catch(() => {});
    paused = false;
    for (const t of transfers) t.stop();
    await Promise.allSettled(transfers.map((t) => t.done));
    rmSync(dest, { recursive: true, force: true });
    throw err;
  } finally {
    if (paused) await unpause(masters).catch(() => {});
    for (const m of masters) {
      for (const [name, value] of m.saved) await m.client.config('SET', name, value).catch((err: Error) => log(`kvql backup: could not put ${name} back to ${value} on ${where(m)}: ${err.message}`));
      m.client.disconnect();
    }
    cli.remove();
  }
}

/** The masters of `target`: the URL's Redis, the primary its sentinels name, or a cluster's masters. */
async function mastersOf(target: RedisTarget, reach: Reach): Promise<MasterAddress[]> {
  if (typeof target === 'string') {
    const url = new URL(target);
    return [{ id: '', host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 6379), slots: [] }];
  }
  if ('clusterNodes' in target) return clusterMasters(target.clusterNodes, reach);
  const primary = await sentinelPrimary(target, { ms: COMMAND_MS, ...(reach.tls ? { tls: reach.tls } : {}) });
  return [{ id: '', ...primary, slots: [] }];
}

/** The masters that serve slots, from CLUSTER NODES of the first seed that answers. */
async function clusterMasters(seeds: { host: string; port: number }[], reach: Reach): Promise<MasterAddress[]> {
  let last: Error = new Error('no seed given');
  for (const seed of seeds) {
    const { client, emitted } = oneShotClient({ ...seed, ms: COMMAND_MS, ...reach });
    let info: string, nodes: string;
    try {
      await client.connect();
      info = String(await client.call('CLUSTER', 'INFO'));
      nodes = String(await client.call('CLUSTER', 'NODES'));
    } catch (err) {
      last = emitted() ?? (err as Error);
      continue;
    } finally {
      client.disconnect();
    }
    // A seed that answers decides: a cluster it sees as unhealthy is not backed up.
    const state = parseInfo(info).cluster_state;
    if (state !== 'ok') throw new Error(`${seed.host}:${seed.port} says cluster_state:${state}: back up a healthy cluster`);
    const masters = parseClusterNodes(nodes).filter(
      (l) => l.flags.includes('master') && !l.flags.some((f) => f === 'fail' || f === 'fail?' || f === 'noaddr') && l.slots.length > 0,
    );
    if (masters.length === 0) throw new Error(`${seed.host}:${seed.port} knows no master that serves slots`);
    return masters.map(({ id, host, port, slots }) => ({ id, host, port, slots }));
  }
  throw new Error(`no cluster node answered: ${last.message}`);
}

async function setFor(m: Master, name: string, value: string): Promise<void> {
  const [, previous] = (await m.client.config('GET', name)) as [string, string];
  if (!m.saved.has(name)) m.saved.set(name, previous);
  await m.client.config('SET', name, value);
}

/** Whether a child process is running or due: a snapshot being written, an AOF rewrite. */
function childRunning(p: Record<string, string>): boolean {
  return p.rdb_bgsave_in_progress === '1' || p.aof_rewrite_in_progress === '1' || p.aof_rewrite_scheduled === '1';
}

async function hasChild(m: Master): Promise<boolean> {
  return childRunning(parseInfo(await m.client.info('persistence')));
}

function noChild(m: Master): Promise<void> {
  return untilPersistence(() => m.client.info('persistence'), (p) => !childRunning(p), CHILD_WAIT_MS, `${where(m)} was still writing a snapshot or rewriting its AOF`);
}

async function totalForks(m: Master): Promise<number> {
  return Number(parseInfo(await m.client.info('stats')).total_forks);
}

function unpause(masters: Master[]): Promise<unknown> {
  return Promise.all(masters.map((m) => m.client.call('CLIENT', 'UNPAUSE')));
}

function where(m: Master): string {
  return `${m.line.host}:${m.line.port}`;
}

type Reach = AdminAuth & { tls?: RedisTls };

/**
 * redis-cli's TLS arguments for kvql's TLS settings: it reads PEM files, and the configuration
 * holds their contents, so they are written to a directory only this user may read, removed after.
 */
function redisCliTls(tls: RedisTls | undefined): { args: string[]; remove(): void } {
  if (!tls) return { args: [], remove() {} };
  const dir = mkdtempSync(join(tmpdir(), 'kvql-backup-tls-'));
  const args = ['--tls'];
  for (const [flag, pem] of [['--cacert', tls.ca], ['--cert', tls.cert], ['--key', tls.key]] as const) {
    if (!pem) continue;
    const file = join(dir, flag.slice(2) + '.pem');
    writeFileSync(file, pem, { mode: 0o600 });
    args.push(flag, file);
  }
  return { args, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

interface Transfer {
  done: Promise<void>;
  stop(): void;
}

/**
 * `redis-cli --rdb <file>` against the master: Redis forks a snapshot for it as for a replica.
 * The password goes in the environment (REDISCLI_AUTH), not on a command line `ps` shows.
 */
function fetchSnapshot(m: Master, file: string, auth: AdminAuth, tlsArgs: string[]): Transfer {
  const args = ['-h', m.line.host, '-p', String(m.line.port), ...tlsArgs, ...(auth.username ? ['--user', auth.username] : []), '--rdb', file];
  const env = { ...process.env, ...(auth.password ? { REDISCLI_AUTH: auth.password } : {}) };
  if (!auth.password) delete env.REDISCLI_AUTH;
  const child = spawn('redis-cli', args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const done = new Promise<void>((resolve, reject) => {
    let output = '';
    const keep = (b: Buffer) => (output = (output + b.toString('utf8')).slice(-2000));
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), TRANSFER_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`could not run redis-cli: ${err.message}`));
    });
    // 'close', not 'exit': 'exit' can come before the last of redis-cli's output has been read,
    // and the success line is the last (seen under load: exit 0, output ending a line early).
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0 && /Transfer finished with success/.test(output)) resolve();
      else reject(new Error(`redis-cli --rdb from ${where(m)} failed (${signal ?? `exit ${code}`}): ${output.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
  // Awaited later, or on failure only settled: never an unhandled rejection meanwhile.
  done.catch(() => {});
  return { done, stop: () => child.kill('SIGKILL') };
}

/** An RDB file starts with "REDIS" and its version; anything else is not a snapshot. */
export function checkRdb(file: string): void {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(9);
    const n = readSync(fd, head, 0, 9, 0);
    if (n < 9 || head.toString('latin1', 0, 5) !== 'REDIS') throw new Error(`${file} is not an RDB snapshot`);
  } finally {
    closeSync(fd);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
