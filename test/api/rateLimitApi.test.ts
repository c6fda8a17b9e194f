// Per-token rate limits through the API (README, "Security: rate limits"): 429 RATE_LIMITED with
// Retry-After on both HTTP lanes, an error payload over graphql-ws, 413 for a body over the
// byte burst, 411 for a body of unknown length; one limit shared by two API processes on one
// Redis; tokens without limits untouched. The algorithm itself: test/api/rateLimit.test.ts.
import { request } from 'node:http';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newToken, type TokenEntry } from '../../src/auth/tokens.js';
import { createTestApp, type TestApp } from '../harness/app.js';
import type { Payload } from '../harness/stream.js';

const limited = (id: string, rateLimit: TokenEntry['rateLimit']) => {
  const t = newToken(id, ['read', 'write'], ['rl:']);
  return { token: t.token, entry: { ...t.entry, rateLimit } };
};
const made = {
  // 2 requests at once, then one per 10 s: a test sees refusals without waiting.
  slow: limited('slow', { requestsPerSecond: 0.1, burstSeconds: 20 }),
  shared: limited('shared', { requestsPerSecond: 0.1, burstSeconds: 30 }),
  bytes: limited('bytes', { bytesPerSecond: 1000, burstSeconds: 1 }),
  ws: limited('ws', { requestsPerSecond: 0.1, burstSeconds: 20 }),
  free: { ...newToken('free', ['read', 'write'], ['rl:']) },
};
type Who = keyof typeof made;
const tokens = Object.values(made).map((m) => m.entry);

let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  a = await createTestApp('ratelimit-api', { tokens, websocket: true });
  // A second API process on the same keyspace: it must share every limit.
  b = await createTestApp('ratelimit-api', { tokens, prefix: a.prefix });
});

afterAll(async () => {
  await a?.close();
  await b?.close();
});

async function post(app: TestApp, who: Who, query: string, lane: 'fast' | 'yoga' = 'fast') {
  const res = await fetch(app.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${made[who].token}`,
      ...(lane === 'yoga' ? { origin: new URL(app.url).origin } : {}),
    },
    body: JSON.stringify({ query }),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), ...((await res.json()) as Payload) };
}

const PUT = (k: string) => `mutation{ put(key:"rl:${k}", value:"v"){ version } }`;

describe('rate limits through the API', () => {
  it('passes the burst, then answers 429 RATE_LIMITED with Retry-After on both lanes, and writes nothing', async () => {
    const first = await post(a, 'slow', PUT('s1'));
    const second = await post(a, 'slow', PUT('s2'), 'yoga');
    expect([first.status, second.status]).toEqual([200, 200]);
    for (const lane of ['fast', 'yoga'] as const) {
      const refused = await post(a, 'slow', PUT(`refused-${lane}`), lane);
      expect(refused.status, lane).toBe(429);
      expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED' });
      const seconds = refused.errors![0]!.extensions!.retryAfterSeconds as number;
      expect(Number(refused.retryAfter)).toBe(seconds);
      expect(seconds).toBeGreaterThanOrEqual(1);
      expect(seconds).toBeLessThanOrEqual(10);
    }
    const read = await post(a, 'free', '{ a: get(key:"rl:refused-fast"){ key } b: get(key:"rl:refused-yoga"){ key } s: get(key:"rl:s2"){ key } }');
    expect(read.data).toEqual({ a: null, b: null, s: { key: 'rl:s2' } });
  });

  it('a token without limits is never refused', async () => {
    for (let i = 0; i < 20; i++) expect((await post(a, 'free', PUT(`f${i}`))).status).toBe(200);
  });

  it('is one limit across API processes: the burst is shared, not per process', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await post(i % 2 === 0 ? a : b, 'shared', PUT(`x${i}`))).status);
    // burst 3 (0.1/s × 30 s) over both: exactly three pass; per process it would be six.
    expect(statuses.filter((s) => s === 200)).toHaveLength(3);
    expect(statuses.filter((s) => s === 429)).toHaveLength(3);
  });

  it('bytes: a body over the byte burst is 413 PAYLOAD_TOO_LARGE (it could never pass); under it, counted', async () => {
    const big = await post(a, 'bytes', PUT('b'.repeat(1200)));
    expect(big.status).toBe(413);
    expect(big.errors?.[0]?.extensions).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', maxBytes: 1000 });
    expect(big.retryAfter).toBeNull();
    const ok = await post(a, 'bytes', PUT('b'.repeat(300)));
    expect(ok.status).toBe(200);
    const next = await post(a, 'bytes', PUT('c'.repeat(700)));
    expect(next.status).toBe(429);
  });

  it('bytes: a chunked body (no Content-Length) from a token with a byte limit gets 411 LENGTH_REQUIRED', async () => {
    const u = new URL(a.url);
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${made.bytes.token}`, 'transfer-encoding': 'chunked' } },
        (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on('error', reject);
      req.write(JSON.stringify({ query: PUT('chunked') }));
      req.end();
    });
    expect(answer.status).toBe(411);
    expect(JSON.parse(answer.body).errors[0].extensions.code).toBe('LENGTH_REQUIRED');
  });

  it('graphql-ws: each operation counts; a refused one gets a RATE_LIMITED error and the socket goes on', async () => {
    const socket = new WebSocket(a.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    const messages: Record<string, any>[] = [];
    socket.on('message', (m) => messages.push(JSON.parse(String(m))));
    await new Promise((resolve) => socket.on('open', resolve));
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${made.ws.token}` } }));
    for (let i = 0; i < 50 && !messages.some((m) => m.type === 'connection_ack'); i++) await new Promise((r) => setTimeout(r, 20));
    for (const id of ['1', '2', '3']) {
      socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query: '{ get(key:"rl:s2"){ key } }' } }));
      for (let i = 0; i < 50 && !messages.some((m) => m.id === id && (m.type === 'complete' || m.type === 'error')); i++) await new Promise((r) => setTimeout(r, 20));
    }
    expect(messages.find((m) => m.id === '1' && m.type === 'next')?.payload).toEqual({ data: { get: { key: 'rl:s2' } } });
    expect(messages.find((m) => m.id === '2' && m.type === 'next')?.payload).toEqual({ data: { get: { key: 'rl:s2' } } });
    expect(messages.find((m) => m.id === '3')).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'RATE_LIMITED' } }] });
    expect(socket.readyState).toBe(WebSocket.OPEN);
    socket.close();
  });
});
