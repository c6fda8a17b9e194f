// The load driver of `npm run bench`: its own process (started by bench/run.ts with
// startDriver()), so the system under test never shares an event loop with the load it serves.
//
// A closed loop: `concurrency` workers, each sending its next request as soon as the previous
// answered, over keep-alive connections (httpClient: undici, one per worker) or, for raw Redis, one
// ioredis connection made as kvql makes its own (src/store/redis.ts, createRedis). Each
// request is timed with performance.now() (sub-millisecond), every sample kept, percentiles from
// the sorted samples. A warm-up runs first and is not counted; then the window: a request counts
// when it completes inside it, and throughput is those requests over the window's length.
// The first answer of every measurement is parsed and checked (a get must return the 100-byte
// value, a page 100 entries...), so a broken target cannot pass for a fast one; after that an
// HTTP status other than 200 or a GraphQL `errors` member counts as an error.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import { Pool } from 'undici';
import { createRedis } from '../src/store/redis.js';
import { BATCH, key, VALUE } from '../test/measure/dataset.js';
import { b64 } from './etcd.js';
import { rawOps } from './rawRedis.js';

export type System = 'kvql' | 'raw' | 'bare' | 'etcd';
export type Op = 'get' | 'put' | 'delete' | 'getMany' | 'batchPut' | 'range';

export interface Job {
  system: System;
  op: Op;
  concurrency: number;
  /** Keys per getMany, items per batchPut, page size of range; 1 for get and put. */
  items: number;
  seconds: number;
  warmupSeconds: number;
  /** get, getMany and range read keys 0 .. loadedKeys-1 of the dataset (test/measure/dataset.ts). */
  loadedKeys: number;
  /**
   * delete only: the keys deleteKey(from) .. deleteKey(to - 1), loaded into the target before
   * the job (bench/run.ts), each deleted once. A job that runs out of them ends its window
   * there (Figure.seconds), rather than go on to cheaper deletes of absent keys.
   */
  deletes?: { from: number; to: number };
  /** The API's /graphql URL, the baseline's or etcd's base URL, or the Redis URL. */
  target: string;
  /** kvql only: an Authorization header to send (`Bearer <token>`), for an API with tokens. */
  authorization?: string;
  /** Return the sorted latencies too (Figure.latencies), to pool several windows (poolFigures). */
  keepSamples?: boolean;
}

export interface Figure {
  opsPerSec: number;
  /** opsPerSec × items. */
  itemsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** Requests completed inside the window. */
  samples: number;
  /** The window's length when it ended early (a delete job that ran out of keys); else absent. */
  seconds?: number;
  errors: number;
  firstError?: string;
  /** Every latency of the window, sorted (ms): only when the job asked (keepSamples). */
  latencies?: number[];
}

const now = () => performance.now();
const rand = (n: number) => Math.floor(Math.random() * n);

/** A key nobody loaded: puts are a stream of writes to random keys, 16 bytes like the rest. */
const freshKey = () => key(100_000_000_000 + rand(899_999_999_999));

/**
 * The i-th key of the delete rows, 16 bytes like the rest, in the range fresh keys come from: i
 * times a multiplier near the golden ratio of that range and prime to it, mod the range, so
 * that no two i share a key and consecutive i land all over the index (a run of neighbours
 * would delete from one warm corner of it). A put's fresh key may happen to be one of them: it
 * is loaded again, then deleted, all the same.
 */
export const deleteKey = (i: number): string => key(100_000_000_000 + Number((BigInt(i) * 556_231_520_981n) % 900_000_000_000n));

/** Nearest-rank percentile of sorted samples. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface Target {
  /** One request; resolves to what the check reads. */
  call(): Promise<unknown>;
  /** Throws unless the answer is what the operation should return. */
  check(answer: unknown): void;
  close(): void;
}

function expect(ok: boolean, what: string, answer: unknown): void {
  if (!ok) throw new Error(`unexpected answer (${what}): ${JSON.stringify(answer).slice(0, 300)}`);
}

/**
 * A keep-alive HTTP client for JSON POSTs (undici's Pool, one connection per concurrent request,
 * no pipelining): `post` rejects unless the answer is 200, `send` resolves with any status (the
 * load experiment counts refusals). The generator shares the cores with the systems it measures,
 * so its own cost per request comes out of their throughput, and undici's costs less than
 * node:http's: 42.9 µs of the driver's CPU per kvql put against 68.0, at 32 clients (`npm run
 * bench:ab -- HEAD --op put --concurrency 32 --rounds 12 --seconds 1`, 2026-11-27).
 */
export function httpClient(base: string, sockets: number, extraHeaders: Record<string, string> = {}) {
  const url = new URL(base);
  const pool = new Pool(url.origin, { connections: sockets, pipelining: 1, headersTimeout: 60_000, bodyTimeout: 60_000 });
  const headers = { 'content-type': 'application/json', accept: 'application/json', ...extraHeaders };
  const send = async (path: string, body: string) => {
    const res = await pool.request({ path, method: 'POST', headers, body });
    return { status: res.statusCode, text: await res.body.text() };
  };
  const post = async (path: string, body: string) => {
    const { status, text } = await send(path, body);
    if (status !== 200) throw new Error(`HTTP ${status}: ${text.slice(0, 300)}`);
    return text;
  };
  return { post, send, close: () => void pool.destroy().catch(() => {}) };
}

const entryFields = 'key value version createdAt updatedAt';
/** The GraphQL documents the driver sends to kvql, per operation. */
export const GQL: Record<Op, string> = {
  get: `query($k:String!){ get(key:$k){ ${entryFields} } }`,
  getMany: `query($ks:[String!]!){ getMany(keys:$ks){ ${entryFields} } }`,
  put: 'mutation($k:String!,$v:String!){ put(key:$k, value:$v){ version } }',
  delete: 'mutation($k:String!){ delete(key:$k){ deleted } }',
  batchPut: 'mutation($i:[PutInput!]!){ batchPut(items:$i){ version } }',
  range: `query($s:String!,$n:Int!){ range(start:$s, first:$n){ edges { node { ${entryFields} } } pageInfo { hasNextPage endCursor } } }`,
};

/** Thrown instead of a request when a delete job has deleted every key loaded for it. */
class RanOut extends Error {}

/** The arguments of one request of `job`, fresh random keys each time. */
function args(job: Job) {
  const n = job.items;
  let nextDelete = job.deletes?.from ?? 0;
  return {
    deleteKey: () => {
      if (!job.deletes) throw new Error('a delete job needs the keys loaded for it (Job.deletes)');
      if (nextDelete >= job.deletes.to) throw new RanOut();
      return deleteKey(nextDelete++);
    },
    key: () => key(rand(job.loadedKeys)),
    keys: () => Array.from({ length: n }, () => key(rand(job.loadedKeys))),
    items: () => Array.from({ length: n }, () => ({ key: freshKey(), value: VALUE })),
    start: () => key(rand(Math.max(1, job.loadedKeys - n))),
  };
}

/**
 * Writes keys keyOf(from) .. keyOf(to - 1) with VALUE, BATCH a request, through a kvql API's
 * batchPut or the bare-Node baseline's /batchPut (the baselines' keyspace, which raw Redis's
 * writes use too): bench:ab's dataset for the other revision, and the keys of a delete job
 * (Job.deletes, keyOf deleteKey) as the bench, bench:ab and bench:profile load them.
 */
export async function loadThrough(system: 'kvql' | 'bare', target: string, from: number, to: number, keyOf: (i: number) => string): Promise<void> {
  const http = httpClient(target, 1);
  try {
    for (let i = from; i < to; i += BATCH) {
      const items = Array.from({ length: Math.min(BATCH, to - i) }, (_, j) => ({ key: keyOf(i + j), value: VALUE }));
      const text =
        system === 'kvql'
          ? await http.post(new URL(target).pathname, JSON.stringify({ query: GQL.batchPut, variables: { i: items } }))
          : await http.post('/batchPut', JSON.stringify({ items }));
      if (text.includes('"errors"')) throw new Error(`loading keys through ${target} failed: ${text.slice(0, 300)}`);
    }
  } finally {
    http.close();
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are checked field by field
type Json = Record<string, any>;
const isValue = (v: unknown) => v === VALUE;

function kvqlTarget(job: Job): Target {
  const http = httpClient(job.target, job.concurrency, job.authorization ? { authorization: job.authorization } : {});
  const a = args(job);
  const path = new URL(job.target).pathname;
  const variables: Record<Op, () => object> = {
    get: () => ({ k: a.key() }),
    getMany: () => ({ ks: a.keys() }),
    put: () => ({ k: freshKey(), v: VALUE }),
    delete: () => ({ k: a.deleteKey() }),
    batchPut: () => ({ i: a.items() }),
    range: () => ({ s: a.start(), n: job.items }),
  };
  return {
    async call() {
      const text = await http.post(path, JSON.stringify({ query: GQL[job.op], variables: variables[job.op]() }));
      if (text.includes('"errors"')) throw new Error(`GraphQL errors: ${text.slice(0, 300)}`);
      return text;
    },
    check(answer) {
      const d = (JSON.parse(answer as string) as Json).data as Json;
      const ok = {
        get: () => isValue(d.get?.value),
        getMany: () => d.getMany.length === job.items && d.getMany.every((e: Json | null) => isValue(e?.value)),
        put: () => d.put.version >= 1,
        delete: () => d.delete.deleted === true,
        batchPut: () => d.batchPut.length === job.items,
        range: () => d.range.edges.length === job.items && isValue(d.range.edges[0].node.value),
      }[job.op]();
      expect(ok, `kvql ${job.op}`, d);
    },
    close: http.close,
  };
}

function bareTarget(job: Job): Target {
  const http = httpClient(job.target, job.concurrency);
  const a = args(job);
  const body: Record<Op, () => object> = {
    get: () => ({ key: a.key() }),
    getMany: () => ({ keys: a.keys() }),
    put: () => ({ key: freshKey(), value: VALUE }),
    delete: () => ({ key: a.deleteKey() }),
    batchPut: () => ({ items: a.items() }),
    range: () => ({ start: a.start(), first: job.items }),
  };
  return {
    call: () => http.post(`/${job.op}`, JSON.stringify(body[job.op]())),
    check(answer) {
      const d = JSON.parse(answer as string) as Json;
      const ok = {
        get: () => isValue(d.value),
        getMany: () => d.length === job.items && d.every((e: Json | null) => isValue(e?.value)),
        put: () => d.version >= 1,
        delete: () => d.deleted === true,
        batchPut: () => d.length === job.items,
        range: () => d.length === job.items && isValue(d[0].value),
      }[job.op]();
      expect(ok, `bare Node ${job.op}`, d);
    },
    close: http.close,
  };
}

function etcdTarget(job: Job): Target {
  const http = httpClient(job.target, job.concurrency);
  const a = args(job);
  const value = b64(VALUE);
  const value64 = (v: unknown) => typeof v === 'string' && Buffer.from(v, 'base64').toString('utf8') === VALUE;
  const request: Record<Op, () => [string, object]> = {
    get: () => ['/v3/kv/range', { key: b64(a.key()) }],
    // etcd has no multi-get: a read-only transaction of one range per key.
    getMany: () => ['/v3/kv/txn', { success: a.keys().map((k) => ({ request_range: { key: b64(k) } })) }],
    put: () => ['/v3/kv/put', { key: b64(freshKey()), value }],
    delete: () => ['/v3/kv/deleterange', { key: b64(a.deleteKey()) }],
    batchPut: () => ['/v3/kv/txn', { success: a.items().map((i) => ({ request_put: { key: b64(i.key), value } })) }],
    // range_end "\0": every key from `key` on; limit: the page.
    range: () => ['/v3/kv/range', { key: b64(a.start()), range_end: 'AA==', limit: job.items }],
  };
  return {
    call() {
      const [path, body] = request[job.op]();
      return http.post(path, JSON.stringify(body));
    },
    check(answer) {
      const d = JSON.parse(answer as string) as Json;
      const ok = {
        get: () => value64(d.kvs?.[0]?.value),
        getMany: () => d.responses.length === job.items && d.responses.every((r: Json) => value64(r.response_range?.kvs?.[0]?.value)),
        put: () => Number(d.header?.revision) >= 1,
        delete: () => Number(d.deleted) === 1,
        batchPut: () => d.succeeded === true && d.responses.length === job.items,
        range: () => d.kvs.length === job.items && value64(d.kvs[0].value),
      }[job.op]();
      expect(ok, `etcd ${job.op}`, d);
    },
    close: http.close,
  };
}

async function rawTarget(job: Job): Promise<Target> {
  const redis: Redis = createRedis(job.target, { commandTimeoutMs: 60_000 });
  redis.on('error', () => {});
  await redis.connect();
  const ops = rawOps(redis);
  const a = args(job);
  const call: Record<Op, () => Promise<unknown>> = {
    get: () => ops.get(a.key()),
    getMany: () => ops.getMany(a.keys()),
    put: () => ops.put(freshKey(), VALUE),
    delete: () => ops.delete(a.deleteKey()),
    batchPut: () => ops.batchPut(a.items()),
    range: () => ops.range(a.start(), job.items),
  };
  return {
    call: call[job.op],
    check(answer) {
      const d = answer as Json;
      const ok = {
        get: () => isValue(d?.value),
        getMany: () => d.length === job.items && d.every((e: Json | null) => isValue(e?.value)),
        put: () => (answer as number) >= 1,
        delete: () => answer === true,
        batchPut: () => d.length === job.items,
        range: () => d.length === job.items && isValue(d[0].value),
      }[job.op]();
      expect(ok, `raw Redis ${job.op}`, d);
    },
    close: () => redis.disconnect(),
  };
}

/** Runs one measurement in this process. */
export async function measure(job: Job): Promise<Figure> {
  const target =
    job.system === 'raw' ? await rawTarget(job) : job.system === 'kvql' ? kvqlTarget(job) : job.system === 'bare' ? bareTarget(job) : etcdTarget(job);
  try {
    target.check(await target.call());
    const samples: number[] = [];
    let errors = 0;
    let firstError: string | undefined;
    const windowStart = now() + job.warmupSeconds * 1000;
    const windowEnd = windowStart + job.seconds * 1000;
    let ranOut = false;
    await Promise.all(
      Array.from({ length: job.concurrency }, async () => {
        while (now() < windowEnd && !ranOut) {
          const t0 = now();
          try {
            await target.call();
          } catch (err) {
            if (err instanceof RanOut) {
              ranOut = true;
              break;
            }
            errors++;
            firstError ??= err instanceof Error ? err.message : String(err);
            continue;
          }
          const t1 = now();
          if (t1 >= windowStart && t1 <= windowEnd) samples.push(t1 - t0);
        }
      }),
    );
    // Out of keys, the window ends as the last request in flight answers.
    const seconds = ranOut ? Math.min(job.seconds, (now() - windowStart) / 1000) : job.seconds;
    if (ranOut && seconds <= 0) throw new Error(`ran out of the ${job.deletes!.to - job.deletes!.from} keys loaded to delete before the window began`);
    // A window so short that no request completed in it would say nothing: refuse to report.
    if (samples.length === 0) throw new Error(`no request completed in the window (${errors} errors${firstError ? `: ${firstError}` : ''})`);
    samples.sort((x, y) => x - y);
    const figure = { ...figureOf(samples, seconds, job.items, errors, firstError), ...(ranOut ? { seconds: Number(seconds.toFixed(3)) } : {}) };
    return job.keepSamples ? { ...figure, latencies: samples } : figure;
  } finally {
    target.close();
  }
}

/** The figure of sorted latencies measured over `seconds` (in one window or several). */
function figureOf(sorted: readonly number[], seconds: number, items: number, errors: number, firstError: string | undefined): Figure {
  const opsPerSec = sorted.length / seconds;
  // Rounded for the report: 0.1 operation/s, 0.1 µs.
  const round = (x: number, digits: number) => Number(x.toFixed(digits));
  return {
    opsPerSec: round(opsPerSec, 1),
    itemsPerSec: round(opsPerSec * items, 1),
    p50Ms: round(percentile(sorted, 50), 4),
    p99Ms: round(percentile(sorted, 99), 4),
    meanMs: round(sorted.reduce((s, x) => s + x, 0) / sorted.length, 4),
    samples: sorted.length,
    errors,
    ...(firstError !== undefined ? { firstError } : {}),
  };
}

/**
 * One figure from several windows of the same measurement (each `seconds` long unless it ended
 * early, with its latencies kept): throughput over their total time, percentiles and mean over
 * all their latencies together, as if they were one window.
 */
export function poolFigures(figures: readonly Figure[], seconds: number, items: number): Figure {
  const all = figures.flatMap((f) => {
    if (!f.latencies) throw new Error('poolFigures needs the latencies of every window (keepSamples)');
    return f.latencies;
  });
  all.sort((x, y) => x - y);
  const errors = figures.reduce((n, f) => n + f.errors, 0);
  const total = figures.reduce((sum, f) => sum + (f.seconds ?? seconds), 0);
  return figureOf(all, total, items, errors, figures.find((f) => f.firstError !== undefined)?.firstError);
}

/**
 * `job` as `n` jobs that run at once, one per driver process (`npm run bench -- --drivers N`):
 * its clients dealt out as evenly as they go (never a job of none, so at most `concurrency`
 * jobs), and a delete job's keys cut into one run of them per job. Each keeps its latencies, for
 * mergeConcurrent.
 */
export function splitJob(job: Job, n: number): Job[] {
  const parts = Math.max(1, Math.min(n, job.concurrency));
  const jobs: Job[] = [];
  let from = job.deletes?.from ?? 0;
  const keys = job.deletes ? job.deletes.to - job.deletes.from : 0;
  for (let i = 0; i < parts; i++) {
    const concurrency = Math.floor(job.concurrency / parts) + (i < job.concurrency % parts ? 1 : 0);
    const part: Job = { ...job, concurrency, keepSamples: true };
    if (job.deletes) {
      const count = Math.floor(keys / parts) + (i < keys % parts ? 1 : 0);
      part.deletes = { from, to: from + count };
      from += count;
    }
    jobs.push(part);
  }
  return jobs;
}

/**
 * One figure from windows that ran at the same time (splitJob's, each with its latencies): their
 * throughputs added, percentiles and mean over all their latencies together. A window that ended
 * early (out of its delete keys) counts at its own rate, and the figure's `seconds` is the
 * shortest such window.
 */
export function mergeConcurrent(figures: readonly Figure[], items: number, keepSamples = false): Figure {
  const all = figures.flatMap((f) => {
    if (!f.latencies) throw new Error('mergeConcurrent needs the latencies of every window (keepSamples)');
    return f.latencies;
  });
  all.sort((x, y) => x - y);
  const opsPerSec = figures.reduce((sum, f) => sum + f.opsPerSec, 0);
  const ended = figures.filter((f) => f.seconds !== undefined).map((f) => f.seconds!);
  const merged = figureOf(all, all.length / opsPerSec, items, figures.reduce((n, f) => n + f.errors, 0), figures.find((f) => f.firstError !== undefined)?.firstError);
  return { ...merged, ...(ended.length > 0 ? { seconds: Math.min(...ended) } : {}), ...(keepSamples ? { latencies: all } : {}) };
}

/** Runs `job` split over `drivers` (splitJob), all at once, as one figure (mergeConcurrent). */
export async function runSplit(drivers: readonly Driver[], job: Job): Promise<Figure> {
  if (drivers.length === 1) return drivers[0]!.run(job);
  const jobs = splitJob(job, drivers.length);
  return mergeConcurrent(await Promise.all(jobs.map((j, i) => drivers[i]!.run(j))), job.items, job.keepSamples);
}

// --- The parent's side: the driver as a child process, one measurement at a time over IPC.

type Reply = { id: number; figure?: Figure; error?: string };

export interface Driver {
  /** The driver process's pid (bench:ab reads its CPU time). */
  readonly pid: number;
  run(job: Job): Promise<Figure>;
  stop(): Promise<void>;
}

const REPO = fileURLToPath(new URL('../', import.meta.url));

export async function startDriver(): Promise<Driver> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [], {
    cwd: REPO,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pending = new Map<number, { resolve: (f: Figure) => void; reject: (e: Error) => void }>();
  child.on('message', (m: Reply) => {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.figure) p?.resolve(m.figure);
    else p?.reject(new Error(m.error ?? 'the driver failed'));
  });
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`the driver exited (${child.exitCode ?? child.signalCode})`));
    pending.clear();
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve()); // its "ready"
    void exited.then(() => reject(new Error('the driver exited before it was ready')));
  });
  let seq = 0;
  return {
    pid: child.pid!,
    run(job) {
      const id = ++seq;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ id, job });
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const force = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(force);
      }
    },
  };
}

// --- The child's side.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href && process.send) {
  process.on('message', (m: { id: number; job: Job }) => {
    measure(m.job).then(
      (figure) => process.send!({ id: m.id, figure } satisfies Reply),
      (err: unknown) => process.send!({ id: m.id, error: err instanceof Error ? err.message : String(err) } satisfies Reply),
    );
  });
  process.on('disconnect', () => process.exit(0)); // the parent is gone
  process.send({ ready: true });
}
