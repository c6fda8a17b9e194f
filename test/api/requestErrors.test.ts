// Malformed requests that the fuzz suite (fuzz.test.ts) found answered with a 500, a stack trace,
// a WebSocket closed as a server failure (4500), or an error without extensions.code; each now
// gets a plain client error with a stable code. One case per finding, so a regression names itself.
import { request } from 'node:http';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../harness/app.js';
import type { Payload } from '../harness/stream.js';

let app: TestApp;
const errors: unknown[] = [];

beforeAll(async () => {
  app = await createTestApp('request-errors', { websocket: true, errors });
});

afterAll(async () => {
  await app?.close();
});

/** A raw request: any Host and request target (fetch allows neither). */
function raw(path: string, host: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(app.url);
    const req = request({ host: u.hostname, port: u.port, path, method, headers: { host, accept: 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end();
  });
}

const post = async (body: unknown, headers: Record<string, string> = {}) => {
  const res = await fetch(app.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, ...((await res.json()) as Payload) };
};

/** A graphql-ws session: sends `messages` after the ack; resolves what came back and the close code, if any. */
async function wsSession(messages: unknown[], waitMs = 300): Promise<{ received: Record<string, any>[]; closedWith?: number }> {
  const socket = new WebSocket(app.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  const received: Record<string, any>[] = [];
  let closedWith: number | undefined;
  socket.on('message', (m) => received.push(JSON.parse(String(m))));
  socket.on('close', (code) => (closedWith = code));
  await new Promise((resolve) => socket.on('open', resolve));
  socket.send(JSON.stringify({ type: 'connection_init' }));
  for (let i = 0; i < 50 && !received.some((m) => m.type === 'connection_ack'); i++) await new Promise((r) => setTimeout(r, 20));
  for (const m of messages) socket.send(JSON.stringify(m));
  await new Promise((r) => setTimeout(r, waitMs));
  socket.close();
  return { received, closedWith };
}

describe('requests the fuzz found mishandled', () => {
  it('a Host or request target yoga cannot make a URL of: 400 BAD_REQUEST, no stack trace', async () => {
    for (const [path, host] of [
      ['/health', 'a b'],
      ['/graphql', '['],
      ['/graphql', 'x:99999'],
      ['*', '127.0.0.1'],
    ]) {
      const res = await raw(path!, host!);
      expect(res.status, `${path} ${host}`).toBe(400);
      expect(JSON.parse(res.body).errors[0].extensions.code).toBe('BAD_REQUEST');
      expect(res.body).not.toMatch(/ at |node_modules/);
    }
  });

  it('a subscription whose root field is skipped is a validation error on every path, not a 500', async () => {
    for (const query of [
      'subscription { changes(prefix:"a") @skip(if:true) { key } }',
      'subscription { ... on Subscription @include(if:false) { changes { key } } }',
      'subscription { changes @skip(if:"yes") { key } }',
    ]) {
      const fast = await post({ query });
      expect([fast.status, fast.errors?.[0]?.extensions?.code], query).toEqual([400, 'GRAPHQL_VALIDATION_FAILED']);
      const sse = await fetch(app.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify({ query }) });
      expect(sse.status, query).toBeLessThan(500);
      expect(await sse.text(), query).toContain('GRAPHQL_VALIDATION_FAILED');
      const ws = await wsSession([{ id: '1', type: 'subscribe', payload: { query } }]);
      expect(ws.received.find((m) => m.id === '1'), query).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }] });
      expect(ws.closedWith, query).toBeUndefined();
    }
  });

  it('variables or extensions that are not JSON in a GET or a form: 400 BAD_REQUEST', async () => {
    for (const qs of ['variables=x', 'extensions=%7B']) {
      const res = await fetch(`${app.url}?query=%7B__typename%7D&${qs}`, { headers: { accept: 'application/json', 'x-graphql-yoga-csrf': '1' } });
      expect(res.status, qs).toBe(400);
      expect(((await res.json()) as Payload).errors?.[0]?.extensions?.code, qs).toBe('BAD_REQUEST');
    }
    const form = await fetch(app.url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', 'x-graphql-yoga-csrf': '1' }, body: 'query=%7B__typename%7D&variables=x' });
    expect(form.status).toBe(400);
  });

  it('variables that do not fit their types: BAD_USER_INPUT on HTTP and WebSocket; an unknown operation name: OPERATION_RESOLUTION_FAILURE', async () => {
    const query = 'query($k:String!){ get(key:$k){ key } }';
    for (const variables of [{ k: 5 }, {}]) {
      const res = await post({ query, variables });
      expect([res.status, res.errors?.[0]?.extensions?.code]).toEqual([400, 'BAD_USER_INPUT']);
    }
    const ws = await wsSession([
      { id: 'v', type: 'subscribe', payload: { query, variables: { k: 5 } } },
      { id: 'o', type: 'subscribe', payload: { query: 'query A { __typename } query B { __typename }', operationName: 'C' } },
    ]);
    const codeOf = (id: string) => {
      const m = ws.received.find((x) => x.id === id && (x.type === 'next' || x.type === 'error'));
      return (m?.type === 'error' ? m.payload : m?.payload?.errors)?.[0]?.extensions?.code;
    };
    expect(codeOf('v')).toBe('BAD_USER_INPUT');
    expect(codeOf('o')).toBe('OPERATION_RESOLUTION_FAILURE');
  });

  it('a syntax error seen first over WebSocket is still 400 GRAPHQL_PARSE_FAILED over HTTP afterwards', async () => {
    const query = '{ get(key: "a" b1) { key } }';
    const ws = await wsSession([{ id: '1', type: 'subscribe', payload: { query } }]);
    expect(ws.received.find((m) => m.id === '1')).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'GRAPHQL_PARSE_FAILED' } }] });
    const http = await post({ query });
    expect([http.status, http.errors?.[0]?.extensions?.code]).toEqual([400, 'GRAPHQL_PARSE_FAILED']);
  });

  it('a client sending a server message, or an id too long for a close reason: closed with 4400, not 4500', async () => {
    expect((await wsSession([{ type: 'connection_ack' }])).closedWith).toBe(4400);
    expect((await wsSession([{ id: '1', type: 'next', payload: {} }])).closedWith).toBe(4400);
    const id = 'x'.repeat(120);
    const sub = { id, type: 'subscribe', payload: { query: 'subscription { changes { key } }' } };
    expect((await wsSession([sub, sub])).closedWith).toBe(4400);
    // And a normal session is untouched by the check.
    const ok = await wsSession([{ id: 'q', type: 'subscribe', payload: { query: '{ __typename }' } }]);
    expect(ok.received.find((m) => m.id === 'q' && m.type === 'next')?.payload).toEqual({ data: { __typename: 'Query' } });
  });

  it('logged nothing as unexpected', () => {
    expect(errors).toEqual([]);
  });
});
