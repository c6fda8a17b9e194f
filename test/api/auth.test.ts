// Authentication and authorization (README, "Security"): the scope × operation matrix over every
// transport (HTTP through the fast lane and through yoga, SSE, WebSocket), prefix escapes (ranges
// that start before or end after a prefix, shared stems, no bounds, forged cursors), and missing,
// malformed and wrong tokens, each refused with nothing written.
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashToken, newToken, type Scope } from '../../src/auth/tokens.js';
import { encodeCursor } from '../../src/graphql/range.js';
import { createTestApp, feedSequencesOf, writtenOf, type TestApp } from '../harness/app.js';
import { sseSubscribe } from '../harness/sse.js';
import type { Payload } from '../harness/stream.js';
import { wsClient, type WsClient } from '../harness/ws.js';

const made = {
  admin: newToken('admin', ['admin'], []),
  reader: newToken('reader', ['read'], ['tenantA:']),
  writer: newToken('writer', ['write'], ['tenantA:']),
  rw: newToken('rw', ['read', 'write'], ['tenantA:']),
  otherTenant: newToken('other', ['read', 'write'], ['tenantAB:', 'tenantB:']),
  everything: newToken('everything', ['read', 'write'], ['']),
};
type Who = keyof typeof made;
const token = (who: Who) => made[who].token;

let app: TestApp;
const clients = new Set<WsClient>();

beforeAll(async () => {
  app = await createTestApp('auth', { tokens: Object.values(made).map((m) => m.entry), websocket: true });
  // Data every refused read could leak: in tenantA:, next to it, and in the shared stem.
  const seed = ['tenantA:1', 'tenantA:2', 'tenantA:3', 'tenantA', 'tenantA9', 'tenantAB:x', 'tenantB:y', 'tenant', 'z'];
  const res = await post('admin', 'mutation($items:[PutInput!]!){ batchPut(items:$items){ key } }', { items: seed.map((key) => ({ key, value: `v-${key}` })) });
  expect(res.errors).toBeUndefined();
});

afterAll(async () => {
  await Promise.allSettled([...clients].map((c) => c.dispose()));
  await app?.close();
});

type Lane = 'fast' | 'yoga';

/** A POST; "fast" is a plain JSON POST (the fast lane), "yoga" the same with an Origin header (yoga's path). */
async function post(who: Who | null, query: string, variables: Record<string, unknown> = {}, lane: Lane = 'fast', headers: Record<string, string> = {}) {
  const res = await fetch(app.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      // Its own origin (same-origin, so allowed): the fast lane hands a request with an Origin to yoga.
      ...(lane === 'yoga' ? { origin: new URL(app.url).origin } : {}),
      ...(who ? { authorization: `Bearer ${token(who)}` } : {}),
      ...headers,
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as Payload;
  return { status: res.status, headers: res.headers, ...body };
}

/** One operation over SSE (a query or mutation answers one `next`, then completes). */
async function overSse(who: Who, query: string, variables: Record<string, unknown>): Promise<Payload> {
  const stream = await sseSubscribe(app.url, query, variables, { headers: { authorization: `Bearer ${token(who)}` } });
  try {
    return await stream.next();
  } finally {
    await stream.close();
  }
}

function ws(who: Who): WsClient {
  const c = wsClient(app.url, { authorization: `Bearer ${token(who)}` });
  clients.add(c);
  return c;
}

async function overWs(who: Who, query: string, variables: Record<string, unknown>): Promise<Payload> {
  const c = ws(who);
  const stream = c.subscribe(query, variables);
  try {
    return await stream.next();
  } finally {
    await stream.close();
    await c.dispose();
    clients.delete(c);
  }
}

type Transport = 'fast' | 'yoga' | 'sse' | 'ws';
const TRANSPORTS: Transport[] = ['fast', 'yoga', 'sse', 'ws'];

function run(transport: Transport, who: Who, query: string, variables: Record<string, unknown>): Promise<Payload & { status?: number }> {
  if (transport === 'sse') return overSse(who, query, variables);
  if (transport === 'ws') return overWs(who, query, variables);
  return post(who, query, variables, transport);
}

interface Op {
  name: string;
  needs: 'read' | 'write';
  query: string;
  variables: Record<string, unknown>;
}

let n = 0;
const fresh = () => `tenantA:w${++n}`;
const OPS: (() => Op)[] = [
  () => ({ name: 'get', needs: 'read', query: 'query($k:String!){ get(key:$k){ key value } }', variables: { k: 'tenantA:1' } }),
  () => ({ name: 'getMany', needs: 'read', query: 'query($k:[String!]!){ getMany(keys:$k){ key } }', variables: { k: ['tenantA:1', 'tenantA:2'] } }),
  () => ({ name: 'range', needs: 'read', query: 'query($p:String){ range(prefix:$p){ edges { node { key } } } }', variables: { p: 'tenantA:' } }),
  () => ({ name: 'put', needs: 'write', query: 'mutation($k:String!){ put(key:$k, value:"x"){ version } }', variables: { k: fresh() } }),
  () => ({ name: 'batchPut', needs: 'write', query: 'mutation($i:[PutInput!]!){ batchPut(items:$i){ key } }', variables: { i: [{ key: fresh(), value: 'x' }, { key: fresh(), value: 'y' }] } }),
  () => ({ name: 'delete', needs: 'write', query: 'mutation($k:String!){ delete(key:$k){ deleted } }', variables: { k: fresh() } }),
  () => ({ name: 'deleteRange', needs: 'write', query: 'mutation($p:String){ deleteRange(prefix:$p){ deleted } }', variables: { p: `tenantA:gone${++n}:` } }),
];

const SCOPES: Record<Who, Scope[]> = { admin: ['admin'], reader: ['read'], writer: ['write'], rw: ['read', 'write'], otherTenant: ['read', 'write'], everything: ['read', 'write'] };
/** Whether `who` may do `needs` on tenantA: keys. */
function allowed(who: Who, needs: 'read' | 'write'): boolean {
  if (who === 'otherTenant') return false;
  return SCOPES[who].includes('admin') || SCOPES[who].includes(needs);
}

describe('the scope × operation matrix', () => {
  for (const transport of TRANSPORTS) {
    it(`over ${transport}: every operation is allowed or FORBIDDEN as its token's scopes and prefixes say`, async () => {
      for (const who of Object.keys(made) as Who[]) {
        for (const make of OPS) {
          const op = make();
          const before = op.needs === 'write' ? [await writtenOf(app.redis, app.prefix), await feedSequencesOf(app)] : undefined;
          const result = await run(transport, who, op.query, op.variables);
          const label = `${transport} ${who} ${op.name}`;
          if (allowed(who, op.needs)) {
            expect(result.errors, label).toBeUndefined();
            expect(result.data?.[op.name], label).toBeDefined();
          } else {
            expect(result.errors?.map((e) => e.extensions?.code), label).toEqual(['FORBIDDEN']);
            if (result.status !== undefined) expect(result.status, label).toBe(200);
            if (before) expect([await writtenOf(app.redis, app.prefix), await feedSequencesOf(app)], `${label} wrote`).toEqual(before);
          }
        }
      }
    });
  }

  it('both HTTP lanes were exercised (the lane counters)', async () => {
    const metrics = await (await fetch(app.url.replace(/\/graphql$/, '/metrics'))).text();
    for (const lane of ['fast', 'yoga']) {
      const m = new RegExp(`kvql_http_requests_by_lane_total\\{lane="${lane}"\\} (\\d+)`).exec(metrics);
      expect(Number(m?.[1] ?? 0), lane).toBeGreaterThan(0);
    }
  });

  it('GET (yoga) needs a token and is checked the same way', async () => {
    const url = (who: Who | null, q: string) => fetch(`${app.url}?query=${encodeURIComponent(q)}`, { headers: { accept: 'application/graphql-response+json', 'x-graphql-yoga-csrf': '1', ...(who ? { authorization: `Bearer ${token(who)}` } : {}) } });
    const refused = await url(null, '{ get(key:"tenantA:1"){ value } }');
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await (await url('reader', '{ get(key:"tenantA:1"){ value } }')).json()).toEqual({ data: { get: { value: 'v-tenantA:1' } } });
    const forbidden = (await (await url('reader', '{ get(key:"tenantB:y"){ value } }')).json()) as Payload;
    expect(forbidden.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});

describe('subscriptions (changes)', () => {
  const CHANGES = 'subscription($p:String, $s:String, $e:String){ changes(prefix:$p, start:$s, end:$e){ type key } }';

  /** Writes into tenantA: until the subscription delivers; the first event it gets. */
  async function firstEvent(stream: { poll(ms: number): Promise<Payload | undefined> }): Promise<Payload> {
    for (let i = 0; i < 50; i++) {
      const r = await post('admin', 'mutation($k:String!){ put(key:$k, value:"e"){ version } }', { k: 'tenantA:sub' });
      expect(r.errors).toBeUndefined();
      const p = await stream.poll(100);
      if (p) return p;
    }
    throw new Error('no event');
  }

  for (const transport of ['sse', 'ws'] as const) {
    it(`over ${transport}: read on the prefix subscribes; no read scope, or a range outside, is FORBIDDEN`, async () => {
      const open = async (who: Who, variables: Record<string, unknown>) => {
        if (transport === 'sse') return sseSubscribe(app.url, CHANGES, variables, { headers: { authorization: `Bearer ${token(who)}` } });
        return ws(who).subscribe(CHANGES, variables);
      };
      const ok = await open('reader', { p: 'tenantA:' });
      const event = await firstEvent(ok);
      expect(event.errors).toBeUndefined();
      expect(event.data?.changes?.key).toBe('tenantA:sub');
      await ok.close();
      for (const [who, variables] of [
        ['writer', { p: 'tenantA:' }],
        ['otherTenant', { p: 'tenantA:' }],
        ['reader', {}],
        ['reader', { p: 'tenantA' }],
        ['reader', { s: 'tenantA:', e: 'tenantB' }],
        ['reader', { s: 'tenant', e: 'tenantA:z' }],
      ] as [Who, Record<string, unknown>][]) {
        const s = await open(who, variables);
        const p = await s.next();
        expect(p.errors?.map((e) => e.extensions?.code), `${who} ${JSON.stringify(variables)}`).toEqual(['FORBIDDEN']);
        await s.close();
      }
    });
  }
});

describe('prefix escapes', () => {
  const RANGE = 'query($p:String,$s:String,$e:String,$a:String,$b:String,$f:Int,$l:Int){ range(prefix:$p,start:$s,end:$e,after:$a,before:$b,first:$f,last:$l){ edges { node { key } } } }';
  const keysOf = (r: Payload) => (r.data?.range?.edges ?? []).map((e: { node: { key: string } }) => e.node.key);

  it('ranges wholly inside the prefix are served, by prefix or by bounds', async () => {
    for (const v of [{ p: 'tenantA:' }, { p: 'tenantA:1' }, { s: 'tenantA:', e: 'tenantA;' }, { s: 'tenantA:1', e: 'tenantA:3' }, { s: 'tenantA:2', e: 'tenantA:\u{10FFFF}' }]) {
      const r = await post('reader', RANGE, v);
      expect(r.errors, JSON.stringify(v)).toBeUndefined();
      for (const k of keysOf(r)) expect(k.startsWith('tenantA:'), JSON.stringify(v)).toBe(true);
    }
    expect(keysOf(await post('reader', RANGE, { s: 'tenantA:1', e: 'tenantA:3' }))).toEqual(['tenantA:1', 'tenantA:2']);
  });

  it('a range that could reach a key outside every prefix is FORBIDDEN, reads and deletes alike', async () => {
    const escapes: Record<string, unknown>[] = [
      {}, // no bounds at all
      { p: '' },
      { p: 'tenantA' }, // the stem: tenantA, tenantA9, tenantAB:x
      { p: 'tenant' },
      { s: 'tenantA:' }, // no end
      { e: 'tenantA:z' }, // no start
      { s: 'tenant', e: 'tenantA:z' }, // starts before the prefix
      { s: 'tenantA:', e: 'tenantA<' }, // ends after it (';' is the first byte past ':')
      { s: 'tenantA:', e: 'tenantB' },
      { s: 'tenantA', e: 'tenantA;' }, // "tenantA" itself is below the prefix
      { p: 'tenantAB:' }, // another tenant sharing the stem
    ];
    for (const v of escapes) {
      const r = await post('rw', RANGE, v);
      expect(r.errors?.map((e) => e.extensions?.code), JSON.stringify(v)).toEqual(['FORBIDDEN']);
      expect(r.data ?? null).toBeNull();
    }
    const before = await writtenOf(app.redis, app.prefix);
    for (const v of escapes) {
      const r = await post('rw', 'mutation($p:String,$s:String,$e:String){ deleteRange(prefix:$p,start:$s,end:$e){ deleted } }', v);
      expect(r.errors?.map((e) => e.extensions?.code), `deleteRange ${JSON.stringify(v)}`).toEqual(['FORBIDDEN']);
    }
    expect(await writtenOf(app.redis, app.prefix)).toEqual(before);
  });

  it('tenantA: and tenantAB: are told apart both ways', async () => {
    expect((await post('otherTenant', RANGE, { p: 'tenantAB:' })).errors).toBeUndefined();
    expect(keysOf(await post('otherTenant', RANGE, { p: 'tenantAB:' }))).toEqual(['tenantAB:x']);
    expect((await post('otherTenant', RANGE, { p: 'tenantA:' })).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await post('otherTenant', 'query{ get(key:"tenantA:1"){ key } }')).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await post('rw', 'query{ get(key:"tenantAB:x"){ key } }')).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await post('rw', 'query{ getMany(keys:["tenantA:1","tenantA9"]){ key } }')).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('each field is checked on its own: a refused field writes nothing, an allowed one runs (documented)', async () => {
    const r = await post('rw', 'mutation { a: put(key:"tenantA:m1", value:"x"){ version } b: put(key:"tenantB:m1", value:"x"){ version } }');
    expect(r.data).toBeNull(); // put is non-null: b's error nulls the whole data
    expect(r.errors?.map((e) => [e.path?.[0], e.extensions?.code])).toEqual([['b', 'FORBIDDEN']]);
    const check = await post('admin', 'query { a: get(key:"tenantA:m1"){ version } b: get(key:"tenantB:m1"){ version } }');
    expect(check.data).toEqual({ a: { version: 1 }, b: null });
  });

  it('forged cursors outside the prefix only narrow the range: nothing outside is returned', async () => {
    const forged = ['', 'tenant', 'tenantA', 'tenantA9', 'tenantAB:x', 'tenantB:y', 'a', 'z', '\u{10FFFF}'].filter((k) => k !== '').map(encodeCursor);
    for (const c of forged) {
      for (const v of [{ p: 'tenantA:', a: c }, { p: 'tenantA:', b: c, l: 100 }, { p: 'tenantA:', a: c, b: forged[0] }]) {
        const r = await post('reader', RANGE, v);
        if (r.errors) {
          expect(r.errors.map((e) => e.extensions?.code)).not.toContain('FORBIDDEN');
          continue;
        }
        for (const k of keysOf(r)) expect(k.startsWith('tenantA:'), `${JSON.stringify(v)} returned ${k}`).toBe(true);
      }
    }
    // A cursor below the prefix, paging forward: the whole prefix and nothing else.
    expect(keysOf(await post('reader', RANGE, { p: 'tenantA:', a: encodeCursor('a') }))).toEqual(
      keysOf(await post('reader', RANGE, { p: 'tenantA:' })),
    );
    // A cursor above it, paging backward: the same.
    expect(keysOf(await post('reader', RANGE, { p: 'tenantA:', b: encodeCursor('z'), l: 1000 }))).toEqual(
      keysOf(await post('reader', RANGE, { p: 'tenantA:' })),
    );
  });
});

describe('authentication', () => {
  const PUT = 'mutation { put(key:"tenantA:unauth", value:"x"){ version } }';

  const refusals: [string, Record<string, string>][] = [
    ['no Authorization', {}],
    ['"Bearer" alone', { authorization: 'Bearer' }],
    ['"Bearer " and nothing', { authorization: 'Bearer ' }],
    ['Basic', { authorization: 'Basic x' }],
    ['two tokens in one header', { authorization: `Bearer ${made.admin.token} ${made.admin.token}` }],
    ['two tokens, comma-separated', { authorization: `Bearer ${made.admin.token}, Bearer ${made.admin.token}` }],
    ['lower-case scheme', { authorization: `bearer${made.admin.token}` }],
    ['a wrong token', { authorization: `Bearer ${newToken('x', ['admin'], []).token}` }],
    ['the hash instead of the token', { authorization: `Bearer ${made.admin.entry.sha256}` }],
    ['a token with a character changed', { authorization: `Bearer ${made.admin.token.slice(0, -1)}${made.admin.token.endsWith('A') ? 'B' : 'A'}` }],
  ];

  for (const lane of ['fast', 'yoga'] as const) {
    it(`over ${lane}: missing, malformed and wrong tokens get 401 UNAUTHENTICATED and nothing is written`, async () => {
      const before = [await writtenOf(app.redis, app.prefix), await feedSequencesOf(app)];
      for (const [what, headers] of refusals) {
        const r = await post(null, PUT, {}, lane, headers);
        expect(r.status, what).toBe(401);
        expect(r.headers.get('www-authenticate'), what).toMatch(/^Bearer/);
        expect(r.errors?.map((e) => e.extensions?.code), what).toEqual(['UNAUTHENTICATED']);
        expect(r.data, what).toBeUndefined();
      }
      expect([await writtenOf(app.redis, app.prefix), await feedSequencesOf(app)]).toEqual(before);
    });
  }

  it('two Authorization headers are refused (Node would keep only the first)', async () => {
    const { request } = await import('node:http');
    const u = new URL(app.url);
    const body = JSON.stringify({ query: PUT });
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.setHeader('content-type', 'application/json');
      req.setHeader('authorization', [`Bearer ${made.admin.token}`, `Bearer ${made.reader.token}`]);
      req.end(body);
    });
    expect(status).toBe(401);
  });

  it('GraphiQL: the page loads without a token and runs nothing; operations from it need one', async () => {
    const page = await fetch(app.url, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/graphiql/i);
    // A page request carrying an operation still only renders the page.
    const sneaky = await fetch(`${app.url}?query=${encodeURIComponent('{ get(key:"tenantB:y"){ value } }')}`, { headers: { accept: 'text/html, application/json', 'x-graphql-yoga-csrf': '1' } });
    expect(sneaky.status).toBe(200);
    expect(await sneaky.text()).not.toContain('v-tenantB:y');
    const fromPage = await fetch(app.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', origin: new URL(app.url).origin }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(fromPage.status).toBe(401);
  });

  it('SSE without a valid token: 401 before any stream', async () => {
    for (const headers of [{}, { authorization: "Bearer nope" }] as Record<string, string>[]) {
      const res = await fetch(app.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
        body: JSON.stringify({ query: 'subscription { changes(prefix:"tenantA:"){ key } }' }),
      });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(((await res.json()) as Payload).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    }
  });

  it('WebSocket: connection_init without a valid token closes the socket with 4401', async () => {
    for (const payload of [undefined, {}, { authorization: 'Bearer nope' }, { authorization: `Basic ${made.admin.token}` }, { authorization: 42 }]) {
      const socket = new WebSocket(app.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
      const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
      const messages: string[] = [];
      socket.on('message', (m) => messages.push(String(m)));
      await new Promise((resolve) => socket.on('open', resolve));
      socket.send(JSON.stringify(payload === undefined ? { type: 'connection_init' } : { type: 'connection_init', payload }));
      // No subscribe before the server answers: graphql-ws itself closes with 4401 on a subscribe
      // sent before its ack, which would hide a missing check. The server's own answer decides.
      const acked = new Promise<'ack'>((resolve) => socket.on('message', (m) => String(m).includes('connection_ack') && resolve('ack')));
      const outcome = await Promise.race([acked, closed]);
      if (outcome === 'ack') {
        socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: PUT } }));
        await new Promise((r) => setTimeout(r, 200));
        socket.close();
      }
      expect(outcome, JSON.stringify(payload)).toBe(4401);
      expect(messages.some((m) => m.includes('connection_ack')), JSON.stringify(payload)).toBe(false);
    }
    expect((await post('admin', 'query{ get(key:"tenantA:unauth"){ key } }')).data).toEqual({ get: null });
  });

  it('with a valid token in connection_init, operations run as that token', async () => {
    const r = await overWs('reader', 'query{ get(key:"tenantA:1"){ value } }', {});
    expect(r).toEqual({ data: { get: { value: 'v-tenantA:1' } } });
  });

  it('the configured entry holds the SHA-256 of the token, never the token', () => {
    for (const { token: t, entry } of Object.values(made)) {
      expect(entry.sha256).toBe(hashToken(t).toString('hex'));
      expect(JSON.stringify(entry)).not.toContain(t);
      expect(t).toMatch(/^[A-Za-z0-9_-]{43}$/);
    }
  });
});
