// etcd, the peer `npm run bench` compares kvql with: a single member started in a temp directory
// on loopback free ports, driven through its HTTP/JSON gateway (/v3/kv/...; keys and values
// base64). etcd fsyncs its write-ahead log before it acknowledges a write, as kvql's Redis does
// with appendfsync always.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../test/harness/redisServer.js';
import { key, VALUE } from '../test/measure/dataset.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

/** etcd's version ("3.4.23"), or undefined when no etcd binary is on PATH. */
export function etcdVersion(): string | undefined {
  const r = spawnSync('etcd', ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return /etcd Version:\s*(\S+)/.exec(r.stdout)?.[1] ?? r.stdout.split('\n')[0]!.trim();
}

export interface Etcd {
  /** http://127.0.0.1:<client port> */
  base: string;
  pid: number;
  stop(): Promise<void>;
}

/** POST a JSON body to the gateway; the parsed answer, or an error with etcd's message. */
export async function etcdPost<T>(base: string, path: string, body: unknown): Promise<T> {
  const res = await fetch(`${base}${path}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`etcd ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text) as T;
}

/**
 * Starts etcd, or undefined when it is not installed. `maxTxnOps`: operations one transaction
 * may hold (etcd's default is 128; the benchmark's 1,000-item batches need 1,000).
 */
export async function startEtcd(maxTxnOps = 1000): Promise<Etcd | undefined> {
  if (etcdVersion() === undefined) return undefined;
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'kvql-etcd-'));
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const client = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    // prettier-ignore
    const child: ChildProcess = spawn('etcd', [
      '--name', 'bench', '--data-dir', join(dir, 'data'),
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `bench=${peer}`, '--initial-cluster-state', 'new',
      '--max-txn-ops', String(maxTxnOps),
      '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'error',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let out = '';
    child.stderr!.on('data', (c: Buffer) => (out = (out + c.toString()).slice(-16_384)));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const running = () => child.exitCode === null && child.signalCode === null;
    const stop = async () => {
      if (running()) {
        child.kill('SIGTERM');
        const force = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(force);
      }
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      const t0 = performance.now();
      for (;;) {
        if (!running()) throw new Error(`etcd exited (${child.exitCode ?? child.signalCode}):\n${out}`);
        if (performance.now() - t0 > 30_000) throw new Error(`etcd did not answer /health within 30 s:\n${out}`);
        const healthy = await fetch(`${client}/health`, { signal: AbortSignal.timeout(2000) }).then(
          async (r) => r.ok && ((await r.json()) as { health?: string }).health === 'true',
          () => false,
        );
        if (healthy) break;
        await sleep(100);
      }
    } catch (err) {
      await stop();
      lastError = err;
      if (/address already in use/.test(out)) continue;
      throw err;
    }
    return { base: client, pid: child.pid!, stop };
  }
  throw lastError;
}

/** Puts keys [from, to) of the benchmark's dataset (key(i), or keyOf(i)), `batch` per transaction, a few at once. */
export async function etcdLoad(base: string, from: number, to: number, keyOf: (i: number) => string = key, batch = 1000, concurrency = 4): Promise<void> {
  const value = b64(VALUE);
  let next = from;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < to) {
        const start = next;
        const end = (next = Math.min(to, next + batch));
        const success = [];
        for (let i = start; i < end; i++) success.push({ request_put: { key: b64(keyOf(i)), value } });
        await etcdPost(base, '/v3/kv/txn', { success });
      }
    }),
  );
}
