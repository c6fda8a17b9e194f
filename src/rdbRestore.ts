// Restoring an RDB snapshot (the dump.rdb of a BGSAVE) into a data directory that kvql's Redis,
// with `appendonly yes`, starts from. Why a tool: with the AOF on and no AOF in its directory,
// Redis ignores dump.rdb, starts empty and writes an empty AOF, which it prefers from then on.
// So "put dump.rdb in an empty directory and start" restores nothing, silently
// (test/server/backup.test.ts shows it). Redis's own way round: load the snapshot with the AOF
// off, then `CONFIG SET appendonly yes`, which writes the loaded data as the new AOF's base.
//
// Each step runs on a redis-server of its own, from the repo's redis.conf, on a free loopback
// port with a random password, so nothing else reaches the data while it is restored. The
// result is checked by starting Redis as kvql would (the AOF on) and counting the keys again.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants, copyFileSync, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { AOF_DIR } from './aofTail.js';
import { freeLoopbackPort } from './freePort.js';
import { askRedis, REDIS_CONF, waitReady, type RedisAuth } from './managedRedis.js';
import { untilPersistence } from './redisInfo.js';

/** How long loading the snapshot, and then writing it as the AOF, may each take. */
const STEP_MS = 30 * 60_000;

export interface RdbRestore {
  /** Keys in the snapshot, and in the AOF written from it (the same, or the restore fails). */
  keys: number;
  /** The directory written, holding appendonlydir/ (and the snapshot as dump.rdb). */
  dir: string;
}

/**
 * Writes `<dataDir>/appendonlydir/` from the snapshot `rdbFile`, which is copied to
 * `<dataDir>/dump.rdb`. Refuses, changing nothing, when the directory already holds an
 * appendonlydir/ (that is the data Redis would start from) or another dump.rdb. On failure it
 * removes what it wrote.
 */
export async function restoreRdb(rdbFile: string, dataDir: string, log: (message: string) => void = console.log): Promise<RdbRestore> {
  const dir = resolve(dataDir);
  const from = resolve(rdbFile);
  if (!existsSync(from) || !statSync(from).isFile()) throw new Error(`${from} is not a file`);
  const aofDir = join(dir, AOF_DIR);
  if (existsSync(aofDir)) {
    throw new Error(`${aofDir} exists: Redis would start from it, not from the snapshot. Move it away first (nothing was changed)`);
  }
  const snapshot = join(dir, 'dump.rdb');
  mkdirSync(dir, { recursive: true });
  if (from !== snapshot) {
    if (existsSync(snapshot)) throw new Error(`${snapshot} exists and is another file: move it away first (nothing was changed)`);
    copyFileSync(from, snapshot, constants.COPYFILE_EXCL);
  }
  const auth = { password: randomBytes(24).toString('hex') };
  const copied = from !== snapshot;
  try {
    log(`kvql restore-rdb: loading ${snapshot} with the AOF off`);
    const keys = await withRedis(dir, ['appendonly no'], auth, async (port) => {
      const loaded = await askRedis(port, (c) => c.dbsize(), 10_000, auth);
      log(`kvql restore-rdb: ${loaded} keys loaded; writing them as the append-only file`);
      await askRedis(port, (c) => c.config('SET', 'appendonly', 'yes'), 10_000, auth);
      await aofWritten(port, auth);
      return loaded;
    });

    const again = await withRedis(dir, [], auth, (port) => askRedis(port, (c) => c.dbsize(), 10_000, auth));
    if (again !== keys) throw new Error(`started from the new append-only file, Redis holds ${again} keys, not the snapshot's ${keys}`);
    log(`kvql restore-rdb: ${dir} holds appendonlydir/ with the snapshot's ${keys} keys; start kvql (or Redis) on it`);
    return { keys, dir };
  } catch (err) {
    // Leave the directory as it was: a half-written appendonlydir/ would be started from.
    rmSync(aofDir, { recursive: true, force: true });
    if (copied) rmSync(snapshot, { force: true });
    throw err;
  }
}

/** Waits until the AOF rewrite that `CONFIG SET appendonly yes` started has completed. */
function aofWritten(port: number, auth: RedisAuth): Promise<void> {
  return untilPersistence(
    () => askRedis(port, (c) => c.info('persistence'), 10_000, auth),
    (info) => {
      if (info.aof_last_bgrewrite_status === 'err') throw new Error('Redis could not write the append-only file (see its log)');
      return info.aof_rewrite_in_progress === '0' && info.aof_rewrite_scheduled === '0' && Number(info.aof_last_rewrite_time_sec) >= 0;
    },
    STEP_MS,
    'the append-only file was not written',
  );
}

/**
 * Runs `use` against a redis-server started on `dir` from the repo's redis.conf (plus the config
 * lines `extra`), then stops it with SIGTERM: Redis fsyncs the AOF and exits (0, or the step
 * fails). Its configuration goes in on stdin (`redis-server -`), so the password is on no
 * command line that `ps` shows. Also how restore-snapshots reads each master's snapshot.
 */
export async function withRedis<T>(dir: string, extra: string[], auth: RedisAuth, use: (port: number) => Promise<T>): Promise<T> {
  const port = await freeLoopbackPort();
  const config = [`include ${quoted(REDIS_CONF)}`, `port ${port}`, `dir ${quoted(dir)}`, `requirepass ${auth.password}`, ...extra];
  let output = '';
  const child: ChildProcess = spawn('redis-server', ['-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.end(config.join('\n') + '\n');
  const keep = (b: Buffer) => (output = (output + b.toString('utf8')).slice(-4000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let spawnError: string | undefined;
  child.once('error', (err) => (spawnError = err.message));
  child.stdin!.on('error', () => {}); // a redis-server that failed to start closes it early: told by 'exit'
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const lastLines = () => output.trimEnd().split('\n').slice(-5).join('\n');
  try {
    await waitReady(port, STEP_MS, () => {
      if (spawnError !== undefined) return `could not run redis-server: ${spawnError}`;
      return child.exitCode === null ? undefined : `redis-server exited (${child.exitCode}) before it was ready:\n${lastLines()}`;
    }, auth);
    const result = await use(port);
    child.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`redis-server exited with ${code} when stopped:\n${lastLines()}`);
    return result;
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

/** A path as a double-quoted redis.conf argument. */
function quoted(path: string): string {
  if (/[\x00-\x1f]/.test(path)) throw new Error(`${JSON.stringify(path)}: a path with control characters cannot go into redis.conf`);
  return `"${path.replace(/[\\"]/g, '\\$&')}"`;
}
