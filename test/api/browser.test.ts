// Browsers and production frontends (README, "Security"): the CORS allow-list (KV_CORS_ORIGINS),
// refusal of other sites' requests, CSRF prevention (KV_CSRF_PREVENTION), the loopback Host check
// that stops DNS rebinding when no tokens are configured, and trusted documents
// (KV_TRUSTED_DOCUMENTS) over every transport.
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newToken } from '../../src/auth/tokens.js';
import { trustedDocumentsOf } from '../../src/auth/trustedDocuments.js';
import { createTestApp, writtenOf, type TestApp } from '../harness/app.js';
import { sseSubscribe } from '../harness/sse.js';
import type { Payload } from '../harness/stream.js';

const ALLOWED = 'https://app.example.com';
const json = { 'content-type': 'application/json', accept: 'application/graphql-response+json' };

/** A raw request, with any Host header (fetch would not let the test set one). */
function rawPost(url: string, host: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { ...json, host, 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Opens a WebSocket with these headers; resolves "open" or the HTTP status of the refused upgrade. */
function wsOpen(url: string, headers: Record<string, string>): Promise<'open' | number> {
  return new Promise((resolve) => {
    const socket = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws', { headers });
    socket.on('open', () => {
      socket.close();
      resolve('open');
    });
    socket.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    socket.on('error', () => {});
  });
}

describe('browsers, without tokens (loopback)', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('browser', { browser: { corsOrigins: [ALLOWED], csrfPrevention: true }, websocket: true });
  });
  afterAll(async () => {
    await app?.close();
  });

  it('answers an allowed origin with CORS headers, its preflight too', async () => {
    const pre = await fetch(app.url, { method: 'OPTIONS', headers: { origin: ALLOWED, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(pre.headers.get('access-control-allow-headers')).toMatch(/authorization/);
    expect(pre.headers.get('access-control-allow-credentials')).toBeNull();
    const res = await fetch(app.url, { method: 'POST', headers: { ...json, origin: ALLOWED }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe(ALLOWED);
  });

  it('refuses any other site outright (403 ORIGIN_NOT_ALLOWED), and runs nothing: a "simple" form POST included', async () => {
    for (const origin of ['https://evil.example', 'https://app.example.com.evil.example', 'null', 'http://app.example.com']) {
      const res = await fetch(app.url, { method: 'POST', headers: { ...json, origin }, body: JSON.stringify({ query: 'mutation{ put(key:"evil", value:"x"){ version } }' }) });
      expect(res.status, origin).toBe(403);
      expect(((await res.json()) as Payload).errors?.[0]?.extensions?.code).toBe('ORIGIN_NOT_ALLOWED');
      expect(res.headers.get('access-control-allow-origin')).not.toBe(origin);
    }
    const form = await fetch(app.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
      body: `query=${encodeURIComponent('mutation{ put(key:"evil", value:"x"){ version } }')}`,
    });
    expect(form.status).toBe(403);
    expect(await writtenOf(app.redis, app.prefix)).toEqual([]);
  });

  it('lets its own origin (same-origin, GraphiQL) through without listing it', async () => {
    const res = await fetch(app.url, { method: 'POST', headers: { ...json, origin: new URL(app.url).origin }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(res.status).toBe(200);
  });

  it('CSRF prevention: a GET or a form-encoded POST without a CSRF header is refused (403 CSRF_HEADER_REQUIRED) and runs nothing', async () => {
    const get = await fetch(`${app.url}?query=${encodeURIComponent('{ __typename }')}`, { headers: { accept: 'application/graphql-response+json' } });
    expect(get.status).toBe(403);
    expect(((await get.json()) as Payload).errors?.[0]?.extensions?.code).toBe('CSRF_HEADER_REQUIRED');
    const form = await fetch(app.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: `query=${encodeURIComponent('mutation{ put(key:"csrf", value:"x"){ version } }')}`,
    });
    expect(form.status).toBe(403);
    expect(((await form.json()) as Payload).errors?.[0]?.extensions?.code).toBe('CSRF_HEADER_REQUIRED');
    expect(await writtenOf(app.redis, app.prefix)).toEqual([]);
    for (const h of ['x-graphql-yoga-csrf', 'apollo-require-preflight', 'graphql-require-preflight']) {
      const ok = await fetch(`${app.url}?query=${encodeURIComponent('{ __typename }')}`, { headers: { accept: 'application/graphql-response+json', [h]: '1' } });
      expect(ok.status, h).toBe(200);
    }
  });

  it('without tokens, answers only a loopback Host (DNS rebinding): 403 HOST_NOT_ALLOWED otherwise, on every path', async () => {
    const body = JSON.stringify({ query: 'mutation{ put(key:"rebind", value:"x"){ version } }' });
    for (const host of ['evil.example', 'evil.example:80', '10.0.0.1', '127.0.0.1.evil.example']) {
      const res = await rawPost(app.url, host, body);
      expect(res.status, host).toBe(403);
      expect(JSON.parse(res.body).errors[0].extensions.code).toBe('HOST_NOT_ALLOWED');
    }
    for (const host of ['127.0.0.1', 'localhost:1234', '[::1]:80', '127.8.9.10']) expect((await rawPost(app.url, host, JSON.stringify({ query: '{ __typename }' }))).status, host).toBe(200);
    expect(await writtenOf(app.redis, app.prefix)).toEqual([]);
    expect(await wsOpen(app.url, { host: 'evil.example' })).toBe(401);
  });

  it('WebSocket: the same origin rule before the upgrade', async () => {
    expect(await wsOpen(app.url, {})).toBe('open');
    expect(await wsOpen(app.url, { origin: ALLOWED })).toBe('open');
    expect(await wsOpen(app.url, { origin: 'https://evil.example' })).toBe(401);
  });
});

describe('trusted documents (KV_TRUSTED_DOCUMENTS)', () => {
  const GET = 'query Get($k:String!){ get(key:$k){ key value } }';
  const PUT = 'mutation Put($k:String!,$v:String!){ put(key:$k, value:$v){ version } }';
  const CHANGES = 'subscription Changes{ changes(prefix:"td:"){ key } }';
  const sha = (t: string) => createHash('sha256').update(t).digest('hex');
  const docs = trustedDocumentsOf({ [sha(GET)]: GET, [sha(PUT)]: PUT, [sha(CHANGES)]: CHANGES });
  const admin = newToken('admin', ['admin'], []);
  let app: TestApp;

  beforeAll(async () => {
    app = await createTestApp('trusted', { tokens: [admin.entry], trustedDocuments: docs, websocket: true });
  });
  afterAll(async () => {
    await app?.close();
  });

  const send = async (body: unknown, lane: 'fast' | 'yoga' = 'fast') => {
    const res = await fetch(app.url, {
      method: 'POST',
      headers: { ...json, authorization: `Bearer ${admin.token}`, ...(lane === 'yoga' ? { origin: new URL(app.url).origin } : {}) },
      body: JSON.stringify(body),
    });
    return { status: res.status, ...((await res.json()) as Payload) };
  };

  it('runs a trusted document named by Apollo persistedQuery or documentId, on both lanes and GET', async () => {
    for (const lane of ['fast', 'yoga'] as const) {
      const put = await send({ extensions: { persistedQuery: { version: 1, sha256Hash: sha(PUT) } }, variables: { k: `td:${lane}`, v: 'v' } }, lane);
      expect(put.errors, lane).toBeUndefined();
      const get = await send({ documentId: `sha256:${sha(GET)}`, variables: { k: `td:${lane}` } }, lane);
      expect(get.data, lane).toEqual({ get: { key: `td:${lane}`, value: 'v' } });
    }
    const params = new URLSearchParams({ documentId: sha(GET), variables: JSON.stringify({ k: 'td:fast' }) });
    const res = await fetch(`${app.url}?${params}`, { headers: { accept: 'application/graphql-response+json', authorization: `Bearer ${admin.token}`, 'x-graphql-yoga-csrf': '1' } });
    const got = (await res.json()) as Payload;
    expect(got.data, JSON.stringify(got)).toEqual({ get: { key: 'td:fast', value: 'v' } });
  });

  it('refuses query text (even of a trusted document) and unknown hashes, with stable codes, writing nothing', async () => {
    for (const lane of ['fast', 'yoga'] as const) {
      const text = await send({ query: PUT, variables: { k: 'td:text', v: 'v' } }, lane);
      expect([text.status, text.errors?.[0]?.extensions?.code], lane).toEqual([400, 'TRUSTED_DOCUMENT_REQUIRED']);
      const both = await send({ query: PUT, extensions: { persistedQuery: { version: 1, sha256Hash: sha(PUT) } }, variables: { k: 'td:text', v: 'v' } }, lane);
      expect(both.errors?.[0]?.extensions?.code, lane).toBe('TRUSTED_DOCUMENT_REQUIRED');
      const unknown = await send({ documentId: sha('mutation{ deleteRange(prefix:""){ deleted } }') }, lane);
      expect([unknown.status, unknown.errors?.[0]?.extensions?.code], lane).toEqual([400, 'TRUSTED_DOCUMENT_NOT_FOUND']);
      const none = await send({ variables: {} }, lane);
      expect(none.errors?.[0]?.extensions?.code, lane).toBe('TRUSTED_DOCUMENT_REQUIRED');
    }
    expect((await send({ documentId: sha(GET), variables: { k: 'td:text' } })).data).toEqual({ get: null });
  });

  it('SSE and WebSocket: the same rules for subscriptions', async () => {
    const sse = await sseSubscribe(app.url, '', {}, { headers: { authorization: `Bearer ${admin.token}` }, extensions: { persistedQuery: { version: 1, sha256Hash: sha(CHANGES) } } });
    for (let i = 0; i < 50; i++) {
      await send({ documentId: sha(PUT), variables: { k: 'td:sse', v: 'v' } });
      const p = await sse.poll(100);
      if (p) {
        expect(p.data?.changes?.key).toBe('td:sse');
        break;
      }
      expect(i).toBeLessThan(49);
    }
    await sse.close();

    const socket = new WebSocket(app.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    const messages: Record<string, any>[] = [];
    socket.on('message', (m) => messages.push(JSON.parse(String(m))));
    await new Promise((resolve) => socket.on('open', resolve));
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${admin.token}` } }));
    for (let i = 0; i < 50 && !messages.some((m) => m.type === 'connection_ack'); i++) await new Promise((r) => setTimeout(r, 20));
    socket.send(JSON.stringify({ id: 'text', type: 'subscribe', payload: { query: GET, variables: { k: 'td:fast' } } }));
    socket.send(JSON.stringify({ id: 'hash', type: 'subscribe', payload: { query: '', variables: { k: 'td:fast' }, extensions: { persistedQuery: { version: 1, sha256Hash: sha(GET) } } } }));
    for (let i = 0; i < 50 && messages.filter((m) => m.type === 'error' || m.type === 'complete').length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    socket.close();
    expect(messages.find((m) => m.id === 'text')).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'TRUSTED_DOCUMENT_REQUIRED' } }] });
    expect(messages.find((m) => m.id === 'hash' && m.type === 'next')?.payload).toEqual({ data: { get: { key: 'td:fast', value: 'v' } } });
  });

  it('reads a list only when every id is the SHA-256 of its text, in both file formats', () => {
    expect(trustedDocumentsOf({ format: 'apollo-persisted-query-manifest', version: 1, operations: [{ id: sha(GET), body: GET, name: 'Get', type: 'query' }] }).byHash.get(sha(GET))).toBe(GET);
    expect(() => trustedDocumentsOf({ [sha(GET)]: PUT })).toThrow(/SHA-256 of its text is/);
    expect(() => trustedDocumentsOf({ abc: GET })).toThrow(/hex SHA-256/);
    expect(() => trustedDocumentsOf({})).toThrow(/no document/);
    expect(() => trustedDocumentsOf([])).toThrow(/JSON object/);
  });
});
