// Every operation of the contract through GraphQL, against a real Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, dataKeysOf, feedSequencesOf, keysInDistinctPartitions, keysInOnePartition, ON_CLUSTER, writtenOf, type TestApp } from '../harness/app.js';
import { streamEvents } from '../harness/feedStream.js';

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp('crud');
});
afterAll(() => app.close());

const PUT = `mutation($key: String!, $value: String!, $expectedVersion: Int) {
  put(key: $key, value: $value, expectedVersion: $expectedVersion) { key value version createdAt updatedAt }
}`;
const GET = `query($key: String!) { get(key: $key) { key value version createdAt updatedAt } }`;
const DELETE = `mutation($key: String!, $expectedVersion: Int) {
  delete(key: $key, expectedVersion: $expectedVersion) { deleted previous { key value version } }
}`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key value version } }`;

const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe('put and get', () => {
  it('creates at version 1 with ISO timestamps from the Redis clock', async () => {
    const before = Date.now();
    const r = await app.gql(PUT, { key: 'pg:a', value: 'one' });
    expect(r.errors).toBeUndefined();
    expect(r.data!.put).toMatchObject({ key: 'pg:a', value: 'one', version: 1 });
    expect(r.data!.put.createdAt).toMatch(ISO_MS);
    expect(r.data!.put.createdAt).toBe(r.data!.put.updatedAt);
    expect(Math.abs(Date.parse(r.data!.put.createdAt) - before)).toBeLessThan(5000);
    const g = await app.gql(GET, { key: 'pg:a' });
    expect(g.data!.get).toEqual(r.data!.put);
  });

  it('bumps the version on every put and keeps createdAt', async () => {
    const a = await app.gql(PUT, { key: 'pg:b', value: '1' });
    await new Promise((r) => setTimeout(r, 5));
    const b = await app.gql(PUT, { key: 'pg:b', value: '2' });
    const c = await app.gql(PUT, { key: 'pg:b', value: '3' });
    expect(c.data!.put.version).toBe(3);
    expect(c.data!.put.createdAt).toBe(a.data!.put.createdAt);
    expect(Date.parse(b.data!.put.updatedAt)).toBeGreaterThan(Date.parse(a.data!.put.updatedAt));
    expect((await app.gql(GET, { key: 'pg:b' })).data!.get.value).toBe('3');
  });

  it('returns null for an absent key', async () => {
    const g = await app.gql(GET, { key: 'pg:absent' });
    expect(g.errors).toBeUndefined();
    expect(g.data!.get).toBeNull();
  });

  it('round-trips any Unicode, NUL included, exactly', async () => {
    const keys = ['[', '(', '-', '+', '{x}', 'a:b', 'line\nbreak', '😀', '\u0000nul\u0000', 'é', '\uffff', '𝄞 clef', ' '];
    for (const key of keys) {
      const value = `v${key}\r\n\t"\\'😀\u0000`;
      const r = await app.gql(PUT, { key: `u:${key}`, value });
      expect(r.errors, key).toBeUndefined();
      const g = await app.gql(GET, { key: `u:${key}` });
      expect(g.data!.get.key).toBe(`u:${key}`);
      expect(g.data!.get.value).toBe(value);
    }
  });

  it('accepts an empty value', async () => {
    await app.gql(PUT, { key: 'pg:empty', value: '' });
    expect((await app.gql(GET, { key: 'pg:empty' })).data!.get.value).toBe('');
  });
});

describe('getMany', () => {
  it('answers in the order asked, null where absent, duplicates allowed', async () => {
    await app.gql(BATCH, { items: [{ key: 'gm:1', value: 'a' }, { key: 'gm:2', value: 'b' }, { key: 'gm:3', value: 'c' }] });
    const r = await app.gql(`query($keys: [String!]!) { getMany(keys: $keys) { key value } }`, {
      keys: ['gm:3', 'gm:x', 'gm:1', 'gm:3', 'gm:2'],
    });
    expect(r.errors).toBeUndefined();
    expect(r.data!.getMany).toEqual([
      { key: 'gm:3', value: 'c' },
      null,
      { key: 'gm:1', value: 'a' },
      { key: 'gm:3', value: 'c' },
      { key: 'gm:2', value: 'b' },
    ]);
  });

  it('answers an empty list with an empty list', async () => {
    const r = await app.gql(`{ getMany(keys: []) { key } }`);
    expect(r.data!.getMany).toEqual([]);
  });

  it('shares one loader between get and getMany in one operation', async () => {
    await app.gql(PUT, { key: 'gm:shared', value: 's' });
    const r = await app.gql(`{ a: get(key: "gm:shared") { value } b: getMany(keys: ["gm:shared", "gm:1"]) { value } }`);
    expect(r.data).toEqual({ a: { value: 's' }, b: [{ value: 's' }, { value: 'a' }] });
  });
});

describe('compare-and-set', () => {
  it('expectedVersion 0 creates only when absent', async () => {
    const ok = await app.gql(PUT, { key: 'cas:new', value: 'x', expectedVersion: 0 });
    expect(ok.data!.put.version).toBe(1);
    const again = await app.gql(PUT, { key: 'cas:new', value: 'y', expectedVersion: 0 });
    expect(again.errors![0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', key: 'cas:new', actualVersion: 1 });
    expect((await app.gql(GET, { key: 'cas:new' })).data!.get.value).toBe('x');
  });

  it('a matching version writes, a stale one changes nothing', async () => {
    await app.gql(PUT, { key: 'cas:k', value: '1' });
    const ok = await app.gql(PUT, { key: 'cas:k', value: '2', expectedVersion: 1 });
    expect(ok.data!.put.version).toBe(2);
    const stale = await app.gql(PUT, { key: 'cas:k', value: '3', expectedVersion: 1 });
    expect(stale.data).toBeNull();
    expect(stale.errors![0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', key: 'cas:k', actualVersion: 2 });
    expect(stale.errors![0]!.path).toEqual(['put']);
    expect((await app.gql(GET, { key: 'cas:k' })).data!.get).toMatchObject({ value: '2', version: 2 });
  });

  it('expecting a version of an absent key conflicts with actual version 0', async () => {
    const r = await app.gql(PUT, { key: 'cas:none', value: 'x', expectedVersion: 3 });
    expect(r.errors![0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', actualVersion: 0 });
    expect((await app.gql(GET, { key: 'cas:none' })).data!.get).toBeNull();
  });

  it('rejects a negative expectedVersion as bad input', async () => {
    const r = await app.gql(PUT, { key: 'cas:neg', value: 'x', expectedVersion: -1 });
    expect(r.errors![0]!.extensions!.code).toBe('BAD_USER_INPUT');
  });
});

describe('batchPut', () => {
  it('writes every item and returns them in order', async () => {
    const r = await app.gql(BATCH, {
      items: [
        { key: 'b:1', value: 'one' },
        { key: 'b:2', value: 'two' },
        { key: 'b:3', value: 'three' },
      ],
    });
    expect(r.errors).toBeUndefined();
    expect(r.data!.batchPut).toEqual([
      { key: 'b:1', value: 'one', version: 1 },
      { key: 'b:2', value: 'two', version: 1 },
      { key: 'b:3', value: 'three', version: 1 },
    ]);
  });

  it('one conflict rejects the whole batch and names every conflicting key', async () => {
    // On one Redis the keys fall in whatever partitions they hash to (a batch is one script over
    // all of them). On a cluster a compare-and-set batch must keep to one partition, so there the
    // same batch is made of keys of one partition.
    const [k1, k2, k3, k4] = ON_CLUSTER ? keysInOnePartition('bc:', 4) : ['bc:1', 'bc:2', 'bc:3', 'bc:4'];
    await app.gql(BATCH, { items: [{ key: k1, value: 'a' }, { key: k2, value: 'b' }] });
    const r = await app.gql(BATCH, {
      items: [
        { key: k1, value: 'A', expectedVersion: 1 },
        { key: k2, value: 'B', expectedVersion: 5 },
        { key: k3, value: 'C', expectedVersion: 2 },
        { key: k4, value: 'D' },
      ],
    });
    expect(r.errors![0]!.extensions!.code).toBe('VERSION_CONFLICT');
    expect(r.errors![0]!.extensions!.conflicts).toEqual([
      { key: k2, actualVersion: 1 },
      { key: k3, actualVersion: 0 },
    ]);
    const g = await app.gql(`query($keys: [String!]!) { getMany(keys: $keys) { value version } }`, { keys: [k1, k2, k3, k4] });
    expect(g.data!.getMany).toEqual([{ value: 'a', version: 1 }, { value: 'b', version: 1 }, null, null]);

    if (ON_CLUSTER) {
      // Over several partitions a batch that compares versions is refused before anything is
      // written, whether its versions match or not; without expectedVersion it is written.
      const [x1, x2, x3] = keysInDistinctPartitions('bcx:', 3);
      const seeded = await app.gql(BATCH, { items: [{ key: x1, value: 'a' }, { key: x2, value: 'b' }] });
      expect(seeded.errors).toBeUndefined();
      const before = await writtenOf(app.redis, app.prefix);
      const events = await feedSequencesOf(app);
      const attempts = [
        // every version matches
        [
          { key: x1, value: 'A', expectedVersion: 1 },
          { key: x2, value: 'B', expectedVersion: 1 },
          { key: x3, value: 'C', expectedVersion: 0 },
        ],
        // one conditional item among plain ones
        [
          { key: x1, value: 'A' },
          { key: x2, value: 'B', expectedVersion: 1 },
          { key: x3, value: 'C' },
        ],
        // a conflict too: still CROSS_PARTITION_CAS, nothing compared
        [
          { key: x1, value: 'A', expectedVersion: 7 },
          { key: x3, value: 'C', expectedVersion: 0 },
        ],
      ];
      for (const items of attempts) {
        const x = await app.gql(BATCH, { items });
        expect(x.data ?? null, JSON.stringify(items)).toBeNull();
        expect(x.errors![0]!.extensions, JSON.stringify(items)).toMatchObject({
          code: 'CROSS_PARTITION_CAS',
          partitions: items.length,
          conditionalKeys: items.filter((i) => i.expectedVersion !== undefined).map((i) => i.key),
        });
      }
      expect(await writtenOf(app.redis, app.prefix), 'nothing written').toEqual(before);
      expect(await feedSequencesOf(app), 'no event').toEqual(events);
      const after = await app.gql(`query($keys: [String!]!) { getMany(keys: $keys) { value version } }`, { keys: [x1, x2, x3] });
      expect(after.data!.getMany).toEqual([{ value: 'a', version: 1 }, { value: 'b', version: 1 }, null]);
    }
  });

  it('refuses a key named twice as bad input, writing nothing', async () => {
    const r = await app.gql(BATCH, { items: [{ key: 'bd:1', value: 'a' }, { key: 'bd:1', value: 'b' }] });
    expect(r.errors![0]!.extensions!.code).toBe('BAD_USER_INPUT');
    expect((await app.gql(GET, { key: 'bd:1' })).data!.get).toBeNull();
  });

  it('accepts an empty batch', async () => {
    const r = await app.gql(BATCH, { items: [] });
    expect(r.data!.batchPut).toEqual([]);
  });
});

describe('the change feed of a large batch and a deleteRange', () => {
  /** Per partition, the events (type, key, sequence) past `after`'s sequences, in stream order. */
  async function eventsAfter(after: number[]): Promise<[string, string, number][][]> {
    const ks = app.store.keys;
    const out: [string, string, number][][] = [];
    for (let p = 0; p < ks.partitions; p++) {
      const events = (await streamEvents(app.redis, ks.stream(p))).map((e) => [e.type, e.key, e.seq] as [string, string, number]);
      out.push(events.filter((e) => e[2] > after[p]!));
    }
    return out;
  }

  // The write scripts add a batch's new keys to each index (and take deleted ones out) in chunks
  // of 500, after the items: every item must still get its own event, with consecutive
  // sequences in item order, and every key its index entry.
  it('gives every item an event with consecutive sequences in item order, and every key its index entry', async () => {
    const keys = Array.from({ length: 1203 }, (_, i) => `fb:${String(1202 - i).padStart(4, '0')}`);
    await app.gql(PUT, { key: keys[7]!, value: 'already there' });
    const before = await feedSequencesOf(app);
    const r = await app.gql(BATCH, { items: keys.map((key) => ({ key, value: 'v' })) });
    expect(r.errors).toBeUndefined();
    const after = await feedSequencesOf(app);
    const events = await eventsAfter(before);
    for (let p = 0; p < events.length; p++) {
      const mine = keys.filter((k) => app.store.keys.partition(k) === p);
      expect(events[p], `partition ${p}`).toEqual(mine.map((k, i) => ['P', k, before[p]! + 1 + i]));
      expect(after[p], `partition ${p}`).toBe(before[p]! + mine.length);
    }
    const total = await app.gql(`query { range(prefix: "fb:", first: 1) { totalCount } }`);
    expect(total.data!.range.totalCount).toBe(keys.length);

    const del = await app.gql(`mutation { deleteRange(prefix: "fb:", limit: 1000) { deleted hasMore } }`);
    expect(del.data!.deleteRange).toEqual({ deleted: 1000, hasMore: true });
    const gone = [...keys].sort().slice(0, 1000);
    const deletes = await eventsAfter(after);
    for (let p = 0; p < deletes.length; p++) {
      const mine = gone.filter((k) => app.store.keys.partition(k) === p);
      expect([...deletes[p]!].sort((a, b) => a[2] - b[2]).map((e) => e[0]), `partition ${p}`).toEqual(mine.map(() => 'D'));
      expect(deletes[p]!.map((e) => e[1]).sort(), `partition ${p}`).toEqual(mine);
      expect(deletes[p]!.map((e) => e[2]), `partition ${p}`).toEqual(mine.map((_, i) => after[p]! + 1 + i));
    }
    const left = await app.gql(`query { range(prefix: "fb:", first: 500) { totalCount edges { node { key } } } }`);
    expect(left.data!.range.totalCount).toBe(keys.length - 1000);
    expect(left.data!.range.edges.map((e: { node: { key: string } }) => e.node.key)).toEqual([...keys].sort().slice(1000));
  });
});

describe('delete', () => {
  it('deletes and returns the previous entry; a new put starts again at version 1', async () => {
    await app.gql(PUT, { key: 'd:1', value: 'a' });
    await app.gql(PUT, { key: 'd:1', value: 'b' });
    const d = await app.gql(DELETE, { key: 'd:1' });
    expect(d.data!.delete).toEqual({ deleted: true, previous: { key: 'd:1', value: 'b', version: 2 } });
    expect((await app.gql(GET, { key: 'd:1' })).data!.get).toBeNull();
    const again = await app.gql(PUT, { key: 'd:1', value: 'c' });
    expect(again.data!.put.version).toBe(1);
  });

  it('deleting an absent key says so', async () => {
    const d = await app.gql(DELETE, { key: 'd:absent' });
    expect(d.data!.delete).toEqual({ deleted: false, previous: null });
  });

  it('honours expectedVersion', async () => {
    await app.gql(PUT, { key: 'd:cas', value: 'a' });
    const stale = await app.gql(DELETE, { key: 'd:cas', expectedVersion: 7 });
    expect(stale.errors![0]!.extensions).toMatchObject({ code: 'VERSION_CONFLICT', key: 'd:cas', actualVersion: 1 });
    expect((await app.gql(GET, { key: 'd:cas' })).data!.get).not.toBeNull();
    const ok = await app.gql(DELETE, { key: 'd:cas', expectedVersion: 1 });
    expect(ok.data!.delete.deleted).toBe(true);
  });

  it('leaves no value or index key behind (only the change feed remembers it)', async () => {
    const local = await createTestApp('crud-clean');
    await local.gql(PUT, { key: 'x', value: '1' });
    await local.gql(DELETE, { key: 'x' });
    expect(await dataKeysOf(local.redis, local.prefix)).toEqual([`${local.prefix}:meta`]);
    await local.close();
  });
});
