// Failure behaviour through GraphQL: a Redis crash (kill -9) and restart, an outage and a hang,
// a full Redis (maxmemory), compare-and-set races, and the masking of unexpected errors.
// The crash and capacity tests run on redis-servers of their own; the rest on the shared one.
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestApp,
  feedSequencesOf,
  keysInDistinctPartitions,
  keysInOnePartition,
  ON_CLUSTER,
  writtenOf,
  type GqlResult,
  type TestApp,
} from '../harness/app.js';
import { startTestRedis, type TestRedis } from '../harness/redisServer.js';

const PUT = `mutation($key: String!, $value: String!, $expectedVersion: Int) {
  put(key: $key, value: $value, expectedVersion: $expectedVersion) { key value version }
}`;
const GET = `query($key: String!) { get(key: $key) { key value version } }`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key value version } }`;
const DELETE = `mutation($key: String!, $expectedVersion: Int) {
  delete(key: $key, expectedVersion: $expectedVersion) { deleted previous { key value version } }
}`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key value version } }`;
const RANGE = `query($prefix: String, $first: Int, $after: String) {
  range(prefix: $prefix, first: $first, after: $after) {
    totalCount edges { node { key value version } } pageInfo { hasNextPage endCursor }
  }
}`;
const DELETE_RANGE = `mutation($prefix: String, $limit: Int) { deleteRange(prefix: $prefix, limit: $limit) { deleted hasMore } }`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a failed write says when it may have been applied. */
const MAYBE_APPLIED = /may or may not have been applied/;

/** Well under the 3 s a request may take at worst (2 s command timeout plus slack). */
const BOUND_MS = 2800;
/**
 * The worst case over HTTP while Redis hangs: one command timeout, plus slack. (With ioredis's
 * auto-pipelining, which kvql no longer uses, a command that arrived while a pipeline waited was
 * sent only when that one had timed out, and took twice as long.)
 */
const HANG_BOUND_MS = BOUND_MS;

interface Timed {
  r: GqlResult;
  ms: number;
}

async function timed(app: TestApp, query: string, variables?: Record<string, unknown>): Promise<Timed> {
  const t0 = performance.now();
  const r = await app.gql(query, variables);
  return { r, ms: performance.now() - t0 };
}

function codeOf(r: GqlResult): string | undefined {
  return r.errors?.[0]?.extensions?.code as string | undefined;
}

async function http(app: TestApp, path: string): Promise<{ status: number; body: string; type: string | null; ms: number }> {
  const t0 = performance.now();
  const res = await app.yoga.fetch(`http://kvql.test${path}`);
  const body = await res.text();
  return { status: res.status, body, type: res.headers.get('content-type'), ms: performance.now() - t0 };
}

/** Polls /ready until it answers 200; bounded. Returns how long it took. */
async function waitUntilReady(app: TestApp, maxMs = 15_000): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < maxMs) {
    if ((await http(app, '/ready')).status === 200) return performance.now() - t0;
    await sleep(50);
  }
  throw new Error(`/ready did not answer 200 within ${maxMs} ms`);
}

/** Reads many keys through getMany in chunks; a map from key to entry (absent keys: null). */
async function readAll(app: TestApp, keys: string[]): Promise<Map<string, { value: string; version: number } | null>> {
  const out = new Map<string, { value: string; version: number } | null>();
  for (let i = 0; i < keys.length; i += 500) {
    const chunk = keys.slice(i, i + 500);
    const r = await app.gql(GET_MANY, { keys: chunk });
    expect(r.errors, 'getMany').toBeUndefined();
    chunk.forEach((k, j) => out.set(k, r.data!.getMany[j]));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Crash, outage, hang
// ---------------------------------------------------------------------------------------------

/** One key that a writer puts again and again (plain or compare-and-set). */
interface PutLedger {
  key: string;
  acked: { version: number; value: string } | null;
  /** Failed attempts since the last acknowledgement: each may or may not have been applied. */
  unknown: number;
  /** Whether one of those failures told the client its outcome was unknown. */
  toldUnknown: boolean;
}

/** One batch of keys of its own. */
interface BatchLedger {
  keys: string[];
  value: string;
  acked: boolean;
  /** The error message if it failed. */
  failure?: string;
}

/** A key put once then deleted, never written again. */
interface DeleteLedger {
  key: string;
  putAcked: boolean;
  deleteAttempts: number;
  deleteAcked: boolean;
}

/** A key put and deleted in turn: the last acknowledged operation and the failed attempts of the next. */
interface CycleLedger {
  key: string;
  last: 'put' | 'delete' | null;
  lastValue: string;
  unknown: number;
}

interface Failure {
  op: string;
  code: string | undefined;
  message: string | undefined;
  ms: number;
}

class Load {
  readonly puts: PutLedger[] = [];
  readonly cas: PutLedger[] = [];
  readonly batches: BatchLedger[] = [];
  readonly deletes: DeleteLedger[] = [];
  readonly cycles: CycleLedger[] = [];
  readonly failures: Failure[] = [];
  readonly conflicts: { key: string; unknownBefore: number }[] = [];
  readonly slow: { op: string; ms: number }[] = [];
  acks = 0;
  private running = false;
  private seq = 0;

  constructor(
    private readonly app: TestApp,
    writers: number,
  ) {
    for (let w = 0; w < writers; w++) {
      this.puts.push({ key: `put:${w}`, acked: null, unknown: 0, toldUnknown: false });
      this.cas.push({ key: `cas:${w}`, acked: null, unknown: 0, toldUnknown: false });
      this.cycles.push({ key: `cycle:${w}`, last: null, lastValue: '', unknown: 0 });
    }
  }

  /** Runs every writer until stop() is awaited. */
  start(): () => Promise<void> {
    this.running = true;
    const loops = [
      ...this.puts.map((l) => this.putLoop(l)),
      ...this.cas.map((l) => this.casLoop(l)),
      ...this.cycles.map((l) => this.cycleLoop(l)),
      ...this.puts.map((_, w) => this.batchLoop(w)),
      ...this.puts.map((_, w) => this.deleteLoop(w)),
    ];
    return async () => {
      this.running = false;
      await Promise.all(loops);
    };
  }

  private async send(op: string, query: string, variables: Record<string, unknown>): Promise<GqlResult> {
    const { r, ms } = await timed(this.app, query, variables);
    if (ms > BOUND_MS) this.slow.push({ op, ms });
    if (r.errors === undefined) this.acks++;
    else if (codeOf(r) !== 'VERSION_CONFLICT') {
      this.failures.push({ op, code: codeOf(r), message: r.errors[0]?.message, ms });
      await sleep(5); // a failed request answers at once: do not spin
    }
    return r;
  }

  private async putLoop(l: PutLedger): Promise<void> {
    for (let i = 0; this.running && i < 100_000; ) {
      const value = `${l.key}#${i}`;
      const r = await this.send('put', PUT, { key: l.key, value });
      if (r.errors) {
        l.unknown++;
        l.toldUnknown ||= MAYBE_APPLIED.test(r.errors[0]!.message);
        continue;
      }
      l.acked = { version: r.data!.put.version, value };
      l.unknown = 0;
      l.toldUnknown = false;
      i++;
    }
  }

  private async casLoop(l: PutLedger): Promise<void> {
    let expected = 0;
    for (let i = 0; this.running && i < 100_000; ) {
      const value = `${l.key}#${i}`;
      const r = await this.send('casPut', PUT, { key: l.key, value, expectedVersion: expected });
      if (codeOf(r) === 'VERSION_CONFLICT') {
        // Only a write whose outcome was unknown can have moved the version under us.
        this.conflicts.push({ key: l.key, unknownBefore: l.unknown });
        expected = r.errors![0]!.extensions!.actualVersion as number;
        continue;
      }
      if (r.errors) {
        l.unknown++;
        l.toldUnknown ||= MAYBE_APPLIED.test(r.errors[0]!.message);
        continue;
      }
      expect(r.data!.put.version).toBe(expected + 1);
      l.acked = { version: r.data!.put.version, value };
      l.unknown = 0;
      l.toldUnknown = false;
      expected = r.data!.put.version;
      i++;
    }
  }

  private async batchLoop(w: number): Promise<void> {
    for (let i = 0; this.running && i < 100_000; i++) {
      const id = this.seq++;
      const b: BatchLedger = { keys: [0, 1, 2, 3, 4].map((j) => `batch:${w}:${id}:${j}`), value: `b${id}`, acked: false };
      this.batches.push(b);
      const r = await this.send('batchPut', BATCH, { items: b.keys.map((key) => ({ key, value: b.value })) });
      if (!r.errors) {
        expect(r.data!.batchPut.map((e: { version: number }) => e.version)).toEqual([1, 1, 1, 1, 1]);
        b.acked = true;
      } else {
        b.failure = r.errors[0]!.message;
      }
    }
  }

  private async deleteLoop(w: number): Promise<void> {
    for (let i = 0; this.running && i < 100_000; i++) {
      const d: DeleteLedger = { key: `del:${w}:${this.seq++}`, putAcked: false, deleteAttempts: 0, deleteAcked: false };
      this.deletes.push(d);
      for (let failed = 0; this.running && !d.putAcked; failed++) {
        const r = await this.send('put', PUT, { key: d.key, value: 'doomed', expectedVersion: 0 });
        // A retried create may find its own earlier, unacknowledged attempt applied.
        if (codeOf(r) === 'VERSION_CONFLICT') expect(failed, `${d.key}: conflict on a first create`).toBeGreaterThan(0);
        if (!r.errors || codeOf(r) === 'VERSION_CONFLICT') d.putAcked = true;
      }
      while (this.running && d.putAcked && !d.deleteAcked) {
        d.deleteAttempts++;
        const r = await this.send('delete', DELETE, { key: d.key });
        if (!r.errors) d.deleteAcked = true;
      }
    }
  }

  private async cycleLoop(l: CycleLedger): Promise<void> {
    for (let i = 0; this.running && i < 100_000; ) {
      const op = l.last === 'put' ? 'delete' : 'put';
      const value = `${l.key}#${i}`;
      const r = op === 'put' ? await this.send('put', PUT, { key: l.key, value }) : await this.send('delete', DELETE, { key: l.key });
      if (r.errors) {
        l.unknown++;
        continue;
      }
      if (op === 'put') {
        // A put after a delete starts again at version 1, unless an unacknowledged put landed.
        if (l.unknown === 0) expect(r.data!.put.version).toBe(1);
        l.lastValue = value;
      } else if (l.unknown === 0) {
        expect(r.data!.delete.deleted).toBe(true);
      }
      l.last = op;
      l.unknown = 0;
      i++;
    }
  }

  /** Every acknowledged write is in the store, no batch is partly applied. */
  async verify(): Promise<void> {
    const app = this.app;
    const putKeys = [...this.puts, ...this.cas];
    const state = await readAll(app, [
      ...putKeys.map((l) => l.key),
      ...this.cycles.map((l) => l.key),
      ...this.batches.flatMap((b) => b.keys),
      ...this.deletes.map((d) => d.key),
    ]);
    for (const l of putKeys) {
      const e = state.get(l.key)!;
      // A write that was applied but not acknowledged must have told its client so.
      if (e && e.version > (l.acked?.version ?? 0)) expect(l.toldUnknown, `${l.key}: applied, unacknowledged`).toBe(true);
      if (!l.acked) {
        if (e) expect(e.version, l.key).toBeLessThanOrEqual(l.unknown);
        continue;
      }
      expect(e, `${l.key} was acknowledged at version ${l.acked.version}`).not.toBeNull();
      expect(e!.version, l.key).toBeGreaterThanOrEqual(l.acked.version);
      expect(e!.version, l.key).toBeLessThanOrEqual(l.acked.version + l.unknown);
      if (e!.version === l.acked.version) expect(e!.value, l.key).toBe(l.acked.value);
    }
    for (const b of this.batches) {
      const entries = b.keys.map((k) => state.get(k));
      const present = entries.filter((e) => e != null).length;
      expect([0, b.keys.length], `batch ${b.value}: ${present} of ${b.keys.length} keys present`).toContain(present);
      if (b.acked) expect(present, `acknowledged batch ${b.value}`).toBe(b.keys.length);
      else if (present > 0) expect(b.failure, `batch ${b.value}: applied, unacknowledged`).toMatch(MAYBE_APPLIED);
      for (const e of entries) if (e) expect(e).toMatchObject({ value: b.value, version: 1 });
    }
    for (const d of this.deletes) {
      const e = state.get(d.key);
      if (d.deleteAcked) expect(e, `${d.key}: acknowledged delete`).toBeNull();
      else if (d.putAcked && d.deleteAttempts === 0) expect(e, `${d.key}: acknowledged put`).toMatchObject({ version: 1 });
    }
    for (const l of this.cycles) {
      const e = state.get(l.key);
      if (l.unknown > 0) continue; // the next operation may or may not have been applied
      if (l.last === 'delete') expect(e, `${l.key}: acknowledged delete`).toBeNull();
      if (l.last === 'put') expect(e, `${l.key}: acknowledged put`).toEqual({ key: l.key, value: l.lastValue, version: 1 });
    }
  }
}

describe('a Redis crash, an outage and a hang', () => {
  let server: TestRedis;
  let app: TestApp;
  const logged: unknown[] = [];

  beforeAll(async () => {
    // proto-max-bulk-len: lets one test make Redis close the connection mid-pipeline.
    server = await startTestRedis(['--proto-max-bulk-len', '1mb']);
    app = await createTestApp('crash', { redisUrl: server.url, errors: logged });
  });
  afterAll(async () => {
    await app?.close();
    await server?.stop();
  });
  // A failed test must not leave the next one a dead or hung Redis.
  let alive = true;
  const crash = async () => {
    alive = false;
    await server.kill9();
  };
  const revive = async () => {
    await server.restart();
    alive = true;
  };
  afterEach(async () => {
    server.resume?.();
    if (!alive) await revive();
  });

  it('keeps every acknowledged write across kill -9 and a restart, and recovers by itself', async () => {
    const load = new Load(app, 3);
    const stop = load.start();
    // Load until a good number of writes is acknowledged (bounded), then crash mid-stream.
    for (let i = 0; i < 100 && load.acks < 300; i++) await sleep(20);
    const acksBeforeCrash = load.acks;
    expect(acksBeforeCrash).toBeGreaterThan(0);
    await crash();
    await sleep(600); // the writers go on, against a dead Redis
    await stop();

    expect(load.slow, 'requests that took longer than the bound').toEqual([]);
    expect(load.failures.length, 'requests failed during the outage').toBeGreaterThan(0);
    const codes = new Set(load.failures.map((f) => f.code));
    expect([...codes], JSON.stringify(load.failures.filter((f) => f.code !== 'STORE_UNAVAILABLE').slice(0, 3))).toEqual([
      'STORE_UNAVAILABLE',
    ]);
    // Nothing was masked as an internal error (and so logged).
    expect(logged, 'masked (internal) errors').toEqual([]);

    await revive();
    await waitUntilReady(app);
    await load.verify();

    // The same app, the same ioredis client: new writes and reads work after the restart.
    const failuresBefore = load.failures.length;
    const stop2 = load.start();
    const acksAfter = load.acks;
    for (let i = 0; i < 100 && load.acks < acksAfter + 200; i++) await sleep(20);
    await stop2();
    expect(load.acks - acksAfter).toBeGreaterThanOrEqual(200);
    expect(load.failures.slice(failuresBefore), 'failures after the restart').toEqual([]);
    // A compare-and-set conflict is only allowed where an earlier write's outcome was unknown.
    for (const c of load.conflicts) expect(c.unknownBefore, c.key).toBeGreaterThan(0);
    await load.verify();
    const g = await app.gql(GET, { key: load.puts[0]!.key });
    expect(g.data!.get).toEqual({ key: load.puts[0]!.key, ...load.puts[0]!.acked });
    expect(logged).toEqual([]);
  });

  it('answers every operation quickly with STORE_UNAVAILABLE while Redis is down; /ready follows Redis, /health does not', async () => {
    expect((await app.gql(PUT, { key: 'down:a', value: 'before' })).errors).toBeUndefined();
    expect((await http(app, '/ready')).status).toBe(200);
    await crash();
    const ops: [string, string, Record<string, unknown>][] = [
      ['get', GET, { key: 'down:a' }],
      ['getMany', GET_MANY, { keys: ['down:a', 'down:b', 'down:c'] }],
      ['range', RANGE, { prefix: 'down:', first: 10 }],
      ['put', PUT, { key: 'down:a', value: 'during' }],
      ['casPut', PUT, { key: 'down:a', value: 'during', expectedVersion: 1 }],
      ['batchPut', BATCH, { items: [{ key: 'down:b', value: 'x' }, { key: 'down:c', value: 'y' }] }],
      ['delete', DELETE, { key: 'down:a' }],
      ['deleteRange', DELETE_RANGE, { prefix: 'down:', limit: 10 }],
    ];
    for (let round = 0; round < 2; round++) {
      // Sequentially, then all at once.
      const results =
        round === 0
          ? await (async () => {
              const out: Timed[] = [];
              for (const [, q, v] of ops) out.push(await timed(app, q, v));
              return out;
            })()
          : await Promise.all(ops.map(([, q, v]) => timed(app, q, v)));
      results.forEach(({ r, ms }, i) => {
        const name = ops[i]![0];
        expect(ms, name).toBeLessThan(BOUND_MS);
        const field = name === 'casPut' ? 'put' : name;
        expect(r.data?.[field] ?? null, name).toBeNull();
        expect(r.errors, name).toHaveLength(1);
        expect(codeOf(r), `${name}: ${r.errors?.[0]?.message}`).toBe('STORE_UNAVAILABLE');
        expect(r.errors![0]!.message, name).toMatch(/unavailable/);
      });
    }

    const ready = await http(app, '/ready');
    expect(ready.status).toBe(503);
    expect(ready.ms).toBeLessThan(BOUND_MS);
    expect(ready.type).toMatch(/json/);
    expect(JSON.parse(ready.body)).toMatchObject({ status: 'unavailable' });
    const health = await http(app, '/health');
    expect(health.status).toBe(200);
    await revive();
    expect(await waitUntilReady(app)).toBeLessThan(10_000);
    expect((await http(app, '/health')).status).toBe(200);
    const ready2 = await http(app, '/ready');
    expect(ready2.status).toBe(200);
    expect(JSON.parse(ready2.body)).toMatchObject({ status: 'ready' });
    // Nothing written during the outage; everything works again.
    expect((await app.gql(GET, { key: 'down:a' })).data!.get).toMatchObject({ value: 'before', version: 1 });
    expect((await app.gql(GET_MANY, { keys: ['down:b', 'down:c'] })).data!.getMany).toEqual([null, null]);
    expect((await app.gql(PUT, { key: 'down:a', value: 'after', expectedVersion: 1 })).data!.put.version).toBe(2);
    expect((await app.gql(BATCH, { items: [{ key: 'down:b', value: 'x' }] })).data!.batchPut).toHaveLength(1);
    expect((await app.gql(RANGE, { prefix: 'down:', first: 10 })).data!.range.totalCount).toBe(2);
    expect((await app.gql(DELETE_RANGE, { prefix: 'down:', limit: 10 })).data!.deleteRange).toEqual({ deleted: 2, hasMore: false });
    expect(logged).toEqual([]);
  });

  it('bounds every request by the command timeout when Redis hangs (SIGSTOP), and recovers', async () => {
    if (!server.pause || !server.resume) throw new Error('this test needs a local redis-server');
    expect((await app.gql(PUT, { key: 'hang:a', value: 'v1' })).data!.put.version).toBe(1);
    server.pause();
    try {
      const [put, get, ready, health] = await Promise.all([
        timed(app, PUT, { key: 'hang:a', value: 'v2' }),
        timed(app, GET, { key: 'hang:a' }),
        http(app, '/ready'),
        http(app, '/health'),
      ]);
      for (const [name, t] of [['put', put], ['get', get]] as const) {
        expect(t.ms, name).toBeLessThan(HANG_BOUND_MS);
        expect(codeOf(t.r), name).toBe('STORE_UNAVAILABLE');
      }
      // A write that timed out may still be applied: the client is told so.
      expect(put.r.errors![0]!.message).toMatch(/may or may not have been applied/);
      expect(get.r.errors![0]!.message).not.toMatch(/may or may not/);
      expect(ready.status).toBe(503);
      expect(ready.ms).toBeLessThan(HANG_BOUND_MS);
      expect(health.status).toBe(200);
    } finally {
      server.resume();
    }
    await waitUntilReady(app);
    // Indeed: the timed-out put was waiting in Redis's socket and ran once Redis resumed.
    const g = await app.gql(GET, { key: 'hang:a' });
    expect(g.errors).toBeUndefined();
    expect(g.data!.get).toEqual({ key: 'hang:a', value: 'v2', version: 2 });
    expect((await app.gql(PUT, { key: 'hang:a', value: 'v3', expectedVersion: 2 })).data!.put.version).toBe(3);
    expect(logged).toEqual([]);
  });

  it('tells the client that a write in flight when Redis died may or may not have been applied', async () => {
    expect((await app.gql(PUT, { key: 'flight:a', value: 'v1' })).errors).toBeUndefined();
    // Hang Redis, send requests, then kill it. Those written to Redis's socket are in flight:
    // a write that was sent may have been applied, and the client is told so; one never sent
    // was not, which the API knows too.
    server.pause!();
    const pending = Promise.all([
      timed(app, PUT, { key: 'flight:a', value: 'v2' }),
      timed(app, BATCH, { items: [{ key: 'flight:b', value: 'x' }, { key: 'flight:c', value: 'y' }] }),
      timed(app, DELETE, { key: 'flight:a', expectedVersion: 1 }),
      timed(app, GET, { key: 'flight:a' }),
    ]);
    await sleep(150);
    await crash();
    const results = await pending;
    let maybe = 0;
    results.forEach(({ r, ms }, i) => {
      expect(ms).toBeLessThan(BOUND_MS);
      expect(codeOf(r), r.errors?.[0]?.message).toBe('STORE_UNAVAILABLE');
      if (MAYBE_APPLIED.test(r.errors![0]!.message)) maybe++;
      // A read never says a write may have happened.
      if (i === 3) expect(r.errors![0]!.message).not.toMatch(MAYBE_APPLIED);
    });
    expect(maybe, 'writes reported as possibly applied (at least the one in flight)').toBeGreaterThan(0);
    await revive();
    await waitUntilReady(app);
    // Redis never ran them (it was stopped), which the client could not know.
    const g = await app.gql(GET_MANY, { keys: ['flight:a', 'flight:b', 'flight:c'] });
    expect(g.data!.getMany).toEqual([{ key: 'flight:a', value: 'v1', version: 1 }, null, null]);
    expect(logged).toEqual([]);
  });

  it('answers STORE_UNAVAILABLE when the connection closes with writes in flight, and never says one was not applied when it was', async () => {
    // Redis refuses an oversized request (proto-max-bulk-len) and closes the connection: the
    // writes sent with it lose their replies (they may or may not have been applied), those not
    // yet sent fail without being sent.
    const pipeErrors: unknown[] = [];
    // In process, so that the eight requests reach the resolvers in one tick and Redis's socket together.
    const big = await createTestApp('pipe', { redisUrl: server.url, limits: { maxValueBytes: 2 << 20 }, errors: pipeErrors, transport: 'in-process' });
    try {
      const rs = await Promise.all(
        Array.from({ length: 8 }, (_, i) => big.gql(PUT, { key: `pipe:${i}`, value: i === 3 ? 'x'.repeat((1 << 20) + 1) : `v${i}` })),
      );
      const small = rs.filter((_, i) => i !== 3);
      expect(small.filter((r) => r.errors).length, 'requests aborted with the connection').toBeGreaterThan(0);
      // The client reconnects by itself. An acknowledged write is there; a failed one is there
      // only if its client was told it may have been applied.
      await waitUntilReady(big);
      const g = await big.gql(GET_MANY, { keys: small.map((_, j) => `pipe:${j < 3 ? j : j + 1}`) });
      small.forEach((r, j) => {
        const present = g.data!.getMany[j] !== null;
        if (!r.errors) return void expect(present, `acknowledged write ${j}`).toBe(true);
        expect(r.errors[0]!.extensions!.code, r.errors[0]!.message).toBe('STORE_UNAVAILABLE');
        if (present) expect(r.errors[0]!.message, `failed write ${j}, applied after all`).toMatch(MAYBE_APPLIED);
      });
    } finally {
      await big.close();
    }
  });

  it('falls back from EVALSHA to EVAL when Redis has lost its scripts, with many scripts in flight', async () => {
    const admin = new Redis(server.url);
    admin.on('error', () => {});
    try {
      await admin.script('FLUSH');
      // Many scripts at once are in flight together: every EVALSHA meets NOSCRIPT.
      const puts = await Promise.all(
        Array.from({ length: 20 }, (_, i) => app.gql(PUT, { key: `ns:${i}`, value: `v${i}` })),
      );
      for (const r of puts) expect(r.errors).toBeUndefined();
      expect(puts.map((r) => r.data!.put.version)).toEqual(Array(20).fill(1));
      await admin.script('FLUSH');
      const batch = await app.gql(BATCH, { items: [{ key: 'ns:0', value: 'b' }, { key: 'ns:x', value: 'b' }] });
      expect(batch.data!.batchPut.map((e: { version: number }) => e.version)).toEqual([2, 1]);
      await admin.script('FLUSH');
      const dels = await Promise.all(Array.from({ length: 20 }, (_, i) => app.gql(DELETE, { key: `ns:${i}` })));
      for (const r of dels) expect(r.data!.delete.deleted).toBe(true);
      await admin.script('FLUSH');
      const page = await app.gql(RANGE, { prefix: 'ns:', first: 10 });
      expect(page.data!.range.totalCount).toBe(1);
      // Each write ran exactly once.
      expect((await app.gql(GET, { key: 'ns:x' })).data!.get.version).toBe(1);
    } finally {
      admin.disconnect();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A full Redis
// ---------------------------------------------------------------------------------------------

describe('a full Redis (maxmemory, noeviction)', () => {
  let server: TestRedis;
  let app: TestApp;
  let admin: Redis;

  beforeAll(async () => {
    server = await startTestRedis(['--maxmemory', '3mb']);
    app = await createTestApp('oom', { redisUrl: server.url });
    admin = new Redis(server.url);
    admin.on('error', () => {});
  });
  afterAll(async () => {
    admin?.disconnect();
    await app?.close();
    await server?.stop();
  });

  it('refuses writes with CAPACITY_EXCEEDED, keeps reads and deletes working, evicts nothing', async () => {
    const acked = new Map<string, { value: string; version: number }>();
    let n = 0;
    const fresh = () => `fill:${String(n++).padStart(6, '0')}`;

    /**
     * Puts until refused, in ever smaller requests (a request's own size counts towards the
     * limit while Redis reads it), down to one tiny put; returns how many were accepted.
     */
    const fillUntilRefused = async (): Promise<number> => {
      let accepted = 0;
      for (const [count, size] of [[40, 400], [4, 400], [1, 8]] as const) {
        for (let i = 0; ; i++) {
          expect(i, 'the store never filled up').toBeLessThan(5000);
          const items = Array.from({ length: count }, () => {
            const key = fresh();
            return { key, value: `${key}=`.padEnd(size, 'x') };
          });
          const { r, ms } = await timed(app, BATCH, { items });
          expect(ms).toBeLessThan(BOUND_MS);
          if (r.errors) {
            expect(codeOf(r), r.errors[0]!.message).toBe('CAPACITY_EXCEEDED');
            expect(r.errors[0]!.message).toMatch(/full/);
            expect(r.errors[0]!.message).not.toMatch(/maxmemory|OOM/);
            // Refused whole: not one of its keys was written.
            const g = await app.gql(GET_MANY, { keys: items.map((it) => it.key) });
            expect(g.data!.getMany).toEqual(items.map(() => null));
            break;
          }
          for (const it of items) acked.set(it.key, { value: it.value, version: 1 });
          accepted++;
        }
      }
      return accepted;
    };
    /**
     * Runs `write` on a full store. Redis's used memory drifts near maxmemory (it shrinks client
     * buffers in the background), so a write it accepts anyway is recorded and the store filled
     * again before the next try (bounded).
     */
    const whenFull = async (write: () => Promise<GqlResult>, accepted: (r: GqlResult) => void): Promise<GqlResult> => {
      for (let attempt = 0; attempt < 10; attempt++) {
        await fillUntilRefused();
        const r = await write();
        if (codeOf(r) === 'CAPACITY_EXCEEDED') return r;
        expect(r.errors, r.errors?.[0]?.message).toBeUndefined();
        accepted(r);
      }
      throw new Error('the write was never refused');
    };

    expect(await fillUntilRefused()).toBeGreaterThan(10);
    // Still full after Redis had time to free what it frees by itself.
    await sleep(300);
    await fillUntilRefused();

    const existing = [...acked.keys()][0]!;
    const one = await whenFull(
      () => app.gql(PUT, { key: 'fill:one-more', value: 'x' }),
      () => acked.set('fill:one-more', { value: 'x', version: 1 }),
    );
    expect(one.errors![0]!.message).toMatch(/full/);
    const overwrite = await whenFull(
      () => app.gql(PUT, { key: existing, value: 'y', expectedVersion: acked.get(existing)!.version }),
      (r) => acked.set(existing, { value: 'y', version: r.data!.put.version }),
    );
    expect(codeOf(overwrite)).toBe('CAPACITY_EXCEEDED');

    // A refused batch wrote nothing: neither its new keys nor its updates to existing keys.
    let attempt = 0;
    const batchKeys = () => [existing, `fill:new-a${attempt}`, `fill:new-b${attempt}`];
    const batch = await whenFull(
      () => {
        attempt++;
        const [, a, b] = batchKeys();
        return app.gql(BATCH, { items: [{ key: existing, value: 'changed' }, { key: a, value: 'a'.repeat(2000) }, { key: b, value: 'b' }] });
      },
      (r) => r.data!.batchPut.forEach((e: { key: string; value: string; version: number }) => acked.set(e.key, { value: e.value, version: e.version })),
    );
    expect(codeOf(batch)).toBe('CAPACITY_EXCEEDED');
    // An empty batch writes nothing, so it has nothing to refuse.
    expect(await app.gql(BATCH, { items: [] })).toMatchObject({ data: { batchPut: [] } });
    const [, newA, newB] = batchKeys();
    const after = await app.gql(GET_MANY, { keys: [existing, newA, newB] });
    expect(after.errors).toBeUndefined();
    expect(after.data!.getMany).toEqual([{ key: existing, ...acked.get(existing) }, null, null]);

    // Reads work, and every acknowledged key is still there: nothing was evicted.
    const state = await readAll(app, [...acked.keys()]);
    for (const [key, e] of acked) expect(state.get(key), key).toEqual({ key, ...e });
    expect(await admin.info('stats')).toMatch(/evicted_keys:0\r?\n/);
    expect((await app.gql(GET, { key: existing })).data!.get).toEqual({ key: existing, ...acked.get(existing) });
    let seen = 0;
    let cursor: string | null = null;
    for (let i = 0; i < 100; i++) {
      const page: GqlResult = await app.gql(RANGE, { prefix: 'fill:', first: 1000, after: cursor });
      expect(page.errors).toBeUndefined();
      expect(page.data!.range.totalCount).toBe(acked.size);
      for (const { node } of page.data!.range.edges) expect(acked.get(node.key), node.key).toEqual({ value: node.value, version: node.version });
      seen += page.data!.range.edges.length;
      if (!page.data!.range.pageInfo.hasNextPage) break;
      cursor = page.data!.range.pageInfo.endCursor;
    }
    expect(seen).toBe(acked.size);

    // Deletes work when the store is full, even when Redis has lost its scripts and must take
    // delete.lua again by EVAL (its allow-oom flag is read from the script's first line).
    await admin.script('FLUSH');
    await fillUntilRefused();
    const del = await app.gql(DELETE, { key: existing, expectedVersion: acked.get(existing)!.version });
    expect(del.errors, del.errors?.[0]?.message).toBeUndefined();
    expect(del.data!.delete).toMatchObject({ deleted: true, previous: { key: existing, value: acked.get(existing)!.value } });
    acked.delete(existing);
    await fillUntilRefused();
    const lowest = [...acked.keys()].sort().slice(0, 5);
    const dr = await app.gql(DELETE_RANGE, { prefix: 'fill:', limit: 5 });
    expect(dr.errors, dr.errors?.[0]?.message).toBeUndefined();
    expect(dr.data!.deleteRange).toEqual({ deleted: 5, hasMore: true });
    for (const k of lowest) acked.delete(k);
    expect((await app.gql(GET_MANY, { keys: lowest })).data!.getMany).toEqual(lowest.map(() => null));
    expect((await app.gql(RANGE, { prefix: 'fill:', first: 1 })).data!.range.totalCount).toBe(acked.size);

    // Deleting frees the space (bounded loop), and writes are accepted again.
    let hasMore = true;
    for (let i = 0; i < 100 && hasMore; i++) {
      const r = await app.gql(DELETE_RANGE, { prefix: 'fill:', limit: 1000 });
      expect(r.errors).toBeUndefined();
      hasMore = r.data!.deleteRange.hasMore;
    }
    expect(hasMore).toBe(false);
    await admin.script('FLUSH'); // put.lua must load again too, now that there is room
    const put = await app.gql(PUT, { key: 'fill:again', value: 'z' });
    expect(put.errors, put.errors?.[0]?.message).toBeUndefined();
    expect(put.data!.put.version).toBe(1);
    expect(await admin.info('stats')).toMatch(/evicted_keys:0\r?\n/);
  });
});

// ---------------------------------------------------------------------------------------------
// Compare-and-set races
// ---------------------------------------------------------------------------------------------

describe('compare-and-set races', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('race');
  });
  afterAll(() => app.close());

  const N = 25;

  it('of concurrent creates (expectedVersion 0), exactly one wins', async () => {
    for (let round = 0; round < 3; round++) {
      const key = `create:${round}`;
      const rs = await Promise.all(Array.from({ length: N }, (_, i) => app.gql(PUT, { key, value: `w${i}`, expectedVersion: 0 })));
      const winners = rs.flatMap((r, i) => (r.errors ? [] : [i]));
      expect(winners).toHaveLength(1);
      expect(rs[winners[0]!]!.data!.put.version).toBe(1);
      for (const r of rs) {
        if (!r.errors) continue;
        expect(r.errors[0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', key, actualVersion: 1 });
      }
      expect((await app.gql(GET, { key })).data!.get).toEqual({ key, value: `w${winners[0]}`, version: 1 });
    }
  });

  it('of concurrent puts with the same expectedVersion, exactly one wins each round', async () => {
    const key = 'same-version';
    await app.gql(PUT, { key, value: 'start' });
    for (let v = 1; v <= 5; v++) {
      const rs = await Promise.all(Array.from({ length: N }, (_, i) => app.gql(PUT, { key, value: `r${v}w${i}`, expectedVersion: v })));
      const ok = rs.filter((r) => !r.errors);
      expect(ok).toHaveLength(1);
      expect(ok[0]!.data!.put.version).toBe(v + 1);
      const conflicts = rs.filter((r) => r.errors);
      expect(conflicts).toHaveLength(N - 1);
      for (const r of conflicts) expect(r.errors![0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', key, actualVersion: v + 1 });
      expect((await app.gql(GET, { key })).data!.get).toEqual({ key, value: ok[0]!.data!.put.value, version: v + 1 });
    }
  });

  it('of concurrent read-modify-write loops, every success is one version and no update is lost', async () => {
    const key = 'counter';
    await app.gql(PUT, { key, value: '0' });
    let successes = 0;
    let conflicts = 0;
    const worker = async () => {
      for (let done = 0, tries = 0; done < 8 && tries < 500; tries++) {
        const cur = (await app.gql(GET, { key })).data!.get;
        const r = await app.gql(PUT, { key, value: String(Number(cur.value) + 1), expectedVersion: cur.version });
        if (r.errors) {
          expect(r.errors[0]!.extensions!.code).toBe('VERSION_CONFLICT');
          expect(r.errors[0]!.extensions!.actualVersion).toBeGreaterThan(cur.version);
          conflicts++;
          continue;
        }
        expect(r.data!.put.version).toBe(cur.version + 1);
        successes++;
        done++;
      }
    };
    await Promise.all(Array.from({ length: 10 }, worker));
    expect(successes).toBe(80);
    expect(conflicts).toBeGreaterThan(0);
    expect((await app.gql(GET, { key })).data!.get).toEqual({ key, value: '80', version: successes + 1 });
  });

  it('of concurrent deletes, exactly one deletes: with expectedVersion the others conflict, without it they find nothing', async () => {
    for (const cas of [true, false]) {
      const key = `del-race:${cas}`;
      await app.gql(PUT, { key, value: 'a' });
      await app.gql(PUT, { key, value: 'b' });
      const rs = await Promise.all(Array.from({ length: N }, () => app.gql(DELETE, { key, expectedVersion: cas ? 2 : null })));
      const deleted = rs.filter((r) => r.data?.delete?.deleted === true);
      expect(deleted).toHaveLength(1);
      expect(deleted[0]!.data!.delete.previous).toEqual({ key, value: 'b', version: 2 });
      for (const r of rs) {
        if (r.data?.delete?.deleted === true) continue;
        if (cas) expect(r.errors![0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', key, actualVersion: 0 });
        else expect(r.data!.delete).toEqual({ deleted: false, previous: null });
      }
      expect((await app.gql(GET, { key })).data!.get).toBeNull();
    }
  });

  it('of concurrent batches over the same keys, each batch applies whole or not at all', async () => {
    // On one Redis the keys fall in whatever partitions they hash to (a batch is one script over
    // all of them). On a cluster a compare-and-set batch must keep to one partition (below), so
    // there the racing batches are made of keys of one partition.
    const keys = ON_CLUSTER ? keysInOnePartition('bx:', 4) : ['bx:a', 'bx:b', 'bx:c', 'bx:d'];
    await app.gql(BATCH, { items: keys.map((key) => ({ key, value: 'init' })) });
    const rs = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        app.gql(BATCH, { items: keys.map((key) => ({ key, value: `w${i}`, expectedVersion: 1 })) }),
      ),
    );
    const ok = rs.flatMap((r, i) => (r.errors ? [] : [i]));
    expect(ok).toHaveLength(1);
    for (const r of rs) {
      if (!r.errors) continue;
      expect(r.errors[0]!.extensions!.code).toBe('VERSION_CONFLICT');
      expect(r.errors[0]!.extensions!.conflicts).toEqual(keys.map((key) => ({ key, actualVersion: 2 })));
    }
    const g = await app.gql(GET_MANY, { keys });
    expect(g.data!.getMany).toEqual(keys.map((key) => ({ key, value: `w${ok[0]}`, version: 2 })));

    if (ON_CLUSTER) {
      // The same race over keys of several partitions: every batch is refused with
      // CROSS_PARTITION_CAS (the versions all match), and none writes anything.
      const spread = keysInDistinctPartitions('bxs:', 4);
      expect((await app.gql(BATCH, { items: spread.map((key) => ({ key, value: 'init' })) })).errors).toBeUndefined();
      const before = await writtenOf(app.redis, app.prefix);
      const events = await feedSequencesOf(app);
      const refused = await Promise.all(
        Array.from({ length: N }, (_, i) => app.gql(BATCH, { items: spread.map((key) => ({ key, value: `w${i}`, expectedVersion: 1 })) })),
      );
      for (const r of refused) {
        expect(r.data ?? null).toBeNull();
        expect(r.errors![0]!.extensions).toMatchObject({ code: 'CROSS_PARTITION_CAS', partitions: spread.length, conditionalKeys: spread });
      }
      expect(await writtenOf(app.redis, app.prefix), 'nothing written').toEqual(before);
      expect(await feedSequencesOf(app), 'no event').toEqual(events);
      const kept = await app.gql(GET_MANY, { keys: spread });
      expect(kept.data!.getMany).toEqual(spread.map((key) => ({ key, value: 'init', version: 1 })));
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Unexpected errors
// ---------------------------------------------------------------------------------------------

describe('unexpected errors', () => {
  let app: TestApp;
  const logged: unknown[] = [];
  beforeAll(async () => {
    app = await createTestApp('mask', { errors: logged });
  });
  afterAll(() => app.close());

  /** Whether something the logger received carries `text` (in its message or its cause). */
  function wasLogged(text: string): boolean {
    return logged.some((e) => {
      const err = e as { message?: string; originalError?: { message?: string }; stack?: string };
      return [err?.message, err?.originalError?.message, err?.stack, String(e)].some((s) => s?.includes(text));
    });
  }

  it('masks a non-store error from a read as INTERNAL_SERVER_ERROR and logs it in full', async () => {
    const store = app.store as unknown as Record<string, unknown>;
    const original = store.getMany;
    store.getMany = async () => {
      throw new Error('boom secret read');
    };
    try {
      for (const [query, vars] of [
        [GET, { key: 'm:a' }],
        [GET_MANY, { keys: ['m:a', 'm:b'] }],
      ] as const) {
        logged.length = 0;
        const res = await app.yoga.fetch('http://kvql.test/graphql', {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
          body: JSON.stringify({ query, variables: vars }),
        });
        const text = await res.text();
        expect(text).not.toContain('boom');
        expect(text).not.toContain('secret');
        const body = JSON.parse(text) as GqlResult;
        expect(body.errors).toHaveLength(1);
        expect(body.errors![0]!.extensions!.code).toBe('INTERNAL_SERVER_ERROR');
        expect(body.errors![0]!.message).toBe('Unexpected error.');
        expect(wasLogged('boom secret read')).toBe(true);
      }
    } finally {
      store.getMany = original;
    }
    logged.length = 0;
    expect((await app.gql(GET, { key: 'm:a' })).data!.get).toBeNull();
    expect(logged).toEqual([]);
  });

  it('masks a non-store error from a write', async () => {
    const store = app.store as unknown as Record<string, unknown>;
    const original = store.batchPut;
    store.batchPut = async () => {
      throw new TypeError('boom secret write');
    };
    logged.length = 0;
    try {
      for (const [query, vars] of [
        [PUT, { key: 'm:w', value: 'v' }],
        [BATCH, { items: [{ key: 'm:w', value: 'v' }] }],
      ] as const) {
        const r = await app.gql(query, vars);
        expect(JSON.stringify(r)).not.toContain('secret');
        expect(r.errors![0]!.extensions).toMatchObject({ code: 'INTERNAL_SERVER_ERROR' });
        expect(r.errors![0]!.message).toBe('Unexpected error.');
      }
      expect(wasLogged('boom secret write')).toBe(true);
    } finally {
      store.batchPut = original;
    }
  });

  it('masks a Redis error that has no meaning for clients (WRONGTYPE) and logs it', async () => {
    const key = 'm:wrongtype';
    await app.redis.set(app.store.keys.bucket(key), 'not a hash');
    logged.length = 0;
    for (const [query, vars] of [
      [GET, { key }],
      [PUT, { key, value: 'v' }],
      [DELETE, { key }],
    ] as const) {
      const r = await app.gql(query, vars);
      expect(JSON.stringify(r)).not.toContain('WRONGTYPE');
      expect(r.errors![0]!.extensions!.code).toBe('INTERNAL_SERVER_ERROR');
    }
    expect(wasLogged('WRONGTYPE')).toBe(true);
    await app.redis.del(app.store.keys.bucket(key));
  });

  it('passes store errors through unmasked and unlogged', async () => {
    logged.length = 0;
    await app.gql(PUT, { key: 'm:cas', value: 'v' });
    const r = await app.gql(PUT, { key: 'm:cas', value: 'v', expectedVersion: 5 });
    expect(r.errors![0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', actualVersion: 1 });
    expect(logged).toEqual([]);
  });
});
