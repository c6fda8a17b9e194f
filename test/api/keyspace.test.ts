// Keyspaces: prefixes keep them apart, the partition count is fixed at creation, and reads in
// one operation are batched by the per-request DataLoader.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { createTestApp, keysOf, PARTITIONS, type TestApp } from '../harness/app.js';

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp('keyspace');
});
afterAll(() => app.close());

it('refuses to open a keyspace with another partition count', async () => {
  const other = PARTITIONS === 1 ? 4 : 1;
  await expect(KvStore.open(app.redis, { prefix: app.prefix, partitions: other })).rejects.toThrow(
    new RegExp(`created with ${PARTITIONS} partitions, but KV_PARTITIONS is ${other}`),
  );
  // The same count opens fine, again and again.
  await expect(KvStore.open(app.redis, { prefix: app.prefix, partitions: PARTITIONS })).resolves.toBeInstanceOf(KvStore);
});

it('keeps two prefixes on one Redis apart', async () => {
  const b = await createTestApp('keyspace-b');
  await app.gql(`mutation { put(key: "same", value: "in a") { version } }`);
  await b.gql(`mutation { put(key: "same", value: "in b") { version } }`);
  expect((await app.gql(`{ get(key: "same") { value } }`)).data!.get.value).toBe('in a');
  expect((await b.gql(`{ get(key: "same") { value } }`)).data!.get.value).toBe('in b');
  expect((await b.gql(`{ range { totalCount } }`)).data!.range.totalCount).toBe(1);
  await b.gql(`mutation { deleteRange { deleted } }`);
  expect((await app.gql(`{ get(key: "same") { value } }`)).data!.get.value).toBe('in a');
  // Every Redis key of b's keyspace carries b's prefix; none of a's does.
  for (const k of await keysOf(b.redis, b.prefix)) expect(k).toContain(b.prefix);
  await b.close();
});

it('spreads keys over every partition, each in its own hash tag', async () => {
  const items = Array.from({ length: 64 }, (_, i) => ({ key: `spread:${i}`, value: String(i) }));
  await app.gql(`mutation($items: [PutInput!]!) { batchPut(items: $items) { version } }`, { items });
  const tags = new Set<string>();
  for (const k of await keysOf(app.redis, app.prefix)) {
    const tag = /^\{([^}]*)\}/.exec(k)?.[1];
    if (tag) tags.add(tag);
  }
  expect(tags.size).toBe(PARTITIONS);
});

it('batches every get and getMany of one operation into one store read', async () => {
  await app.gql(`mutation { batchPut(items: [{key: "l1", value: "1"}, {key: "l2", value: "2"}]) { version } }`);
  const calls: (readonly string[])[] = [];
  const original = app.store.getMany.bind(app.store);
  app.store.getMany = (keys) => {
    calls.push(keys);
    return original(keys);
  };
  try {
    const r = await app.gql(`{ a: get(key: "l1") { value } b: get(key: "l2") { value } c: get(key: "nope") { value }
      d: getMany(keys: ["l2", "l1"]) { value } }`);
    expect(r.data).toEqual({ a: { value: '1' }, b: { value: '2' }, c: null, d: [{ value: '2' }, { value: '1' }] });
    expect(calls).toHaveLength(1);
    expect([...calls[0]!].sort()).toEqual(['l1', 'l2', 'nope']);
  } finally {
    app.store.getMany = original;
  }
});

it('a fresh connection sees the same keyspace (nothing lives in the API process)', async () => {
  await app.gql(`mutation { put(key: "fresh", value: "v") { version } }`);
  const redis = createRedis(inject('redisUrl'), { commandTimeoutMs: 2000 });
  await redis.connect();
  const store = await KvStore.open(redis, { prefix: app.prefix, partitions: PARTITIONS });
  expect((await store.get('fresh'))?.value).toBe('v');
  redis.disconnect();
});
