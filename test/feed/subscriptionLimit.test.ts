// KV_MAX_SUBSCRIPTIONS: a process serves a bounded number of change-feed subscriptions. Past it
// a new one is refused at once with OVERLOADED (over SSE and over graphql-ws, where the other
// subscriptions on the same socket go on), and a place is given back whichever way a
// subscription ends: the client leaves, it completes over graphql-ws, or it fails to start.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { BUCKETS, PARTITIONS, uniquePrefix } from '../harness/app.js';
import { sseSubscribe } from '../harness/sse.js';
import type { SubscriptionStream } from '../harness/stream.js';
import { until as untilValue } from '../harness/until.js';
import { wsClient, type WsClient } from '../harness/ws.js';

const MAX = 3;
const CHANGES = `subscription($prefix: String, $after: String) { changes(prefix: $prefix, after: $after) { key version } }`;
const PUT = `mutation($key: String!, $value: String!) { put(key: $key, value: $value) { version } }`;

let server: RunningServer;
const streams: SubscriptionStream[] = [];
const clients: WsClient[] = [];

beforeAll(async () => {
  server = await startServer(
    loadConfig({
      PORT: '0',
      REDIS_URL: inject('redisUrl'),
      KV_PREFIX: uniquePrefix('sublimit'),
      KV_PARTITIONS: String(PARTITIONS),
      KV_BUCKETS: String(BUCKETS),
      KV_MAX_SUBSCRIPTIONS: String(MAX),
    }),
    () => {},
  );
});

afterAll(async () => {
  await Promise.allSettled(streams.map((s) => s.close()));
  await Promise.allSettled(clients.map((c) => c.dispose()));
  await server?.close();
});

/** Waits (5 s at most) until `cond` holds. */
const until = (cond: () => boolean, what: string) => untilValue(5000, what, () => (cond() ? true : undefined));

async function put(key: string): Promise<void> {
  const res = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: PUT, variables: { key, value: 'v' } }),
  });
  const body = (await res.json()) as { errors?: unknown };
  expect(body.errors).toBeUndefined();
}

async function sse(variables: Record<string, unknown>): Promise<SubscriptionStream> {
  const s = await sseSubscribe(server.url, CHANGES, variables);
  streams.push(s);
  return s;
}

async function ws(): Promise<WsClient> {
  const c = wsClient(server.url);
  clients.push(c);
  await c.connected();
  return c;
}

/** Over SSE: 503 with Retry-After and one OVERLOADED error, as any refusal of a full server. */
async function expectSseRefused(variables: Record<string, unknown>): Promise<void> {
  const res = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ query: CHANGES, variables }),
  });
  expect(res.status).toBe(503);
  expect(res.headers.get('retry-after')).toBe('1');
  const body = await res.text();
  const data = /^data: (.*)$/m.exec(body)?.[1];
  expect(data, body).toBeDefined();
  const { errors } = JSON.parse(data!) as { errors: { message: string; extensions: Record<string, unknown> }[] };
  expect(errors).toHaveLength(1);
  expect(errors[0]!.extensions).toEqual({ code: 'OVERLOADED' });
  expect(errors[0]!.message).toMatch(/maximum of 3 subscriptions/);
}

/** Over graphql-ws: the operation's first payload is one OVERLOADED error, then it completes. */
async function expectRefused(s: SubscriptionStream): Promise<void> {
  const p = await s.next();
  expect(p.data ?? null).toBeNull();
  expect(p.errors).toHaveLength(1);
  expect(p.errors![0]!.extensions).toEqual({ code: 'OVERLOADED' });
  expect(p.errors![0]!.message).toMatch(/maximum of 3 subscriptions/);
  expect(await s.ended()).toEqual({ kind: 'complete' });
}

/** Each stream's next payload is the event of `key`. */
async function expectEvent(list: SubscriptionStream[], key: string): Promise<void> {
  for (const s of list) expect((await s.next()).data?.changes).toEqual({ key, version: 1 });
}

describe('KV_MAX_SUBSCRIPTIONS', () => {
  it('refuses a subscription past the bound with OVERLOADED, over SSE and graphql-ws, and the others go on', async () => {
    const client = await ws();
    const open = [client.subscribe(CHANGES, { prefix: 'a:' }), client.subscribe(CHANGES, { prefix: 'a:' }), await sse({ prefix: 'a:' })];
    await until(() => server.feed.subscriberCount === MAX, 'three live subscriptions');
    expect(server.feed.admittedCount).toBe(MAX);

    await expectSseRefused({ prefix: 'a:' });
    // Counted as a refusal, as a request refused for want of a slot is.
    const metrics = await (await fetch(server.url.replace(/\/graphql$/, '/metrics'))).text();
    expect(metrics).toMatch(/^kvql_graphql_refusals_total\{reason="OVERLOADED"\} 1$/m);
    const refusedOnSocket = client.subscribe(CHANGES, { prefix: 'a:' });
    await expectRefused(refusedOnSocket);
    expect(server.feed.admittedCount).toBe(MAX);

    // The three, among them the two on the refused one's socket, still get every event.
    await put('a:1');
    await expectEvent(open, 'a:1');

    // A place comes back when an SSE client leaves, and when a graphql-ws subscription completes.
    await open[2]!.close();
    await until(() => server.feed.admittedCount === MAX - 1, 'the SSE subscription to give its place back');
    const second = await sse({ prefix: 'a:' });
    await open[1]!.close();
    await until(() => server.feed.admittedCount === MAX - 1, 'the graphql-ws subscription to give its place back');
    const third = client.subscribe(CHANGES, { prefix: 'a:' });
    await until(() => server.feed.subscriberCount === MAX, 'the two new subscriptions to be live');
    await put('a:2');
    await expectEvent([open[0]!, second, third], 'a:2');

    await client.dispose();
    await second.close();
    await until(() => server.feed.admittedCount === 0, 'every place back after the socket closed');
  });

  it('gives the place of a subscription that fails to start back at once', async () => {
    const live = [await sse({ prefix: 'b:' }), await sse({ prefix: 'b:' })];
    await until(() => server.feed.subscriberCount === 2, 'two live subscriptions');
    for (let i = 0; i < 5; i++) {
      const bad = await sse({ prefix: 'b:', after: 'not a cursor!' });
      const p = await bad.next();
      expect(p.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
      expect(await bad.ended()).toEqual({ kind: 'complete' });
    }
    expect(server.feed.admittedCount).toBe(2);
    // The third place is still free: five failed starts did not keep it.
    live.push(await sse({ prefix: 'b:' }));
    await until(() => server.feed.subscriberCount === 3, 'the third subscription');
    await put('b:1');
    await expectEvent(live, 'b:1');
    await expectSseRefused({ prefix: 'b:' });
    await Promise.all(live.map((s) => s.close()));
    await until(() => server.feed.admittedCount === 0, 'every place back');
  });
});
