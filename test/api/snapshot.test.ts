// Reads over several partitions on one Redis: a getMany and a range page are each one snapshot,
// so a batchPut over those partitions (one atomic script there) shows in all of them or in none.
// (On a Redis Cluster a read is one script per partition, and a batch over several is not
// isolated: README, "What differs from one Redis".)
import { afterAll, describe, expect, it } from 'vitest';
import { createTestApp, keysInDistinctPartitions, ON_CLUSTER, type TestApp } from '../harness/app.js';

const P = 4;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key } }`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key value version } }`;
const RANGE = `query($prefix: String!, $first: Int!) { range(prefix: $prefix, first: $first) { totalCount edges { node { key value version } } } }`;

const apps: TestApp[] = [];
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
});

type Call = (...args: unknown[]) => Promise<unknown>;
interface Node {
  key: string;
  value: string;
  version: number;
}

/**
 * Runs `read` while a batch writing `value` to every key of `keys` lands just after the first
 * call of the store's Redis client to one of `methods` leaves, and before any later one: those
 * wait for the batch. So a read made of several such calls sees the batch in some partitions
 * and not in others. Returns what `read` returned, once the batch has landed.
 */
async function readAcrossBatch<T>(app: TestApp, methods: string[], keys: string[], value: string, read: () => Promise<T>): Promise<T> {
  const client = app.redis as unknown as Record<string, Call>;
  const originals = methods.map((m) => client[m]!);
  let batch: Promise<unknown> | undefined;
  methods.forEach((m, i) => {
    client[m] = async function (this: unknown, ...args: unknown[]) {
      if (batch) await batch;
      else batch = app.gql(BATCH, { items: keys.map((key) => ({ key, value })) }).then((r) => expect(r.errors).toBeUndefined());
      return originals[i]!.apply(this, args);
    };
  });
  try {
    const result = await read();
    expect(batch).toBeDefined();
    await batch;
    return result;
  } finally {
    methods.forEach((m, i) => (client[m] = originals[i]!));
  }
}

async function appWith(name: string, keys: string[]): Promise<TestApp> {
  const app = await createTestApp(name, { partitions: P });
  apps.push(app);
  expect((await app.gql(BATCH, { items: keys.map((key) => ({ key, value: 'old' })) })).errors).toBeUndefined();
  return app;
}

describe.skipIf(ON_CLUSTER)('reads over several partitions on one Redis', () => {
  it('a getMany sees a batch over its partitions entirely or not at all', async () => {
    const keys = keysInDistinctPartitions('s:', P, P);
    const app = await appWith('snapshot-getmany', keys);
    const nodes = await readAcrossBatch(app, ['hmgetBuffer', 'kvGetBuffer'], keys, 'new', async () => {
      const r = await app.gql<{ getMany: Node[] }>(GET_MANY, { keys });
      expect(r.errors).toBeUndefined();
      return r.data!.getMany;
    });
    expect(new Set(nodes.map((n) => `${n.value}@${n.version}`))).toEqual(new Set(['old@1']));
    // The batch did land, in every partition.
    const after = (await app.gql<{ getMany: Node[] }>(GET_MANY, { keys })).data!.getMany;
    expect(after.map((n) => `${n.value}@${n.version}`)).toEqual(keys.map(() => 'new@2'));
  });

  it('a range page sees a batch over its partitions entirely or not at all', async () => {
    const keys = [...keysInDistinctPartitions('r:a', P, P), ...keysInDistinctPartitions('r:b', P, P), ...keysInDistinctPartitions('r:c', P, P)];
    const app = await appWith('snapshot-range', keys);
    const page = await readAcrossBatch(app, ['kvRangeBuffer'], keys, 'new', async () => {
      const r = await app.gql<{ range: { totalCount: number; edges: { node: Node }[] } }>(RANGE, { prefix: 'r:', first: 10 });
      expect(r.errors).toBeUndefined();
      return r.data!.range;
    });
    expect(page.totalCount).toBe(keys.length);
    expect(page.edges).toHaveLength(10);
    expect(new Set(page.edges.map((e) => `${e.node.value}@${e.node.version}`))).toEqual(new Set(['old@1']));
    const after = (await app.gql<{ range: { edges: { node: Node }[] } }>(RANGE, { prefix: 'r:', first: 10 })).data!.range;
    expect(after.edges.map((e) => `${e.node.value}@${e.node.version}`)).toEqual(after.edges.map(() => 'new@2'));
  });
});
