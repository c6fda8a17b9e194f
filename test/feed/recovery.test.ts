// The change feed when things go wrong: cursors older than the retained history, history
// trimmed under a subscriber, a slow consumer, a Redis crash (kill -9) under a live
// subscription, and two API processes on one keyspace. Subscriptions are read over SSE, from
// yoga.fetch (in process) or from a real HTTP server (the second process).
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { decodeFeedCursor, encodeFeedCursor } from '../../src/graphql/changes.js';
import type { Position } from '../../src/store/feed.js';
import { decodeEntry, idOfSeq } from '../../src/store/feedFormat.js';
import { partitionOf } from '../../src/store/keys.js';
import type { RedisClient } from '../../src/store/redis.js';
import { createTestApp, BUCKETS, ON_CLUSTER, PARTITIONS, type GqlResult, type TestApp } from '../harness/app.js';
import { freePort, startTestRedis, type TestRedis } from '../harness/redisServer.js';
import { startArgs } from '../harness/startCommand.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

const SUBSCRIBE = `subscription($prefix: String, $after: String) {
  changes(prefix: $prefix, after: $after) { type key version cursor entry { key value version } }
}`;
const PUT = `mutation($key: String!, $value: String!) { put(key: $key, value: $value) { key value version } }`;
const DELETE = `mutation($key: String!) { delete(key: $key) { deleted previous { key value version } } }`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key value version } }`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key value version } }`;
const RANGE = `query($prefix: String, $first: Int, $after: String) {
  range(prefix: $prefix, first: $first, after: $after) {
    totalCount edges { node { key value version } } pageInfo { hasNextPage endCursor }
  }
}`;

const MAYBE_APPLIED = /may or may not have been applied/;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ChangeEvent {
  type: 'PUT' | 'DELETE';
  key: string;
  version: number;
  cursor: string;
  entry: { key: string; value: string; version: number } | null;
}

interface GqlError {
  message: string;
  extensions?: Record<string, any>;
}

interface Payload {
  data?: { changes: ChangeEvent } | null;
  errors?: GqlError[];
}

// ---------------------------------------------------------------------------------------------
// A small SSE client. It reads the response body only when asked (next/poll), so a subscriber
// that is not asked does not read: what it leaves unread stays in the body stream's buffer.
// ---------------------------------------------------------------------------------------------

type ReadResult = { done: true; value?: undefined } | { done: false; value: Uint8Array };

class Sse {
  private readonly reader: { read(): Promise<ReadResult>; cancel(reason?: unknown): Promise<void> };
  private pending: Promise<ReadResult> | null = null;
  private text = '';
  private readonly decoder = new TextDecoder();
  private readonly ready: Payload[] = [];
  /** "event: complete" came, or the body ended. */
  ended = false;

  constructor(body: unknown) {
    this.reader = (body as ReadableStream<Uint8Array>).getReader() as never;
    // One read starts the body flowing, and with it the subscription (yoga subscribes on the
    // first pull); from then on the body stream buffers what nobody reads, up to its limit.
    this.pending = this.reader.read();
    this.pending.catch(() => {});
  }

  /** The next payload; null once the subscription has completed; 'timeout' if none came in `ms`. */
  async poll(ms: number): Promise<Payload | null | 'timeout'> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.ready.length > 0) return this.ready.shift()!;
      if (this.ended) return null;
      if (!this.pending) {
        this.pending = this.reader.read();
        this.pending.catch(() => {}); // awaited below or on a later call
      }
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([
        this.pending,
        new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), Math.max(0, deadline - Date.now())))),
      ]);
      clearTimeout(timer);
      if (r === 'timeout') return 'timeout';
      this.pending = null;
      if (r.done) {
        this.text += this.decoder.decode();
        this.parse();
        this.ended = true;
      } else {
        this.text += this.decoder.decode(r.value, { stream: true });
        this.parse();
      }
    }
  }

  /** The next payload, or null once completed; fails after `ms`. */
  async next(ms = 5000): Promise<Payload | null> {
    const p = await this.poll(ms);
    if (p === 'timeout') throw new Error(`no SSE message within ${ms} ms`);
    return p;
  }

  /** The next payload, which must be an event. */
  async event(ms = 5000): Promise<ChangeEvent> {
    const p = await this.next(ms);
    if (p === null) throw new Error('the subscription completed');
    if (p.errors) throw new Error(`unexpected error payload: ${JSON.stringify(p.errors)}`);
    return p.data!.changes;
  }

  /** `n` events in a row. */
  async events(n: number, ms = 5000): Promise<ChangeEvent[]> {
    const out: ChangeEvent[] = [];
    for (let i = 0; i < n; i++) out.push(await this.event(ms));
    return out;
  }

  /** The one error payload a failed subscription answers with, then its completion. */
  async failure(ms = 5000): Promise<GqlError> {
    const p = await this.next(ms);
    expect(p, 'an error payload').not.toBeNull();
    expect(p!.data ?? null).toBeNull();
    expect(p!.errors, JSON.stringify(p)).toHaveLength(1);
    expect(await this.next(ms), 'completes after its error').toBeNull();
    return p!.errors![0]!;
  }

  close(): void {
    this.ended = true;
    // Not awaited: cancelling resolves when the server side has let go, which is not our concern.
    this.reader.cancel().catch(() => {});
  }

  private parse(): void {
    for (let i = this.text.indexOf('\n\n'); i >= 0; i = this.text.indexOf('\n\n')) {
      const frame = this.text.slice(0, i);
      this.text = this.text.slice(i + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of frame.split('\n')) {
        if (line === '' || line.startsWith(':')) continue; // a comment: yoga's keep-alive ping
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
      if (event === 'complete') this.ended = true;
      else if (data.length > 0 && data.join('\n') !== '') this.ready.push(JSON.parse(data.join('\n')) as Payload);
    }
  }
}

const opened: Sse[] = [];

function sseRequest(variables: Record<string, unknown>): RequestInit {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ query: SUBSCRIBE, variables }),
  };
}

/** Subscribes through yoga.fetch; the body starts flowing (and the subscription with it) at once. */
async function subscribe(app: TestApp, variables: Record<string, unknown> = {}): Promise<Sse> {
  const res = await app.yoga.fetch('http://kvql.test/graphql', sseRequest(variables) as never);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const sse = new Sse(res.body);
  opened.push(sse);
  return sse;
}

/** Subscribes over real HTTP. */
async function subscribeUrl(url: string, variables: Record<string, unknown> = {}): Promise<Sse> {
  const res = await fetch(url, { ...sseRequest(variables), signal: AbortSignal.timeout(60_000) });
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const sse = new Sse(res.body);
  opened.push(sse);
  return sse;
}

async function gqlUrl(url: string, query: string, variables: Record<string, unknown>): Promise<GqlResult> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, ...((await res.json()) as object) };
}

afterAll(() => {
  for (const s of opened) s.close();
});

/** Polls `cond` until it holds; fails after `ms`. */
async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

function codeOf(r: GqlResult): string | undefined {
  return r.errors?.[0]?.extensions?.code as string | undefined;
}

// ---------------------------------------------------------------------------------------------
// Events as the subscription and as the streams have them
// ---------------------------------------------------------------------------------------------

/** A feed event reduced to what both sides know: partition, stream ID, sequence, content. */
interface Fact {
  partition: number;
  id: string;
  seq: number;
  type: 'PUT' | 'DELETE';
  key: string;
  version: number;
  value: string | null;
}

/**
 * The helpers that depend on a keyspace's partition count (cursors hold one position per
 * partition): the test apps' count (PARTITIONS) unless a test app was given another.
 */
function feedHelpers(partitions: number) {
  /** A cursor's positions, one per partition. */
  const decode = (cursor: string) => decodeFeedCursor(cursor, partitions);

  /** What a delivered event is: its cursor holds its own stream ID and sequence in its partition. */
  const factOf = (e: ChangeEvent): Fact => {
    const partition = partitionOf(e.key, partitions);
    const { id, seq } = decode(e.cursor)[partition]!;
    return { partition, id, seq, type: e.type, key: e.key, version: e.version, value: e.entry?.value ?? null };
  };

  const byPartition = (facts: Fact[]): Fact[][] => {
    const out: Fact[][] = Array.from({ length: partitions }, () => []);
    for (const f of facts) out[f.partition]!.push(f);
    return out;
  };

  /** Per partition: consecutive sequence numbers right after `from` (no event skipped or repeated). */
  const expectContiguous = (facts: Fact[], from: readonly Position[]): void => {
    expect(from).toHaveLength(partitions);
    byPartition(facts).forEach((list, p) => {
      expect(
        list.map((f) => f.seq),
        `partition ${p}`,
      ).toEqual(list.map((_, i) => from[p]!.seq + 1 + i));
    });
  };

  /** The cursor from before the first event. */
  const startCursor = () => encodeFeedCursor(Array.from({ length: partitions }, () => ({ id: '0-0', seq: 0 })));

  return { decode, factOf, byPartition, expectContiguous, startCursor };
}

const { factOf, byPartition, expectContiguous, startCursor } = feedHelpers(PARTITIONS);

/**
 * Every event the streams of `app`'s keyspace hold, per partition (as many as the keyspace has),
 * in stream order. One XRANGE at a time, each of one stream: on a cluster each is its own slot.
 */
async function streamFacts(redis: RedisClient, app: TestApp): Promise<Fact[][]> {
  const out: Fact[][] = [];
  for (let p = 0; p < app.store.keys.partitions; p++) {
    const entries = (await redis.xrangeBuffer(app.store.keys.stream(p), '-', '+')) as unknown as [Buffer, Buffer[]][];
    out.push(
      entries.flatMap(([id, fields]) =>
        decodeEntry(id.toString(), fields).events.map((e) => ({
          partition: p,
          id: idOfSeq(e.seq),
          seq: e.seq,
          type: e.type === 'P' ? ('PUT' as const) : ('DELETE' as const),
          key: e.key,
          version: e.version,
          value: e.type === 'P' ? e.value! : null,
        })),
      ),
    );
  }
  return out;
}

/** How many events each partition of `app`'s keyspace has ever had (its sequence counter). */
async function sequences(redis: RedisClient, app: TestApp): Promise<number[]> {
  const out: number[] = [];
  for (let p = 0; p < app.store.keys.partitions; p++) out.push(Number((await redis.get(app.store.keys.sequence(p))) ?? 0));
  return out;
}

/**
 * Reads events until the subscription fails or completes (its last payload, or null), or until
 * nothing comes for `quietMs` ('timeout'); at most `max` events.
 */
async function drain(sse: Sse, max: number, quietMs = 1500): Promise<{ events: ChangeEvent[]; end: Payload | null | 'timeout' }> {
  const events: ChangeEvent[] = [];
  for (let i = 0; i <= max; i++) {
    const p = await sse.poll(quietMs);
    if (p === 'timeout' || p === null || p.errors) return { events, end: p };
    events.push(p.data!.changes);
  }
  throw new Error(`more than ${max} events`);
}

/** The one error a subscription ended with, after checking it did end with one. */
function endError(end: Payload | null | 'timeout'): GqlError {
  expect(end, 'the subscription went quiet instead of ending with an error').not.toBe('timeout');
  expect(end, 'the subscription completed without an error').not.toBeNull();
  const p = end as Payload;
  expect(p.data ?? null).toBeNull();
  expect(p.errors).toHaveLength(1);
  return p.errors![0]!;
}

// ---------------------------------------------------------------------------------------------
// 1. Retention: expired cursors, history trimmed under a subscriber
// ---------------------------------------------------------------------------------------------

describe('feed retention and expired cursors', () => {
  // These apps have a standalone Redis of their own, and at most 4 partitions: 120 events must
  // overflow a retention of 10 per partition (with the cluster project's 16 they would not).
  // Every cursor and per-partition list here has this count, so the helpers are this count's.
  const P = Math.min(PARTITIONS, 4);
  const { decode, factOf, byPartition, expectContiguous, startCursor } = feedHelpers(P);
  let server: TestRedis;
  let admin: Redis;
  const apps: TestApp[] = [];

  beforeAll(async () => {
    // Small stream nodes, so that XADD MINID ~ trims after a few entries (retention 10 events).
    server = await startTestRedis(['--stream-node-max-entries', '4']);
    admin = new Redis(server.url);
    admin.on('error', () => {});
  });
  afterAll(async () => {
    for (const a of apps) await a.close();
    admin?.disconnect();
    await server?.stop();
  });

  async function app(name: string, opts: { feedRetention?: number; feedBuffer?: number } = {}): Promise<TestApp> {
    const a = await createTestApp(name, { redisUrl: server.url, partitions: P, feedRetention: 10, ...opts });
    apps.push(a);
    return a;
  }

  it('refuses a cursor older than the retained history with CURSOR_EXPIRED and oldestCursor, which resumes with exactly the retained events, then live', async () => {
    const a = await app('expire');
    const live = await subscribe(a);
    await until(() => a.feed.subscriberCount === 1, 'the live subscription');

    // 100 puts over 40 keys, then 20 deletes: 120 events, far more than the streams keep.
    const writes: { type: 'PUT' | 'DELETE'; key: string; version: number; value: string | null }[] = [];
    for (let i = 0; i < 100; i++) {
      const key = `e:${String(i % 40).padStart(2, '0')}`;
      const r = await a.gql(PUT, { key, value: `v${i}` });
      expect(r.errors).toBeUndefined();
      writes.push({ type: 'PUT', key, version: r.data!.put.version, value: `v${i}` });
    }
    for (let i = 0; i < 20; i++) {
      const key = `e:${String(i).padStart(2, '0')}`;
      const r = await a.gql(DELETE, { key });
      expect(r.data!.delete.deleted).toBe(true);
      writes.push({ type: 'DELETE', key, version: r.data!.delete.previous.version, value: null });
    }
    const N = writes.length;
    const seen = await live.events(N);
    const seenFacts = seen.map(factOf);
    // The live subscription got every write, in order per key, each once.
    for (const key of new Set(writes.map((w) => w.key))) {
      expect(
        seenFacts.filter((f) => f.key === key).map(({ type, version, value }) => ({ type, key, version, value })),
        key,
      ).toEqual(writes.filter((w) => w.key === key));
    }
    expectContiguous(seenFacts, decode(startCursor()));

    const streams = await streamFacts(admin, a);
    const retained = streams.flat();
    expect(retained.length).toBeLessThan(N / 2);
    expect(streams.filter((s) => s.length > 0 && s[0]!.seq > 1).length, 'partitions trimmed').toBeGreaterThan(0);
    const totals = await sequences(admin, a);
    expect(totals.reduce((x, y) => x + y, 0)).toBe(N);
    // What the streams still hold is each partition's tail, ending at its last event.
    streams.forEach((s, p) => expect(s.map((f) => f.seq)).toEqual(s.map((_, i) => totals[p]! - s.length + 1 + i)));

    // A cursor of the first event, and one from before everything: expired, at once.
    let oldestCursor = '';
    for (const after of [seen[0]!.cursor, startCursor()]) {
      const t0 = performance.now();
      const sub = await subscribe(a, { after });
      const err = await sub.failure(3000);
      expect(performance.now() - t0).toBeLessThan(2000);
      expect(err.extensions?.code, err.message).toBe('CURSOR_EXPIRED');
      expect(err.message).toMatch(/no longer retained/);
      expect(typeof err.extensions?.oldestCursor).toBe('string');
      // Each partition's oldest position is right before its first retained event.
      expect(decode(err.extensions!.oldestCursor).map((pos) => pos.seq)).toEqual(
        streams.map((s, p) => (s[0]?.seq ?? totals[p]! + 1) - 1),
      );
      oldestCursor = err.extensions!.oldestCursor;
    }

    // From oldestCursor: exactly what the streams hold, in stream order per partition.
    const resumed = await subscribe(a, { after: oldestCursor });
    const replay = (await resumed.events(retained.length)).map(factOf);
    expect(byPartition(replay)).toEqual(streams);
    // ... and nothing else, then it is live.
    expect(await resumed.poll(300)).toBe('timeout');
    expect((await a.gql(PUT, { key: 'e:live', value: 'now' })).errors).toBeUndefined();
    const liveEvent = { type: 'PUT', key: 'e:live', version: 1, entry: { key: 'e:live', value: 'now', version: 1 } };
    expect(await resumed.event()).toMatchObject(liveEvent);
    const newest = await live.event();
    expect(newest).toMatchObject(liveEvent);

    // A cursor still within retention: everything after it, each once (the live put included).
    const recent = seen[N - 5]!;
    const recentAt = decode(recent.cursor);
    streams.forEach((s, p) => expect(recentAt[p]!.seq, `partition ${p} retained`).toBeGreaterThanOrEqual((s[0]?.seq ?? 1) - 1));
    const now = await streamFacts(admin, a);
    const expected = now.map((s, p) => s.filter((f) => f.seq > recentAt[p]!.seq));
    const sub = await subscribe(a, { after: recent.cursor });
    const after = (await sub.events(expected.flat().length)).map(factOf);
    expect(byPartition(after)).toEqual(expected);
    expect(expected.flat().map((f) => f.key).sort()).toEqual([...seen.slice(N - 4).map((e) => e.key), 'e:live'].sort());
    expect(await sub.poll(300)).toBe('timeout');

    // A cursor that claims more events than a partition has had is not from this keyspace.
    const totalsNow = await sequences(admin, a);
    const last = decode(seen[N - 1]!.cursor);
    for (let p = 0; p < P; p++) {
      const forged = last.map((pos) => ({ ...pos }));
      forged[p] = { id: forged[p]!.id, seq: totalsNow[p]! + 1 };
      const err = await (await subscribe(a, { after: encodeFeedCursor(forged) })).failure();
      expect(err.extensions?.code, err.message).toBe('BAD_USER_INPUT');
    }
    // The newest cursor claims exactly as many events as there have been: fine, and live.
    const ok = await subscribe(a, { after: newest.cursor });
    expect(await ok.poll(300)).toBe('timeout');
    expect((await a.gql(PUT, { key: 'e:live', value: 'again' })).errors).toBeUndefined();
    expect(await ok.event()).toMatchObject({ key: 'e:live', version: 2 });
  });

  it('never skips events trimmed away while a subscriber catches up: it ends with CURSOR_EXPIRED instead', async () => {
    const a = await app('expire-lag');
    const big = (i: number) => `${i}:`.padEnd(3000, 'x');
    for (let i = 0; i < 60; i++) expect((await a.gql(PUT, { key: `l:${i % 20}`, value: big(i) })).errors).toBeUndefined();
    const { extensions } = await (await subscribe(a, { after: startCursor() })).failure();
    expect(extensions?.code).toBe('CURSOR_EXPIRED');
    const from = decode(extensions!.oldestCursor);

    // It takes one event and stops reading: the body stream buffers a few, then stops pulling,
    // and the catch-up stops in the middle of what it has to read.
    const lag = await subscribe(a, { after: extensions!.oldestCursor });
    const got = [await lag.event()];
    // Meanwhile the history it has not read yet is trimmed away.
    for (let i = 60; i < 160; i++) expect((await a.gql(PUT, { key: `l:${i % 20}`, value: big(i) })).errors).toBeUndefined();
    const trimmed = await streamFacts(admin, a);
    expect(trimmed.every((s, p) => s[0]!.seq - 1 > from[p]!.seq), 'every partition trimmed past the subscriber').toBe(true);

    const { events, end } = await drain(lag, 1000);
    const facts = [...got, ...events].map(factOf);
    // What it got has no hole ...
    expectContiguous(facts, from);
    expect(facts.length).toBeLessThan(160);
    // ... and it was told it cannot go on, and where to go on from.
    const err = endError(end);
    expect(err.extensions?.code, err.message).toBe('CURSOR_EXPIRED');
    expect(await lag.next(), 'completes after its error').toBeNull();
    const oldest = decode(err.extensions!.oldestCursor);
    const streams = await streamFacts(admin, a);
    expect(oldest.map((pos) => pos.seq)).toEqual(streams.map((s) => s[0]!.seq - 1));
    const again = await subscribe(a, { after: err.extensions!.oldestCursor });
    expect(byPartition((await again.events(streams.flat().length)).map(factOf))).toEqual(streams);
  });

  it('ends live subscriptions with CURSOR_EXPIRED when one write trims events before the hub read them', async () => {
    const a = await app('expire-burst');
    const live = await subscribe(a);
    await until(() => a.feed.subscriberCount === 1, 'the live subscription');
    const from = decode(startCursor());
    expect((await a.gql(PUT, { key: 'b:first', value: 'x' })).errors).toBeUndefined();
    const first = await live.event();
    expect(first).toMatchObject({ key: 'b:first', version: 1 });
    // One batch of 120 events of 6 KB: a partition's events go into entries of at most 64 KiB
    // (about 10 of these each), and the script's last XADD of a partition trims that partition's
    // earlier entries before any reader sees them (whole stream nodes of 4 entries, as MINID ~
    // does; an entry is never cut in two).
    const items = Array.from({ length: 120 }, (_, i) => ({ key: `b:${String(i).padStart(3, '0')}`, value: `v${i}:`.padEnd(6000, 'x') }));
    expect((await a.gql(BATCH, { items })).errors).toBeUndefined();
    const { events, end } = await drain(live, 200);
    expectContiguous([first, ...events].map(factOf), from);
    const err = endError(end);
    expect(err.extensions?.code, err.message).toBe('CURSOR_EXPIRED');
    expect(typeof err.extensions?.oldestCursor).toBe('string');
    expect(await live.next()).toBeNull();
    await until(() => a.feed.subscriberCount === 0, 'the hub to let go of the subscription');
  });
});

// ---------------------------------------------------------------------------------------------
// 2. A slow consumer
// ---------------------------------------------------------------------------------------------

describe('a slow consumer', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('slow', { feedBuffer: 5 });
  });
  afterAll(() => app?.close());

  it('is ended with SLOW_CONSUMER and a cursor right after its last event, without holding up a fast one', async () => {
    const fast = await subscribe(app);
    await until(() => app.feed.subscriberCount === 1, 'the fast subscription');
    // Opened, but not read until the end: yoga's SSE body pulls from the subscription only while
    // the body stream's buffer (16 KiB with yoga.fetch) has room, about 14 events of 1 KB; then
    // nothing pulls any more, and the hub's queue for it (feedBuffer 5) fills up.
    const slow = await subscribe(app);
    await until(() => app.feed.subscriberCount === 2, 'the slow subscription');

    const N = 300;
    const keys = Array.from({ length: N }, (_, i) => `s:${String(i).padStart(3, '0')}`);
    const fastGot: { e: ChangeEvent; at: number }[] = [];
    const reading = (async () => {
      while (fastGot.length < N) fastGot.push({ e: await fast.event(10_000), at: performance.now() });
    })();
    reading.catch(() => {});
    const acked = new Map<string, number>();
    for (const key of keys) {
      const r = await app.gql(PUT, { key, value: `${key}=`.padEnd(1000, 'x') });
      expect(r.errors).toBeUndefined();
      acked.set(key, performance.now());
    }
    await reading;

    // The fast subscriber got every event, each once, in order per partition, promptly.
    expect(fastGot.map(({ e }) => e.key).sort()).toEqual(keys);
    byPartition(fastGot.map(({ e }) => factOf(e))).forEach((list) => {
      expect(list.map((f) => f.key)).toEqual([...list.map((f) => f.key)].sort());
    });
    const lag = Math.max(...fastGot.map(({ e, at }) => at - acked.get(e.key)!));
    expect(lag, 'longest delay between a write and its event').toBeLessThan(1000);

    // The hub has let go of the slow one already, without it reading anything.
    await until(() => app.feed.subscriberCount === 1, 'the hub to drop the slow subscription', 5000);

    // Now it reads: what was buffered, then one error, then the end.
    const { events: slowGot, end } = await drain(slow, N);
    const err = endError(end);
    expect(err.extensions?.code, err.message).toBe('SLOW_CONSUMER');
    expect(await slow.next(), 'completes after its error').toBeNull();
    const k = slowGot.length;
    expect(k).toBeGreaterThan(0);
    expect(k, 'the slow subscriber was not read, so it cannot have received most events').toBeLessThan(N / 2);
    // The same events as the fast one, in the same order, as far as it got.
    expect(slowGot).toEqual(fastGot.slice(0, k).map(({ e }) => e));
    expect(err.extensions?.cursor).toBe(slowGot[k - 1]!.cursor);

    // Resuming from that cursor: every later event, once, and then live.
    const resumed = await subscribe(app, { after: err.extensions!.cursor });
    const rest = await resumed.events(N - k);
    expect(rest.map((e) => e.key).sort()).toEqual(fastGot.slice(k).map(({ e }) => e.key).sort());
    expectContiguous(rest.map(factOf), decodeFeedCursor(err.extensions!.cursor, PARTITIONS));
    expect(await resumed.poll(300)).toBe('timeout');
    expect((await app.gql(PUT, { key: 's:end', value: 'end' })).errors).toBeUndefined();
    expect(await resumed.event()).toMatchObject({ key: 's:end', version: 1 });
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Redis crash (kill -9) and restart under a live subscription
// ---------------------------------------------------------------------------------------------

interface Attempt {
  op: 'put' | 'delete' | 'batch';
  keys: string[];
  /** Unique per attempt (puts and batches). */
  value: string | null;
  outcome: 'acked' | 'failed' | 'unknown';
  /** Per key: the version written (put, batch) or deleted (delete); when acknowledged. */
  versions?: number[];
  /** A delete that found nothing to delete. */
  nothing?: boolean;
  phase: 'before' | 'outage' | 'after';
}

describe('a Redis crash (kill -9) under a live subscription', () => {
  let server: TestRedis;
  let app: TestApp;
  let admin: Redis;

  beforeAll(async () => {
    server = await startTestRedis();
    app = await createTestApp('crash', { redisUrl: server.url });
    admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
  });
  afterAll(async () => {
    admin?.disconnect();
    await app?.close();
    await server?.stop();
  });

  it('delivers exactly the writes that took effect, each once, in order per key, and never fails the subscription', async () => {
    const sub = await subscribe(app);
    await until(() => app.feed.subscriberCount === 1, 'the live subscription');
    const got: ChangeEvent[] = [];
    const problems: unknown[] = [];
    let reading = true;
    const reader = (async () => {
      while (reading) {
        const p = await sub.poll(100);
        if (p === 'timeout') continue;
        if (p === null) {
          problems.push('the subscription completed');
          return;
        }
        if (p.errors) problems.push(p.errors);
        else got.push(p.data!.changes);
      }
    })();

    let phase: Attempt['phase'] = 'before';
    const attempts: Attempt[] = [];
    let n = 0;
    const record = (a: Omit<Attempt, 'outcome' | 'phase'>, r: GqlResult, versions: () => number[]): Attempt => {
      const done: Attempt = { ...a, phase, outcome: 'acked' };
      if (r.errors) {
        expect(codeOf(r), r.errors[0]!.message).toBe('STORE_UNAVAILABLE');
        done.outcome = MAYBE_APPLIED.test(r.errors[0]!.message) ? 'unknown' : 'failed';
      } else done.versions = versions();
      attempts.push(done);
      return done;
    };
    let running = true;
    const acksAfter = new Map<string, number>();
    const loop = async (name: string, step: () => Promise<Attempt>) => {
      while (running) {
        const a = await step();
        if (a.outcome === 'acked' && a.phase === 'after') acksAfter.set(name, (acksAfter.get(name) ?? 0) + 1);
        if (a.outcome !== 'acked') await sleep(10);
      }
    };
    const putter = (key: string) => async () => {
      const value = `${key}#${n++}`;
      const r = await app.gql(PUT, { key, value });
      return record({ op: 'put', keys: [key], value }, r, () => [r.data!.put.version]);
    };
    const cycler = (key: string) => {
      let del = false;
      return async () => {
        if (del) {
          const r = await app.gql(DELETE, { key });
          const a = record({ op: 'delete', keys: [key], value: null }, r, () => [r.data!.delete.previous?.version ?? 0]);
          if (a.outcome === 'acked') {
            a.nothing = !r.data!.delete.deleted;
            del = false;
          }
          return a;
        }
        const value = `${key}#${n++}`;
        const r = await app.gql(PUT, { key, value });
        const a = record({ op: 'put', keys: [key], value }, r, () => [r.data!.put.version]);
        if (a.outcome === 'acked') del = true;
        return a;
      };
    };
    const batcher = (keys: string[]) => async () => {
      const value = `batch#${n++}`;
      const r = await app.gql(BATCH, { items: keys.map((key) => ({ key, value })) });
      return record({ op: 'batch', keys, value }, r, () => r.data!.batchPut.map((e: { version: number }) => e.version));
    };
    const writers: [string, () => Promise<Attempt>][] = [
      ...[0, 1, 2, 3].map((w) => [`put${w}`, putter(`c:put:${w}`)] as [string, () => Promise<Attempt>]),
      ...[0, 1].map((w) => [`cycle${w}`, cycler(`c:cycle:${w}`)] as [string, () => Promise<Attempt>]),
      ['batch', batcher(['c:batch:a', 'c:batch:b', 'c:batch:c'])],
    ];
    const loops = writers.map(([name, step]) => loop(name, step));
    try {
      await until(() => attempts.filter((a) => a.outcome === 'acked').length >= 50, 'writes before the crash');
      phase = 'outage';
      await server.kill9();
      await sleep(300);
      await server.restart();
      await until(async () => (await app.yoga.fetch('http://kvql.test/ready')).status === 200, 'the store to be ready again', 15_000);
      phase = 'after';
      await until(() => writers.every(([name]) => (acksAfter.get(name) ?? 0) >= 10), 'writes after the restart', 15_000);
    } finally {
      running = false;
      await Promise.all(loops);
    }

    const acked = attempts.filter((a) => a.outcome === 'acked');
    expect(acked.filter((a) => a.phase === 'before').length).toBeGreaterThanOrEqual(50);
    expect(attempts.filter((a) => a.outcome !== 'acked').length, 'writes refused during the outage').toBeGreaterThan(0);

    // Every event of the streams arrives on the subscription, each once, in stream order.
    const streams = await streamFacts(admin, app);
    const total = streams.flat().length;
    await until(() => got.length >= total || problems.length > 0, `${total} events (got ${got.length})`, 15_000);
    await sleep(300);
    reading = false;
    await reader;
    expect(problems).toEqual([]);
    const facts = got.map(factOf);
    expect(byPartition(facts)).toEqual(streams);
    expectContiguous(facts, decodeFeedCursor(startCursor(), PARTITIONS));

    // The streams say exactly what the store holds: replaying them, every put raises its key's
    // version by one from what the previous event left, every delete removes that version.
    const model = new Map<string, { value: string; version: number }>();
    for (const f of streams.flat()) {
      const current = model.get(f.key);
      if (f.type === 'PUT') {
        expect(f.version, `${f.key}: ${f.value}`).toBe((current?.version ?? 0) + 1);
        model.set(f.key, { value: f.value!, version: f.version });
      } else {
        expect(current?.version, `${f.key}: delete`).toBe(f.version);
        model.delete(f.key);
      }
    }
    const keys = [...new Set(attempts.flatMap((a) => a.keys))];
    const store = await app.gql(GET_MANY, { keys });
    expect(store.errors).toBeUndefined();
    expect(store.data!.getMany).toEqual(keys.map((key) => (model.has(key) ? { key, ...model.get(key) } : null)));
    const range = await app.gql(RANGE, { first: 1000 });
    expect(range.data!.range.totalCount).toBe(model.size);

    // Every acknowledged write has its event; a write refused before it reached Redis has none;
    // one whose outcome is unknown has one exactly when the store shows its effect (which the
    // replay above checks version by version). Values are unique per attempt.
    const puts = new Map(facts.filter((f) => f.type === 'PUT').map((f) => [`${f.key}=${f.value}`, f]));
    for (const a of attempts) {
      if (a.op === 'delete') continue;
      a.keys.forEach((key, i) => {
        const event = puts.get(`${key}=${a.value}`);
        if (a.outcome === 'acked') expect(event?.version, `${key}=${a.value}`).toBe(a.versions![i]);
        if (a.outcome === 'failed') expect(event, `${key}=${a.value} was refused`).toBeUndefined();
      });
    }
    // Deletes: one event per acknowledged delete that deleted, plus at most one per delete whose
    // outcome is unknown.
    for (const key of keys.filter((k) => k.startsWith('c:cycle:'))) {
      const mine = attempts.filter((a) => a.op === 'delete' && a.keys[0] === key);
      const deleted = mine.filter((a) => a.outcome === 'acked' && !a.nothing).length;
      const unknown = mine.filter((a) => a.outcome === 'unknown').length;
      const events = facts.filter((f) => f.key === key && f.type === 'DELETE').length;
      expect(deleted, `${key}: deletes exercised`).toBeGreaterThanOrEqual(3);
      expect(events, key).toBeGreaterThanOrEqual(deleted);
      expect(events, key).toBeLessThanOrEqual(deleted + unknown);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Two API processes on one keyspace
// ---------------------------------------------------------------------------------------------

/** Waits for `pattern` on the child's output; fails if it exits or after `ms`. */
function waitForOutput(child: ChildProcess, pattern: RegExp, ms: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => finish(new Error(`no ${pattern} within ${ms} ms; output:\n${out}`)), ms);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = pattern.exec(out);
      if (m) finish(null, m);
    };
    const onExit = (code: number | null) => finish(new Error(`the server exited (${code}) before ${pattern}; output:\n${out}`));
    const finish = (err: Error | null, m?: RegExpMatchArray) => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.stderr!.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(m!);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const force = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(force);
}

describe('two API processes on one keyspace', () => {
  let app: TestApp;
  let child: ChildProcess | undefined;
  let url = '';

  beforeAll(async () => {
    app = await createTestApp('two');
    const port = await freePort();
    // A second, real server: its own process, connections and feed hub, on the same keyspace,
    // so on the same Redis as `app`: the cluster project's cluster, or the shared Redis. Where
    // Redis is comes from here only, not from this process's environment.
    const inherited = { ...process.env };
    for (const name of Object.keys(inherited)) if (name.startsWith('REDIS_')) delete inherited[name];
    const where = ON_CLUSTER ? { REDIS_CLUSTER_NODES: inject('clusterNodes') } : { REDIS_URL: inject('redisUrl') };
    child = spawn(process.execPath, startArgs(), {
      cwd: REPO,
      env: {
        ...inherited,
        HOST: '127.0.0.1',
        PORT: String(port),
        ...where,
        KV_PREFIX: app.prefix,
        KV_PARTITIONS: String(PARTITIONS),
        KV_BUCKETS: String(BUCKETS),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const m = await waitForOutput(child, /listening on (http:\/\/\S+)/, 30_000);
    url = m[1]!;
    expect(url).toBe(`http://127.0.0.1:${port}/graphql`);
    child.stdout!.resume();
    child.stderr!.resume();
  }, 45_000);
  afterAll(async () => {
    if (child) await stopChild(child);
    await app?.close();
  });

  it('delivers writes through either server to subscribers of both, each once', async () => {
    // A common starting point: the cursor of a first write.
    const first = await subscribe(app);
    await until(() => app.feed.subscriberCount === 1, 'the first subscription');
    expect((await app.gql(PUT, { key: 'two:start', value: 'x' })).errors).toBeUndefined();
    const start = await first.event();
    expect(start.key).toBe('two:start');
    const from = decodeFeedCursor(start.cursor, PARTITIONS);

    const subs = {
      inA: await subscribe(app, { after: start.cursor }),
      inB: await subscribeUrl(url, { after: start.cursor }),
      inBLive: await subscribeUrl(url, { prefix: 'two:' }),
    };
    // The live one on B sees writes from the moment it is up: write until it sees one (bounded),
    // then take the pings it sees up to the last one written.
    let seenPing = 0;
    let pings = 0;
    for (let i = 1; seenPing === 0; i++) {
      expect(i, 'the live subscription on B never saw a write').toBeLessThan(100);
      const r = await gqlUrl(url, PUT, { key: 'two:ping', value: String(i) });
      expect(r.errors).toBeUndefined();
      pings = r.data!.put.version;
      const p = await subs.inBLive.poll(100);
      if (p !== 'timeout') {
        expect(p?.data?.changes.key).toBe('two:ping');
        seenPing = p!.data!.changes.version;
      }
    }
    while (seenPing < pings) {
      const e = await subs.inBLive.event();
      expect(e).toMatchObject({ key: 'two:ping', version: seenPing + 1 });
      seenPing = e.version;
    }

    // Both servers write, at the same time, to keys of their own and to shared ones.
    const writeThrough = async (name: 'a' | 'b') => {
      const gql = name === 'a' ? (q: string, v: Record<string, unknown>) => app.gql(q, v) : (q: string, v: Record<string, unknown>) => gqlUrl(url, q, v);
      for (let i = 0; i < 30; i++) {
        const key = i % 3 === 0 ? `two:shared:${i % 2}` : `two:${name}:${i % 5}`;
        const r = i % 10 === 9 ? await gql(DELETE, { key }) : await gql(PUT, { key, value: `${name}${i}` });
        expect(r.errors, r.errors?.[0]?.message).toBeUndefined();
      }
    };
    await Promise.all([writeThrough('a'), writeThrough('b')]);
    const streams = (await streamFacts(app.redis, app)).map((s, p) => s.filter((f) => f.seq > from[p]!.seq));
    const expected = streams.flat().length;
    expect(expected).toBeGreaterThanOrEqual(pings + 50);

    const inA = (await subs.inA.events(expected)).map(factOf);
    const inB = (await subs.inB.events(expected)).map(factOf);
    expect(byPartition(inA)).toEqual(streams);
    expect(byPartition(inB)).toEqual(streams);
    for (const s of [subs.inA, subs.inB]) expect(await s.poll(300)).toBe('timeout');
    // The live one on B: the writes after the pings, from both servers.
    const liveExpected = streams.map((s) => s.filter((f) => f.key !== 'two:ping'));
    const live = (await subs.inBLive.events(liveExpected.flat().length)).map(factOf);
    expect(byPartition(live)).toEqual(liveExpected);
    expect(live.some((f) => f.key.startsWith('two:a:')) && live.some((f) => f.key.startsWith('two:b:'))).toBe(true);
    expect(await subs.inBLive.poll(300)).toBe('timeout');
  });
});
