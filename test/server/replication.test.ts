// KV_MIN_REPLICAS: a write is acknowledged only once enough replicas have it (WAIT after the
// write script); otherwise REPLICATION_TIMEOUT, which says the write is on the primary. On real
// redis-servers: a primary from redis.conf, and a replica of it started and stopped here.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../harness/app.js';
import { startTestRedis, type TestRedis } from '../harness/redisServer.js';

const PUT = 'mutation($k: String!, $v: String!) { put(key: $k, value: $v) { version } }';
const GET = 'query($k: String!) { get(key: $k) { value version } }';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let primary: TestRedis;
let replica: TestRedis | undefined;
let app: TestApp;

async function replicaInSync(r: TestRedis): Promise<void> {
  const c = new Redis(r.url);
  try {
    for (let i = 0; i < 200; i++) {
      if (/master_link_status:up/.test(await c.info('replication'))) return;
      await sleep(50);
    }
    throw new Error('the replica did not sync');
  } finally {
    c.disconnect();
  }
}

beforeAll(async () => {
  primary = await startTestRedis();
  app = await createTestApp('replication', { redisUrl: primary.url, replication: { minReplicas: 1, timeoutMs: 300 } });
});

afterAll(async () => {
  await app?.close();
  await replica?.stop();
  await primary?.stop();
});

describe('KV_MIN_REPLICAS=1', () => {
  it('without a replica, answers REPLICATION_TIMEOUT within the timeout, and the write is on the primary', async () => {
    const t0 = performance.now();
    const r = await app.gql(PUT, { k: 'r:a', v: 'one' });
    const ms = performance.now() - t0;
    expect(r.errors?.[0]?.extensions?.code).toBe('REPLICATION_TIMEOUT');
    expect(r.errors?.[0]?.extensions).toMatchObject({ replicasConfirmed: 0, replicasRequired: 1 });
    expect(r.errors?.[0]?.message).toMatch(/applied and fsynced on the primary/);
    expect(ms).toBeGreaterThanOrEqual(250);
    expect(ms).toBeLessThan(2000);
    // Durable on the primary, as the message says.
    expect((await app.gql(GET, { k: 'r:a' })).data).toEqual({ get: { value: 'one', version: 1 } });
  });

  it('lets concurrent writes share a WAIT: twenty answer within a few timeouts, not twenty', async () => {
    const t0 = performance.now();
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => app.gql(PUT, { k: `r:many:${i}`, v: 'x' })));
    const ms = performance.now() - t0;
    for (const r of rs) expect(r.errors?.[0]?.extensions?.code).toBe('REPLICATION_TIMEOUT');
    // One WAIT at a time: a write waits for the one in flight and the next (plus HTTP arrival
    // spread); a WAIT per write would serialize twenty timeouts (6 s).
    expect(ms).toBeLessThan(5 * 300 + 500);
  });

  it('reads do not wait behind a write that waits for replicas', async () => {
    const write = app.gql(PUT, { k: 'r:b', v: 'x' });
    const t0 = performance.now();
    const read = await app.gql(GET, { k: 'r:a' });
    expect(performance.now() - t0).toBeLessThan(200);
    expect(read.data).toEqual({ get: { value: 'one', version: 1 } });
    expect((await write).errors?.[0]?.extensions?.code).toBe('REPLICATION_TIMEOUT');
  });

  it('with a replica in sync, acknowledges writes, which the replica has', async () => {
    replica = await startTestRedis(['--replicaof', '127.0.0.1', String(primary.port)]);
    await replicaInSync(replica);
    // A timeout no busy test machine reaches with a replica in sync (300 ms sometimes was).
    const patient = await createTestApp('replication-sync', { redisUrl: primary.url, replication: { minReplicas: 1, timeoutMs: 5000 } });
    const direct = new Redis(replica.url);
    try {
      const r = await patient.gql(PUT, { k: 'r:c', v: 'replicated' });
      expect(r.errors).toBeUndefined();
      expect(r.data).toEqual({ put: { version: 1 } });
      const batch = await patient.gql('mutation { batchPut(items: [{ key: "r:d", value: "1" }, { key: "r:e", value: "2" }]) { version } }');
      expect(batch.errors).toBeUndefined();
      // WAIT returned, so the replica already has every key of both writes.
      expect(await direct.zrange(patient.store.keys.index(0), 0, -1)).toEqual(['r:c', 'r:d', 'r:e']);
    } finally {
      direct.disconnect();
      await patient.close();
    }
  });

  it('answers REPLICATION_TIMEOUT again once the replica is gone', async () => {
    await replica!.kill9();
    const r = await app.gql(PUT, { k: 'r:f', v: 'alone' });
    expect(r.errors?.[0]?.extensions?.code).toBe('REPLICATION_TIMEOUT');
  });
});
