// Revocation (README, "Security"): a token removed from, or changed in, the token list is refused
// from its next request on, and whatever it has open ends: an SSE subscription with a last
// UNAUTHENTICATED error, a WebSocket with close code 4401. Tokens left as they were keep their
// subscriptions. The list is replaced here through the Authenticator (as server.ts does when
// KV_TOKENS_FILE changes); test/server/tokenReload.test.ts covers the file and SIGHUP.
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newToken, type TokenEntry } from '../../src/auth/tokens.js';
import { createTestApp, type TestApp } from '../harness/app.js';
import { sseSubscribe } from '../harness/sse.js';
import type { Payload, SubscriptionStream } from '../harness/stream.js';

const made = {
  admin: newToken('admin', ['admin'], []),
  gone: newToken('gone', ['read'], ['tenantA:']),
  changed: newToken('changed', ['read', 'write'], ['tenantA:']),
  stays: newToken('stays', ['read'], ['tenantA:']),
};
type Who = keyof typeof made;
const CHANGES = 'subscription{ changes(prefix:"tenantA:"){ key } }';

let app: TestApp;

beforeAll(async () => {
  app = await createTestApp('revocation', { tokens: Object.values(made).map((m) => m.entry), websocket: true });
});

afterAll(async () => {
  await app?.close();
});

async function post(who: Who, query: string, variables: Record<string, unknown> = {}): Promise<Payload & { status: number }> {
  const res = await fetch(app.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${made[who].token}` },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, ...((await res.json()) as Payload) };
}

const put = (key: string) => post('admin', 'mutation($k:String!){ put(key:$k, value:"x"){ version } }', { k: key });

/** Writes until the stream delivers; the first event. */
async function firstEvent(stream: SubscriptionStream): Promise<Payload> {
  for (let i = 0; i < 50; i++) {
    expect((await put('tenantA:warm')).errors).toBeUndefined();
    const p = await stream.poll(100);
    if (p) return p;
  }
  throw new Error('no event');
}

/** A raw graphql-ws socket, acknowledged, with one subscription open; resolves the close code. */
async function wsSubscription(who: Who): Promise<{ messages: string[]; closed: Promise<number>; socket: WebSocket }> {
  const socket = new WebSocket(app.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
  const messages: string[] = [];
  socket.on('message', (m) => messages.push(String(m)));
  await new Promise((resolve) => socket.on('open', resolve));
  const acked = new Promise((resolve) => socket.on('message', (m) => String(m).includes('connection_ack') && resolve(true)));
  socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${made[who].token}` } }));
  await acked;
  socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: CHANGES } }));
  for (let i = 0; i < 50 && !messages.some((m) => m.includes('"next"')); i++) {
    await put('tenantA:warm');
    await new Promise((r) => setTimeout(r, 100));
  }
  expect(messages.some((m) => m.includes('"next"'))).toBe(true);
  return { messages, closed, socket };
}

const entries = (...who: Who[]): TokenEntry[] => who.map((w) => made[w].entry);

describe('a revoked or changed token', () => {
  it('is refused from its next request, ends its SSE subscriptions and closes its WebSockets; others go on', async () => {
    const sseGone = await sseSubscribe(app.url, CHANGES, {}, { headers: { authorization: `Bearer ${made.gone.token}` } });
    const sseChanged = await sseSubscribe(app.url, CHANGES, {}, { headers: { authorization: `Bearer ${made.changed.token}` } });
    const sseStays = await sseSubscribe(app.url, CHANGES, {}, { headers: { authorization: `Bearer ${made.stays.token}` } });
    for (const s of [sseGone, sseChanged, sseStays]) expect((await firstEvent(s)).errors).toBeUndefined();
    const wsGone = await wsSubscription('gone');
    const wsStays = await wsSubscription('stays');

    // "gone" removed; "changed" loses its write scope; "stays" and "admin" as they were.
    const narrowed = { ...made.changed.entry, scopes: ['read' as const] };
    const revoked = app.yoga.auth.update([...entries('admin', 'stays', 'gone').filter((e) => e.id !== 'gone'), narrowed]);
    expect(revoked.sort()).toEqual(['changed', 'gone']);

    // The SSE subscriptions of both end with UNAUTHENTICATED, after what they had already received.
    for (const s of [sseGone, sseChanged]) {
      let last: Payload | undefined;
      for (let i = 0; i < 100 && !last?.errors; i++) last = await s.next();
      expect(last?.errors?.map((e) => e.extensions?.code)).toEqual(['UNAUTHENTICATED']);
      expect((await s.ended()).kind).toBe('complete');
    }
    // The WebSocket of the removed token is closed with 4401.
    expect(await wsGone.closed).toBe(4401);

    // The others go on: a new write reaches them.
    expect((await put('tenantA:after')).errors).toBeUndefined();
    let seen: Payload | undefined;
    for (let i = 0; i < 100 && seen?.data?.changes?.key !== 'tenantA:after'; i++) seen = await sseStays.next();
    expect(seen?.data?.changes?.key).toBe('tenantA:after');
    for (let i = 0; i < 50 && !wsStays.messages.some((m) => m.includes('tenantA:after')); i++) await new Promise((r) => setTimeout(r, 50));
    expect(wsStays.messages.some((m) => m.includes('tenantA:after'))).toBe(true);
    expect(wsStays.socket.readyState).toBe(WebSocket.OPEN);

    // Next requests: the removed token is unknown, the changed one acts with its new rights.
    const g = await post('gone', 'query{ get(key:"tenantA:after"){ key } }');
    expect([g.status, g.errors?.[0]?.extensions?.code]).toEqual([401, 'UNAUTHENTICATED']);
    const c = await post('changed', 'mutation{ put(key:"tenantA:c", value:"v"){ version } }');
    expect(c.errors?.map((e) => e.extensions?.code)).toEqual(['FORBIDDEN']);
    expect((await post('changed', 'query{ get(key:"tenantA:after"){ key } }')).data).toEqual({ get: { key: 'tenantA:after' } });
    expect((await post('stays', 'query{ get(key:"tenantA:after"){ key } }')).data).toEqual({ get: { key: 'tenantA:after' } });

    // A new WebSocket with the removed token is refused at connection_init.
    const socket = new WebSocket(app.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
    await new Promise((resolve) => socket.on('open', resolve));
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${made.gone.token}` } }));
    expect(await closed).toBe(4401);

    await sseStays.close();
    wsStays.socket.close();
  });

  it('an unchanged list revokes nothing, and a token added later is accepted', async () => {
    const before = app.yoga.auth.update([...entries('admin', 'stays'), { ...made.changed.entry, scopes: ['read'] }]);
    expect(before).toEqual([]);
    const late = newToken('late', ['read'], ['tenantA:']);
    expect(app.yoga.auth.update([...entries('admin', 'stays'), { ...made.changed.entry, scopes: ['read'] }, late.entry])).toEqual([]);
    const res = await fetch(app.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${late.token}` },
      body: JSON.stringify({ query: 'query{ get(key:"tenantA:after"){ key } }' }),
    });
    expect(((await res.json()) as Payload).data).toEqual({ get: { key: 'tenantA:after' } });
  });
});
