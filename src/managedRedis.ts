// The managed Redis: with no REDIS_URL, kvql runs its own redis-server from the repo's
// redis.conf, with its data in KV_DATA_DIR. It finds a Redis it started before (after a crash
// of the API) through the pid file, restarts Redis if Redis dies, and stops it with the API.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';

export const REDIS_CONF = fileURLToPath(new URL('../redis.conf', import.meta.url));

export interface ManagedRedisOptions {
  dataDir: string;
  port: number;
  log?: (message: string) => void;
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The process id of the Redis answering on `port`, or undefined if none answers. */
async function answeringPid(port: number): Promise<number | undefined> {
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
  probe.on('error', () => {});
  try {
    await probe.connect();
    const info = await probe.info('server');
    return Number(/process_id:(\d+)/.exec(info)?.[1]);
  } catch {
    return undefined;
  } finally {
    probe.disconnect();
  }
}

/** Waits until Redis on `port` accepts commands (past loading its AOF); gives up after `ms`. */
async function waitReady(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      if ((await client.ping()) === 'PONG') return;
    } catch {
      // not yet
    } finally {
      client.disconnect();
    }
    await sleep(100);
  }
  throw new Error(`the managed Redis on port ${port} did not become ready within ${ms} ms`);
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

  const launch = () => {
    child = spawn(
      'redis-server',
      [REDIS_CONF, '--port', String(opts.port), '--dir', dir, '--pidfile', pidFile, '--logfile', resolve(dir, 'redis.log')],
      // Its own process group: a Ctrl+C meant for the API does not reach Redis first; the API
      // stops Redis itself, after its last request.
      { detached: true, stdio: 'ignore' },
    );
    log(`managed Redis: started redis-server pid ${child.pid} on port ${opts.port}, data in ${dir}`);
    child.on('exit', (code, signal) => {
      if (stopping) return;
      log(`managed Redis: redis-server exited (${signal ?? code}); restarting it from its append-only file`);
      setTimeout(launch, 200);
    });
  };
  if (adopted === undefined) {
    launch();
    await waitReady(opts.port, 5 * 60_000);
  }

  return {
    url,
    pid: () => child?.pid ?? adopted,
    async stop() {
      stopping = true;
      const pid = child?.pid ?? adopted;
      if (pid === undefined || !alive(pid)) return;
      // SIGTERM: Redis finishes the command in hand, fsyncs the AOF and exits.
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 300 && alive(pid); i++) await sleep(50);
      if (alive(pid)) log(`managed Redis: pid ${pid} is still shutting down`);
    },
  };
}
