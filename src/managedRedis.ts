// The managed Redis: with no REDIS_URL, kvql runs its own redis-server from the repo's
// redis.conf, with its data in KV_DATA_DIR. It finds a Redis it started before (after a crash
// of the API) through the pid file, restarts Redis if Redis dies, and stops it with the API.
// kvql connects to it as the ACL user `kvql` (users.acl), with a random password kept in the data
// directory; its `default` user has a random password of its own (README, "The path to Redis").
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { configuredPercentage, startAofArchiver, type AofArchiver } from './aofArchive.js';
import { AOF_DIR, repairTornAofTail } from './aofTail.js';
import { oneShotClient, type RedisTls } from './store/redis.js';
import { KVQL_USER, loadOrCreateSecret, usersAclFile, writePrivateFile } from './redisAcl.js';

export const REDIS_CONF = fileURLToPath(new URL('../redis.conf', import.meta.url));

export interface ManagedRedisOptions {
  dataDir: string;
  port: number;
  /** KV_PREFIX: the keyspace whose keys user kvql may reach (default "kv"). */
  prefix?: string;
  /** Where its messages go; `level` is 'warn' for trouble (Redis died, slow to stop). */
  log?: (message: string, level?: 'info' | 'warn') => void;
  /**
   * KV_AOF_ARCHIVE_HOURS: keep the AOF's files from before each rewrite for this long
   * (aofArchive.ts); kvql then makes the rewrites, Redis's own are off. Absent: Redis's own.
   */
  aofArchive?: { keepMs: number; everyMs?: number };
}

export interface ManagedRedis {
  /**
   * As the `default` user, with its password: every command and key. For operators' tools and
   * tests; kvql itself uses kvqlUrl.
   */
  url: string;
  /** As user kvql, with least privilege (users.acl): what the API connects with. */
  kvqlUrl: string;
  pid(): number | undefined;
  /** The AOF archive, when asked for (aofArchive.ts). */
  archiver?: AofArchiver;
  stop(): Promise<void>;
}

/** Files in the data directory: kvql's password, the `default` user's, the ACL file Redis loads. */
export const KVQL_PASSWORD_FILE = 'redis-kvql.password';
export const ADMIN_PASSWORD_FILE = 'redis-admin.password';
export const ACL_FILE = 'users.acl';

/** Credentials for one connection: a user (absent: `default`) and its password. */
export interface RedisAuth {
  username?: string;
  password: string;
}

/**
 * redis://kvql:<password>@127.0.0.1:<port> for the managed Redis of `dataDir`, from the password
 * a start left there; undefined when there is none (no start yet, or no access to the file).
 */
export function managedKvqlUrl(dataDir: string, port: number): string | undefined {
  try {
    const pw = readFileSync(resolve(dataDir, KVQL_PASSWORD_FILE), 'utf8').trim();
    return pw ? `redis://${KVQL_USER}:${pw}@127.0.0.1:${port}` : undefined;
  } catch {
    return undefined;
  }
}

export function redisServerOnPath(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Whether `pid` is a running process. A zombie is not: a Redis we adopted after a crash of the
 * API is no child of ours, and where PID 1 does not reap orphans (many containers) it stays a
 * zombie after it exits, which `kill(pid, 0)` still reports as alive.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists, but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    // No /proc (not Linux), or it went away between the two looks.
    return existsSync('/proc/self/stat') ? false : true;
  }
}

/** The last lines of Redis's log, to say why it did not start. */
function logTail(file: string, lines = 5): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Runs `ask` on a short-lived connection to 127.0.0.1:`port` (over TLS when `tls` is given);
 * rejects if it fails or nothing answers within `ms` (connecting included: something that
 * accepts connections but never answers, not Redis, must not hang the caller).
 */
export async function askRedis<T>(port: number, ask: (client: Redis) => Promise<T>, ms: number, auth?: RedisAuth, tls?: RedisTls): Promise<T> {
  const { client, emitted } = oneShotClient({ host: '127.0.0.1', port, ms, ...auth, ...(tls ? { tls } : {}) });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      client.connect().then(() => ask(client)),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer from port ${port} within ${ms} ms`)), ms))),
    ]);
  } catch (err) {
    // A refused AUTH is told as itself, not as the "Stream isn't writeable" that follows it.
    const first = emitted();
    if (first && first !== err && /^(WRONGPASS|NOAUTH|NOPERM)/.test(first.message)) throw first;
    throw err;
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}

/** askRedis, or undefined when nothing answers: the start must go on either way. */
function probe<T>(port: number, ask: (client: Redis) => Promise<T>, ms = 1500, auth?: RedisAuth): Promise<T | undefined> {
  return askRedis(port, ask, ms, auth).catch(() => undefined);
}

async function pidOf(client: Redis): Promise<number | undefined> {
  const pid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Who answers on `port`: its pid, and which credentials it took: kvql's, none (a Redis without
 * a password, e.g. one started by a kvql before it had an ACL user, or not kvql's), or the
 * `default` user's (tried last: ioredis warns on stderr when a password is given to a Redis
 * that needs none). Only a refusal of the credentials moves on to the next; silence does not.
 */
async function identify(port: number, auths: Record<'kvql' | 'admin', RedisAuth>): Promise<{ pid: number; as: 'kvql' | 'admin' | 'none' } | undefined> {
  for (const as of ['kvql', 'none', 'admin'] as const) {
    try {
      const pid = await askRedis(port, pidOf, 1500, as === 'none' ? undefined : auths[as]);
      return pid === undefined ? undefined : { pid, as };
    } catch (err) {
      if (!/WRONGPASS|NOAUTH|NOPERM/.test((err as Error).message)) return undefined;
    }
  }
  return undefined;
}

/**
 * Waits until Redis on `port` accepts commands (past loading its AOF); gives up after `ms`, or
 * as soon as `failed()` says why it never will.
 */
export async function waitReady(port: number, ms: number, failed: () => string | undefined = () => undefined, auth?: RedisAuth): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const why = failed();
    if (why !== undefined) throw new Error(why);
    // PING answers LOADING (an error) until the AOF is loaded.
    if ((await probe(port, (c) => c.ping(), 500, auth)) === 'PONG') return;
    await sleep(100);
  }
  const why = failed();
  throw new Error(why ?? `the managed Redis on port ${port} did not become ready within ${ms} ms`);
}

/**
 * Turns the Redis's own AOF rewrites back on (redis.conf's percentage) if they are off, as a
 * start with KV_AOF_ARCHIVE_HOURS leaves them (aofArchive.ts). A failure is said, not fatal.
 */
async function restoreOwnRewrites(port: number, admin: RedisAuth, log: (message: string, level?: 'info' | 'warn') => void): Promise<void> {
  const percentage = String(configuredPercentage(REDIS_CONF));
  try {
    const turnedOn = await askRedis(
      port,
      async (c) => {
        const [, now] = (await c.config('GET', 'auto-aof-rewrite-percentage')) as [string, string];
        if (now !== '0' || percentage === '0') return false;
        await c.config('SET', 'auto-aof-rewrite-percentage', percentage);
        return true;
      },
      5000,
      admin,
    );
    if (turnedOn) log(`managed Redis: its own AOF rewrites were off (a start with KV_AOF_ARCHIVE_HOURS); back on at ${percentage}%`);
  } catch (err) {
    log(`managed Redis: could not check its AOF rewrite setting: ${(err as Error).message}`, 'warn');
  }
}

export async function startManagedRedis(opts: ManagedRedisOptions): Promise<ManagedRedis> {
  const log = opts.log ?? ((m: string) => console.log(m));
  const dir = resolve(opts.dataDir);
  mkdirSync(dir, { recursive: true });
  const pidFile = resolve(dir, 'redis.pid');
  // Random passwords made at the first start and kept (0600) in the data directory: kvql's, and
  // the `default` user's (for the operator). The ACL file is built from users.acl at every start.
  const loose = (m: string) => log(`managed Redis: ${m}`, 'warn');
  const kvqlPassword = loadOrCreateSecret(resolve(dir, KVQL_PASSWORD_FILE), loose);
  const adminPassword = loadOrCreateSecret(resolve(dir, ADMIN_PASSWORD_FILE), loose);
  const aclFile = resolve(dir, ACL_FILE);
  const aclChanged = writePrivateFile(aclFile, usersAclFile({ prefix: opts.prefix ?? 'kv', password: kvqlPassword, adminPassword }));
  const auths = { kvql: { username: KVQL_USER, password: kvqlPassword }, admin: { password: adminPassword } };
  const url = `redis://:${adminPassword}@127.0.0.1:${opts.port}`;
  const kvqlUrl = `redis://${KVQL_USER}:${kvqlPassword}@127.0.0.1:${opts.port}`;
  let child: ChildProcess | undefined;
  let adopted: number | undefined;
  let stopping = false;

  // A Redis we started earlier is still running (the API crashed): use it, do not start a second.
  if (existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    const who = pid > 0 && alive(pid) ? await identify(opts.port, auths) : undefined;
    if (who?.pid === pid && who.as !== 'none') {
      log(`managed Redis: found running redis-server pid ${pid} on port ${opts.port}, data in ${dir}`);
      adopted = pid;
      // Its users are those of the ACL file it loaded: reload it if this start changed it
      // (another KV_PREFIX, a new template). ACL LOAD disconnects the users' other connections.
      if (aclChanged || who.as !== 'kvql') {
        await askRedis(opts.port, (c) => c.call('ACL', 'LOAD'), 5000, auths.admin).then(
          () => log(`managed Redis: reloaded its users from ${aclFile}`),
          (err: Error) => log(`managed Redis: could not reload its users from ${aclFile}: ${err.message}`, 'warn'),
        );
      }
    } else if (who?.pid === pid) {
      // Ours, but started without the ACL (by a kvql before it had one): restart it with it.
      log(`managed Redis: redis-server pid ${pid} runs without kvql's ACL user; restarting it with ${aclFile}`, 'warn');
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 600 && alive(pid); i++) await sleep(50);
      if (alive(pid)) throw new Error(`the managed Redis (pid ${pid}) did not stop within 30 s after SIGTERM`);
    }
  }
  if (adopted === undefined) {
    const other = (await identify(opts.port, auths))?.pid;
    if (other !== undefined) {
      throw new Error(
        `port ${opts.port} is taken by a Redis (pid ${other}) that is not kvql's managed Redis for ${dir}; ` +
          'set KV_MANAGED_REDIS_PORT to a free port, or REDIS_URL to use that Redis',
      );
    }
    if (!redisServerOnPath()) {
      throw new Error('redis-server is not installed: run `sudo apt-get install redis-server`, or set REDIS_URL to a running Redis');
    }
    // With the AOF on, Redis ignores a dump.rdb that it finds without an appendonlydir/, starts
    // empty and writes an empty AOF that it prefers from then on: a snapshot put here to be
    // restored would be lost without a word. Refuse, and say how to restore it (rdbRestore.ts).
    const snapshot = resolve(dir, 'dump.rdb');
    if (existsSync(snapshot) && !existsSync(resolve(dir, AOF_DIR))) {
      throw new Error(
        `${dir} holds dump.rdb but no appendonlydir/: Redis would ignore the snapshot and start empty. ` +
          `Restore it with \`npm run restore-rdb -- ${snapshot} ${dir}\`, or move it away to start with an empty keyspace`,
      );
    }
  }

  const logFile = resolve(dir, 'redis.log');

  // A crash of the machine can tear the AOF's last write; Redis 7.0 would keep half of a torn
  // transaction in the file and run it at the next restart. Cut it first (see aofTail.ts), but
  // never under a live redis-server (the pid file names one still running).
  const repairAof = () => {
    const holder = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
    if (holder > 0 && alive(holder)) return;
    const tail = repairTornAofTail(dir);
    if (tail.truncated > 0) {
      log(`managed Redis: cut a torn tail of ${tail.truncated} bytes (an unacknowledged write) off ${tail.file}: ${tail.detail}`, 'warn');
    } else if (tail.state === 'corrupt') {
      log(`managed Redis: ${tail.file} does not parse (${tail.detail}); see README "After a crash"`, 'warn');
    }
  };
  let ready = false;
  let restartDelay = 200;
  let watcher: NodeJS.Timeout | undefined;

  const launch = (): ChildProcess => {
    const startedAt = Date.now();
    repairAof();
    const c = spawn(
      'redis-server',
      [
        REDIS_CONF,
        ...['--port', String(opts.port), '--dir', dir, '--pidfile', pidFile, '--logfile', logFile, '--aclfile', aclFile],
        // With the archive, kvql makes the rewrites (aofArchive.ts): Redis's own would delete
        // the old files unarchived, from its first second on.
        ...(opts.aofArchive ? ['--auto-aof-rewrite-percentage', '0'] : []),
      ],
      // Its own process group: a Ctrl+C meant for the API does not reach Redis first; the API
      // stops Redis itself, after its last request.
      { detached: true, stdio: 'ignore' },
    );
    child = c;
    adopted = undefined;
    log(`managed Redis: started redis-server pid ${c.pid} on port ${opts.port}, data in ${dir}`);
    let gone = false;
    const onGone = (why: string) => {
      if (gone) return;
      gone = true;
      // Before it was first ready, the start reports the failure; after stop(), it is expected.
      if (stopping || !ready) return;
      // Quick deaths in a row (it cannot start) back off, up to 5 s; a long run resets.
      restartDelay = Date.now() - startedAt > 10_000 ? 200 : Math.min(restartDelay * 2, 5000);
      log(`managed Redis: redis-server exited (${why}); restarting it from its append-only file in ${restartDelay} ms`, 'warn');
      setTimeout(() => {
        if (!stopping) launch();
      }, restartDelay);
    };
    c.on('exit', (code, signal) => onGone(String(signal ?? code)));
    c.on('error', (err) => onGone(err.message));
    return c;
  };

  // A Redis found running is no child of ours, so no exit event tells when it dies: watch it.
  const watchAdopted = (pid: number) => {
    watcher = setInterval(() => {
      if (stopping || adopted !== pid || alive(pid)) return;
      clearInterval(watcher);
      log(`managed Redis: redis-server pid ${pid} is gone; restarting it from its append-only file`, 'warn');
      launch();
    }, 250);
    watcher.unref();
  };

  if (adopted === undefined) {
    const first = launch();
    let spawnError: string | undefined;
    first.once('error', (err) => (spawnError = err.message));
    try {
      await waitReady(opts.port, 5 * 60_000, () => {
        if (spawnError !== undefined) return `could not run redis-server: ${spawnError}`;
        if (first.exitCode === null && first.signalCode === null) return undefined;
        return (
          `the managed Redis (redis-server on port ${opts.port}) exited (${first.signalCode ?? first.exitCode}) ` +
          `before it was ready. The end of ${logFile}:\n${logTail(logFile)}`
        );
      }, auths.kvql);
      // Whatever answered must be the Redis we started, not one that took the port meanwhile.
      const answering = (await identify(opts.port, auths))?.pid;
      if (answering !== first.pid) {
        throw new Error(
          `port ${opts.port} is answered by another process (pid ${answering ?? 'unknown'}) than the managed Redis ` +
            `(pid ${first.pid}); set KV_MANAGED_REDIS_PORT to a free port. The end of ${logFile}:\n${logTail(logFile)}`,
        );
      }
    } catch (err) {
      stopping = true;
      if (first.pid !== undefined && alive(first.pid)) first.kill('SIGKILL');
      throw err;
    }
  } else {
    watchAdopted(adopted);
  }
  ready = true;
  const archiver: AofArchiver | undefined = opts.aofArchive
    ? startAofArchiver({
        ask: (f) => askRedis(opts.port, f, 10_000, auths.admin),
        dataDir: dir,
        keepMs: opts.aofArchive.keepMs,
        percentage: configuredPercentage(REDIS_CONF),
        ...(opts.aofArchive.everyMs !== undefined ? { everyMs: opts.aofArchive.everyMs } : {}),
        log: (m, level) => log(`managed Redis: ${m}`, level),
      })
    : undefined;
  // A Redis adopted from a start without the archive still has its own rewrites on: off now.
  await archiver?.pass();
  // And one adopted from a start with it has them off, which without the archive would let the
  // AOF grow without end: back to redis.conf's.
  if (!archiver && adopted !== undefined) await restoreOwnRewrites(opts.port, auths.admin, log);

  return {
    url,
    kvqlUrl,
    pid: () => adopted ?? child?.pid,
    ...(archiver ? { archiver } : {}),
    async stop() {
      stopping = true;
      await archiver?.stop();
      clearInterval(watcher);
      const pid = adopted ?? child?.pid;
      if (pid === undefined || !alive(pid)) return;
      // SIGTERM: Redis finishes the command in hand, fsyncs the AOF and exits.
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        return; // it went away meanwhile
      }
      for (let i = 0; i < 300 && alive(pid); i++) await sleep(50);
      if (alive(pid)) log(`managed Redis: pid ${pid} is still shutting down`, 'warn');
    },
  };
}
