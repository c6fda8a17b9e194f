// Keyspaces: prefixes keep them apart, the partition and bucket counts and the layout are fixed
// at creation, entries live in the bucket keys.ts computes, and reads in one operation are
// batched by the per-request DataLoader.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createRedis } from '../../src/store/redis.js';
import { bucketOf, DEFAULT_BUCKETS, ENTRY_HEADER_BYTES, Keyspace, packEntry, partitionOf, unpackEntry } from '../../src/store/keys.js';
import { KvStore } from '../../src/store/store.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { BUCKETS, clusterSeedsFromEnv, createTestApp, keysOf, PARTITIONS, uniquePrefix, type TestApp } from '../harness/app.js';
import { streamEvents } from '../harness/feedStream.js';

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp('keyspace');
});
afterAll(() => app.close());

it('refuses to open a keyspace with another partition count', async () => {
  const other = PARTITIONS === 1 ? 4 : 1;
  await expect(KvStore.open(app.redis, { prefix: app.prefix, partitions: other, buckets: BUCKETS })).rejects.toThrow(
    new RegExp(`created with ${PARTITIONS} partitions, but KV_PARTITIONS is ${other}`),
  );
  // The same count opens fine, again and again.
  await expect(KvStore.open(app.redis, { prefix: app.prefix, partitions: PARTITIONS, buckets: BUCKETS })).resolves.toBeInstanceOf(KvStore);
});

it('records the bucket count at creation and refuses to open the keyspace with another', async () => {
  expect(await app.redis.hgetall(`${app.prefix}:meta`)).toEqual({ partitions: String(PARTITIONS), buckets: String(BUCKETS), layout: '3' });
  const other = BUCKETS + 1;
  await expect(KvStore.open(app.redis, { prefix: app.prefix, partitions: PARTITIONS, buckets: other })).rejects.toThrow(
    `keyspace "${app.prefix}" was created with ${BUCKETS} buckets per partition, but KV_BUCKETS is ${other}; start with KV_BUCKETS=${BUCKETS}`,
  );
  // Without a count, a new keyspace gets the default (32768).
  const fresh = uniquePrefix('default-buckets');
  const store = await KvStore.open(app.redis, { prefix: fresh, partitions: 1 });
  expect(store.keys.buckets).toBe(DEFAULT_BUCKETS);
  expect(DEFAULT_BUCKETS).toBe(32_768);
  expect(await app.redis.hget(`${fresh}:meta`, 'buckets')).toBe('32768');
  await app.redis.del(`${fresh}:meta`);
});

it('opens an existing keyspace with its own bucket count when none is given: one made with an older default survives the upgrade', async () => {
  const old = uniquePrefix('old-default');
  const before = await KvStore.open(app.redis, { prefix: old, partitions: PARTITIONS, buckets: 16_384 });
  const items = Array.from({ length: 20 }, (_, i) => ({ key: `k${i}`, value: `v${i}` }));
  await before.batchPut(items);

  const store = await KvStore.open(app.redis, { prefix: old, partitions: PARTITIONS });
  expect(store.keys.buckets).toBe(16_384);
  expect(await app.redis.hget(`${old}:meta`, 'buckets')).toBe('16384');
  // Its keys are found where the old count put them, and new writes go to the same buckets.
  expect((await store.getMany(items.map((i) => i.key))).map((e) => e?.value)).toEqual(items.map((i) => i.value));
  await store.put({ key: 'k0', value: 'again' });
  expect(await app.redis.hexists(before.keys.bucket('k0', partitionOf('k0', PARTITIONS)), 'k0')).toBe(1);
  // verify, given no count either, checks it against its own.
  const report = await verifyKeyspace(app.redis, { prefix: old, partitions: PARTITIONS });
  expect(report.problems).toEqual([]);
  expect(report.buckets).toBe(16_384);
  // A count given that is not its own is still refused.
  await expect(KvStore.open(app.redis, { prefix: old, partitions: PARTITIONS, buckets: DEFAULT_BUCKETS })).rejects.toThrow(
    `was created with 16384 buckets per partition, but KV_BUCKETS is ${DEFAULT_BUCKETS}; start with KV_BUCKETS=16384 or unset`,
  );
  for (const k of await keysOf(app.redis, old)) await app.redis.del(k);
  await app.redis.del(`${old}:meta`);
});

it('refuses, with its meta key named, a keyspace whose stored bucket count is not one', async () => {
  const broken = uniquePrefix('bad-buckets');
  await app.redis.hset(`${broken}:meta`, 'partitions', String(PARTITIONS), 'buckets', 'many', 'layout', '3');
  await expect(KvStore.open(app.redis, { prefix: broken, partitions: PARTITIONS })).rejects.toThrow(
    `keyspace "${broken}": its meta key says "many" buckets, not a bucket count (1-1048576)`,
  );
  // A count that is given and is not one is the caller's, not the meta key's.
  await expect(KvStore.open(app.redis, { prefix: broken, partitions: PARTITIONS, buckets: 0 })).rejects.toThrow('invalid bucket count 0');
  // verify, given no count, checks against the default and reports the meta key.
  const report = await verifyKeyspace(app.redis, { prefix: broken, partitions: PARTITIONS });
  expect(report.problems.map((p) => p.message)).toContain(`${broken}:meta says many buckets per partition; verifying with ${DEFAULT_BUCKETS}`);
  await app.redis.del(`${broken}:meta`);
});

it('refuses a keyspace of layout 1 (one hash per key), and leaves its meta key as it was', async () => {
  const old = uniquePrefix('layout-1');
  await app.redis.hset(`${old}:meta`, 'partitions', '1', 'layout', '1');
  await app.redis.hset(`{${old}:0}:v:a`, 'v', 'x', 'n', '1', 'c', '1', 'u', '1');
  await expect(KvStore.open(app.redis, { prefix: old, partitions: 1 })).rejects.toThrow(
    new RegExp(`keyspace "${old}" has storage layout 1; this server reads layout 3 only\\. .*export its entries and import them`),
  );
  expect(await app.redis.hgetall(`${old}:meta`)).toEqual({ partitions: '1', layout: '1' });
  // One key per DEL: on a cluster the two are in different slots.
  for (const k of [`${old}:meta`, `{${old}:0}:v:a`]) await app.redis.del(k);
});

it('moves a layout-2 keyspace to layout 3 when it opens it: entries kept, the feed restarted after its count, once', async () => {
  const old = uniquePrefix('layout-2');
  const ks = new Keyspace(old, PARTITIONS, BUCKETS);
  const key = 'kept';
  const p = partitionOf(key, PARTITIONS);
  // Layout 2 as its servers left it: the entry, its index member, and two events of the old
  // format (time-based IDs, one entry per event) after which the counter says 2.
  await app.redis.hset(ks.meta, 'partitions', String(PARTITIONS), 'buckets', String(BUCKETS), 'layout', '2');
  await app.redis.hset(ks.bucket(key, p), key, packEntry(2, 5, 6, 'value'));
  await app.redis.zadd(ks.index(p), 0, key);
  const legacy: string[] = [];
  for (const [n, q] of [['1', '1'], ['2', '2']]) legacy.push((await app.redis.xadd(ks.stream(p), '*', 't', 'P', 'k', key, 'n', n!, 'v', 'value', 'c', '5', 'u', '6', 'q', q!))!);
  await app.redis.set(ks.sequence(p), '2');

  const said: string[] = [];
  const store = await KvStore.open(app.redis, { prefix: old, partitions: PARTITIONS, buckets: BUCKETS, log: (m) => said.push(m) });
  expect(await app.redis.hget(ks.meta, 'layout')).toBe('3');
  expect(said).toHaveLength(1);
  expect(said[0]).toMatch(/moved from layout 2 to layout 3 .*cursors from before now get CURSOR_EXPIRED/);
  expect(await store.get(key)).toMatchObject({ key, value: 'value', version: 2 });
  // The old events are gone; an entry of no events says the feed goes on after event 2.
  expect(await app.redis.xrange(ks.stream(p), '-', '+')).toEqual([['0-2', ['q', '3', 'e', '']]]);
  expect(await app.redis.get(ks.sequence(p))).toBe('2');
  // A cursor from before the move (its ID part a time-based stream ID): behind the mark it has
  // expired; at the mark it goes on.
  const at = (seq: number) => Array.from({ length: PARTITIONS }, (_, i) => (i === p ? { id: legacy[seq - 1]!, seq } : { id: '0-0', seq: 0 }));
  const reader = store.feedReader(100);
  try {
    expect((await reader.check(at(1))).expired).toBe(true);
    expect(await reader.check(at(2))).toMatchObject({ expired: false, foreign: false });
    // The next write appends after the mark, and is read from a cursor at the mark.
    await store.put({ key, value: 'after' });
    expect((await reader.after(p, at(2)[p]!, 10)).map((e) => [e.seq, e.key, e.version])).toEqual([[3, key, 3]]);
  } finally {
    reader.close();
  }
  expect((await verifyKeyspace(app.redis, { prefix: old, partitions: PARTITIONS, buckets: BUCKETS })).problems).toEqual([]);
  // Opening it again moves nothing.
  await KvStore.open(app.redis, { prefix: old, partitions: PARTITIONS, buckets: BUCKETS, log: (m) => said.push(m) });
  expect(said).toHaveLength(1);
  for (const k of await keysOf(app.redis, old)) await app.redis.del(k);
  await app.redis.del(ks.meta);
});

it("numbers the change feed's entries exactly past 10^14 events (no exponent in a stream ID)", async () => {
  // A keyspace of its own: its streams' IDs cannot go back down afterwards.
  const prefix = uniquePrefix('many-events');
  const store = await KvStore.open(app.redis, { prefix, partitions: PARTITIONS, buckets: BUCKETS });
  const key = 'many-events';
  const p = partitionOf(key, PARTITIONS);
  const ks = store.keys;
  // Lua writes numbers from 10^14 on as 1e+14 when concatenated: the scripts format IDs as integers.
  await app.redis.set(ks.sequence(p), '123456789012345');
  await store.put({ key, value: 'a' });
  await store.batchPut([{ key, value: 'b' }]);
  await store.delete(key);
  const events = await streamEvents(app.redis, ks.stream(p));
  expect(events.map((e) => [e.entryId, e.seq, e.type])).toEqual([
    ['0-123456789012346', 123456789012346, 'P'],
    ['0-123456789012347', 123456789012347, 'P'],
    ['0-123456789012348', 123456789012348, 'D'],
  ]);
  for (const k of await keysOf(app.redis, prefix)) await app.redis.del(k);
  await app.redis.del(ks.meta);
});

it('puts each entry in the bucket keys.ts computes, packed, and several entries share a bucket', async () => {
  const ks = new Keyspace(app.prefix, PARTITIONS, BUCKETS);
  const items = Array.from({ length: 40 }, (_, i) => ({ key: `place:${i}:é😀\u0000`, value: `value ${i} ü` }));
  await app.store.batchPut(items);
  const shared = new Map<string, number>();
  for (const { key, value } of items) {
    const p = partitionOf(key, PARTITIONS);
    const b = bucketOf(key, BUCKETS);
    const bucket = `{${app.prefix}:${p}}:b:${b}`;
    expect(ks.bucket(key)).toBe(bucket);
    shared.set(bucket, (shared.get(bucket) ?? 0) + 1);
    const packed = (await app.redis.hgetBuffer(bucket, key))!;
    expect(packed.length).toBe(ENTRY_HEADER_BYTES + Buffer.byteLength(value));
    const stored = (await app.store.get(key))!;
    expect(unpackEntry(packed)).toEqual({ version: 1, createdAt: stored.createdAt, updatedAt: stored.updatedAt, value });
    // In no other bucket of its partition.
    for (const other of await keysOf(app.redis, `${app.prefix}:${p}}:b:`)) {
      if (other !== bucket) expect(await app.redis.hexists(other, key)).toBe(0);
    }
  }
  if (BUCKETS < items.length) expect(Math.max(...shared.values())).toBeGreaterThan(1);
  // Deleting one entry of a shared bucket leaves the others; deleting the last removes the bucket.
  for (const { key } of items) await app.store.delete(key);
  for (const bucket of shared.keys()) expect(await app.redis.exists(bucket)).toBe(0);
});

it('spreads one partition\'s keys evenly over its buckets, independently of the partition hash', () => {
  // 4 partitions of 64 buckets: every bucket of partition 0 gets its share of that partition's
  // keys (FNV-1a's low bits alone would leave buckets unused when P and B share factors).
  const counts = new Array(64).fill(0);
  let n = 0;
  for (let i = 0; i < 200_000; i++) {
    const key = `user:${i}`;
    if (partitionOf(key, 4) !== 0) continue;
    counts[bucketOf(key, 64)]++;
    n++;
  }
  const mean = n / 64;
  expect(Math.min(...counts)).toBeGreaterThan(mean * 0.85);
  expect(Math.max(...counts)).toBeLessThan(mean * 1.15);
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
  // The same Redis as the app's: in the cluster project a new client of the cluster.
  const seeds = clusterSeedsFromEnv();
  const redis = seeds ? createRedis({ clusterNodes: seeds }, { commandTimeoutMs: 2000 }) : createRedis(inject('redisUrl'), { commandTimeoutMs: 2000 });
  redis.on('error', () => {});
  await redis.connect();
  try {
    const store = await KvStore.open(redis, { prefix: app.prefix, partitions: PARTITIONS, buckets: BUCKETS });
    expect((await store.get('fresh'))?.value).toBe('v');
  } finally {
    redis.disconnect();
  }
});
