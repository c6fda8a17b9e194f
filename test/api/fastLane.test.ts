// The fast lane (src/fastLane.ts): what it serves itself, what it hands to yoga, and that a
// client cannot tell the two apart. Every other API test goes through it too (the harness's
// `gql` posts to `yoga.listener`); this file compares it with yoga's own pipeline request by
// request, and covers what only it does (lanes, cheap refusals, hand-over of a stream).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../harness/app.js';
import { negotiateJson } from '../../src/fastLane.js';
import { startTestRedis } from '../harness/redisServer.js';

let app: TestApp;

beforeAll(async () => {
  app = await createTestApp('fastlane', { limits: { maxRequestItems: 50 } });
  await app.gql('mutation { a: put(key: "fl:a", value: "1") { version } b: put(key: "fl:b", value: "2") { version } }');
});

afterAll(async () => {
  await app.close();
});

async function lanes(): Promise<{ fast: number; yoga: number }> {
  const text = await (await app.yoga.fetch('http://kvql.test/metrics')).text();
  const read = (lane: string) => Number(new RegExp(`^kvql_http_requests_by_lane_total\\{lane="${lane}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { fast: read('fast'), yoga: read('yoga') };
}

interface Answer {
  status: number;
  type: string | null;
  body: unknown;
}

async function both(body: unknown, headers: Record<string, string> = {}): Promise<{ listener: Answer; yoga: Answer }> {
  const init = { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) };
  const read = async (res: Response): Promise<Answer> => {
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: compared as text
    }
    return { status: res.status, type: res.headers.get('content-type'), body: parsed };
  };
  const listener = await read(await fetch(app.url, init));
  const yoga = await read(await app.yoga.fetch('http://kvql.test/graphql', init));
  return { listener, yoga };
}

const GET = 'query($k: String!) { get(key: $k) { key value version } }';
const ACCEPTS = [
  undefined,
  '*/*',
  'application/json',
  'application/graphql-response+json',
  'application/graphql-response+json, application/json;q=0.9',
  'application/json, application/graphql-response+json',
  'application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed',
  'text/html, */*;q=0.8',
];

describe('the fast lane answers as graphql-yoga does', () => {
  const cases: [string, unknown][] = [
    ['a read', { query: GET, variables: { k: 'fl:a' } }],
    ['a read of a missing key', { query: GET, variables: { k: 'fl:none' } }],
    ['several root fields and an operation name', { query: 'query Two { a: get(key: "fl:a") { value } m: getMany(keys: ["fl:a", "fl:zz", "fl:b"]) { key } }', operationName: 'Two' }],
    ['a range page', { query: 'query { range(prefix: "fl:", first: 1) { edges { node { key } } pageInfo { hasNextPage } } }' }],
    ['bad input (an empty key)', { query: GET, variables: { k: '' } }],
    ['a variable of the wrong type', { query: GET, variables: { k: 5 } }],
    ['a missing required variable', { query: GET }],
    ['more work than the request budget', { query: 'query { a: getMany(keys: ["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17","18","19","20","21","22","23","24","25","26","27","28","29","30"]) { key } b: getMany(keys: ["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17","18","19","20","21","22","23","24","25","26","27","28","29","30"]) { key } }' }],
    ['a document that does not parse', { query: '{ get(' }],
    ['a document that does not validate', { query: '{ nope }' }],
    ['an unknown parameter', { query: GET, variables: { k: 'fl:a' }, other: 1 }],
    ['a body that is not JSON', '{"query": '],
    // (Accept headers that allow an event stream would get one: the streaming case is below.)
    ['a subscription with an Accept that allows only JSON', { query: 'subscription { changes(prefix: "fl:") { key } }' }],
  ];
  for (const [name, body] of cases) {
    const streams = (accept: string | undefined) => accept === undefined || /\*\/\*|event-stream|multipart/.test(accept);
    for (const accept of ACCEPTS.filter((a) => !name.startsWith('a subscription') || !streams(a))) {
      it(`${name}, Accept: ${accept ?? '(none)'}`, async () => {
        const { listener, yoga } = await both(body, accept ? { accept } : {});
        expect(listener).toEqual(yoga);
      });
    }
  }

  it('serves valid queries itself and hands the rest to yoga', async () => {
    const before = await lanes();
    await both({ query: GET, variables: { k: 'fl:a' } });
    await both({ query: '{ nope }' });
    await both({ query: 'subscription { changes(prefix: "fl:") { key } }' }, { accept: 'application/json' });
    const after = await lanes();
    expect(after.fast - before.fast).toBe(1);
    expect(after.yoga - before.yoga).toBe(2);
  });

  it('writes through the fast lane, once', async () => {
    const before = await lanes();
    const r = await app.gql('mutation($k: String!) { put(key: $k, value: "w") { version } }', { k: 'fl:w' });
    expect(r.status).toBe(200);
    expect(r.data).toEqual({ put: { version: 1 } });
    expect((await lanes()).fast - before.fast).toBe(1);
    const g = await app.gql(GET, { k: 'fl:w' });
    expect(g.data).toEqual({ get: { key: 'fl:w', value: 'w', version: 1 } });
  });

  it("echoes the client's request id, or gives one", async () => {
    const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: GET, variables: { k: 'fl:a' } }) };
    const given = await fetch(app.url, { ...init, headers: { ...init.headers, 'x-request-id': 'abc-123' } });
    expect(given.headers.get('x-request-id')).toBe('abc-123');
    const fresh = await fetch(app.url, init);
    expect(fresh.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('hands a subscription over SSE to yoga, which streams it through the listener', async () => {
    const ctl = new AbortController();
    const res = await fetch(app.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ query: 'subscription { changes(prefix: "fl:sse") { type key version } }' }),
      signal: ctl.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = res.body!.getReader();
    let text = '';
    const write = setTimeout(() => void app.gql('mutation { put(key: "fl:sse1", value: "x") { version } }'), 300);
    try {
      while (!text.includes('fl:sse1')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString('utf8');
      }
    } finally {
      clearTimeout(write);
      ctl.abort();
    }
    expect(text).toMatch(/"key":"fl:sse1"/);
  });
});

describe('negotiateJson', () => {
  it('picks the JSON type graphql-yoga would', () => {
    expect(negotiateJson(undefined)).toBe('application/json');
    expect(negotiateJson('*/*')).toBe('application/json');
    expect(negotiateJson('application/graphql-response+json')).toBe('application/graphql-response+json');
    expect(negotiateJson('application/graphql-response+json, application/json')).toBe('application/graphql-response+json');
    expect(negotiateJson('application/json, application/graphql-response+json')).toBe('application/json');
    expect(negotiateJson('text/event-stream')).toBeUndefined();
    expect(negotiateJson('application/json; charset=latin1')).toBeUndefined();
  });
});

describe('refusals under load', () => {
  it('refuses at once in the listener when every slot is taken', async () => {
    const redis = await startTestRedis();
    const busy = await createTestApp('fastlane-full', { redisUrl: redis.url, load: { maxInFlight: 1 } });
    try {
      // Hold the only slot: a read while Redis hangs waits for the command timeout.
      redis.pause!();
      const held = fetch(busy.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: GET, variables: { k: 'x' } }) });
      let res: Response | undefined;
      for (let i = 0; i < 50; i++) {
        res = await fetch(busy.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: GET, variables: { k: 'y' } }) });
        if (res.status === 503) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(res!.status).toBe(503);
      expect(res!.headers.get('retry-after')).toBe('1');
      expect(res!.headers.get('x-request-id')).toBeTruthy();
      expect(((await res!.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('OVERLOADED');
      redis.resume!();
      expect((await held).status).toBe(200);
      const metrics = await (await busy.yoga.fetch('http://kvql.test/metrics')).text();
      expect(metrics).toMatch(/^kvql_graphql_refusals_total\{reason="OVERLOADED"\} [1-9]/m);
    } finally {
      redis.resume!();
      await busy.close();
      await redis.stop();
    }
  });
});
