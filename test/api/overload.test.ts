// Predictable behaviour under heavy load: admission control (OVERLOADED), the request deadline
// (DEADLINE_EXCEEDED), GraphQL Armor's operation limits (QUERY_TOO_COMPLEX) and the work budget
// (PAYLOAD_TOO_LARGE). Runs with 1 and 4 partitions.
//
// Requests are made slow deterministically: a gate in front of KvStore methods holds every call
// for a key starting with "hold:" until the test opens it; one test hangs a dedicated Redis
// with SIGSTOP instead.
import { request, type ClientRequest } from 'node:http';
import { getIntrospectionQuery } from 'graphql';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { BACKSTOP_GRACE_MS } from '../../src/admission.js';
import { loadConfig } from '../../src/config.js';
import { encodeFeedCursor } from '../../src/graphql/changes.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { KvStore } from '../../src/store/store.js';
import { createTestApp, storedKeysOf, writtenOf, BUCKETS, PARTITIONS, uniquePrefix, type GqlResult, type TestApp } from '../harness/app.js';
import { startTestRedis } from '../harness/redisServer.js';
import { until, within } from '../harness/until.js';
import { sseSubscribe } from '../harness/sse.js';
import { wsClient, type WsClient } from '../harness/ws.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

// --- the gate: holds store calls on "hold:" keys until opened -------------------------------

const HOLD = 'hold:';

class Gate {
  /** Calls that reached the gate (and so were admitted and are executing). */
  entered = 0;
  private waiting: (() => void)[] = [];
  private isOpen = false;

  async pass(): Promise<void> {
    this.entered++;
    if (!this.isOpen) await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  open(): void {
    this.isOpen = true;
    for (const w of this.waiting.splice(0)) w();
  }

  close(): void {
    this.isOpen = false;
    this.entered = 0;
  }
}

const gate = new Gate();
gate.open();
const held = (keys: readonly string[]) => keys.some((k) => k.startsWith(HOLD));

const original = {
  getMany: KvStore.prototype.getMany,
  put: KvStore.prototype.put,
  batchPut: KvStore.prototype.batchPut,
};
/** Every call the store methods received, for "nothing touched Redis" checks. */
const calls = { getMany: 0, put: 0, batchPut: 0, range: 0, deleteRange: 0, delete: 0 };
/** While set, every delete fails with an unexpected error. */
let failDeletes = false;

beforeAll(() => {
  vi.spyOn(KvStore.prototype, 'getMany').mockImplementation(async function (this: KvStore, keys) {
    calls.getMany++;
    if (held(keys)) await gate.pass();
    return original.getMany.call(this, keys);
  });
  vi.spyOn(KvStore.prototype, 'put').mockImplementation(async function (this: KvStore, item) {
    calls.put++;
    if (held([item.key])) await gate.pass();
    return original.put.call(this, item);
  });
  vi.spyOn(KvStore.prototype, 'batchPut').mockImplementation(async function (this: KvStore, items) {
    calls.batchPut++;
    if (held(items.map((i) => i.key))) await gate.pass();
    return original.batchPut.call(this, items);
  });
  const range = KvStore.prototype.range;
  vi.spyOn(KvStore.prototype, 'range').mockImplementation(async function (this: KvStore, q) {
    calls.range++;
    return range.call(this, q);
  });
  // Installed before any server starts: the metrics wrap a store's methods when it is created.
  const del = KvStore.prototype.delete;
  vi.spyOn(KvStore.prototype, 'delete').mockImplementation(async function (this: KvStore, key, expected) {
    calls.delete++;
    if (failDeletes) throw new Error('boom (a test of error handling)');
    return del.call(this, key, expected);
  });
  const deleteRange = KvStore.prototype.deleteRange;
  vi.spyOn(KvStore.prototype, 'deleteRange').mockImplementation(async function (this: KvStore, r, limit) {
    calls.deleteRange++;
    return deleteRange.call(this, r, limit);
  });
});

afterEach(() => {
  gate.open(); // never leave a request hanging into the next test
});

afterAll(() => {
  vi.restoreAllMocks();
});

const storeCalls = () => Object.values(calls).reduce((a, b) => a + b, 0);

// --- helpers -----------------------------------------------------------------------------------

const GET = `query($key: String!) { get(key: $key) { key value } }`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key } }`;
const PUT = `mutation($key: String!, $value: String!) { put(key: $key, value: $value) { key version } }`;

interface HttpResult extends GqlResult {
  headers: Headers;
}

async function post(url: string, query: string, variables: Record<string, unknown> = {}, signal?: AbortSignal): Promise<HttpResult> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
    signal,
  });
  return { status: res.status, headers: res.headers, ...((await res.json()) as object) };
}

function expectCode(r: GqlResult, code: string): void {
  expect(r.errors, JSON.stringify(r)).toBeDefined();
  expect(r.errors!.map((e) => e.extensions?.code), JSON.stringify(r.errors)).toEqual(r.errors!.map(() => code));
  // Nothing is returned: no data at all, or null for the nullable field that failed.
  expect(Object.values(r.data ?? {}).every((v) => v === null), JSON.stringify(r.data)).toBe(true);
}

function expectOverloaded(r: HttpResult): void {
  expect(r.status).toBe(503);
  expect(r.headers.get('retry-after')).toBe('1');
  expect(r.headers.get('content-type')).toMatch(/json/);
  expectCode(r, 'OVERLOADED');
  expect(r.errors![0]!.message).toMatch(/maximum of \d+ requests/);
}

/** The Redis keys of an app's keyspace other than its meta key, and every bucket field: what was written. */
async function written(a: TestApp): Promise<string[]> {
  return writtenOf(a.redis, a.prefix);
}

// --- admission, against a listening server ---------------------------------------------------

describe('admission control over HTTP (a listening server, KV_MAX_IN_FLIGHT=4)', () => {
  const MAX = 4;
  let server: RunningServer;
  const clients: WsClient[] = [];

  beforeAll(async () => {
    server = await startServer(
      loadConfig({
        PORT: '0',
        REDIS_URL: inject('redisUrl'),
        KV_PREFIX: uniquePrefix('overload'),
        KV_PARTITIONS: String(PARTITIONS),
        KV_BUCKETS: String(BUCKETS),
        KV_MAX_IN_FLIGHT: String(MAX),
      }),
      () => {},
    );
    expect(new URL(server.url).hostname).toBe('127.0.0.1');
  });

  afterAll(async () => {
    gate.open();
    await Promise.allSettled(clients.map((c) => c.dispose()));
    await server?.close();
  });

  const base = () => server.url.replace(/\/graphql$/, '');

  /** Starts MAX requests that wait at the gate, and waits until every one is executing. */
  async function fill(n = MAX, signal?: AbortSignal): Promise<Promise<HttpResult>[]> {
    gate.close();
    const pending = Array.from({ length: n }, (_, i) => post(server.url, GET, { key: `${HOLD}${i}` }, signal));
    for (const p of pending) p.catch(() => {});
    await waitFor(`${n} requests at the gate`, () => gate.entered === n);
    return pending;
  }

  it('lets exactly KV_MAX_IN_FLIGHT requests in and refuses the rest at once with 503, Retry-After and OVERLOADED', async () => {
    gate.close();
    // Twelve at once: four get a slot and wait at the gate; eight are refused without waiting.
    const all = Array.from({ length: 12 }, (_, i) => post(server.url, GET, { key: `${HOLD}burst${i}` }));
    const settled: HttpResult[] = [];
    for (const p of all) p.then((r) => settled.push(r), () => {});
    await waitFor('eight refusals', () => settled.length === 8, 5000);
    await waitFor('four requests at the gate', () => gate.entered === MAX);
    for (const r of settled) expectOverloaded(r);
    // The four are still waiting, not answered, and no fifth reached the store.
    await sleep(100);
    expect(settled).toHaveLength(8);
    expect(gate.entered).toBe(MAX);

    gate.open();
    const results = await within(5000, 'the admitted requests', Promise.all(all));
    const ok = results.filter((r) => r.status === 200);
    expect(ok).toHaveLength(MAX);
    for (const r of ok) expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
    expect(results.filter((r) => r.status === 503)).toHaveLength(8);
  });

  it('refuses at once while full, and admits again as soon as the slots are given back', async () => {
    const pending = await fill();
    const started = Date.now();
    expectOverloaded(await post(server.url, GET, { key: 'free' }));
    expectOverloaded(await post(server.url, PUT, { key: 'free', value: 'x' }));
    expect(Date.now() - started).toBeLessThan(2000);
    // A refused write wrote nothing.
    gate.open();
    for (const r of await within(5000, 'the held requests', Promise.all(pending))) expect(r.status).toBe(200);
    const again = await Promise.all(Array.from({ length: MAX }, () => post(server.url, GET, { key: 'free' })));
    for (const r of again) {
      expect(r.status).toBe(200);
      expect(r.data!.get).toBeNull();
    }
  });

  it('never refuses /health, /ready or /metrics', async () => {
    const pending = await fill();
    for (let i = 0; i < 3; i++) {
      expect((await fetch(`${base()}/metrics`)).status).toBe(200);
      const health = await fetch(`${base()}/health`);
      expect(health.status).toBe(200);
      const ready = await fetch(`${base()}/ready`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ status: 'ready' });
    }
    expectOverloaded(await post(server.url, GET, { key: 'x' }));
    gate.open();
    await within(5000, 'the held requests', Promise.all(pending));
  });

  it('gives the slot back after errors: bad input, an unexpected failure, a parse error', async () => {
    for (let i = 0; i < 2 * MAX; i++) {
      expectCode(await post(server.url, GET, { key: '' }), 'BAD_USER_INPUT');
      const parse = await post(server.url, '{ get(key: ');
      expect(parse.errors![0]!.extensions!.code).toBe('GRAPHQL_PARSE_FAILED');
    }
    failDeletes = true;
    try {
      for (let i = 0; i < MAX + 1; i++) {
        const r = await post(server.url, `mutation { delete(key: "k") { deleted } }`);
        expect(r.errors![0]!.extensions!.code).toBe('INTERNAL_SERVER_ERROR');
      }
    } finally {
      failDeletes = false;
    }
    // All four slots are free: four held requests get in, a fifth is refused.
    const pending = await fill();
    expectOverloaded(await post(server.url, GET, { key: 'x' }));
    gate.open();
    await within(5000, 'the held requests', Promise.all(pending));
  });

  it('gives the slot back when clients abort: once their operations end, every slot is free', async () => {
    const abort = new AbortController();
    const pending = await fill(MAX, abort.signal);
    abort.abort();
    for (const p of pending) await expect(p).rejects.toThrow();
    // The operations of the clients that left still hold their slots (the slot bounds work,
    // not connections) until they end...
    expectOverloaded(await post(server.url, GET, { key: 'x' }));
    gate.open();
    // ...and then every slot is free again: MAX requests at once all get in.
    const deadline = Date.now() + 5000;
    for (;;) {
      const rs = await Promise.all(Array.from({ length: MAX }, () => post(server.url, GET, { key: 'x' })));
      if (rs.every((r) => r.status === 200)) break;
      if (Date.now() > deadline) throw new Error('the slots did not come back within 5 s');
      await sleep(20);
    }
    const refill = await fill();
    expectOverloaded(await post(server.url, GET, { key: 'x' }));
    gate.open();
    await within(5000, 'the held requests', Promise.all(refill));
  });

  it('counts a subscription over SSE only until its response starts', async () => {
    // One after the other: each takes a slot while it is set up, then gives it back.
    const streams = [];
    for (let i = 0; i < 2 * MAX; i++) streams.push(await sseSubscribe(server.url, 'subscription { changes(prefix: "sse:") { key version } }'));
    try {
      // Eight open subscriptions and yet four held requests get in.
      const pending = await fill();
      expectOverloaded(await post(server.url, GET, { key: 'x' }));
      gate.open();
      await within(5000, 'the held requests', Promise.all(pending));
      const put = await post(server.url, PUT, { key: 'sse:1', value: 'v' });
      expect(put.status).toBe(200);
      for (const s of streams) expect((await s.next()).data).toEqual({ changes: { key: 'sse:1', version: 1 } });
    } finally {
      await Promise.all(streams.map((s) => s.close()));
    }
  });

  it('answers a graphql-ws operation with an OVERLOADED payload while full; the socket and its subscriptions go on', async () => {
    const ws = wsClient(server.url);
    clients.push(ws);
    await ws.connected();
    const sub = ws.subscribe('subscription { changes(prefix: "ws:") { key version } }');
    // Let the subscription be set up before the slots fill (a subscription takes none, though).
    await sleep(200);
    const pending = await fill();

    const q = ws.subscribe(GET, { key: 'ws:x' });
    const refused = await q.next();
    expect(refused.errors?.map((e) => e.extensions?.code)).toEqual(['OVERLOADED']);
    expect((await q.ended()).kind).toBe('complete');
    const m = ws.subscribe(PUT, { key: 'ws:refused', value: 'x' });
    expect((await m.next()).errors?.[0]?.extensions?.code).toBe('OVERLOADED');

    // A new subscription on the same socket is still accepted while the slots are full.
    const sub2 = ws.subscribe('subscription { changes(prefix: "ws:") { key version } }');
    await sleep(200);
    gate.open();
    await within(5000, 'the held requests', Promise.all(pending));

    const ok = ws.subscribe(PUT, { key: 'ws:1', value: 'v' });
    expect((await ok.next()).data).toEqual({ put: { key: 'ws:1', version: 1 } });
    expect((await sub.next()).data).toEqual({ changes: { key: 'ws:1', version: 1 } });
    expect((await sub2.next()).data).toEqual({ changes: { key: 'ws:1', version: 1 } });
    // The refused put wrote nothing: the first event was ws:1, and the key does not exist.
    expect((await post(server.url, GET, { key: 'ws:refused' })).data!.get).toBeNull();
    await sub.close();
    await sub2.close();
  });

  it('graphql-ws operations take slots too: four held over WebSocket leave none for HTTP', async () => {
    const ws = wsClient(server.url);
    clients.push(ws);
    await ws.connected();
    gate.close();
    const streams = Array.from({ length: MAX }, (_, i) => ws.subscribe(GET, { key: `${HOLD}ws${i}` }));
    await waitFor('four WebSocket operations at the gate', () => gate.entered === MAX);
    expectOverloaded(await post(server.url, GET, { key: 'x' }));
    gate.open();
    for (const s of streams) expect((await s.next()).errors).toBeUndefined();
    expect((await post(server.url, GET, { key: 'x' })).status).toBe(200);
  });

  it('applies the work budget to graphql-ws operations, before Redis', async () => {
    const ws = wsClient(server.url);
    clients.push(ws);
    await ws.connected();
    const keys = Array.from({ length: 10_000 }, (_, i) => `wsb:${i}`);
    const before = calls.getMany;
    const s = ws.subscribe(`query($k: [String!]!) { a: getMany(keys: $k) { key } b: getMany(keys: $k) { key } c: getMany(keys: $k) { key } }`, { k: keys });
    const r = await s.next();
    expect(r.errors?.map((e) => e.extensions?.code)).toEqual(['PAYLOAD_TOO_LARGE']);
    expect(r.errors![0]!.extensions).toEqual({ code: 'PAYLOAD_TOO_LARGE', requested: 30_000, limit: 20_000 });
    expect(calls.getMany).toBe(before);
  });

  it('answers a document over the token limit on a socket with an error for that operation only', async () => {
    const ws = wsClient(server.url);
    clients.push(ws);
    await ws.connected();
    const huge = `{ ${Array.from({ length: 3000 }, (_, i) => `a${i}: __typename`).join(' ')} }`;
    const s = ws.subscribe(huge);
    const end = await s.ended();
    expect(end.kind).toBe('error');
    const errors = (end as { error: { extensions?: { code?: string } }[] }).error;
    expect(errors.map((e) => e.extensions?.code)).toEqual(['QUERY_TOO_COMPLEX']);
    // The socket is still open and serves the next operation.
    const ok = ws.subscribe(GET, { key: 'nothing' });
    expect((await ok.next()).data).toEqual({ get: null });
  });
});

describe('admission when Redis hangs (SIGSTOP)', () => {
  it('holds exactly KV_MAX_IN_FLIGHT requests, refuses the rest at once, and recovers when Redis answers', async (ctx) => {
    const redis = await startTestRedis();
    if (!redis.pause || !redis.resume) {
      await redis.stop();
      ctx.skip();
      return;
    }
    const server = await startServer(
      loadConfig({
        PORT: '0',
        REDIS_URL: redis.url,
        KV_PREFIX: uniquePrefix('overload-hang'),
        KV_PARTITIONS: String(PARTITIONS),
        KV_BUCKETS: String(BUCKETS),
        KV_MAX_IN_FLIGHT: '3',
        KV_REDIS_TIMEOUT_MS: '20000',
        KV_REQUEST_TIMEOUT_MS: '30000',
      }),
      () => {},
    );
    try {
      redis.pause();
      const all = Array.from({ length: 10 }, (_, i) => post(server.url, GET, { key: `k${i}` }));
      const settled: HttpResult[] = [];
      for (const p of all) p.then((r) => settled.push(r), () => {});
      await waitFor('seven refusals', () => settled.length === 7, 5000);
      for (const r of settled) expectOverloaded(r);
      await sleep(300);
      expect(settled).toHaveLength(7);
      expect((await fetch(server.url.replace(/graphql$/, 'health'))).status).toBe(200);
      redis.resume();
      const results = await within(10_000, 'the held requests', Promise.all(all));
      expect(results.filter((r) => r.status === 200 && r.data?.get === null)).toHaveLength(3);
      const after = await Promise.all(Array.from({ length: 3 }, () => post(server.url, GET, { key: 'k' })));
      for (const r of after) expect(r.status).toBe(200);
    } finally {
      redis.resume();
      await server.close();
      await redis.stop();
    }
  });
});

describe('admission before the body', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('admission-body', { load: { maxInFlight: 1 } });
  });
  afterAll(() => app?.close());

  it('refuses while full without reading the body', async () => {
    gate.close();
    const holding = app.gql(GET, { key: `${HOLD}body` });
    await waitFor('the request at the gate', () => gate.entered === 1);
    let pulled = 0;
    // A body that never ends: a server that read it before refusing would hang.
    const endless = new ReadableStream<Uint8Array>({
      pull: (c) => {
        pulled++;
        if (pulled === 1) c.enqueue(new TextEncoder().encode('{"query":"{ get(key: \\"x\\") { key } }", "padding": "'));
        return new Promise(() => {});
      },
    });
    const res = await within(
      3000,
      'the refusal',
      Promise.resolve(
        app.yoga.fetch('http://kvql.test/graphql', {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
          body: endless,
          duplex: 'half',
        } as RequestInit),
      ),
    );
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(((await res.json()) as GqlResult).errors![0]!.extensions!.code).toBe('OVERLOADED');
    expect(pulled).toBeLessThanOrEqual(1);
    gate.open();
    expect((await holding).status).toBe(200);
  });
});

describe('room for request bodies (KV_MAX_BODY_BYTES_IN_FLIGHT)', () => {
  // Bodies from BODY_BYTES_COUNTED_FROM (64 KiB) on count: room for one 200 KB body, not two.
  const ROOM = 300_000;
  const LIMIT = 256 * 1024;
  const BIG = 200_000;
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('body-bytes', { limits: { maxBodyBytes: LIMIT }, load: { maxBodyBytesInFlight: ROOM } });
  });
  afterAll(() => app?.close());

  const START = '{"query":"{ get(key: \\"x\\") { key } }","variables":{"padding":"';

  /** A POST over a real socket that sends its headers and the first bytes of a body, and waits. */
  function startPost(headers: Record<string, string>): { req: ClientRequest; answer: Promise<{ status: number; body: string }>; finish(size: number): void } {
    const u = new URL(app.url);
    let req!: ClientRequest;
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', ...headers } }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
    });
    req.write(START);
    // The rest of a body of `size` bytes in all (padding, then the end of the JSON).
    const finish = (size: number) => req.end(`${'x'.repeat(size - START.length - 3)}"}}`);
    return { req, answer, finish };
  }

  /** A put whose JSON body is exactly `size` bytes, over a real socket. */
  async function putOfSize(size: number, key: string): Promise<{ status: number; body: string; retryAfter: string | null }> {
    const shell = JSON.stringify({ query: PUT, variables: { key, value: '' } });
    const body = JSON.stringify({ query: PUT, variables: { key, value: 'x'.repeat(size - Buffer.byteLength(shell)) } });
    const res = await fetch(app.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body });
    return { status: res.status, body: await res.text(), retryAfter: res.headers.get('retry-after') };
  }

  const held = async () => {
    const text = await (await fetch(app.url.replace(/\/graphql$/, '/metrics'))).text();
    return Number(/^kvql_request_body_bytes_in_flight (\d+)$/m.exec(text)?.[1]);
  };
  const waitForAsync = (what: string, cond: () => Promise<boolean>) => until(5000, what, async () => ((await cond()) ? true : undefined));

  it('refuses a body it has no room for before reading it, and has the room again however a held body ends', async () => {
    // A 200 KB body arriving slowly holds 200 KB of room from its headers on.
    const slow = startPost({ 'content-length': String(BIG) });
    await waitForAsync('the slow body to hold its room', async () => (await held()) === BIG);

    // Another 200 KB would go over: 503 OVERLOADED, Retry-After, nothing written.
    const refused = await putOfSize(BIG, 'bb:refused');
    expect(refused.status).toBe(503);
    expect(refused.retryAfter).toBe('1');
    expect(JSON.parse(refused.body).errors[0]).toMatchObject({ extensions: { code: 'OVERLOADED' }, message: expect.stringMatching(/300000 bytes of request bodies/) });
    // A body without a Content-Length might be as large as the limit: no room for it either.
    const chunked = startPost({ 'transfer-encoding': 'chunked' });
    chunked.finish(1000);
    expect((await chunked.answer).status).toBe(503);
    // A smaller one fits beside it (64 KB: counted, and room for it).
    expect((await putOfSize(64 * 1024, 'bb:small')).status).toBe(200);

    // The slow body ends: it is served, and its room comes back.
    slow.finish(BIG);
    expect((await slow.answer).status).toBe(200);
    await waitForAsync('the room to come back', async () => (await held()) === 0);
    expect((await putOfSize(BIG, 'bb:after')).status).toBe(200);

    // A client that gives up halfway gives its room back too.
    const quitter = startPost({ 'content-length': String(BIG) });
    await waitForAsync('the second slow body to hold its room', async () => (await held()) === BIG);
    quitter.req.destroy();
    await quitter.answer.catch(() => undefined);
    await waitForAsync('the room to come back after the client left', async () => (await held()) === 0);
    expect(await storedKeysOf(app.redis, app.prefix), 'the refused put wrote nothing').toEqual(['bb:after', 'bb:small']);
  });
});

// --- the deadline, through yoga.fetch --------------------------------------------------------

describe('the request deadline (KV_REQUEST_TIMEOUT_MS=300, KV_MAX_IN_FLIGHT=1)', () => {
  const TIMEOUT = 300;
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('deadline', { load: { requestTimeoutMs: TIMEOUT, maxInFlight: 1 } });
  });
  afterAll(() => app?.close());

  it('ends a query still running past its deadline with DEADLINE_EXCEEDED, HTTP 504, and frees the slot', async () => {
    gate.close();
    const started = Date.now();
    const r = await within(5000, 'the held query', app.gql(GET, { key: `${HOLD}q` }));
    const took = Date.now() - started;
    expect(r.status).toBe(504);
    expectCode(r, 'DEADLINE_EXCEEDED');
    expect(r.errors![0]!.message).toMatch(/300 ms; nothing was changed/);
    expect(took).toBeGreaterThanOrEqual(TIMEOUT - 10);
    expect(took).toBeLessThan(TIMEOUT + BACKSTOP_GRACE_MS);
    // The same for a client that accepts only application/json.
    const json = await app.yoga.fetch('http://kvql.test/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query: GET, variables: { key: `${HOLD}q2` } }),
    });
    expect(json.status).toBe(504);
    expect(((await json.json()) as GqlResult).errors?.map((e) => e.extensions)).toEqual([{ code: 'DEADLINE_EXCEEDED' }]);
    // The store calls are still waiting at the gate, yet the single slot is free.
    const next = await app.gql(GET, { key: 'free' });
    expect(next.status).toBe(200);
    expect(next.data).toEqual({ get: null });
  });

  it('says of a mutation past its deadline that the write may or may not have been applied, and cancels what had not started', async () => {
    gate.close();
    const before = calls.put;
    const r = await app.gql(
      `mutation { a: put(key: "${HOLD}m1", value: "1") { key } b: put(key: "after-deadline", value: "2") { key } }`,
    );
    expect(r.status).toBe(504);
    expectCode(r, 'DEADLINE_EXCEEDED');
    expect(r.errors![0]!.message).toMatch(/may or may not have been applied/);
    // Mutation fields run one after the other: the second had not started, and never will.
    gate.open();
    const until = Date.now() + 5000;
    while ((await app.gql(GET, { key: `${HOLD}m1` })).data?.get == null) {
      if (Date.now() > until) throw new Error('the first put did not finish within 5 s');
      await sleep(20);
    }
    await sleep(100);
    expect(calls.put - before).toBe(1);
    expect((await app.gql(GET, { key: 'after-deadline' })).data).toEqual({ get: null });
    // The first one was applied after all: "may or may not".
    expect((await app.gql(GET, { key: `${HOLD}m1` })).data).toEqual({ get: { key: `${HOLD}m1`, value: '1' } });
  });

  it('does not touch requests that finish in time', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await app.gql(PUT, { key: `fast${i}`, value: 'v' });
      expect(r.status).toBe(200);
      expect(r.errors).toBeUndefined();
    }
  });

  it('exempts a subscription once it runs: an SSE stream outlives the deadline and holds no slot', async () => {
    const res = await app.yoga.fetch('http://kvql.test/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: 'subscription { changes(prefix: "long:") { key version } }' }),
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let text = '';
    const reading = (async () => {
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += decoder.decode(value, { stream: true });
      }
    })().catch(() => {});
    try {
      await sleep(3 * TIMEOUT);
      // Past the deadline the stream still delivers, and the one slot is free while it runs.
      const until = Date.now() + 5000;
      for (let i = 1; !text.includes('"key":"long:'); i++) {
        if (Date.now() > until) throw new Error(`no event within 5 s: ${text}`);
        const put = await app.gql(PUT, { key: `long:${i}`, value: 'v' });
        expect(put.status).toBe(200);
        await sleep(100);
      }
      expect(text).toMatch(/event: next/);
      expect(text).not.toContain('DEADLINE_EXCEEDED');
    } finally {
      await reader.cancel();
      await reading;
    }
  });

  it('answers a request that hangs outside execution (a subscription that cannot be set up) at the deadline plus a grace, and frees its slot', async () => {
    const check = vi.spyOn(app.feed, 'check').mockReturnValue(new Promise(() => {}) as never);
    try {
      const cursor = encodeFeedCursor(Array.from({ length: PARTITIONS }, () => ({ id: '0-0', seq: 0 })));
      const started = Date.now();
      const res = await within(
        TIMEOUT + BACKSTOP_GRACE_MS + 3000,
        'the hung subscription',
        Promise.resolve(
          app.yoga.fetch('http://kvql.test/graphql', {
            method: 'POST',
            headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
            body: JSON.stringify({ query: `subscription { changes(after: "${cursor}") { key } }` }),
          }),
        ),
      );
      expect(Date.now() - started).toBeGreaterThanOrEqual(TIMEOUT + BACKSTOP_GRACE_MS - 10);
      expect(res.status).toBe(504);
      const body = (await res.json()) as Omit<GqlResult, 'status'>;
      expectCode({ status: res.status, ...body }, 'DEADLINE_EXCEEDED');
      expect((await app.gql(GET, { key: 'free' })).status).toBe(200);
    } finally {
      check.mockRestore();
    }
  });
});

// --- operation limits, through yoga.fetch ----------------------------------------------------

// Small limits, so that every edge is reachable with small operations.
const TIGHT = {
  maxDepth: 4,
  maxAliases: 3,
  maxTokens: 120,
  maxCost: 300,
  maxDirectives: 3,
  maxRequestItems: 50,
  maxBatchItems: 20,
  pageDefault: 10,
  pageMax: 20,
  deleteRangeDefault: 20,
  deleteRangeMax: 20,
};

describe('operation limits (GraphQL Armor): QUERY_TOO_COMPLEX, nothing executed', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('armor', { limits: TIGHT });
  });
  afterAll(() => app?.close());

  async function refused(query: string, variables?: Record<string, unknown>): Promise<GqlResult> {
    const before = storeCalls();
    const r = await app.gql(query, variables);
    expect(r.status, JSON.stringify(r)).toBe(400);
    expectCode(r, 'QUERY_TOO_COMPLEX');
    expect(r.errors![0]!.message).toMatch(/^the operation is too complex: /);
    expect(r.errors![0]!.message).not.toMatch(/Syntax Error/);
    expect(storeCalls()).toBe(before);
    return r;
  }

  it('refuses an operation nested deeper than KV_MAX_DEPTH; the deepest real query passes at 4', async () => {
    const ok = await app.gql(`{ range(first: 1) { edges { node { key } } } }`);
    expect(ok.errors).toBeUndefined();
    const r = await refused(`{ range(first: 1) { edges { node { ... on Entry { key } } } } }`);
    expect(r.errors![0]!.message).toMatch(/depth limit of 4 exceeded, found 5/);
  });

  it('refuses more aliases than KV_MAX_ALIASES, writing nothing', async () => {
    const ok = await app.gql(`{ a: get(key: "x") { key } b: get(key: "y") { key } c: get(key: "z") { key } }`);
    expect(ok.errors).toBeUndefined();
    const r = await refused(
      `mutation { a: put(key: "al:a", value: "1") { key } b: put(key: "al:b", value: "1") { key } c: put(key: "al:c", value: "1") { key } d: put(key: "al:d", value: "1") { key } }`,
    );
    expect(r.errors![0]!.message).toMatch(/Aliases limit of 3 exceeded, found 4/);
    expect(await written(app)).toEqual([]);
  });

  it('refuses a document over KV_MAX_TOKENS while parsing, writing nothing', async () => {
    const items = Array.from({ length: 14 }, (_, i) => `{ key: "tok:${i}", value: "v" }`).join(' ');
    const r = await refused(`mutation { batchPut(items: [${items}]) { key } }`);
    expect(r.errors![0]!.message).toMatch(/Token limit of 120 exceeded/);
    expect(await written(app)).toEqual([]);
    // The same batch in a variable costs a handful of tokens.
    const items2 = Array.from({ length: 14 }, (_, i) => ({ key: `tok:${i}`, value: 'v' }));
    const ok = await app.gql(`mutation($items: [PutInput!]!) { batchPut(items: $items) { key } }`, { items: items2 });
    expect(ok.errors).toBeUndefined();
    expect(ok.data!.batchPut).toHaveLength(14);
  });

  it('refuses an operation whose cost is over KV_MAX_COST', async () => {
    const q = (n: number) => `{ range(first: ${n}) { edges { node { key value version } } } }`;
    expect((await app.gql(q(5))).errors).toBeUndefined(); // cost 98.125
    const r = await refused(q(20)); // cost 392.5
    expect(r.errors![0]!.message).toMatch(/Cost limit of 300 exceeded/);
  });

  it('refuses more directives than KV_MAX_DIRECTIVES', async () => {
    const ok = await app.gql(`query($y: Boolean!) { get(key: "a") @include(if: $y) { key @include(if: $y) value @skip(if: false) } }`, { y: true });
    expect(ok.errors).toBeUndefined();
    const r = await refused(
      `query($y: Boolean!) { get(key: "a") @include(if: $y) { key @include(if: $y) value @skip(if: false) version @include(if: true) } }`,
      { y: true },
    );
    expect(r.errors![0]!.message).toMatch(/Directives limit of 3 exceeded, found 4/);
  });

  it('answers application/json clients with the same code (HTTP 200, as graphql-yoga does for every validation error)', async () => {
    const res = await app.yoga.fetch('http://kvql.test/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query: `{ a: get(key: "1") { key } b: get(key: "2") { key } c: get(key: "3") { key } d: get(key: "4") { key } }` }),
    });
    const body = (await res.json()) as GqlResult;
    expect(body.errors?.map((e) => e.extensions?.code)).toEqual(['QUERY_TOO_COMPLEX']);
    expect(res.status).toBe(200);
  });
});

describe('the work budget (KV_MAX_REQUEST_ITEMS): PAYLOAD_TOO_LARGE before any resolver', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('budget', { limits: TIGHT });
  });
  afterAll(() => app?.close());

  const keys = (n: number, p = 'b') => Array.from({ length: n }, (_, i) => `${p}:${i}`);

  async function overBudget(query: string, variables: Record<string, unknown> | undefined, requested: number): Promise<void> {
    const before = storeCalls();
    const r = await app.gql(query, variables);
    expect(r.status, JSON.stringify(r)).toBe(400);
    expectCode(r, 'PAYLOAD_TOO_LARGE');
    expect(r.errors![0]!.extensions).toMatchObject({ requested, limit: 50 });
    expect(r.errors![0]!.message).toMatch(/at most 50 per request/);
    expect(storeCalls()).toBe(before);
  }

  it('sums aliased fields that each pass their own limit', async () => {
    await overBudget(`query($k: [String!]!) { a: getMany(keys: $k) { key } b: getMany(keys: $k) { key } c: getMany(keys: $k) { key } }`, { k: keys(20) }, 60);
    // 20 + 20 + 10 gets is exactly the budget.
    const ok = await app.gql(
      `query($k: [String!]!, $l: [String!]!) { a: getMany(keys: $k) { key } b: getMany(keys: $k) { key } c: getMany(keys: $l) { key } }`,
      { k: keys(20), l: keys(10) },
    );
    expect(ok.errors).toBeUndefined();
  });

  it('judges every request by its own variables: the same document fits, then does not, then fits', async () => {
    const query = `query($k: [String!]!, $l: [String!]!) { a: getMany(keys: $k) { key } b: getMany(keys: $k) { key } c: getMany(keys: $l) { key } }`;
    expect((await app.gql(query, { k: keys(20), l: keys(5) })).errors).toBeUndefined();
    await overBudget(query, { k: keys(20), l: keys(20) }, 60);
    expect((await app.gql(query, { k: keys(5), l: keys(20) })).errors).toBeUndefined();
  });

  it('counts batchPut items, and writes nothing when over', async () => {
    const items = keys(20, 'bp').map((key) => ({ key, value: 'v' }));
    // 20 + 20 + 1 + 1 + 9
    await overBudget(
      `mutation($i: [PutInput!]!) { a: batchPut(items: $i) { key } b: batchPut(items: $i) { key } put(key: "bp:x", value: "v") { key } delete(key: "bp:0") { deleted } deleteRange(prefix: "bp", limit: 9) { deleted } }`,
      { i: items },
      51,
    );
    await overBudget(
      `mutation($i: [PutInput!]!, $j: [PutInput!]!) { a: batchPut(items: $i) { key } b: batchPut(items: $j) { key } c: batchPut(items: $i) { key } }`,
      { i: items, j: items },
      60,
    );
    expect(await written(app)).toEqual([]);
  });

  it('counts range pages (first, last, or the default page size) and deleteRange limits (or their default)', async () => {
    await overBudget(`{ a: range(first: 20) { totalCount } b: range(last: 20) { totalCount } c: range { totalCount } get(key: "x") { key } }`, undefined, 51);
    await overBudget(`query($n: Int) { a: range(first: $n) { totalCount } b: range(first: $n) { totalCount } c: range(first: $n) { totalCount } }`, { n: 17 }, 51);
    await overBudget(`query($n: Int = 20) { a: range(first: $n) { totalCount } b: range(first: $n) { totalCount } c: range(last: 11) { totalCount } }`, {}, 51);
    await overBudget(`mutation { a: deleteRange(prefix: "z") { deleted } b: deleteRange(prefix: "y") { deleted } c: deleteRange(prefix: "x", limit: 11) { deleted } }`, undefined, 51);
    const ok = await app.gql(`{ a: range(first: 20) { totalCount } b: range { totalCount } c: range(last: 20) { totalCount } }`);
    expect(ok.errors).toBeUndefined();
  });

  it('follows fragments and inline fragments, and skips what @skip/@include leave out', async () => {
    await overBudget(
      `query($k: [String!]!) { ...F ... on Query { b: getMany(keys: $k) { key } } c: getMany(keys: $k) { key } } fragment F on Query { a: getMany(keys: $k) { key } }`,
      { k: keys(20) },
      60,
    );
    const ok = await app.gql(
      `query($k: [String!]!, $no: Boolean!) { a: getMany(keys: $k) { key } b: getMany(keys: $k) { key } c: getMany(keys: $k) @include(if: $no) { key } }`,
      { k: keys(20), no: false },
    );
    expect(ok.errors).toBeUndefined();
  });

  it('counts each field at most at its own limit: beyond it the field fails alone, as before', async () => {
    const r = await app.gql(GET_MANY, { keys: keys(21) });
    expectCode(r, 'PAYLOAD_TOO_LARGE');
    expect(r.errors![0]!.message).toMatch(/at most 20 keys per request/);
    const page = await app.gql(`query($n: Int) { range(first: $n) { totalCount } }`, { n: 1000 });
    expectCode(page, 'BAD_USER_INPUT');
  });
});

describe('the defaults', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('limit-defaults');
  });
  afterAll(() => app?.close());

  it("pass GraphiQL's introspection query", async () => {
    const query = getIntrospectionQuery({
      descriptions: true,
      specifiedByUrl: true,
      directiveIsRepeatable: true,
      schemaDescription: true,
      inputValueDeprecation: true,
      oneOf: true,
    });
    const res = await app.yoga.fetch('http://kvql.test/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query, operationName: 'IntrospectionQuery' }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as GqlResult;
    expect(body.errors).toBeUndefined();
    const types = (body.data!.__schema.types as { name: string }[]).map((t) => t.name);
    expect(types).toEqual(expect.arrayContaining(['Entry', 'EntryConnection', 'ChangeEvent', 'Query', 'Mutation', 'Subscription']));
  });

  it('pass the largest real operations: a full page with every field, two full getMany', async () => {
    const page = await app.gql(`{ range(first: 1000) {
      totalCount
      edges { cursor node { key value version createdAt updatedAt } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    } }`);
    expect(page.errors).toBeUndefined();
    const keys = Array.from({ length: 10_000 }, (_, i) => `d:${i}`);
    const two = await app.gql(`query($k: [String!]!) { a: getMany(keys: $k) { key } b: getMany(keys: $k) { key } }`, { k: keys });
    expect(two.errors).toBeUndefined();
    expect(two.data!.a).toHaveLength(10_000);
  });

  it('refuse fifteen aliased getMany of 10,000 keys (150,000 > 20,000) before Redis', async () => {
    const keys = Array.from({ length: 10_000 }, (_, i) => `d:${i}`);
    const fields = Array.from({ length: 15 }, (_, i) => `a${i}: getMany(keys: $k) { key }`).join(' ');
    const before = calls.getMany;
    const r = await app.gql(`query($k: [String!]!) { ${fields} }`, { k: keys });
    expectCode(r, 'PAYLOAD_TOO_LARGE');
    expect(r.errors![0]!.extensions).toMatchObject({ requested: 150_000, limit: 20_000 });
    expect(calls.getMany).toBe(before);
  });

  it('refuse deep nesting (inline fragments nested past 8)', async () => {
    const nested = `{ ${'... on Query { '.repeat(9)}__typename${' }'.repeat(9)} }`;
    const r = await app.gql(nested);
    expectCode(r, 'QUERY_TOO_COMPLEX');
    expect(r.errors![0]!.message).toMatch(/depth limit of 8/);
  });

  it('keep batched requests off: a JSON array of operations is refused and runs nothing', async () => {
    const before = storeCalls();
    const res = await app.yoga.fetch('http://kvql.test/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
      body: JSON.stringify([
        { query: PUT, variables: { key: 'batched:1', value: 'v' } },
        { query: PUT, variables: { key: 'batched:2', value: 'v' } },
      ]),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as GqlResult;
    expect(body.errors?.[0]?.message).toMatch(/batch/i);
    expect(storeCalls()).toBe(before);
    expect(await written(app)).not.toEqual(expect.arrayContaining([expect.stringContaining('batched:')]));
  });
});
