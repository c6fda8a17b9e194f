// The exact refusals of bad arguments: message (with the path of every offending item or
// argument), and code. They are part of the API, which clients show to people and match on:
// pinned here so that a change in how the checks run (validators.ts) cannot change what they say.
// Limits are small so that each case is short.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../harness/app.js';

const BATCH = 'mutation($i:[PutInput!]!){ batchPut(items:$i){ key version } }';
const PUT = 'mutation($k:String!,$v:String!,$e:Int){ put(key:$k, value:$v, expectedVersion:$e){ key version } }';
const GET_MANY = 'query($k:[String!]!){ getMany(keys:$k){ key } }';
const GET = 'query($k:String!){ get(key:$k){ key } }';
const DELETE = 'mutation($k:String!,$e:Int){ delete(key:$k, expectedVersion:$e){ deleted } }';
const RANGE = 'query($s:String,$e:String,$p:String){ range(start:$s,end:$e,prefix:$p){ totalCount } }';

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp('validation', { limits: { maxKeyBytes: 8, maxValueBytes: 10, maxBatchItems: 3, maxBatchBytes: 40 } });
});
afterAll(() => app.close());

// [document, variables, 'ok' or [code, message]], run in this order.
const CASES: [string, Record<string, unknown>, 'ok' | [string, string]][] = [
  [BATCH, { i: [{ key: 'ok', value: 'v' }, { key: '', value: 'v' }] }, ["BAD_USER_INPUT", "items.1.key: a key must be 1 to 8 bytes of UTF-8"]],
  [BATCH, { i: [{ key: 'ok', value: 'v' }, { key: 'a\ud800', value: 'v' }] }, ["BAD_USER_INPUT", "items.1.key: a key must be well-formed Unicode (it has a lone surrogate)"]],
  [BATCH, { i: [{ key: 'ok', value: 'v\udfff' }, { key: 'toolongkey1', value: 'v' }] }, ["BAD_USER_INPUT", "items.0.value: a value must be well-formed Unicode (it has a lone surrogate); items.1.key: a key must be 1 to 8 bytes of UTF-8"]],
  [BATCH, { i: [{ key: 'ok', value: 'v'.repeat(11) }] }, ["PAYLOAD_TOO_LARGE", "items.0.value: a value must be at most 10 bytes of UTF-8"]],
  [BATCH, { i: [{ key: 'ok', value: 'v'.repeat(11) }, { key: '', value: 'x' }] }, ["PAYLOAD_TOO_LARGE", "items.0.value: a value must be at most 10 bytes of UTF-8; items.1.key: a key must be 1 to 8 bytes of UTF-8"]],
  [BATCH, { i: [{ key: 'a', value: 'v' }, { key: 'b', value: 'v' }, { key: 'c', value: 'v' }, { key: 'd', value: 'v' }] }, ["PAYLOAD_TOO_LARGE", "items: a batch may hold at most 3 items"]],
  [BATCH, { i: [{ key: 'a', value: 'v'.repeat(10) }, { key: 'b', value: 'v'.repeat(10) }, { key: 'c', value: 'v'.repeat(10) }] }, 'ok'],
  [BATCH, { i: [{ key: 'a', value: 'v', expectedVersion: -1 }] }, ["BAD_USER_INPUT", "items.0.expectedVersion: expectedVersion must be 0 (must not exist) or a positive version"]],
  [BATCH, { i: [{ key: '', value: 'v'.repeat(11), expectedVersion: -1 }, { key: 'b', value: 'v' }, { key: 'c', value: 'v' }, { key: 'd', value: 'v' }] }, ["BAD_USER_INPUT", "items.0.key: a key must be 1 to 8 bytes of UTF-8"]],
  [BATCH, { i: [{ key: 'é'.repeat(5), value: 'v' }] }, ["BAD_USER_INPUT", "items.0.key: a key must be 1 to 8 bytes of UTF-8"]],
  [BATCH, { i: [] }, 'ok'],
  [PUT, { k: '', v: 'v' }, ["BAD_USER_INPUT", "key: a key must be 1 to 8 bytes of UTF-8"]],
  [PUT, { k: 'a\ud800', v: 'v'.repeat(11) }, ["BAD_USER_INPUT", "key: a key must be well-formed Unicode (it has a lone surrogate)"]],
  [PUT, { k: 'a', v: 'v', e: -2 }, ["BAD_USER_INPUT", "expectedVersion: expectedVersion must be 0 (must not exist) or a positive version"]],
  [PUT, { k: 'toolong\ud800x', v: 'v' }, ["BAD_USER_INPUT", "key: a key must be well-formed Unicode (it has a lone surrogate); key: a key must be 1 to 8 bytes of UTF-8"]],
  [PUT, { k: 'k', v: 'toolongvalue\ud800' }, ["PAYLOAD_TOO_LARGE", "value: a value must be well-formed Unicode (it has a lone surrogate); value: a value must be at most 10 bytes of UTF-8"]],
  [PUT, { k: 'k', v: 'v'.repeat(11), e: -1 }, ["PAYLOAD_TOO_LARGE", "value: a value must be at most 10 bytes of UTF-8"]],
  [BATCH, { i: [{ key: 'toolong\ud800x', value: 'v' }, { key: 'b', value: 'toolongvalue\ud800', expectedVersion: -1 }, { key: 'c', value: 'v', expectedVersion: -1 }] }, ["PAYLOAD_TOO_LARGE", "items.0.key: a key must be well-formed Unicode (it has a lone surrogate); items.0.key: a key must be 1 to 8 bytes of UTF-8; items.1.value: a value must be well-formed Unicode (it has a lone surrogate); items.1.value: a value must be at most 10 bytes of UTF-8; items.2.expectedVersion: expectedVersion must be 0 (must not exist) or a positive version"]],
  [BATCH, { i: [{ key: 'a', value: 'v'.repeat(10) }, { key: 'b', value: 'v'.repeat(10) }, { key: 'c', value: 'v'.repeat(10) }, { key: 'd', value: 'v' }] }, ["PAYLOAD_TOO_LARGE", "items: a batch may hold at most 3 items"]],
  [BATCH, { i: [{ key: 'a', value: 'v', expectedVersion: 0 }, { key: 'a', value: 'w' }] }, ["BAD_USER_INPUT", "a batch names the same key more than once: \"a\""]],
  [GET_MANY, { k: ['a', '', 'toolong\ud800x', 'b\ud800', 'ok'] }, ["PAYLOAD_TOO_LARGE", "keys: at most 3 keys per request"]],
  [GET_MANY, { k: ['a', 'b', 'c', ''] }, ["PAYLOAD_TOO_LARGE", "keys: at most 3 keys per request"]],
  [GET_MANY, { k: [] }, 'ok'],
  [GET_MANY, { k: ['', 'toolong\ud800x', 'b\ud800'] }, ["BAD_USER_INPUT", "keys.0: a key must be 1 to 8 bytes of UTF-8; keys.1: a key must be well-formed Unicode (it has a lone surrogate); keys.1: a key must be 1 to 8 bytes of UTF-8; keys.2: a key must be well-formed Unicode (it has a lone surrogate)"]],
  [BATCH, { i: [{ key: 'a', value: 'v'.repeat(10) }, { key: 'b', value: 'v'.repeat(10) }, { key: 'c', value: 'v'.repeat(10) }, { key: 'd', value: 'v'.repeat(10) }] }, ["PAYLOAD_TOO_LARGE", "items: a batch may hold at most 3 items; items: a batch may hold at most 40 bytes of keys and values"]],
  [BATCH, { i: [{ key: 'a', value: 'v', expectedVersion: null }] }, 'ok'],
  [GET, { k: '' }, ["BAD_USER_INPUT", "key: a key must be 1 to 8 bytes of UTF-8"]],
  [GET, { k: 'toolong\ud800x' }, ["BAD_USER_INPUT", "key: a key must be well-formed Unicode (it has a lone surrogate); key: a key must be 1 to 8 bytes of UTF-8"]],
  [DELETE, { k: '', e: -1 }, ["BAD_USER_INPUT", "key: a key must be 1 to 8 bytes of UTF-8"]],
  [DELETE, { k: 'a', e: -1 }, ["BAD_USER_INPUT", "expectedVersion: expectedVersion must be 0 (must not exist) or a positive version"]],
  [RANGE, { s: 'toolong\ud800x', e: '', p: 'x\ud800' }, ["BAD_USER_INPUT", "start: a range bound must be well-formed Unicode (it has a lone surrogate); start: a range bound must be at most 8 bytes"]],
  [RANGE, { s: 'a', e: 'toolongbound', p: null }, ["BAD_USER_INPUT", "end: a range bound must be at most 8 bytes"]],
  [RANGE, { p: 'b\ud800' }, ["BAD_USER_INPUT", "prefix: a range bound must be well-formed Unicode (it has a lone surrogate)"]],
  [RANGE, { s: '', e: '' }, 'ok'],
];

const label = (i: number, query: string, expected: 'ok' | [string, string]) =>
  `${i}: ${/\{ (\w+)\(/.exec(query)![1]} ${expected === 'ok' ? 'accepted' : `refused, ${expected[0]}`}`;

it.each(CASES.map(([q, v, e], i) => [label(i, q, e), q, v, e] as const))('%s', async (_, query, variables, expected) => {
  const r = await app.gql(query, variables);
  if (expected === 'ok') {
    expect(r.errors).toBeUndefined();
    return;
  }
  expect(r.errors).toHaveLength(1);
  expect([r.errors![0]!.extensions?.code, r.errors![0]!.message]).toEqual(expected);
});

it('wrote nothing for a refused batch', async () => {
  // "ok" and "d" were only ever in refused batches; "a" to "c" in accepted ones.
  const r = await app.gql<{ getMany: ({ key: string } | null)[] }>(GET_MANY, { k: ['ok', 'd', 'a'] });
  expect(r.data?.getMany.map((e) => e?.key ?? null)).toEqual([null, null, 'a']);
});
