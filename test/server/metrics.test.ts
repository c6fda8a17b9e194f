// Observability: /metrics in the Prometheus text format and the counts behind it, request ids,
// structured logs with the request id on a masked error, and no password in any log line.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { parse } from 'graphql';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { defaultLimits, defaultLoad, loadConfig } from '../../src/config.js';
import { FeedHub } from '../../src/feed/hub.js';
import { createLogger, redactUrl, type LogLevel } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { operationLabel, requestId } from '../../src/observe.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { Keyspace } from '../../src/store/keys.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { createKvYoga, type KvYoga } from '../../src/yoga.js';
import { uniquePrefix } from '../harness/app.js';
import { freePort } from '../harness/redisServer.js';
import { parseSseFrames, sseSubscribe } from '../harness/sse.js';
import { until } from '../harness/until.js';



// ---------------------------------------------------------------------------------------------
// The exposition format, parsed
// ---------------------------------------------------------------------------------------------

type Samples = Map<string, number>;

const sampleKey = (name: string, labels: Record<string, string>) =>
  `${name}{${Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`)
    .join(',')}}`;

/** Every sample of a scrape, by name and labels; fails on a line that is not the text format. */
function parseExposition(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.e+-]+|[Nn]a[Nn]|[+-]Inf)$/.exec(line);
    expect(m, `not a sample line: ${JSON.stringify(line)}`).not.toBeNull();
    const labels: Record<string, string> = {};
    for (const l of (m![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.set(sampleKey(m![1]!, labels), Number(m![3]));
  }
  return samples;
}

const value = (s: Samples, name: string, labels: Record<string, string> = {}) => s.get(sampleKey(name, labels)) ?? 0;

/** The change of every sample from `before` to `after` that moved. */
function moved(before: Samples, after: Samples): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) if (v !== (before.get(k) ?? 0)) out[k] = v - (before.get(k) ?? 0);
  return out;
}

// ---------------------------------------------------------------------------------------------
// A kvql server object with a captured log
// ---------------------------------------------------------------------------------------------

interface Captured {
  lines: Record<string, any>[];
  raw: string[];
}

function capturingLogger(level: LogLevel) {
  const captured: Captured = { lines: [], raw: [] };
  const log = createLogger({
    level,
    destination: {
      write(line: string) {
        captured.raw.push(line);
        captured.lines.push(JSON.parse(line));
      },
    },
  });
  return { log, captured };
}

interface App {
  yoga: KvYoga;
  store: KvStore;
  log: ReturnType<typeof createLogger>;
  captured: Captured;
  fetch(path: string, init?: RequestInit): Promise<Response>;
  gql(query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Promise<{ status: number; body: any; res: Response }>;
  scrape(): Promise<Samples>;
  close(): void;
}

async function createApp(name: string, opts: { maxBodyBytes?: number; maxInFlight?: number; feedBuffer?: number } = {}): Promise<App> {
  const redis = createRedis(inject('redisUrl'), { commandTimeoutMs: 2000 });
  redis.on('error', () => {});
  await redis.connect();
  const store = await KvStore.open(redis, { prefix: uniquePrefix(name), partitions: 1 });
  const feed = new FeedHub(store.feedReader(200), { bufferSize: opts.feedBuffer ?? 1000, bufferBytes: 16 * 1024 * 1024, blockMs: 200, batchSize: 100 });
  const { log, captured } = capturingLogger('debug');
  const limits = { ...defaultLimits(), ...(opts.maxBodyBytes ? { maxBodyBytes: opts.maxBodyBytes } : {}) };
  const load = { ...defaultLoad(), ...(opts.maxInFlight ? { maxInFlight: opts.maxInFlight } : {}) };
  const yoga = createKvYoga({ store, limits, feed, load, log, metrics: new Metrics() });
  const fetch = async (path: string, init?: RequestInit): Promise<Response> => yoga.fetch(`http://kvql.test${path}`, init as never);
  return {
    yoga,
    store,
    log,
    captured,
    fetch,
    async gql(query, variables, headers = {}) {
      const res = await fetch('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', ...headers },
        body: JSON.stringify({ query, variables }),
      });
      return { status: res.status, body: await res.json(), res };
    },
    async scrape() {
      const res = await fetch('/metrics');
      expect(res.status).toBe(200);
      return parseExposition(await res.text());
    },
    close() {
      feed.close();
      redis.disconnect();
    },
  };
}

const PUT = 'mutation($key: String!, $value: String!, $v: Int) { put(key: $key, value: $value, expectedVersion: $v) { version } }';
const GET = 'query($key: String!) { get(key: $key) { value version } }';
const GET_MANY = 'query($keys: [String!]!) { getMany(keys: $keys) { value } }';
const REQUESTS = 'kvql_graphql_requests_total';
const DURATION = 'kvql_graphql_request_duration_seconds';
const IN_FLIGHT = 'kvql_graphql_requests_in_flight';
const REFUSALS = 'kvql_graphql_refusals_total';
const REDIS = 'kvql_redis_operation_duration_seconds';

// Keys and values no label or log line may show.
const SECRET_KEY = `user:${randomBytes(6).toString('hex')}`;
const SECRET_VALUE = `value-${randomBytes(6).toString('hex')}`;

describe('/metrics', () => {
  let app: App;
  beforeAll(async () => {
    app = await createApp('metrics');
  });
  afterAll(() => app.close());

  it('answers the Prometheus text format: every kvql metric, and the process metrics', async () => {
    await app.gql(GET, { key: 'warm-up' });
    const res = await app.fetch('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const [name, type] of [
      [REQUESTS, 'counter'],
      [DURATION, 'histogram'],
      [IN_FLIGHT, 'gauge'],
      [REFUSALS, 'counter'],
      [REDIS, 'histogram'],
      ['kvql_feed_subscribers', 'gauge'],
      ['kvql_request_body_bytes_in_flight', 'gauge'],
      ['kvql_feed_events_delivered_total', 'counter'],
      ['kvql_feed_subscription_errors_total', 'counter'],
      ['kvql_aof_archive_entries', 'gauge'],
      ['kvql_aof_archive_bytes', 'gauge'],
      ['kvql_aof_archive_last_look_timestamp_seconds', 'gauge'],
      ['process_cpu_user_seconds_total', 'counter'],
      ['process_resident_memory_bytes', 'gauge'],
      ['nodejs_eventloop_lag_seconds', 'gauge'],
      ['nodejs_heap_size_used_bytes', 'gauge'],
    ]) {
      expect(text).toContain(`# TYPE ${name} ${type}\n`);
      expect(text).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
    }
    const samples = parseExposition(text); // every line parses
    expect(value(samples, REQUESTS, { operation: 'get', outcome: 'ok' })).toBe(1);
    expect(value(samples, `${DURATION}_count`, { operation: 'get' })).toBe(1);
    expect(value(samples, `${DURATION}_bucket`, { operation: 'get', le: '+Inf' })).toBe(1);
    expect(value(samples, `${REDIS}_count`, { operation: 'getMany', outcome: 'ok' })).toBe(1);
    expect(value(samples, IN_FLIGHT)).toBe(0);
    // Without the managed Redis's AOF archive (KV_AOF_ARCHIVE_HOURS), its gauges read 0.
    for (const name of ['kvql_aof_archive_entries', 'kvql_aof_archive_bytes', 'kvql_aof_archive_last_look_timestamp_seconds']) expect(value(samples, name)).toBe(0);
    expect(value(samples, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    // A scrape is no GraphQL request.
    expect(value(await app.scrape(), REQUESTS, { operation: 'other', outcome: 'ok' })).toBe(0);
  });

  it('counts requests by operation and outcome, ok and errors alike, with latency', async () => {
    const before = await app.scrape();
    expect((await app.gql(PUT, { key: SECRET_KEY, value: SECRET_VALUE })).body.data.put.version).toBe(1);
    const conflict = await app.gql(PUT, { key: SECRET_KEY, value: SECRET_VALUE, v: 7 });
    expect(conflict.body.errors[0].extensions.code).toBe('VERSION_CONFLICT');
    expect((await app.gql(GET, { key: SECRET_KEY })).body.data.get.value).toBe(SECRET_VALUE);
    expect((await app.gql(GET, { key: '' })).body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
    expect((await app.gql(GET_MANY, { keys: [SECRET_KEY, `${SECRET_KEY}:2`] })).body.data.getMany).toHaveLength(2);
    // Two root fields, aliases, a fragment: still our fields, so "multiple" / the field itself.
    const two = await app.gql(`query($k: String!) { a: get(key: $k) { version } b: getMany(keys: [$k]) { version } }`, { k: SECRET_KEY });
    expect(two.body.errors).toBeUndefined();
    const fragment = await app.gql(`query($k: String!) { ...F } fragment F on Query { x: get(key: $k) { version } __typename }`, { k: SECRET_KEY });
    expect(fragment.body.errors).toBeUndefined();
    // The named operation of several.
    const named = await app.fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: `query A { get(key: "x") { version } } mutation B { delete(key: "x") { deleted } }`, operationName: 'B' }),
    });
    expect(((await named.json()) as any).data.delete.deleted).toBe(false);
    // Not an operation of ours: a parse error, introspection, an unknown field.
    expect((await app.gql('{ get(key: ')).body.errors[0].extensions.code).toBe('GRAPHQL_PARSE_FAILED');
    expect((await app.gql('{ __schema { queryType { name } } }')).body.data.__schema.queryType.name).toBe('Query');
    expect((await app.gql(`{ ${SECRET_KEY.replace(':', '_')} }`)).body.errors[0].extensions.code).toBe('GRAPHQL_VALIDATION_FAILED');

    const after = await app.scrape();
    const requests = Object.fromEntries(Object.entries(moved(before, after)).filter(([k]) => k.startsWith(`${REQUESTS}{`)));
    expect(requests).toEqual({
      [sampleKey(REQUESTS, { operation: 'put', outcome: 'ok' })]: 1,
      [sampleKey(REQUESTS, { operation: 'put', outcome: 'VERSION_CONFLICT' })]: 1,
      [sampleKey(REQUESTS, { operation: 'get', outcome: 'ok' })]: 2,
      [sampleKey(REQUESTS, { operation: 'get', outcome: 'BAD_USER_INPUT' })]: 1,
      [sampleKey(REQUESTS, { operation: 'getMany', outcome: 'ok' })]: 1,
      [sampleKey(REQUESTS, { operation: 'multiple', outcome: 'ok' })]: 1,
      [sampleKey(REQUESTS, { operation: 'delete', outcome: 'ok' })]: 1,
      [sampleKey(REQUESTS, { operation: 'other', outcome: 'GRAPHQL_PARSE_FAILED' })]: 1,
      [sampleKey(REQUESTS, { operation: 'other', outcome: 'ok' })]: 1,
      [sampleKey(REQUESTS, { operation: 'other', outcome: 'GRAPHQL_VALIDATION_FAILED' })]: 1,
    });
    const count = (s: Samples, operation: string) => value(s, `${DURATION}_count`, { operation });
    expect(count(after, 'put') - count(before, 'put')).toBe(2);
    expect(count(after, 'get') - count(before, 'get')).toBe(3);
    const sum = (s: Samples, operation: string) => value(s, `${DURATION}_sum`, { operation });
    expect(sum(after, 'put') - sum(before, 'put')).toBeGreaterThan(0);
    // The store's Redis work: the put and the conflict are batchPut calls (the conflict threw).
    const redisCount = (s: Samples, operation: string, outcome: string) => value(s, `${REDIS}_count`, { operation, outcome });
    expect(redisCount(after, 'batchPut', 'ok') - redisCount(before, 'batchPut', 'ok')).toBe(1);
    expect(redisCount(after, 'batchPut', 'error') - redisCount(before, 'batchPut', 'error')).toBe(1);
    expect(redisCount(after, 'delete', 'ok') - redisCount(before, 'delete', 'ok')).toBe(1);
    expect(redisCount(after, 'getMany', 'ok') - redisCount(before, 'getMany', 'ok')).toBe(4);
    await (await app.fetch('/ready')).arrayBuffer();
    expect(redisCount(await app.scrape(), 'ping', 'ok')).toBeGreaterThanOrEqual(1);
  });

  it('has no key, value or query text in any label', async () => {
    await app.gql(PUT, { key: SECRET_KEY, value: SECRET_VALUE });
    await app.gql(`{ get(key: "${SECRET_KEY}") { value } }`);
    const text = await (await app.fetch('/metrics')).text();
    expect(text).not.toContain(SECRET_KEY);
    expect(text).not.toContain(SECRET_KEY.replace(':', '_'));
    expect(text).not.toContain(SECRET_VALUE);
    // Every operation label is a root field of the schema, "multiple" or "other".
    const ops = new Set([...text.matchAll(/operation="([^"]*)"/g)].map((m) => m[1]));
    const allowed = new Set(['get', 'getMany', 'range', 'put', 'batchPut', 'delete', 'deleteRange', 'changes', 'ping', 'multiple', 'other']);
    for (const op of ops) expect(allowed, op).toContain(op);
    for (const m of text.matchAll(/(?:outcome|reason|code)="([^"]*)"/g)) expect(m[1]).toMatch(/^(ok|error|other|[A-Z][A-Z0-9_]*)$/);
  });

  it('the in-flight gauge counts requests while they run and returns to 0, whatever their end', async () => {
    const store = app.store as unknown as Record<string, unknown>;
    const original = store.getMany;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    store.getMany = async (keys: string[]) => {
      await gate;
      return keys.map(() => null);
    };
    try {
      const pending = [app.gql(GET, { key: 'a' }), app.gql(GET_MANY, { keys: ['b'] })];
      await until(5000, 'two requests in flight', async () => (value(await app.scrape(), IN_FLIGHT) === 2 ? true : undefined));
      release();
      const done = await Promise.all(pending);
      expect(done.map((r) => r.status)).toEqual([200, 200]);
      expect(value(await app.scrape(), IN_FLIGHT)).toBe(0);
    } finally {
      store.getMany = original;
    }
    // An error, and a body that fails while it is being read (the request handler throws).
    await app.gql(GET, { key: '' });
    const broken = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"query":'));
        controller.error(new Error('client went away'));
      },
    });
    const before = await app.scrape();
    const res = await app
      .fetch('/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: broken, duplex: 'half' } as RequestInit)
      .catch((err: unknown) => err);
    if (res instanceof Response) expect(res.status).toBeGreaterThanOrEqual(400);
    const after = await app.scrape();
    expect(value(after, IN_FLIGHT)).toBe(0);
    // Counted once, as the internal error it is (yoga.fetch rejects; over HTTP it is a 500).
    const total = (s: Samples) => [...s].filter(([k]) => k.startsWith(`${REQUESTS}{`)).reduce((n, [, v]) => n + v, 0);
    expect(total(after) - total(before)).toBe(1);
    const internal = { operation: 'other', outcome: 'INTERNAL_SERVER_ERROR' };
    expect(value(after, REQUESTS, internal) - value(before, REQUESTS, internal)).toBe(1);
  });

  it('counts a refused body (413 PAYLOAD_TOO_LARGE) as a refusal', async () => {
    const small = await createApp('refusal', { maxBodyBytes: 2048 });
    try {
      const res = await small.gql(PUT, { key: 'big', value: 'x'.repeat(5000) });
      expect(res.status).toBe(413);
      expect(res.body.errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE');
      const s = await small.scrape();
      expect(value(s, REFUSALS, { reason: 'PAYLOAD_TOO_LARGE' })).toBe(1);
      // Refused before it was parsed: its operation is unknown.
      expect(value(s, REQUESTS, { operation: 'other', outcome: 'PAYLOAD_TOO_LARGE' })).toBe(1);
      expect(value(s, IN_FLIGHT)).toBe(0);
      expect(value(s, REFUSALS, { reason: 'OVERLOADED' })).toBe(0);
    } finally {
      small.close();
    }
  });

  it('counts an OVERLOADED refusal, read from the response', async () => {
    const one = await createApp('overload', { maxInFlight: 1 });
    const store = one.store as unknown as Record<string, unknown>;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    store.getMany = async (keys: string[]) => {
      await gate;
      return keys.map(() => null);
    };
    try {
      const first = one.gql(GET, { key: 'a' });
      await until(5000, 'the first request in flight', async () => (value(await one.scrape(), IN_FLIGHT) === 1 ? true : undefined));
      const refused = await one.gql(GET, { key: 'b' });
      expect(refused.status).toBe(503);
      expect(refused.body.errors[0].extensions.code).toBe('OVERLOADED');
      release();
      expect((await first).status).toBe(200);
      const s = await one.scrape();
      expect(value(s, REFUSALS, { reason: 'OVERLOADED' })).toBe(1);
      expect(value(s, REQUESTS, { operation: 'other', outcome: 'OVERLOADED' })).toBe(1);
      expect(value(s, REQUESTS, { operation: 'get', outcome: 'ok' })).toBe(1);
      expect(value(s, IN_FLIGHT)).toBe(0);
    } finally {
      release();
      one.close();
    }
  });

  it('counts change events delivered, and the error that ends a slow subscriber', async () => {
    const slow = await createApp('feed', { feedBuffer: 2 });
    const abort = new AbortController();
    try {
      const res = await slow.fetch('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ query: 'subscription { changes(prefix: "f:") { key entry { value } } }' }),
        signal: abort.signal,
      });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      const payloads: any[] = [];
      let reading: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
      let ended = false;
      /** The next payload, or undefined when none comes within `ms` or the stream has ended. */
      const poll = async (ms: number) => {
        const deadline = Date.now() + ms;
        while (payloads.length === 0 && !ended) {
          const left = deadline - Date.now();
          if (left <= 0) return undefined;
          reading ??= reader.read();
          let timer: ReturnType<typeof setTimeout> | undefined;
          const r = await Promise.race([reading, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), left)))]);
          clearTimeout(timer);
          if (r === undefined) return undefined;
          reading = undefined;
          if (r.done) ended = true;
          else {
            buffer += decoder.decode(r.value, { stream: true });
            const { frames, rest } = parseSseFrames(buffer);
            buffer = rest;
            for (const f of frames) if (f.event === 'next') payloads.push(JSON.parse(f.data));
            if (frames.some((f) => f.event === 'complete')) ended = true;
          }
        }
        return payloads.shift();
      };
      // Established once a marker comes through.
      await until(5000, 'the subscription delivers', async () => {
        await slow.gql(PUT, { key: 'f:marker', value: 'm' });
        return (await poll(100))?.data?.changes?.key === 'f:marker' ? true : undefined;
      });
      while (await poll(50)); // the other markers
      const s1 = await slow.scrape();
      expect(value(s1, 'kvql_feed_subscribers')).toBe(1);
      const delivered = value(s1, 'kvql_feed_events_delivered_total');
      expect(delivered).toBeGreaterThanOrEqual(1);
      // Not reading while 60 events of 1 KB arrive: yoga's SSE body pulls while its buffer (16 KiB
      // with yoga.fetch) has room, then the hub's queue for it (2 events) overflows.
      for (let i = 0; i < 60; i++) await slow.gql(PUT, { key: `f:${i}`, value: 'x'.repeat(1000) });
      let last: any;
      for (let p = await poll(5000); p; p = await poll(5000)) last = p;
      expect(ended).toBe(true);
      expect(last.errors[0].extensions.code).toBe('SLOW_CONSUMER');
      const s2 = await slow.scrape();
      expect(value(s2, 'kvql_feed_subscription_errors_total', { code: 'SLOW_CONSUMER' })).toBe(1);
      expect(value(s2, 'kvql_feed_events_delivered_total')).toBeGreaterThan(delivered);
      expect(value(s2, 'kvql_feed_events_delivered_total')).toBeLessThan(delivered + 60);
      expect(value(s2, REQUESTS, { operation: 'changes', outcome: 'ok' })).toBe(1);
      await until(5000, 'the subscriber gauge back to 0', async () => (value(await slow.scrape(), 'kvql_feed_subscribers') === 0 ? true : undefined));
    } finally {
      abort.abort();
      slow.close();
    }
  });
});

describe('request ids and logs', () => {
  let app: App;
  beforeAll(async () => {
    app = await createApp('logs');
  });
  afterAll(() => app.close());

  it('echoes a sane x-request-id, and generates one otherwise', async () => {
    const given = await app.gql(GET, { key: 'a' }, { 'x-request-id': 'req-42.abc:DEF' });
    expect(given.res.headers.get('x-request-id')).toBe('req-42.abc:DEF');
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const none = await app.gql(GET, { key: 'a' });
    const other = await app.gql(GET, { key: 'a' });
    expect(none.res.headers.get('x-request-id')).toMatch(uuid);
    expect(other.res.headers.get('x-request-id')).toMatch(uuid);
    expect(other.res.headers.get('x-request-id')).not.toBe(none.res.headers.get('x-request-id'));
    // Too long, or characters a log reader could be fooled by: replaced.
    for (const bad of ['x'.repeat(129), 'a b', 'a"b', 'a{b}', '']) {
      const r = await app.gql(GET, { key: 'a' }, { 'x-request-id': bad });
      expect(r.res.headers.get('x-request-id')).toMatch(uuid);
    }
    // Refusals and the other endpoints carry one too.
    for (const path of ['/ready', '/health', '/metrics']) {
      const r = await app.fetch(path, { headers: { 'x-request-id': 'probe-1' } });
      await r.arrayBuffer();
      expect(r.headers.get('x-request-id')).toBe('probe-1');
    }
  });

  it('logs a masked internal error in full, with the request id, and never a password', async () => {
    const store = app.store as unknown as Record<string, unknown>;
    const original = store.getMany;
    const password = `pw${randomBytes(6).toString('hex')}`;
    store.getMany = async () => {
      throw new Error(`lost the connection to redis://kv:${password}@10.0.0.9:6379/0`, {
        cause: new Error(`while talking to rediss://:${password}@cache.internal:6380`),
      });
    };
    app.captured.lines.length = 0;
    app.captured.raw.length = 0;
    try {
      const r = await app.gql(GET, { key: SECRET_KEY }, { 'x-request-id': 'masked-1' });
      expect(r.body.errors[0].extensions.code).toBe('INTERNAL_SERVER_ERROR');
      expect(r.body.errors[0].message).toBe('Unexpected error.');
      expect(JSON.stringify(r.body)).not.toContain(password);
    } finally {
      store.getMany = original;
    }
    const errors = app.captured.lines.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    const line = errors[0]!;
    expect(line.reqId).toBe('masked-1');
    expect(line.name).toBe('kvql');
    expect(typeof line.time).toBe('string');
    expect(line.path).toBe('get');
    expect(line.msg).toContain('lost the connection to redis://***@10.0.0.9:6379/0');
    expect(line.err.message).toContain('redis://***@10.0.0.9:6379/0');
    expect(line.err.stack).toContain('lost the connection');
    expect(JSON.stringify(line.err)).toContain('rediss://***@cache.internal:6380');
    for (const raw of app.captured.raw) expect(raw).not.toContain(password);
    // The debug line of the same request names it too, and shows no key.
    const access = app.captured.lines.find((l) => l.msg === 'graphql request' && l.reqId === 'masked-1');
    expect(access).toMatchObject({ level: 'debug', operation: 'get', outcome: 'INTERNAL_SERVER_ERROR', status: 200 });
    for (const raw of app.captured.raw) expect(raw).not.toContain(SECRET_KEY);
  });

  it('writes nothing per request at level info', async () => {
    app.log.level = 'info';
    try {
      app.captured.lines.length = 0;
      for (let i = 0; i < 5; i++) await app.gql(PUT, { key: `i:${i}`, value: SECRET_VALUE });
      await app.gql(GET, { key: '' });
      await app.gql(PUT, { key: 'i:0', value: 'x', v: 9 });
      expect(app.captured.lines).toEqual([]);
    } finally {
      app.log.level = 'debug';
    }
  });
});

describe('over real HTTP, with a password in REDIS_URL', () => {
  const password = `pw${randomBytes(8).toString('hex')}`;
  let redisPort: number;
  let redisServer: ChildProcess | undefined;
  let server: RunningServer | undefined;
  let starting: Promise<RunningServer> | undefined;
  let captured: Captured;
  let base: string;
  const prefix = uniquePrefix('http');

  beforeAll(async () => {
    redisPort = await freePort();
    const logger = capturingLogger('trace');
    captured = logger.captured;
    const config = loadConfig({ PORT: '0', REDIS_URL: `redis://:${password}@127.0.0.1:${redisPort}`, KV_PREFIX: prefix });
    // Nothing answers yet: the server waits for Redis, and says so (every 10 s).
    starting = startServer(config, logger.log);
    await until(15_000, 'the "waiting for Redis" line', () => (captured.lines.some((l) => /waiting for Redis/.test(l.msg)) ? true : undefined));
    redisServer = spawn(
      'redis-server',
      ['--port', String(redisPort), '--bind', '127.0.0.1', '--requirepass', password, '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    server = await starting;
    base = server.url.replace(/\/graphql$/, '');
  }, 40_000);

  afterAll(async () => {
    await server?.close();
    if (!server) await starting?.then((s) => s.close()).catch(() => {});
    redisServer?.kill('SIGKILL');
  });

  const post = (query: string, variables: Record<string, unknown>, headers: Record<string, string> = {}) =>
    fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(5000),
    });

  it('said where it waited without the password', () => {
    const waiting = captured.lines.find((l) => /waiting for Redis/.test(l.msg))!;
    expect(waiting.level).toBe('info');
    expect(waiting.msg).toContain(`redis://***@127.0.0.1:${redisPort}`);
  });

  it('serves /metrics and echoes request ids', async () => {
    const put = await post(PUT, { key: 'h:1', value: 'v' }, { 'x-request-id': 'http-1' });
    expect(put.status).toBe(200);
    expect(put.headers.get('x-request-id')).toBe('http-1');
    await put.arrayBuffer();
    const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const s = parseExposition(await res.text());
    expect(value(s, REQUESTS, { operation: 'put', outcome: 'ok' })).toBe(1);
    expect(value(s, IN_FLIGHT)).toBe(0);
  });

  it('gauges subscribers over SSE', async () => {
    const sub = await sseSubscribe(`${base}/graphql`, 'subscription { changes(prefix: "s:") { key } }');
    try {
      await until(5000, 'an event', async () => {
        await (await post(PUT, { key: 's:1', value: 'v' })).arrayBuffer();
        return (await sub.poll(100))?.data?.changes?.key === 's:1' ? true : undefined;
      });
      const s = parseExposition(await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) })).text());
      expect(value(s, 'kvql_feed_subscribers')).toBe(1);
      expect(value(s, 'kvql_feed_events_delivered_total')).toBeGreaterThanOrEqual(1);
    } finally {
      await sub.close();
    }
    await until(5000, 'no subscriber', async () => {
      const s = parseExposition(await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) })).text());
      return value(s, 'kvql_feed_subscribers') === 0 ? true : undefined;
    });
  });

  it('logs a Redis error behind a masked error with the request id, and no line holds the password', async () => {
    // A bucket key of the wrong type: Redis answers WRONGTYPE, which means nothing to a client.
    const direct = new Redis({ port: redisPort, host: '127.0.0.1', password, lazyConnect: true });
    await direct.connect();
    try {
      const keys = new Keyspace(prefix, 1);
      await direct.set(keys.bucket('h:wrongtype'), 'not a hash');
    } finally {
      direct.disconnect();
    }
    const res = await post(GET, { key: 'h:wrongtype' }, { 'x-request-id': 'http-masked' });
    const body = (await res.json()) as any;
    expect(body.errors[0].extensions.code).toBe('INTERNAL_SERVER_ERROR');
    const line = await until(2000, 'the error line', () => captured.lines.find((l) => l.level === 'error' && l.reqId === 'http-masked'));
    expect(line.err.message).toMatch(/WRONGTYPE/);
    // ioredis puts the command's arguments on its errors: the name stays, the key goes.
    expect(line.err.command).toEqual({ name: 'hmget' });
    expect(captured.raw.join('')).not.toContain('h:wrongtype');
    const all = captured.raw.join('');
    expect(all).toMatch(/ECONNREFUSED/); // the wait for Redis was logged
    expect(all).not.toContain(password);
    expect(all).not.toContain('not a hash');
  });
});

describe('labels, request ids and redaction, one by one', () => {
  const roots = new Set(['get', 'getMany', 'put', 'changes']);
  const label = (query: string, name?: string) => operationLabel(parse(query) as never, name, roots);

  it('labels an operation by its root field, "multiple" or "other"', () => {
    expect(label('{ get(key: "a") { value } }')).toBe('get');
    expect(label('query Q { x: get(key: "a") { value } y: get(key: "b") { value } __typename }')).toBe('get');
    expect(label('{ ... on Query { getMany(keys: []) { value } } }')).toBe('getMany');
    expect(label('{ ...F } fragment F on Query { ...G } fragment G on Query { get(key: "a") { value } }')).toBe('get');
    expect(label('{ get(key: "a") { value } getMany(keys: []) { value } }')).toBe('multiple');
    expect(label('query A { get(key: "a") { value } } mutation B { put(key: "a", value: "b") { version } }', 'B')).toBe('put');
    // No name among several, a name that is not there, nothing of ours.
    expect(label('query A { get(key: "a") { value } } query B { get(key: "b") { value } }')).toBe('other');
    expect(label('{ get(key: "a") { value } }', 'Missing')).toBe('other');
    expect(label('{ __typename }')).toBe('other');
    expect(label('{ __schema { types { name } } }')).toBe('other');
    expect(label('{ secretKeyName }')).toBe('other');
    expect(label('{ get(key: "a") { value } secretKeyName }')).toBe('other');
  });

  it('accepts a request id only when it is a short, plain token', () => {
    expect(requestId('abc-123_X.y:z@w+v=u/t')).toBe('abc-123_X.y:z@w+v=u/t');
    expect(requestId('x'.repeat(128))).toBe('x'.repeat(128));
    for (const bad of [null, '', 'x'.repeat(129), 'a b', 'a\tb', 'a"b', 'é', '<script>']) {
      expect(requestId(bad)).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it('blanks the user and password of every URL in a text', () => {
    expect(redactUrl('redis://:pw@h:1/0')).toBe('redis://***@h:1/0');
    expect(redactUrl('a rediss://user:p%40ss@h and http://u:p@x/y')).toBe('a rediss://***@h and http://***@x/y');
    expect(redactUrl('{"m":"redis://u:pw@h"}')).toBe('{"m":"redis://***@h"}');
    expect(redactUrl('redis://127.0.0.1:6379 user@example.com')).toBe('redis://127.0.0.1:6379 user@example.com');
  });
});
