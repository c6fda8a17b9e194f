// Multi-partition batches on a Redis Cluster (src/store/clusterBatch.ts): the steps a writer
// that crashes leaves behind are completed by roll-forward, by the store and by an API process
// at start; applying a part twice is a no-op; a batch that never committed is never applied.
// Runs in the cluster project only: on one Redis a batch is one script and has no steps.
import { inject, describe, expect, it, afterAll } from 'vitest';
import type { ScriptCommands } from '../../src/store/scripts.js';
import { PART_EXPIRY_SECONDS, scriptKeys } from '../../src/store/clusterBatch.js';
import { startApiProcess } from '../harness/apiProcess.js';
import type { Cluster } from 'ioredis';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { BUCKETS, clusterSeedsFromEnv, createTestApp, PARTITIONS, type TestApp } from '../harness/app.js';
import { streamEvents } from '../harness/feedStream.js';

const onCluster = process.env.KV_TEST_CLUSTER === '1';
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key value version } }`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!onCluster)('multi-partition batches on a cluster', () => {
  const apps: TestApp[] = [];
  afterAll(async () => {
    for (const a of apps) await a.close();
  });

  /** Keys of `n` different partitions, `perPartition` each, grouped by partition (coordinator first). */
  function keysByPartition(app: TestApp, tag: string, n: number, perPartition: number): Map<number, string[]> {
    const groups = new Map<number, string[]>();
    for (let i = 0; groups.size < n || [...groups.values()].some((g) => g.length < perPartition); i++) {
      const key = `${tag}:${i}`;
      const p = app.store.keys.partition(key);
      const group = groups.get(p);
      if (group) {
        if (group.length < perPartition) group.push(key);
      } else if (groups.size < n) groups.set(p, [key]);
    }
    return groups;
  }

  /** What a writer that crashed after the commit, having applied only the coordinator's part, leaves behind. */
  async function crashAfterCommit(app: TestApp, id: string, groups: Map<number, string[]>, applied: number[]): Promise<void> {
    const redis = app.redis as unknown as ScriptCommands;
    const ks = app.store.keys;
    const payload = (keys: string[]) => JSON.stringify(keys.flatMap((k) => [k, `v:${k}`]));
    const [coordinator, ...others] = [...groups.keys()];
    for (const p of others) await redis.kvBatchPrepare(1, ks.batchPart(p, id), String(PART_EXPIRY_SECONDS), payload(groups.get(p)!));
    // Committed long ago (score 0), as by a writer that died then.
    await redis.kvBatchPrepare(2, ks.batchPart(coordinator!, id), ks.pendingBatches(coordinator!), String(PART_EXPIRY_SECONDS), payload(groups.get(coordinator!)!), id, [...groups.keys()].join(','), '0');
    for (const p of applied) {
      const keys = groups.get(p)!;
      const reply = await redis.kvBatchApply(1 + 4 * keys.length, ks.batchPart(p, id), ...scriptKeys(ks, keys), String(keys.length), '1000', ...keys.flatMap((k) => [k, `v:${k}`]));
      expect(reply[0]).toBe('OK');
    }
  }

  async function versions(app: TestApp, keys: string[]): Promise<(number | null)[]> {
    const r = await app.gql<{ getMany: ({ version: number; value: string } | null)[] }>(GET_MANY, { keys });
    expect(r.errors).toBeUndefined();
    r.data!.getMany.forEach((e, i) => e && expect(e.value).toBe(`v:${keys[i]}`));
    return r.data!.getMany.map((e) => e?.version ?? null);
  }

  it('rolls a batch forward after its writer died between commit and forget: every item once, nothing left behind', async () => {
    const app = await createTestApp('xbatch-roll');
    apps.push(app);
    const groups = keysByPartition(app, 'r', 3, 2);
    const all = [...groups.values()].flat();
    const coordinator = [...groups.keys()][0]!;
    await crashAfterCommit(app, 'aaaaaaaaaaaaaaa1', groups, [coordinator]);
    // Half applied: the coordinator's keys are there, the others not yet.
    expect(await versions(app, all)).toEqual(all.map((k) => (groups.get(coordinator)!.includes(k) ? 1 : null)));

    expect(await app.store.rollForward(0)).toEqual({ completed: 1, missingParts: [] });
    expect(await versions(app, all)).toEqual(all.map(() => 1));
    // Applied once: a second pass finds nothing, and versions stay at 1.
    expect(await app.store.rollForward(0)).toEqual({ completed: 0, missingParts: [] });
    expect(await versions(app, all)).toEqual(all.map(() => 1));
    for (const p of groups.keys()) {
      expect(await app.redis.exists(app.store.keys.batchPart(p, 'aaaaaaaaaaaaaaa1'))).toBe(0);
      expect(await app.redis.zcard(app.store.keys.pendingBatches(p))).toBe(0);
    }
    // One change event per item (the coordinator's from the dead writer, the rest from roll-forward).
    for (const [p, keys] of groups) {
      const events = await streamEvents(app.redis, app.store.keys.stream(p));
      expect(events.map((e) => e.key).sort()).toEqual([...keys].sort());
    }
  });

  it('leaves alone a batch committed too recently (its writer may still be at work)', async () => {
    const app = await createTestApp('xbatch-recent');
    apps.push(app);
    const groups = keysByPartition(app, 'n', 2, 1);
    const redis = app.redis as unknown as ScriptCommands;
    const ks = app.store.keys;
    const [c, o] = [...groups.keys()] as [number, number];
    await redis.kvBatchPrepare(1, ks.batchPart(o, 'bbbbbbbbbbbbbbb2'), String(PART_EXPIRY_SECONDS), JSON.stringify([groups.get(o)![0], 'x']));
    await redis.kvBatchPrepare(2, ks.batchPart(c, 'bbbbbbbbbbbbbbb2'), ks.pendingBatches(c), String(PART_EXPIRY_SECONDS), JSON.stringify([groups.get(c)![0], 'x']), 'bbbbbbbbbbbbbbb2', `${c},${o}`, String(Date.now()));
    expect(await app.store.rollForward(60_000)).toEqual({ completed: 0, missingParts: [] });
    expect(await app.store.rollForward(0)).toEqual({ completed: 1, missingParts: [] });
  });

  it('never applies a batch that was prepared but not committed; its parts expire', async () => {
    const app = await createTestApp('xbatch-uncommitted');
    apps.push(app);
    const groups = keysByPartition(app, 'u', 2, 2);
    const redis = app.redis as unknown as ScriptCommands;
    const ks = app.store.keys;
    const [, other] = [...groups.keys()] as [number, number];
    await redis.kvBatchPrepare(1, ks.batchPart(other, 'ccccccccccccccc3'), String(PART_EXPIRY_SECONDS), JSON.stringify(groups.get(other)!.flatMap((k) => [k, 'x'])));
    expect(await app.store.rollForward(0)).toEqual({ completed: 0, missingParts: [] });
    expect(await versions(app, [...groups.values()].flat())).toEqual([null, null, null, null]);
    const ttl = await app.redis.ttl(ks.batchPart(other, 'ccccccccccccccc3'));
    expect(ttl).toBeGreaterThan(PART_EXPIRY_SECONDS - 60);
    expect(ttl).toBeLessThanOrEqual(PART_EXPIRY_SECONDS);
  });

  it('applying a part again returns the first reply and writes nothing', async () => {
    const app = await createTestApp('xbatch-twice');
    apps.push(app);
    const groups = keysByPartition(app, 't', 2, 2);
    const ks = app.store.keys;
    const [c] = [...groups.keys()] as [number];
    await crashAfterCommit(app, 'ddddddddddddddd4', groups, [c]);
    const keys = groups.get(c)!;
    const redis = app.redis as unknown as ScriptCommands;
    const again = await redis.kvBatchApply(1 + 4 * keys.length, ks.batchPart(c, 'ddddddddddddddd4'), ...scriptKeys(ks, keys), String(keys.length), '1000', ...keys.flatMap((k) => [k, `v:${k}`]));
    expect(again.slice(2)).toEqual([1, expect.any(Number), 1, expect.any(Number)]);
    expect(await streamEvents(app.redis, ks.stream(c))).toHaveLength(keys.length);
    await app.store.rollForward(0);
  });

  it('a part that fails after writing some entries (an unreadable one) puts them back, stays unapplied, and applies once mended', async () => {
    const app = await createTestApp('xbatch-undo');
    apps.push(app);
    const groups = keysByPartition(app, 'u', 2, 4);
    const ks = app.store.keys;
    const id = 'fffffffffffffff6';
    const [p] = [...groups.keys()] as [number];
    const keys = groups.get(p)!;
    // Part p writes keys[0] (stored before) and keys[1] as it reads them, then finds keys[2] unreadable.
    await app.store.put({ key: keys[0]!, value: 'before' });
    await app.redis.hset(ks.bucket(keys[2]!), keys[2]!, 'short');
    await crashAfterCommit(app, id, groups, []);
    const stateOf = async () => ({
      entries: await Promise.all(keys.map((k) => app.redis.hgetBuffer(ks.bucket(k), k))),
      indexed: await Promise.all(keys.map((k) => app.redis.zscore(ks.index(p), k))),
      events: (await streamEvents(app.redis, ks.stream(p))).length,
      counter: await app.redis.get(ks.sequence(p)),
      part: await app.redis.hget(ks.batchPart(p, id), 's'),
    });
    const before = await stateOf();
    const redis = app.redis as unknown as ScriptCommands;
    const apply = () => redis.kvBatchApply(1 + 4 * keys.length, ks.batchPart(p, id), ...scriptKeys(ks, keys), String(keys.length), '1000', ...keys.flatMap((k) => [k, `v:${k}`]));
    await expect(apply()).rejects.toThrow(/too short/);
    expect(await stateOf()).toEqual(before);
    expect(before.part).not.toBe('applied');
    await app.redis.hdel(ks.bucket(keys[2]!), keys[2]!);
    const reply = await apply();
    expect(reply.filter((_, i) => i >= 2 && i % 2 === 0)).toEqual([2, 1, 1, 1]);
    expect(await app.redis.hget(ks.batchPart(p, id), 's')).toBe('applied');
    expect((await streamEvents(app.redis, ks.stream(p))).map((e) => [e.key, e.version])).toEqual([[keys[0], 1], ...keys.map((k, i) => [k, i === 0 ? 2 : 1])]);
    await app.store.rollForward(0);
    expect(await versions(app, keys)).toEqual([2, 1, 1, 1]);
  });

  it('an API process rolls forward the batches left pending when it starts', async () => {
    const app = await createTestApp('xbatch-process');
    apps.push(app);
    const groups = keysByPartition(app, 'p', 3, 1);
    const all = [...groups.values()].flat();
    await crashAfterCommit(app, 'eeeeeeeeeeeeeee5', groups, []);
    expect(await versions(app, all)).toEqual([null, null, null]);
    const api = await startApiProcess({ redisUrl: '', prefix: app.prefix, partitions: PARTITIONS, env: { REDIS_CLUSTER_NODES: inject('clusterNodes'), KV_BUCKETS: String(BUCKETS) } });
    try {
      let got: (number | null)[] = [null];
      for (let i = 0; i < 100 && !got.every((v) => v === 1); i++) {
        got = await versions(app, all);
        if (!got.every((v) => v === 1)) await sleep(100);
      }
      expect(got).toEqual([1, 1, 1]);
      // The pass logs once it has also forgotten the batch, a moment after the writes show.
      for (let i = 0; i < 50 && !/rolled forward 1 multi-partition batch/.test(api.output()); i++) await sleep(100);
      expect(api.output()).toMatch(/rolled forward 1 multi-partition batch/);
    } finally {
      await api.stop();
    }
  }, 60_000);

  it('a batch over several partitions through the API: every item, versions and values as answered, nothing left behind', async () => {
    const app = await createTestApp('xbatch-api');
    apps.push(app);
    const groups = keysByPartition(app, 'a', 5, 3);
    const items = [...groups.values()].flat().map((key) => ({ key, value: `v:${key}` }));
    const r = await app.gql<{ batchPut: { key: string; version: number }[] }>(`mutation($items: [PutInput!]!) { batchPut(items: $items) { key version } }`, { items });
    expect(r.errors).toBeUndefined();
    expect(r.data!.batchPut.map((e) => e.key)).toEqual(items.map((i) => i.key));
    expect(await versions(app, items.map((i) => i.key))).toEqual(items.map(() => 1));
    for (const p of groups.keys()) {
      expect(await app.redis.zcard(app.store.keys.pendingBatches(p))).toBe(0);
    }
    const leftovers = (await Promise.all((app.redis as import('ioredis').Cluster).nodes('master').map((n) => n.keys(`{${app.prefix}:*}:x*`)))).flat();
    expect(leftovers).toEqual([]);
  });

  it('KV_MIN_REPLICAS waits on the master of each write: one replica confirms, two cannot (each master has one)', async () => {
    const one = await createTestApp('xbatch-wait1', { replication: { minReplicas: 1, timeoutMs: 1000 } });
    const two = await createTestApp('xbatch-wait2', { replication: { minReplicas: 2, timeoutMs: 200 } });
    apps.push(one, two);
    const PUT = `mutation($key: String!, $value: String!) { put(key: $key, value: $value) { version } }`;
    const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key version } }`;
    const items = [...keysByPartition(one, 'w', 3, 1).values()].flat().map((key) => ({ key, value: `v:${key}` }));
    expect((await one.gql(PUT, { key: 'w:a', value: 'v:w:a' })).data).toEqual({ put: { version: 1 } });
    const batch = await one.gql(BATCH, { items });
    expect(batch.errors).toBeUndefined();

    const r = await two.gql(PUT, { key: 'w:a', value: 'v:w:a' });
    expect(r.errors?.[0]?.extensions).toMatchObject({ code: 'REPLICATION_TIMEOUT', replicasConfirmed: 1, replicasRequired: 2 });
    // Applied on its master all the same.
    expect(await versions(two, ['w:a'])).toEqual([1]);
  });

  it('EVENTUAL reads go to the replicas of a cluster (as npm start connects them), STRONG ones to the masters', async () => {
    const app = await createTestApp('xbatch-eventual');
    apps.push(app);
    const seeds = clusterSeedsFromEnv()!;
    const replicas = createRedis({ clusterNodes: seeds, reads: 'slave' }, { commandTimeoutMs: 2000 });
    replicas.on('error', () => {});
    await replicas.connect();
    const store = await KvStore.open(app.redis, { prefix: app.prefix, partitions: PARTITIONS, buckets: BUCKETS, replicaReader: replicas });
    const hmgets = async (role: 'master' | 'slave') => {
      let n = 0;
      for (const node of (app.redis as Cluster).nodes(role)) {
        const m = /cmdstat_hmget:calls=(\d+)/.exec(String(await node.info('commandstats')));
        n += Number(m?.[1] ?? 0);
      }
      return n;
    };
    try {
      await store.put({ key: 'ev:a', value: 'x' });
      await (app.redis as Cluster).nodes('master').reduce((p, n) => p.then(() => n.wait(1, 2000)), Promise.resolve(0));
      const before = { master: await hmgets('master'), slave: await hmgets('slave') };
      for (let i = 0; i < 20; i++) expect((await store.get('ev:a', 'eventual'))?.value).toBe('x');
      const mid = { master: await hmgets('master'), slave: await hmgets('slave') };
      expect(mid.slave - before.slave).toBeGreaterThanOrEqual(20);
      for (let i = 0; i < 20; i++) expect((await store.get('ev:a'))?.value).toBe('x');
      expect((await hmgets('master')) - mid.master).toBeGreaterThanOrEqual(20);
    } finally {
      store.close();
      replicas.disconnect();
    }
  });
});
