// KV_INTROSPECTION and KV_GRAPHIQL (README, "Security"): with introspection off, __schema and
// __type are refused on both request paths (the fast lane validates with yoga's rules) and over
// GET alike, while __typename and ordinary queries still work; with GraphiQL off a browser gets
// no GraphiQL page. And the security headers every response carries.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECURITY_HEADERS } from '../../src/fastLane.js';
import { createTestApp, type TestApp } from '../harness/app.js';

const INTROSPECT = '{ __schema { queryType { name } } }';
const TYPE = '{ __type(name: "Entry") { name } }';

describe('KV_INTROSPECTION=false, KV_GRAPHIQL=false', () => {
  let off: TestApp;
  let on: TestApp;
  beforeAll(async () => {
    off = await createTestApp('introspection-off', { introspection: false, graphiql: false });
    on = await createTestApp('introspection-on');
  });
  afterAll(async () => {
    await off?.close();
    await on?.close();
  });

  const lanes = (url: string) => ({
    // A plain JSON POST: the fast lane. With an Origin header (its own: same-origin): yoga's own
    // path. A GET carries a CSRF header, as KV_CSRF_PREVENTION asks of it.
    fast: (query: string) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' }, body: JSON.stringify({ query }) }),
    yoga: (query: string) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', origin: new URL(url).origin }, body: JSON.stringify({ query }) }),
    get: (query: string) => fetch(`${url}?query=${encodeURIComponent(query)}`, { headers: { accept: 'application/graphql-response+json', 'x-graphql-yoga-csrf': '1' } }),
  });

  it('refuses __schema and __type on every path, and still answers __typename and queries', async () => {
    for (const [name, send] of Object.entries(lanes(off.url))) {
      for (const query of [INTROSPECT, TYPE]) {
        const res = await send(query);
        const body = (await res.json()) as { data?: unknown; errors?: { message: string; extensions?: { code?: string } }[] };
        expect(body.data, `${name} ${query}`).toBeUndefined();
        expect(body.errors?.[0]?.extensions?.code, `${name} ${query}`).toBe('GRAPHQL_VALIDATION_FAILED');
        expect(body.errors?.[0]?.message, `${name} ${query}`).toMatch(/introspection/i);
      }
      const plain = (await (await send('{ __typename get(key: "nothing") { key } }')).json()) as { data?: unknown };
      expect(plain.data, name).toEqual({ __typename: 'Query', get: null });
    }
  });

  it('answers them where introspection is on (the default outside production)', async () => {
    for (const [name, send] of Object.entries(lanes(on.url))) {
      const body = (await (await send(INTROSPECT)).json()) as { data?: unknown };
      expect(body.data, name).toEqual({ __schema: { queryType: { name: 'Query' } } });
    }
  });

  it('serves no GraphiQL page to a browser when off, and serves it when on', async () => {
    const page = (url: string) => fetch(url, { headers: { accept: 'text/html' } });
    const offPage = await page(off.url);
    expect(await offPage.text()).not.toMatch(/graphiql/i);
    const onPage = await page(on.url);
    expect(onPage.status).toBe(200);
    expect(await onPage.text()).toMatch(/graphiql/i);
  });
});

describe('security headers', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp('security-headers');
  });
  afterAll(async () => {
    await app?.close();
  });

  it('are on every response: the fast lane, yoga, GET, GraphiQL, refusals and other paths', async () => {
    const json = { 'content-type': 'application/json', accept: 'application/graphql-response+json' };
    const body = JSON.stringify({ query: '{ __typename }' });
    const responses = {
      fast: await fetch(app.url, { method: 'POST', headers: json, body }),
      yoga: await fetch(app.url, { method: 'POST', headers: { ...json, origin: new URL(app.url).origin }, body }),
      get: await fetch(`${app.url}?query=${encodeURIComponent('{ __typename }')}`, { headers: { 'x-graphql-yoga-csrf': '1' } }),
      graphiql: await fetch(app.url, { headers: { accept: 'text/html' } }),
      badRequest: await fetch(app.url, { method: 'POST', headers: json, body: '{' }),
      health: await fetch(app.url.replace('/graphql', '/health')),
    };
    for (const [name, res] of Object.entries(responses)) {
      await res.arrayBuffer();
      for (const [header, value] of SECURITY_HEADERS) expect(res.headers.get(header), `${name} ${header}`).toBe(value);
    }
  });
});
