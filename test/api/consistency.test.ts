// The consistency argument of get, getMany and range: STRONG (the default) reads the primary;
// EVENTUAL may read a replica. To see which server answered, the "replica" here is a second,
// independent Redis holding other values for the same keys (a real replica could not be told
// apart from its primary); reads must never mix the two within one answer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { createTestApp, PARTITIONS, type TestApp } from '../harness/app.js';
import { startTestRedis, type TestRedis } from '../harness/redisServer.js';

let other: TestRedis;
let app: TestApp;
let plain: TestApp;

beforeAll(async () => {
  other = await startTestRedis();
  app = await createTestApp('consistency', { replicaUrl: other.url });
  plain = await createTestApp('consistency-plain');
  // The same keyspace on the "replica", with other values.
  const redis = createRedis(other.url, { commandTimeoutMs: 2000 });
  await redis.connect();
  const store = await KvStore.open(redis, { prefix: app.prefix, partitions: PARTITIONS, buckets: app.store.keys.buckets });
  await store.batchPut([{ key: 'c:a', value: 'replica' }, { key: 'c:b', value: 'replica' }]);
  redis.disconnect();
  await app.gql('mutation { batchPut(items: [{ key: "c:a", value: "primary" }, { key: "c:b", value: "primary" }]) { version } }');
  await plain.gql('mutation { put(key: "c:a", value: "primary") { version } }');
});

afterAll(async () => {
  await app?.close();
  await plain?.close();
  await other?.stop();
});

const values = (r: { data?: any }) => JSON.stringify(r.data);

describe('consistency', () => {
  it('reads the primary by default and with STRONG', async () => {
    for (const arg of ['', ', consistency: STRONG']) {
      const r = await app.gql(`{ get(key: "c:a"${arg}) { value } getMany(keys: ["c:a", "c:b"]${arg}) { value } range(prefix: "c:"${arg}) { edges { node { value } } } }`);
      expect(r.errors).toBeUndefined();
      expect(values(r)).not.toContain('replica');
      expect(r.data!.get.value).toBe('primary');
      expect(r.data!.range.edges).toHaveLength(2);
    }
  });

  it('reads the replica with EVENTUAL', async () => {
    const r = await app.gql('{ get(key: "c:a", consistency: EVENTUAL) { value } getMany(keys: ["c:a", "c:b"], consistency: EVENTUAL) { value } range(prefix: "c:", consistency: EVENTUAL) { edges { node { value } } } }');
    expect(r.errors).toBeUndefined();
    expect(values(r)).not.toContain('primary');
    expect(r.data!.getMany).toEqual([{ value: 'replica' }, { value: 'replica' }]);
  });

  it('keeps the two apart within one request', async () => {
    const r = await app.gql('{ s: get(key: "c:a") { value } e: get(key: "c:a", consistency: EVENTUAL) { value } }');
    expect(r.data).toEqual({ s: { value: 'primary' }, e: { value: 'replica' } });
  });

  it('falls back to the primary when the replica cannot answer', async () => {
    other.pause!();
    try {
      const r = await app.gql('{ get(key: "c:a", consistency: EVENTUAL) { value } }');
      expect(r.errors).toBeUndefined();
      expect(r.data).toEqual({ get: { value: 'primary' } });
    } finally {
      other.resume!();
    }
  });

  it('is served by the primary where there is no replica', async () => {
    const r = await plain.gql('{ get(key: "c:a", consistency: EVENTUAL) { value } }');
    expect(r.data).toEqual({ get: { value: 'primary' } });
  });

  it('refuses an unknown consistency with a validation error', async () => {
    const r = await plain.gql('{ get(key: "c:a", consistency: SOMETIMES) { value } }');
    expect(r.status).toBe(400);
    expect(r.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
  });
});
