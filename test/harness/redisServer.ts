// Starts a real redis-server for tests: from a copy of the repo's redis.conf (so nothing can
// rewrite the repo's file), in its own temp directory, on a free loopback port.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort as freePort } from '../../src/freePort.js';
import { REDIS_CONF, redisServerOnPath, waitReady } from '../../src/managedRedis.js';

export interface TestRedis {
  url: string;
  /** The redis-server process (a local one; undefined for a container). */
  readonly pid?: number;
  port: number;
  dir: string;
  /** Crash: SIGKILL, no chance to flush anything. */
  kill9(): Promise<void>;
  /** Start again from the same config and data directory, on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** Hang: SIGSTOP, the process keeps its connections open but answers nothing. */
  pause?(): void;
  /** Undo pause(): SIGCONT. */
  resume?(): void;
}

/** One implementation for the tools and the tests (src/freePort.ts). */
export { freePort };

/**
 * `extra` are redis-server options appended to the command line, e.g. ['--maxmemory', '2mb'];
 * `dir`, a data directory to start from (a restored backup) instead of a new empty one. stop()
 * removes the directory either way.
 */
export async function startTestRedis(extra: string[] = [], opts: { dir?: string } = {}): Promise<TestRedis> {
  if (!redisServerOnPath()) {
    if (opts.dir !== undefined) throw new Error('starting Redis on a given data directory needs a local redis-server binary');
    return startContainerRedis(extra);
  }
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'kvql-redis-'));
  const conf = join(dir, 'redis.conf');
  copyFileSync(REDIS_CONF, conf);
  const port = await freePort();
  let child: ChildProcess;
  const launch = async () => {
    child = spawn('redis-server', [conf, '--port', String(port), '--dir', dir, ...extra], { stdio: 'ignore' });
    await waitReady(port, 10 * 60_000, () => (child.exitCode !== null ? `redis-server exited with ${child.exitCode}` : undefined));
  };
  const exited = () =>
    new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get pid() {
      return child.pid;
    },
    async kill9() {
      child.kill('SIGKILL');
      await exited();
    },
    restart: launch,
    pause() {
      child.kill('SIGSTOP');
    },
    resume() {
      child.kill('SIGCONT');
    },
    async stop() {
      child.kill('SIGCONT');
      child.kill('SIGTERM');
      await exited();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Where no redis-server binary exists but Docker does: the same config in a container. */
async function startContainerRedis(extra: string[]): Promise<TestRedis> {
  const { GenericContainer } = await import('testcontainers');
  const container = await new GenericContainer('redis:7.0')
    .withCopyFilesToContainer([{ source: REDIS_CONF, target: '/etc/kvql/redis.conf' }])
    .withCommand(['redis-server', '/etc/kvql/redis.conf', '--bind', '0.0.0.0', '--protected-mode', 'no', ...extra])
    .withExposedPorts(6379)
    .start();
  const port = container.getMappedPort(6379);
  const unsupported = () => Promise.reject(new Error('crash tests need a local redis-server binary'));
  return {
    url: `redis://${container.getHost()}:${port}`,
    port,
    dir: '',
    kill9: unsupported,
    restart: unsupported,
    async stop() {
      await container.stop();
    },
  };
}
