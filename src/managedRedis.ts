// The managed Redis: with no REDIS_URL, kvql runs its own redis-server from the repo's
// redis.conf, with its data in KV_DATA_DIR. It finds a Redis it started before (after a crash
// of the API) through the pid file, restarts Redis if Redis dies, and stops it with the API.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { repairTornAofTail } from './aofTail.js';

export const REDIS_CONF = fileURLToPath(new URL('../redis.conf', import.meta.url));

export interface ManagedRedisOptions {
  dataDir: string;
  port: number;
  /** Where its messages go; `level` is 'warn' for trouble (Redis died, slow to stop). */
  log?: (message: string, level?: 'info' | 'warn') => void;
}

export interface ManagedRedis {
  url: string;
  pid(): number | undefined;
  stop(): Promise<void>;
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
 * Runs `ask` on a short-lived connection to 127.0.0.1:`port`; rejects if it fails or nothing
 * answers within `ms` (connecting included: something that accepts connections but never
 * answers, not Redis, must not hang the caller).
 */
export async function askRedis<T>(port: number, ask: (client: Redis) => Promise<T>, ms: number): Promise<T> {
  const client = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    enableReadyCheck: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: ms,
    commandTimeout: ms,
  });
  client.on('error', () => {});
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      client.connect().then(() => ask(client)),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer from port ${port} within ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}

/** askRedis, or undefined when nothing answers: the start must go on either way. */
function probe<T>(port: number, ask: (client: Redis) => Promise<T>, ms = 1500): Promise<T | undefined> {
  return askRedis(port, ask, ms).catch(() => undefined);
}

/** The process id of the Redis answering on `port`, or undefined if none answers. */
async function answeringPid(port: number): Promise<number | undefined> {
  return probe(port, async (client) => {
    const pid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  });
}

/**
 * Waits until Redis on `port` accepts commands (past loading its AOF); gives up after `ms`, or
 * as soon as `failed()` says why it never will.
 */
export async function waitReady(port: number, ms: number, failed: () => string | undefined = () => undefined): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const why = failed();
    if (why !== undefined) throw new Error(why);
    // PING answers LOADING (an error) until the AOF is loaded.
    if ((await probe(port, (c) => c.ping(), 500)) === 'PONG') return;
    await sleep(100);
  }
  const why = failed();
  throw new Error(why ?? `the managed Redis on port ${port} did not become ready within ${ms} ms`);
}

export async function startManagedRedis(opts: ManagedRedisOptions): Promise<ManagedRedis> {
  const log = opts.log ?? ((m: string) => console.log(m));
  const dir = resolve(opts.dataDir);
  mkdirSync(dir, { recursive: true });
  const pidFile = resolve(dir, 'redis.pid');
  const url = `redis://127.0.0.1:${opts.port}`;
  let child: ChildProcess | undefined;
  let adopted: number | undefined;
  let stopping = false;

  // A Redis we started earlier is still running (the API crashed): use it, do not start a second.
  if (existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (pid > 0 && alive(pid) && (await answeringPid(opts.port)) === pid) {
      log(`managed Redis: found running redis-server pid ${pid} on port ${opts.port}, data in ${dir}`);
      adopted = pid;
    }
  }
  if (adopted === undefined) {
    const other = await answeringPid(opts.port);
    if (other !== undefined) {
      throw new Error(
        `port ${opts.port} is taken by a Redis (pid ${other}) that is not kvql's managed Redis for ${dir}; ` +
          'set KV_MANAGED_REDIS_PORT to a free port, or REDIS_URL to use that Redis',
      );
    }
    if (!redisServerOnPath()) {
      throw new Error('redis-server is not installed: run `sudo apt-get install redis-server`, or set REDIS_URL to a running Redis');
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
      [REDIS_CONF, '--port', String(opts.port), '--dir', dir, '--pidfile', pidFile, '--logfile', logFile],
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
      });
      // Whatever answered must be the Redis we started, not one that took the port meanwhile.
      const answering = await answeringPid(opts.port);
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

  return {
    url,
    pid: () => adopted ?? child?.pid,
    async stop() {
      stopping = true;
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
