// KV_MAX_CONNECTIONS: past the bound, a new connection is closed as soon as it is accepted,
// before anything is read, and the connections the process has keep being served; once one of
// them closes, a new one is accepted again. Said in the log.
// KV_HEADERS_TIMEOUT_MS and KV_RECEIVE_TIMEOUT_MS: a request whose headers, or whose body, stop
// arriving gets 408 and its connection closed near its bound; a response may last longer.
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { uniquePrefix } from '../harness/app.js';

const MAX = 3;
let server: RunningServer;
const logged: string[] = [];
const sockets: Socket[] = [];

beforeAll(async () => {
  server = await startServer(loadConfig({ PORT: '0', REDIS_URL: inject('redisUrl'), KV_PREFIX: uniquePrefix('conns'), KV_MAX_CONNECTIONS: String(MAX) }), (m) => logged.push(m));
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await server?.close();
});

/** A TCP connection to the API, and what becomes of it: the bytes it receives, and its close. */
async function open(to: RunningServer = server): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  const u = new URL(to.url);
  const socket = connect(Number(u.port), u.hostname);
  sockets.push(socket);
  let text = '';
  socket.on('data', (c) => (text += c));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received: () => text, closed };
}

/** Sends a GET /health on an open connection (keep-alive) and resolves its status line. */
async function health(c: { socket: Socket; received: () => string }): Promise<string> {
  const before = c.received().length;
  c.socket.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  for (let i = 0; i < 100; i++) {
    const text = c.received().slice(before);
    if (/\r\n\r\n/.test(text)) return text.split('\r\n')[0]!;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('no answer on a kept connection');
}

const settle = (p: Promise<void>, ms: number) => Promise.race([p.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), ms))]);

describe('KV_MAX_CONNECTIONS', () => {
  it('closes a connection past the bound at once, keeps serving the others, and accepts again once one closes', async () => {
    const kept = [await open(), await open(), await open()];
    for (const c of kept) expect(await health(c)).toMatch(/^HTTP\/1\.1 200/);

    const extra = await open();
    expect(await settle(extra.closed, 2000), 'the fourth connection was closed').toBe('closed');
    expect(extra.received(), 'nothing was answered on it').toBe('');
    for (const c of kept) expect(await health(c), 'the others are still served').toMatch(/^HTTP\/1\.1 200/);
    expect(logged.some((m) => /KV_MAX_CONNECTIONS \(3\) reached/.test(m)), logged.join('\n')).toBe(true);

    kept[0]!.socket.destroy();
    await kept[0]!.closed;
    // The server counts the closed connection out when it sees its end: try until it has.
    let again: Awaited<ReturnType<typeof open>> | undefined;
    for (let i = 0; i < 50 && !again; i++) {
      const c = await open();
      if ((await settle(c.closed, 100)) === 'open') again = c;
    }
    expect(again, 'a new connection once one closed').toBeDefined();
    expect(await health(again!)).toMatch(/^HTTP\/1\.1 200/);

    // The metrics say so: the drops counted, and the connections open now (the kept two and
    // this one; the dropped ones are gone).
    again!.socket.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    await again!.closed;
    const metrics = again!.received();
    const dropped = Number(/^kvql_connections_dropped_total (\d+)$/m.exec(metrics)?.[1]);
    expect(dropped, metrics).toBeGreaterThanOrEqual(1);
    expect(metrics).toMatch(/^kvql_connections_open 3$/m);
  });
});

describe('KV_HEADERS_TIMEOUT_MS and KV_RECEIVE_TIMEOUT_MS', () => {
  const HEADERS_MS = 600;
  const RECEIVE_MS = 1500;
  let slow: RunningServer;
  const prefix = uniquePrefix('recv');
  beforeAll(async () => {
    slow = await startServer(loadConfig({ PORT: '0', REDIS_URL: inject('redisUrl'), KV_PREFIX: prefix, KV_HEADERS_TIMEOUT_MS: String(HEADERS_MS), KV_RECEIVE_TIMEOUT_MS: String(RECEIVE_MS) }), () => {});
  });
  afterAll(async () => {
    await slow?.close();
  });

  /** How long after `since` the connection closed, and what it was answered. */
  async function closedAfter(c: Awaited<ReturnType<typeof open>>, since: number): Promise<{ ms: number; status: string }> {
    expect(await settle(c.closed, 10_000), 'the connection was closed').toBe('closed');
    return { ms: Date.now() - since, status: c.received().split('\r\n')[0]! };
  }

  it('answers 408 and closes a request whose headers stop arriving, near KV_HEADERS_TIMEOUT_MS', async () => {
    const c = await open(slow);
    const since = Date.now();
    c.socket.write('POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const { ms, status } = await closedAfter(c, since);
    expect(status).toBe('HTTP/1.1 408 Request Timeout');
    // Checked every second (connectionsCheckingInterval): within its bound plus one check.
    expect(ms).toBeGreaterThanOrEqual(HEADERS_MS - 50);
    expect(ms).toBeLessThan(HEADERS_MS + 1000 + 500);
  });

  it('answers 408 and closes a request whose body stops arriving, near KV_RECEIVE_TIMEOUT_MS, and writes nothing', async () => {
    const c = await open(slow);
    const since = Date.now();
    const body = JSON.stringify({ query: 'mutation { put(key: "stalled", value: "v") { version } }' });
    c.socket.write(`POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`);
    const { ms, status } = await closedAfter(c, since);
    expect(status).toBe('HTTP/1.1 408 Request Timeout');
    expect(ms).toBeGreaterThanOrEqual(RECEIVE_MS - 50);
    expect(ms).toBeLessThan(RECEIVE_MS + 1000 + 500);
    const res = await fetch(slow.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ get(key: "stalled") { value } }' }) });
    expect(await res.json()).toEqual({ data: { get: null } });
  });

  it('does not bound a response: an SSE subscription outlives KV_RECEIVE_TIMEOUT_MS and still delivers', async () => {
    const res = await fetch(slow.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: 'subscription { changes { key } }' }),
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    try {
      await new Promise((r) => setTimeout(r, RECEIVE_MS + 1200));
      const put = await fetch(slow.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'mutation { put(key: "late", value: "v") { version } }' }) });
      expect((await put.json()).data.put.version).toBe(1);
      let text = '';
      while (!text.includes('"late"')) {
        const { value, done } = await reader.read();
        expect(done, `the stream ended early: ${text}`).toBe(false);
        text += new TextDecoder().decode(value);
      }
    } finally {
      await reader.cancel();
    }
  }, 15_000);
});
