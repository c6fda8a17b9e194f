// The real process (`node <flags> src/main.ts`, as `npm start` runs it) with its managed Redis,
// over real HTTP: clean stops, crashes of the API and of Redis, and the errors of a start that
// cannot work.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../harness/redisServer.js';
import { startArgs } from '../harness/startCommand.js';
import { until, within } from '../harness/until.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A running process: it exists and is no zombie (here PID 1 may not reap orphans). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

// Everything this file starts, to be killed in afterAll whatever happened.
const apis = new Set<Api>();
const redisPids = new Set<number>();
const dirs: string[] = [];
const listeners: Server[] = [];

interface Api {
  child: ChildProcess;
  pid: number;
  port: number;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `kvql-${name}-`));
  dirs.push(dir);
  return dir;
}

/** The API as `npm start` runs it, in its own process group (killed as a group, with anything it started). */
function startApi(env: Record<string, string>): Api {
  const child = spawn(process.execPath, startArgs(), {
    env: { ...process.env, REDIS_URL: '', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  const collect = (d: Buffer) => {
    out += d.toString();
    // Every redis-server it starts, for the cleanup.
    for (const m of out.matchAll(/started redis-server pid (\d+)/g)) redisPids.add(Number(m[1]));
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const api: Api = { child, pid: child.pid!, port: Number(env.PORT), output: () => out, exited };
  apis.add(api);
  void exited.then(() => apis.delete(api));
  return api;
}

function killGroup(api: Api): void {
  try {
    process.kill(-api.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function httpGet(port: number, path: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}${path}`, { headers, signal: AbortSignal.timeout(5000) });
}

async function waitReady(api: Api, ms = 20_000): Promise<void> {
  try {
    const outcome = await until(ms, `API on port ${api.port} ready`, async () => {
      if (api.child.exitCode !== null || api.child.signalCode !== null) return 'exited';
      const res = await httpGet(api.port, '/ready');
      await res.arrayBuffer();
      return res.status === 200 ? 'ready' : undefined;
    });
    if (outcome === 'exited') throw new Error(`the API on port ${api.port} exited before it was ready`);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- its output:\n${api.output()}`);
  }
}

async function gql(port: number, query: string, variables?: Record<string, unknown>) {
  const res = await fetch(`http://127.0.0.1:${port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, ...((await res.json()) as { data?: any; errors?: { message: string; extensions?: any }[] }) };
}

const PUT = `mutation($key: String!, $value: String!) { put(key: $key, value: $value) { key version } }`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key value version } }`;

async function put(port: number, key: string, value: string): Promise<void> {
  const r = await gql(port, PUT, { key, value });
  expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
}

/** Every acknowledged write is there, with its value. */
async function expectData(port: number, data: Map<string, string>): Promise<void> {
  const keys = [...data.keys()];
  const r = await gql(port, GET_MANY, { keys });
  expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
  expect(r.data!.getMany.map((e: { value: string } | null) => e?.value)).toEqual([...data.values()]);
}

function readPid(dataDir: string): number {
  return Number(readFileSync(join(dataDir, 'redis.pid'), 'utf8').trim());
}

/** Live redis-server processes serving `port`, by their process title or command line. */
function redisServersOn(port: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (/redis-server/.test(cmd) && (cmd.includes(`:${port}`) || cmd.includes(`--port ${port} `)) && alive(Number(entry)))
        found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

afterAll(async () => {
  for (const api of apis) killGroup(api);
  for (const pid of redisPids) {
    try {
      // Only if the pid is still a redis-server (not reused by something else meanwhile).
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server')) continue;
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const l of listeners) l.close();
  await sleep(100);
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('the managed Redis across stops and crashes', () => {
  let dataDir: string;
  let redisPort: number;
  const env = () => ({ KV_DATA_DIR: dataDir, KV_MANAGED_REDIS_PORT: String(redisPort) });
  const data = new Map<string, string>();
  let api: Api;

  beforeAll(async () => {
    dataDir = tempDir('managed');
    redisPort = await freePort();
    api = startApi({ ...env(), PORT: String(await freePort()) });
    await waitReady(api);
  });

  it('serves /health, /ready and GraphiQL over real HTTP', async () => {
    const health = await httpGet(api.port, '/health');
    expect(health.status).toBe(200);
    await health.arrayBuffer();
    const ready = await httpGet(api.port, '/ready');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready' });
    const graphiql = await httpGet(api.port, '/graphql', { accept: 'text/html' });
    expect(graphiql.status).toBe(200);
    expect(graphiql.headers.get('content-type')).toMatch(/text\/html/);
    const html = await graphiql.text();
    expect(html).toMatch(/graphiql/i);
    expect(html).toContain('<title>kvql</title>');
    expect(api.output()).toMatch(new RegExp(`listening on http://127\\.0\\.0\\.1:${api.port}/graphql`));
  });

  it('refuses a body over KV_MAX_BODY_BYTES with 413 over real HTTP too', async () => {
    // The default limit is 160 MiB: start a second API on the same Redis with a small one.
    const small = startApi({ ...env(), PORT: String(await freePort()), KV_MAX_BODY_BYTES: '2048' });
    try {
      await waitReady(small);
      expect(small.output()).toMatch(/found running redis-server/);
      const body = JSON.stringify({ query: PUT, variables: { key: 'big', value: 'x'.repeat(5000) } });
      const res = await fetch(`http://127.0.0.1:${small.port}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(5000),
      });
      expect(res.status).toBe(413);
      expect(((await res.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe(
        'PAYLOAD_TOO_LARGE',
      );
      const chunked = await fetch(`http://127.0.0.1:${small.port}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: new Blob([body]).stream(),
        duplex: 'half',
        signal: AbortSignal.timeout(5000),
      } as RequestInit);
      expect(chunked.status).toBe(413);
      await chunked.arrayBuffer();
      expect((await gql(small.port, GET_MANY, { keys: ['big'] })).data!.getMany).toEqual([null]);
    } finally {
      killGroup(small);
      await small.exited;
    }
  });

  it('KV_AOF_ARCHIVE_HOURS: a start with it turns the adopted Redis\'s own AOF rewrites off (kvql makes them, archiving each)', async () => {
    const password = readFileSync(join(dataDir, 'redis-admin.password'), 'utf8').trim();
    const rewriteSetting = (...args: string[]) =>
      spawnSync('redis-cli', ['-p', String(redisPort), '--no-auth-warning', '-a', password, 'CONFIG', ...args], { encoding: 'utf8' }).stdout.trim().split('\n');
    expect(rewriteSetting('GET', 'auto-aof-rewrite-percentage')).toEqual(['auto-aof-rewrite-percentage', '100']);
    const archiving = startApi({ ...env(), PORT: String(await freePort()), KV_AOF_ARCHIVE_HOURS: '1' });
    try {
      await waitReady(archiving);
      expect(archiving.output()).toMatch(/found running redis-server/);
      expect(archiving.output()).toMatch(/AOF archive: auto-aof-rewrite-percentage was 100; kvql makes the rewrites/);
      expect(rewriteSetting('GET', 'auto-aof-rewrite-percentage')).toEqual(['auto-aof-rewrite-percentage', '0']);
    } finally {
      killGroup(archiving);
      await archiving.exited;
    }
    // A start without it puts Redis's own rewrites back (redis.conf's 100%): off, with nothing
    // making them, the AOF would grow without end.
    const plain = startApi({ ...env(), PORT: String(await freePort()) });
    try {
      await waitReady(plain);
      expect(plain.output()).toMatch(/its own AOF rewrites were off \(a start with KV_AOF_ARCHIVE_HOURS\); back on at 100%/);
      expect(rewriteSetting('GET', 'auto-aof-rewrite-percentage')).toEqual(['auto-aof-rewrite-percentage', '100']);
    } finally {
      killGroup(plain);
      await plain.exited;
    }
  });

  it('restarts a redis-server that was killed with -9, with every acknowledged write', async () => {
    for (let i = 0; i < 20; i++) data.set(`c:${i}`, `value ${i} ${'é'.repeat(i)}`);
    for (const [k, v] of data) await put(api.port, k, v);
    const before = readPid(dataDir);
    expect(alive(before)).toBe(true);
    process.kill(before, 'SIGKILL');
    const killedAt = Date.now();
    // Requests fail while it is down, and succeed again within a few seconds.
    await until(8000, 'a put succeeds again', async () => {
      const r = await gql(api.port, PUT, { key: 'c:after', value: 'after' });
      return r.errors === undefined ? true : undefined;
    });
    data.set('c:after', 'after');
    expect(Date.now() - killedAt).toBeLessThan(8000);
    const after = readPid(dataDir);
    expect(after).not.toBe(before);
    expect(alive(before)).toBe(false);
    expect(alive(after)).toBe(true);
    expect(api.output()).toMatch(/redis-server exited \(SIGKILL\); restarting it/);
    await expectData(api.port, data);
    expect(redisServersOn(redisPort)).toEqual([after]);
  });

  it('SIGTERM: the API exits 0 and stops the redis-server it started; the data survives a new start', async () => {
    await put(api.port, 'a:last', 'before SIGTERM');
    data.set('a:last', 'before SIGTERM');
    const redisPid = readPid(dataDir);
    expect(alive(redisPid)).toBe(true);
    process.kill(api.pid, 'SIGTERM');
    const { code } = await within(10_000, 'API exit after SIGTERM', api.exited);
    expect(code, api.output()).toBe(0);
    expect(api.output()).toMatch(/SIGTERM, shutting down/);
    await until(5000, 'redis-server exit', () => (alive(redisPid) ? undefined : true));
    expect(redisServersOn(redisPort)).toEqual([]);

    api = startApi({ ...env(), PORT: String(await freePort()) });
    await waitReady(api);
    expect(api.output()).toMatch(/started redis-server pid/);
    expect(api.output()).not.toMatch(/found running/);
    await expectData(api.port, data);
  });

  it('kill -9 of the API: Redis survives, and a new API adopts it with every acknowledged write', async () => {
    for (let i = 0; i < 10; i++) data.set(`b:${i}`, `crash ${i}`);
    for (const [k, v] of data) if (k.startsWith('b:')) await put(api.port, k, v);
    const redisPid = readPid(dataDir);
    killGroup(api);
    const { signal } = await within(5000, 'API exit after SIGKILL', api.exited);
    expect(signal).toBe('SIGKILL');
    // Its own process group: the kill did not reach it.
    await sleep(300);
    expect(alive(redisPid)).toBe(true);

    api = startApi({ ...env(), PORT: String(await freePort()) });
    await waitReady(api);
    expect(api.output()).toContain(`found running redis-server pid ${redisPid}`);
    expect(api.output()).not.toMatch(/started redis-server/);
    expect(readPid(dataDir)).toBe(redisPid);
    expect(redisServersOn(redisPort)).toEqual([redisPid]);
    await expectData(api.port, data);
  });

  it('restarts an adopted redis-server that dies (it is no child of the API)', async () => {
    const adopted = readPid(dataDir);
    process.kill(adopted, 'SIGKILL');
    await until(8000, 'a put succeeds again after the adopted Redis died', async () => {
      const r = await gql(api.port, PUT, { key: 'd:after', value: 'x' });
      return r.errors === undefined ? true : undefined;
    });
    data.set('d:after', 'x');
    expect(api.output()).toMatch(new RegExp(`redis-server pid ${adopted} is gone; restarting`));
    const now = readPid(dataDir);
    expect(now).not.toBe(adopted);
    expect(redisServersOn(redisPort)).toEqual([now]);
    await expectData(api.port, data);
  });

  it('SIGTERM after adopting: stops the adopted redis-server too, promptly', async () => {
    // Adopt again (kill -9 the API), then stop cleanly.
    const redisPid = readPid(dataDir);
    killGroup(api);
    await within(5000, 'API exit after SIGKILL', api.exited);
    api = startApi({ ...env(), PORT: String(await freePort()) });
    await waitReady(api);
    expect(api.output()).toContain(`found running redis-server pid ${redisPid}`);
    await expectData(api.port, data);

    const started = Date.now();
    process.kill(api.pid, 'SIGTERM');
    const { code } = await within(10_000, 'API exit after SIGTERM', api.exited);
    expect(code, api.output()).toBe(0);
    // The adopted Redis is no child of the API: where orphans are not reaped it lingers as a
    // zombie, which must not be taken for a Redis still shutting down.
    expect(Date.now() - started).toBeLessThan(5000);
    expect(api.output()).not.toMatch(/still shutting down/);
    expect(alive(redisPid)).toBe(false);
    expect(redisServersOn(redisPort)).toEqual([]);
  });
});

describe('a start that cannot work', () => {
  async function expectStartError(api: Api, pattern: RegExp): Promise<string> {
    const { code } = await within(15_000, 'API exit', api.exited);
    expect(code, api.output()).not.toBe(0);
    expect(api.output()).toMatch(pattern);
    return api.output();
  }

  it('a port taken by some other Redis: a clear error, and that Redis is left alone', async () => {
    const port = await freePort();
    const dir = tempDir('other');
    const other = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: 'ignore',
    });
    redisPids.add(other.pid!);
    try {
      await until(5000, 'the other Redis', () => (redisServersOn(port).length > 0 ? true : undefined));
      await sleep(200);
      const api = startApi({ KV_DATA_DIR: tempDir('taken'), KV_MANAGED_REDIS_PORT: String(port), PORT: String(await freePort()) });
      const out = await expectStartError(api, new RegExp(`port ${port} is taken by a Redis \\(pid ${other.pid}\\)`));
      expect(out).toMatch(/KV_MANAGED_REDIS_PORT/);
      expect(out).not.toMatch(/started redis-server/);
      expect(alive(other.pid!)).toBe(true);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('a port taken by something that is not Redis: a clear error, not a hang', async () => {
    // Accepts connections and never answers.
    const silent = createServer(() => {});
    listeners.push(silent);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    const dataDir = tempDir('silent');
    const api = startApi({ KV_DATA_DIR: dataDir, KV_MANAGED_REDIS_PORT: String(port), PORT: String(await freePort()) });
    const out = await expectStartError(api, new RegExp(`port ${port}`));
    expect(out).toMatch(/Address already in use|another process/);
    // The redis-server it tried is not left behind.
    for (const m of out.matchAll(/started redis-server pid (\d+)/g)) expect(alive(Number(m[1]))).toBe(false);
  });

  it('an API port already in use: exits non-zero and stops the redis-server it started', async () => {
    const holder = createServer(() => {});
    listeners.push(holder);
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as { port: number }).port;
    const api = startApi({ KV_DATA_DIR: tempDir('apiport'), KV_MANAGED_REDIS_PORT: String(await freePort()), PORT: String(port) });
    const out = await expectStartError(api, /EADDRINUSE/);
    const started = [...out.matchAll(/started redis-server pid (\d+)/g)].map((m) => Number(m[1]));
    expect(started).toHaveLength(1);
    expect(alive(started[0]!)).toBe(false);
  });
});
