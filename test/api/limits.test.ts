// Every input limit through GraphQL: configurable, enforced before Redis is touched, and
// reported with the right extensions.code. Runs with 1 and 4 partitions.
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, PARTITIONS, storedKeysOf, writtenOf, type GqlResult, type TestApp } from '../harness/app.js';

const PUT = `mutation($key: String!, $value: String!) { put(key: $key, value: $value) { key value version } }`;
const GET = `query($key: String!) { get(key: $key) { key value version } }`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key value } }`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key value version } }`;
const DELETE = `mutation($key: String!) { delete(key: $key) { deleted } }`;

// Small limits, so that the tests stay fast and every edge is reachable.
const LIMITS = {
  maxKeyBytes: 1024,
  maxValueBytes: 4096,
  maxBatchItems: 5,
  maxBatchBytes: 10_000,
  maxBodyBytes: 64 * 1024,
};

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp('limits', { limits: LIMITS });
});
afterAll(() => app.close());

/** The Redis keys of the app's keyspace other than its meta key, and every bucket field: what was written. */
async function written(a: TestApp = app): Promise<string[]> {
  return writtenOf(a.redis, a.prefix);
}

/** The user keys that have an entry in a bucket. */
async function storedKeys(a: TestApp = app): Promise<string[]> {
  return storedKeysOf(a.redis, a.prefix);
}

/** Posts raw JSON text, so that escapes such as \ud800 reach the server as they are written. */
async function rawGql(a: TestApp, json: string): Promise<GqlResult> {
  const res = await a.yoga.fetch('http://kvql.test/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: json,
  });
  return { status: res.status, ...((await res.json()) as object) };
}

function expectCode(r: GqlResult, code: string): void {
  expect(r.errors, JSON.stringify(r)).toBeDefined();
  expect(r.errors![0]!.extensions?.code, JSON.stringify(r.errors)).toBe(code);
  // Nothing is returned: the whole data is null, or the nullable field that failed is.
  expect(Object.values(r.data ?? {}).every((v) => v === null), JSON.stringify(r.data)).toBe(true);
}

it('runs with the partition count of the project', () => {
  expect(app.store.keys.partitions).toBe(PARTITIONS);
});

describe('keys', () => {
  it('refuses an empty key as BAD_USER_INPUT, for every operation, writing nothing', async () => {
    expectCode(await app.gql(PUT, { key: '', value: 'x' }), 'BAD_USER_INPUT');
    expectCode(await app.gql(GET, { key: '' }), 'BAD_USER_INPUT');
    expectCode(await app.gql(GET_MANY, { keys: ['ok', ''] }), 'BAD_USER_INPUT');
    expectCode(await app.gql(DELETE, { key: '' }), 'BAD_USER_INPUT');
    expectCode(await app.gql(BATCH, { items: [{ key: 'fine', value: 'x' }, { key: '', value: 'x' }] }), 'BAD_USER_INPUT');
    expect(await written()).toEqual([]);
  });

  it('counts UTF-8 bytes: 1024 bytes of multi-byte characters pass, 1025 fail', async () => {
    const twoByte = 'é'.repeat(512); // 1024 bytes, 512 UTF-16 units
    const fourByte = '😀'.repeat(256); // 1024 bytes, 512 UTF-16 units
    const threeByte = '€'.repeat(341) + 'a'; // 1024 bytes
    for (const key of [twoByte, fourByte, threeByte, 'k'.repeat(1024)]) {
      expect(Buffer.byteLength(key)).toBe(1024);
      const r = await app.gql(PUT, { key, value: 'v' });
      expect(r.errors, key.slice(0, 4)).toBeUndefined();
      expect((await app.gql(GET, { key })).data!.get).toMatchObject({ key, value: 'v' });
    }
    const before = await written();
    const over = ['é'.repeat(512) + 'a', '😀'.repeat(256) + 'a', '€'.repeat(342), 'k'.repeat(1025), 'é'.repeat(513)];
    for (const key of over) {
      expect(Buffer.byteLength(key)).toBeGreaterThan(1024);
      // 'é'.repeat(512) + 'a' is only 513 UTF-16 units: a limit in characters would let it by.
      expectCode(await app.gql(PUT, { key, value: 'v' }), 'BAD_USER_INPUT');
      expectCode(await app.gql(BATCH, { items: [{ key, value: 'v' }] }), 'BAD_USER_INPUT');
      expectCode(await app.gql(GET, { key }), 'BAD_USER_INPUT');
      expectCode(await app.gql(GET_MANY, { keys: [key] }), 'BAD_USER_INPUT');
      expectCode(await app.gql(DELETE, { key }), 'BAD_USER_INPUT');
    }
    expect(await written()).toEqual(before);
  });

  it('takes maxKeyBytes from the configuration', async () => {
    const small = await createTestApp('limits-key', { limits: { maxKeyBytes: 4 } });
    try {
      expect((await small.gql(PUT, { key: 'éé', value: 'v' })).errors).toBeUndefined();
      expectCode(await small.gql(PUT, { key: 'éé!', value: 'v' }), 'BAD_USER_INPUT');
      expectCode(await small.gql(PUT, { key: 'abcde', value: 'v' }), 'BAD_USER_INPUT');
      expect((await small.gql(PUT, { key: 'abcd', value: 'v' })).errors).toBeUndefined();
      expect(await storedKeys(small)).toEqual(['abcd', 'éé']);
    } finally {
      await small.close();
    }
  });

  it('refuses range bounds longer than maxKeyBytes as BAD_USER_INPUT', async () => {
    const r = await app.gql(`query($s: String) { range(start: $s) { totalCount } }`, { s: 'é'.repeat(513) });
    expectCode(r, 'BAD_USER_INPUT');
  });
});

describe('values', () => {
  it('accepts a value of exactly maxValueBytes (UTF-8) and refuses one byte more as PAYLOAD_TOO_LARGE', async () => {
    const exact = '😀'.repeat(1024); // 4096 bytes
    const ok = await app.gql(PUT, { key: 'val:exact', value: exact });
    expect(ok.errors).toBeUndefined();
    expect((await app.gql(GET, { key: 'val:exact' })).data!.get.value).toBe(exact);

    const before = await written();
    for (const value of [exact + 'a', 'é'.repeat(2049), 'x'.repeat(4097)]) {
      expectCode(await app.gql(PUT, { key: 'val:over', value }), 'PAYLOAD_TOO_LARGE');
      expectCode(await app.gql(BATCH, { items: [{ key: 'val:over', value }] }), 'PAYLOAD_TOO_LARGE');
    }
    // An existing key is not overwritten by a refused value either.
    expectCode(await app.gql(PUT, { key: 'val:exact', value: exact + 'a' }), 'PAYLOAD_TOO_LARGE');
    expect(await written()).toEqual(before);
    expect((await app.gql(GET, { key: 'val:exact' })).data!.get).toMatchObject({ value: exact, version: 1 });
  });

  it('takes maxValueBytes from the configuration', async () => {
    const small = await createTestApp('limits-value', { limits: { maxValueBytes: 3 } });
    try {
      expect((await small.gql(PUT, { key: 'a', value: 'abc' })).errors).toBeUndefined();
      expectCode(await small.gql(PUT, { key: 'b', value: 'ab€' }), 'PAYLOAD_TOO_LARGE');
      expect((await small.gql(GET, { key: 'b' })).data!.get).toBeNull();
    } finally {
      await small.close();
    }
  });
});

describe('batches', () => {
  const items = (n: number, prefix: string, value = 'v') =>
    Array.from({ length: n }, (_, i) => ({ key: `${prefix}:${i}`, value }));

  it('batchPut accepts maxBatchItems items and refuses one more as PAYLOAD_TOO_LARGE, writing nothing', async () => {
    const ok = await app.gql(BATCH, { items: items(5, 'bi-ok') });
    expect(ok.errors).toBeUndefined();
    expect(ok.data!.batchPut).toHaveLength(5);
    const before = await written();
    expectCode(await app.gql(BATCH, { items: items(6, 'bi-over') }), 'PAYLOAD_TOO_LARGE');
    expect(await written()).toEqual(before);
  });

  it('batchPut refuses more than maxBatchBytes of keys plus values as PAYLOAD_TOO_LARGE, writing nothing', async () => {
    // 3 items of key 'bb:N' (4 bytes) + 3000-byte value: 9012 bytes, under 10 000.
    const fits = items(3, 'bb', 'x'.repeat(3000));
    expect(fits.reduce((n, i) => n + Buffer.byteLength(i.key) + Buffer.byteLength(i.value), 0)).toBe(9012);
    expect((await app.gql(BATCH, { items: fits })).errors).toBeUndefined();

    const before = await written();
    // Each value is within maxValueBytes and the count within maxBatchItems; only the sum is over.
    const over = items(4, 'bo', 'é'.repeat(1249)); // 4 × (4 + 2498) = 10 008 bytes, 4 × 1253 chars
    expect(over.reduce((n, i) => n + Buffer.byteLength(i.key) + Buffer.byteLength(i.value), 0)).toBe(10_008);
    expectCode(await app.gql(BATCH, { items: over }), 'PAYLOAD_TOO_LARGE');
    // Exactly at the limit passes: keys count too.
    const exact = [
      { key: 'be:1', value: 'x'.repeat(4096) },
      { key: 'be:2', value: 'x'.repeat(4096) },
      { key: 'be:3', value: 'x'.repeat(10_000 - 3 * 4 - 2 * 4096) },
    ];
    expect(exact.reduce((n, i) => n + Buffer.byteLength(i.key) + Buffer.byteLength(i.value), 0)).toBe(10_000);
    const before2 = await written();
    expect(before2).toEqual(before);
    expect((await app.gql(BATCH, { items: exact })).errors).toBeUndefined();
    const plusOne = exact.map((i, n) => (n === 2 ? { key: 'be:33', value: i.value } : { ...i, key: i.key.replace('be', 'bf') }));
    const sizeBefore = (await written()).length;
    expectCode(await app.gql(BATCH, { items: plusOne }), 'PAYLOAD_TOO_LARGE');
    expect((await written()).length).toBe(sizeBefore);
  });

  it('getMany accepts maxBatchItems keys and refuses one more as PAYLOAD_TOO_LARGE', async () => {
    const ok = await app.gql(GET_MANY, { keys: ['a', 'b', 'c', 'd', 'e'] });
    expect(ok.errors).toBeUndefined();
    expect(ok.data!.getMany).toHaveLength(5);
    expectCode(await app.gql(GET_MANY, { keys: ['a', 'b', 'c', 'd', 'e', 'f'] }), 'PAYLOAD_TOO_LARGE');
  });

  it('takes maxBatchItems and maxBatchBytes from the configuration', async () => {
    const small = await createTestApp('limits-batch', { limits: { maxBatchItems: 2, maxBatchBytes: 10, maxValueBytes: 8 } });
    try {
      expect((await small.gql(BATCH, { items: [{ key: 'a', value: '1234' }, { key: 'b', value: '123' }] })).errors).toBeUndefined();
      expectCode(await small.gql(BATCH, { items: [{ key: 'c', value: '1' }, { key: 'd', value: '1' }, { key: 'e', value: '1' }] }), 'PAYLOAD_TOO_LARGE');
      expectCode(await small.gql(BATCH, { items: [{ key: 'f', value: '123456' }, { key: 'g', value: '123' }] }), 'PAYLOAD_TOO_LARGE');
      expectCode(await small.gql(GET_MANY, { keys: ['a', 'b', 'c'] }), 'PAYLOAD_TOO_LARGE');
      expect(await storedKeys(small)).toEqual(['a', 'b']);
    } finally {
      await small.close();
    }
  });
});

describe('well-formed Unicode', () => {
  const cases: [string, string][] = [
    ['a lone high surrogate in a key', `{"query":${JSON.stringify(PUT)},"variables":{"key":"k\\ud800","value":"v"}}`],
    ['a lone low surrogate in a key (variables)', `{"query":${JSON.stringify(PUT)},"variables":{"key":"k\\udc00x","value":"v"}}`],
    ['a lone surrogate in a value (variables)', `{"query":${JSON.stringify(PUT)},"variables":{"key":"lone:v","value":"a\\ud83d"}}`],
    ['reversed surrogates in a value', `{"query":${JSON.stringify(PUT)},"variables":{"key":"lone:r","value":"\\ude00\\ud83d"}}`],
    ['a lone surrogate in a batch key', `{"query":${JSON.stringify(BATCH)},"variables":{"items":[{"key":"ok","value":"v"},{"key":"\\ud800","value":"v"}]}}`],
    ['a lone surrogate in a batch value', `{"query":${JSON.stringify(BATCH)},"variables":{"items":[{"key":"ok","value":"v"},{"key":"lone:b","value":"\\udfff"}]}}`],
    ['a lone surrogate in a getMany key', `{"query":${JSON.stringify(GET_MANY)},"variables":{"keys":["a\\ud800"]}}`],
    ['a lone surrogate in a delete key', `{"query":${JSON.stringify(DELETE)},"variables":{"key":"\\udbff"}}`],
  ];
  for (const [name, json] of cases) {
    it(`refuses ${name} as BAD_USER_INPUT, writing nothing`, async () => {
      // The text really holds the escape, not an encoded replacement character.
      expect(json).toMatch(/\\\\?u(d[89ab]|d[c-f])[0-9a-f]{2}/);
      const before = await written();
      const r = await rawGql(app, json);
      expectCode(r, 'BAD_USER_INPUT');
      expect(await written()).toEqual(before);
    });
  }

  it('refuses a lone surrogate written into the document itself, as the GraphQL parser does', async () => {
    // Not BAD_USER_INPUT: GraphQL's grammar has no lone surrogates, so the document does not
    // parse (GRAPHQL_PARSE_FAILED, HTTP 400). Either way nothing is written.
    for (const doc of [
      `{"query":"mutation { put(key: \\"k\\ud800\\", value: \\"v\\") { key } }"}`,
      `{"query":"mutation { put(key: \\"k\\\\ud800\\", value: \\"v\\") { key } }"}`,
    ]) {
      const r = await rawGql(app, doc);
      expect(r.status).toBe(400);
      expect(r.errors![0]!.extensions!.code).toBe('GRAPHQL_PARSE_FAILED');
    }
    expect(await storedKeys()).not.toContain(expect.stringMatching(/^k/));
    // Limits apply to literals in the document as to variables.
    expectCode(await app.gql(`mutation { put(key: "", value: "v") { key } }`), 'BAD_USER_INPUT');
    expectCode(await app.gql(`{ getMany(keys: ["1", "2", "3", "4", "5", "6"]) { key } }`), 'PAYLOAD_TOO_LARGE');
  });

  it('accepts a proper surrogate pair written as escapes', async () => {
    const r = await rawGql(app, `{"query":${JSON.stringify(PUT)},"variables":{"key":"pair:\\ud83d\\ude00","value":"\\ud834\\udd1e"}}`);
    expect(r.errors).toBeUndefined();
    expect((await app.gql(GET, { key: 'pair:😀' })).data!.get.value).toBe('𝄞');
  });

  it('round-trips NUL characters exactly, in keys and values, through put, batchPut, get, getMany and range', async () => {
    const key = 'nul:\u0000a\u0000';
    const value = '\u0000\u0000x\u0000';
    expect((await app.gql(PUT, { key, value })).errors).toBeUndefined();
    expect((await app.gql(GET, { key })).data!.get).toEqual({ key, value, version: 1 });
    const keyB = 'nul:\u0000';
    expect((await app.gql(BATCH, { items: [{ key: keyB, value: '\u0000' }] })).errors).toBeUndefined();
    const many = await app.gql(GET_MANY, { keys: [keyB, key, 'nul:'] });
    expect(many.data!.getMany).toEqual([{ key: keyB, value: '\u0000' }, { key, value }, null]);
    const range = await app.gql(`{ range(prefix: "nul:") { edges { node { key value } } } }`);
    // Byte order: "nul:\0" < "nul:\0a\0".
    expect(range.data!.range.edges.map((e: { node: unknown }) => e.node)).toEqual([
      { key: keyB, value: '\u0000' },
      { key, value },
    ]);
    // A NUL as raw JSON escape text, too.
    const raw = await rawGql(app, `{"query":${JSON.stringify(GET)},"variables":{"key":"nul:\\u0000a\\u0000"}}`);
    expect(raw.data!.get).toEqual({ key, value, version: 1 });
  });
});

describe('request body size', () => {
  const BODY_LIMIT = 4096;
  let small: TestApp;
  beforeAll(async () => {
    small = await createTestApp('limits-body', { limits: { maxBodyBytes: BODY_LIMIT, maxValueBytes: 1 << 20 } });
  });
  afterAll(() => small.close());

  /** A put request body of exactly `size` bytes. */
  function bodyOfSize(size: number, key: string): string {
    const shell = JSON.stringify({ query: PUT, variables: { key, value: '' } });
    const body = JSON.stringify({ query: PUT, variables: { key, value: 'x'.repeat(size - Buffer.byteLength(shell)) } });
    expect(Buffer.byteLength(body)).toBe(size);
    return body;
  }

  function chunked(text: string, chunk = 1000): ReadableStream<Uint8Array> {
    const bytes = new TextEncoder().encode(text);
    let at = 0;
    return new ReadableStream({
      pull(controller) {
        if (at >= bytes.length) return controller.close();
        controller.enqueue(bytes.slice(at, at + chunk));
        at += chunk;
      },
    });
  }

  async function post(body: string | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) {
    const init: RequestInit & { duplex?: 'half' } = {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', ...headers },
      body,
    };
    if (typeof body !== 'string') init.duplex = 'half';
    return small.yoga.fetch('http://kvql.test/graphql', init);
  }

  async function expect413(res: Response): Promise<void> {
    expect(res.status).toBe(413);
    expect(res.headers.get('content-type')).toMatch(/json/);
    const body = (await res.json()) as GqlResult;
    expect(body.errors![0]!.extensions!.code).toBe('PAYLOAD_TOO_LARGE');
    expect(body.errors![0]!.message).toMatch(String(BODY_LIMIT));
  }

  it('refuses a body over the limit with a Content-Length header: HTTP 413, GraphQL-shaped', async () => {
    const body = bodyOfSize(BODY_LIMIT + 1, 'body:cl');
    await expect413(await post(body, { 'content-length': String(BODY_LIMIT + 1) }));
    expect((await small.gql(GET, { key: 'body:cl' })).data!.get).toBeNull();
  });

  it('bounds a graphql-ws message the same way: one over the limit closes the socket with 1009, one at it is served', async () => {
    // An app of its own (this describe's other tests expect nothing written to theirs).
    const ws = await createTestApp('limits-ws', { limits: { maxBodyBytes: BODY_LIMIT, maxValueBytes: 1 << 20 }, websocket: true });
    try {
      const session = async (size: number) => {
        const socket = new WebSocket(ws.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
        const received: Record<string, any>[] = [];
        socket.on('message', (m) => received.push(JSON.parse(String(m))));
        const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
        await new Promise((resolve) => socket.on('open', resolve));
        socket.send(JSON.stringify({ type: 'connection_init' }));
        for (let i = 0; i < 100 && !received.some((m) => m.type === 'connection_ack'); i++) await new Promise((r) => setTimeout(r, 20));
        const key = `ws:${size}`;
        const shell = JSON.stringify({ id: '1', type: 'subscribe', payload: { query: PUT, variables: { key, value: '' } } });
        const message = JSON.stringify({ id: '1', type: 'subscribe', payload: { query: PUT, variables: { key, value: 'x'.repeat(size - Buffer.byteLength(shell)) } } });
        expect(Buffer.byteLength(message)).toBe(size);
        socket.send(message);
        const code = await Promise.race([closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000))]);
        socket.close();
        return { code, next: received.find((m) => m.id === '1' && m.type === 'next'), key };
      };
      const over = await session(BODY_LIMIT + 1);
      expect(over.code).toBe(1009);
      expect(over.next).toBeUndefined();
      expect((await ws.gql(GET, { key: over.key })).data!.get, 'nothing was written').toBeNull();
      const at = await session(BODY_LIMIT);
      expect(at.code, 'the socket stays open').toBeUndefined();
      expect(at.next?.payload?.data?.put?.version).toBe(1);
    } finally {
      await ws.close();
    }
  });

  it('refuses on the declared Content-Length alone, without reading the body', async () => {
    // A body that never ends: a server that read it first would hang.
    const endless = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
    const res = await Promise.race([
      post(endless, { 'content-length': String(10 * BODY_LIMIT) }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the server read the body')), 3000)),
    ]);
    await expect413(res);
  });

  it('refuses a body larger than its Content-Length says, or with a Content-Length that is not a number', async () => {
    const body = bodyOfSize(BODY_LIMIT + 100, 'body:lie');
    await expect413(await post(chunked(body), { 'content-length': '10' }));
    await expect413(await post(chunked(body), { 'content-length': 'abc' }));
    expect((await small.gql(GET, { key: 'body:lie' })).data!.get).toBeNull();
  });

  it('refuses a chunked body (no Content-Length) over the limit', async () => {
    const body = bodyOfSize(BODY_LIMIT + 1, 'body:chunked');
    await expect413(await post(chunked(body)));
    await expect413(await post(chunked(bodyOfSize(3 * BODY_LIMIT, 'body:chunked'), 64)));
    expect((await small.gql(GET, { key: 'body:chunked' })).data!.get).toBeNull();
    expect(await written(small)).toEqual([]);
  });

  it('stops reading a chunked body at the limit', async () => {
    let pulled = 0;
    const bytes = new TextEncoder().encode(bodyOfSize(BODY_LIMIT, 'body:x'));
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        // The first chunks are a real body's start, then padding forever.
        controller.enqueue(pulled === 0 ? bytes : new Uint8Array(512).fill(32));
        pulled++;
      },
    });
    await expect413(await post(endless));
    expect(pulled).toBeLessThan(10);
  });

  it('serves a body just under the limit, with and without Content-Length', async () => {
    const withLength = bodyOfSize(BODY_LIMIT - 1, 'body:under-cl');
    const r1 = await post(withLength, { 'content-length': String(BODY_LIMIT - 1) });
    expect(r1.status).toBe(200);
    expect(((await r1.json()) as GqlResult).errors).toBeUndefined();

    const exact = bodyOfSize(BODY_LIMIT, 'body:exact-chunked');
    const r2 = await post(chunked(exact, 100));
    expect(r2.status).toBe(200);
    const b2 = (await r2.json()) as GqlResult;
    expect(b2.errors).toBeUndefined();
    expect(b2.data!.put.key).toBe('body:exact-chunked');

    const g = await small.gql(GET_MANY, { keys: ['body:under-cl', 'body:exact-chunked'] });
    expect(g.data!.getMany.map((e: { key: string } | null) => e?.key)).toEqual(['body:under-cl', 'body:exact-chunked']);
  });

  it('still serves GET requests and small posts after refusals', async () => {
    const res = await small.yoga.fetch(`http://kvql.test/graphql?query=${encodeURIComponent('{ get(key: "body:under-cl") { key } }')}`, {
      headers: { accept: 'application/graphql-response+json', 'x-graphql-yoga-csrf': '1' },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as GqlResult).data!.get.key).toBe('body:under-cl');
  });
});

describe('the default limits', () => {
  it('accept a 30 MB batch, over graphql-yoga own 25 MB body limit', async () => {
    const big = await createTestApp('limits-default');
    try {
      const items = Array.from({ length: 30 }, (_, i) => ({ key: `big${i}`, value: String(i % 10).repeat(1_000_000) }));
      const r = await big.gql(`mutation($items: [PutInput!]!) { batchPut(items: $items) { version } }`, { items });
      expect(r.errors).toBeUndefined();
      expect(r.data!.batchPut).toHaveLength(30);
      const g = await big.gql(`{ get(key: "big29") { value } }`);
      expect(g.data!.get.value).toBe('9'.repeat(1_000_000));
    } finally {
      await big.close();
    }
  });
});
