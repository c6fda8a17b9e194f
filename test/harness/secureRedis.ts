// Real redis-server processes for the tests of the path to Redis: one whose `default` user is
// off and whose users come from an ACL file built from users.acl (redisAcl.test.ts), and one
// that speaks TLS only (redisTls.test.ts). Each from a copy of the repo's redis.conf, in its own
// temp directory, on a free 127.0.0.1 port; stop() kills it (only it) and removes the directory.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis, type RedisOptions } from 'ioredis';
import { expect } from 'vitest';
import { askRedis, REDIS_CONF, waitReady } from '../../src/managedRedis.js';
import { sha256Hex, usersAclFile } from '../../src/redisAcl.js';
import { post } from '../experiments/tools.js';
import { freePort } from './redisServer.js';
import { startArgs } from './startCommand.js';
import { until } from './until.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SpawnedRedis {
  port: number;
  dir: string;
  child: ChildProcess;
  /** The end of its log, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts redis-server from a copy of redis.conf with `args`, and waits until `ready` (a PING with
 * the right credentials or TLS options) says it answers.
 */
export async function spawnRedis(name: string, args: (dir: string, port: number) => string[], ready: (port: number) => Promise<boolean>): Promise<SpawnedRedis> {
  const dir = mkdtempSync(join(tmpdir(), `kvql-${name}-`));
  const conf = join(dir, 'redis.conf');
  copyFileSync(REDIS_CONF, conf);
  const port = await freePort();
  const logFile = join(dir, 'redis.log');
  const child = spawn('redis-server', [conf, '--dir', dir, '--logfile', logFile, ...args(dir, port)], { stdio: 'ignore' });
  const log = () => {
    try {
      return readFileSync(logFile, 'utf8').split('\n').slice(-8).join('\n');
    } catch {
      return '(no log)';
    }
  };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) {
      const why = log();
      await stop();
      throw new Error(`redis-server exited with ${child.exitCode}:\n${why}`);
    }
    if (await ready(port).catch(() => false)) break;
    if (Date.now() > deadline) {
      const why = log();
      await stop();
      throw new Error(`redis-server on port ${port} not ready within 20 s:\n${why}`);
    }
    await sleep(100);
  }
  return { port, dir, child, log, stop };
}

/** One command on a short-lived connection; rejects with Redis's error. */
export async function once<T>(opts: RedisOptions, run: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false, connectTimeout: 3000, ...opts });
  let emitted: Error | undefined;
  r.on('error', (err: Error) => (emitted ??= err));
  try {
    await r.connect();
    return await run(r);
  } catch (err) {
    // A refused AUTH closes the connection; the emitted error says why.
    throw emitted && /^(WRONGPASS|NOAUTH)/.test(emitted.message) ? emitted : err;
  } finally {
    r.disconnect();
  }
}

export interface AclRedis extends SpawnedRedis {
  /** redis://kvql:<password>@127.0.0.1:<port> */
  kvqlUrl: string;
  kvqlPassword: string;
  /** An ACL user `admin` with every permission, for the test's own checks. */
  admin: RedisOptions;
}

/**
 * A Redis whose users are kvql (users.acl, for `prefix`), `admin` (everything) and a `default`
 * user that is off: a connection without credentials can do nothing.
 */
export async function startAclRedis(prefix: string, kvqlPassword: string, adminPassword: string, extra: string[] = []): Promise<AclRedis> {
  const admin = { username: 'admin', password: adminPassword };
  const server = await spawnRedis(
    'acl',
    (dir, port) => {
      const file = join(dir, 'users.acl');
      writeFileSync(file, `${usersAclFile({ prefix, password: kvqlPassword })}user admin on #${sha256Hex(adminPassword)} ~* &* +@all\n`, { mode: 0o600 });
      return ['--port', String(port), '--aclfile', file, ...extra];
    },
    async (port) => (await once({ port, ...admin }, (r) => r.ping())) === 'PONG',
  );
  return { ...server, kvqlUrl: `redis://kvql:${kvqlPassword}@127.0.0.1:${server.port}`, kvqlPassword, admin: { port: server.port, ...admin } };
}

export function opensslOnPath(): boolean {
  return spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
}

/** Runs openssl; throws with its output when it fails. */
export function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed:\n${r.stderr}`);
}

export interface Pki {
  dir: string;
  /** The CA that signed the server's and the client's certificates. */
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Another CA, which signed nothing here. */
  otherCa: string;
  cleanup(): void;
}

/** A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, by the openssl CLI. */
export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'kvql-pki-'));
  const ca = (name: string) => {
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=kvql test ${name}`, '-keyout', `${name}.key`, '-out', `${name}.crt`], dir);
  };
  const leaf = (name: string, ext: string) => {
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`], dir);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`], dir);
  };
  ca('ca');
  ca('other-ca');
  leaf('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'extendedKeyUsage=clientAuth\n');
  const f = (n: string) => join(dir, n);
  return {
    dir,
    ca: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    otherCa: f('other-ca.crt'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A Redis that speaks TLS only (port 0), on tls-port; `authClients`: it asks for a client certificate. */
export async function startTlsRedis(pki: Pki, authClients: boolean): Promise<SpawnedRedis> {
  return spawnRedis(
    'tls',
    (_dir, port) => [
      '--port', '0',
      '--tls-port', String(port),
      '--tls-cert-file', pki.serverCert,
      '--tls-key-file', pki.serverKey,
      '--tls-ca-cert-file', pki.ca,
      '--tls-auth-clients', authClients ? 'yes' : 'no',
    ],
    async (port) =>
      (await once(
        { port, tls: { ca: readFileSync(pki.ca), ...(authClients ? { cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) } : {}) } },
        (r) => r.ping(),
      )) === 'PONG',
  );
}

/** What a test needs to reach a TLS-only Redis or Sentinel: the CA, and a client certificate when it asks for one. */
export interface TlsProbe {
  ca: string;
  clientCert?: string;
  clientKey?: string;
}

/** askRedis (src/managedRedis.ts), over TLS with these files when `tls` is given. */
export function askNode<T>(port: number, ask: (client: Redis) => Promise<T>, ms: number, tls?: TlsProbe): Promise<T> {
  if (!tls) return askRedis(port, ask, ms);
  const client = tls.clientCert && tls.clientKey ? { cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey) } : {};
  return askRedis(port, ask, ms, undefined, { ca: readFileSync(tls.ca), ...client });
}

/** waitReady (src/managedRedis.ts), over TLS when `tls` is given: until PING answers PONG (past LOADING). */
export async function waitNodeReady(port: number, ms: number, failed: () => string | undefined, tls?: TlsProbe): Promise<void> {
  if (!tls) return waitReady(port, ms, failed);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const why = failed();
    if (why !== undefined) throw new Error(why);
    if ((await askNode(port, (c) => c.ping(), 500, tls).catch(() => undefined)) === 'PONG') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(failed() ?? `redis-server on TLS port ${port} did not become ready within ${ms} ms`);
}

/**
 * Starts kvql (`src/main.ts`, its own process, none of this process's REDIS_ and KV_ settings)
 * with `env`, which points it at a TLS Redis with a CA that did not sign its certificates.
 * kvql waits for Redis (it may still be starting): within a bounded look it must not serve,
 * and its log must say what is wrong. Ends the process (by its pid) either way.
 */
export async function expectKvqlNeverReady(env: Record<string, string>): Promise<void> {
  const port = await freePort();
  const inherited: Record<string, string | undefined> = { ...process.env };
  for (const name of Object.keys(inherited)) if (/^(REDIS_|KV_|PORT$|HOST$)/.test(name)) delete inherited[name];
  const child = spawn(process.execPath, startArgs(), {
    cwd: REPO,
    env: { ...inherited, HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-65_536)));
  child.stderr!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-65_536)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await until(20_000, 'kvql logs a certificate problem', () => (/self[- ]signed|unable to (verify|get)/i.test(out) ? true : undefined), 100).catch((err: Error) => {
      throw new Error(`${err.message}; its output:\n${out}`);
    });
    expect(child.exitCode).toBeNull();
    const ready = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(2000) }).then(
      (r) => r.status,
      () => 'no answer',
    );
    expect(ready).toBe('no answer');
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }
}

/** A GraphQL operation's data, through the API at `url`; fails the test on any error. */
export async function gqlData(url: string, query: string, variables: Record<string, unknown>): Promise<any> {
  const { body, transport } = await post(url, query, variables, 10_000);
  expect(transport, transport).toBeUndefined();
  expect(body?.errors, JSON.stringify(body?.errors)).toBeUndefined();
  return body!.data;
}
