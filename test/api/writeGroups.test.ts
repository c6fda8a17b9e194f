// Grouped writes (src/store/writeGroups.ts): unconditional puts (or deletes) of one partition
// issued in one turn of the event loop while two calls of their kind are in flight are written by
// one script call, so their events share one stream entry; each write still gets its own
// result, version, event and error.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { DeleteOutcome, Entry } from '../../src/store/store.js';
import { createTestApp, keysInOnePartition, PARTITIONS, type TestApp } from '../harness/app.js';
import { streamEvents, type StreamEvent } from '../harness/feedStream.js';

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp('putgroups');
});
afterAll(async () => {
  await app?.close();
});

/** The events of `key`'s partition after stream entry `after`, as the scripts appended them. */
async function eventsOf(key: string, after = '-'): Promise<StreamEvent[]> {
  return streamEvents(app.redis, app.store.keys.stream(app.store.keys.partition(key)), after);
}

/** The ID of the last entry of `key`'s partition's stream ('-' when it has none). */
async function lastEntryOf(key: string): Promise<string> {
  const [last] = await app.redis.xrevrange(app.store.keys.stream(app.store.keys.partition(key)), '+', '-', 'COUNT', 1);
  return last ? last[0] : '-';
}

/** How many stream entries hold `events`. */
const entriesOf = (events: StreamEvent[]) => new Set(events.map((e) => e.entryId)).size;

/**
 * Puts `first` and `${first}+` (each sent alone: fewer than two in flight), then the others in
 * the same turn, while those two are in flight.
 */
function putTogether(first: string, others: { key: string; value: string; expectedVersion?: number }[]): [Promise<Entry[]>, Promise<PromiseSettledResult<Entry>[]>] {
  const heads = Promise.all([app.store.put({ key: first, value: 'first' }), app.store.put({ key: `${first}+`, value: 'first' })]);
  return [heads, Promise.allSettled(others.map((item) => app.store.put(item)))];
}

it('sends puts alone until two are in flight, and groups the rest', async () => {
  const keys = keysInOnePartition('threshold:', 4);
  const after = await lastEntryOf(keys[0]!);
  await Promise.all(keys.map((key) => app.store.put({ key, value: 't' })));
  const events = (await eventsOf(keys[0]!, after)).filter((e) => keys.includes(e.key));
  const sizes = new Map<string, number>();
  for (const e of events) sizes.set(e.entryId, (sizes.get(e.entryId) ?? 0) + 1);
  expect(events.map((e) => e.key)).toEqual(keys);
  expect([...sizes.values()]).toEqual([1, 1, 2]);
});

it('writes the puts issued together in one call, each with its own entry, version and event', async () => {
  const keys = keysInOnePartition('together:', 41);
  const after = await lastEntryOf(keys[0]!);
  const [head, rest] = putTogether(keys[0]!, keys.slice(1).map((key, i) => ({ key, value: `v${i}` })));
  const [first] = await head;
  const settled = await rest;
  expect(first).toMatchObject({ key: keys[0], value: 'first', version: 1 });
  expect(settled.map((s) => s.status === 'fulfilled' && [s.value.key, s.value.value, s.value.version])).toEqual(
    keys.slice(1).map((key, i) => [key, `v${i}`, 1]),
  );
  const events = (await eventsOf(keys[0]!, after)).filter((e) => keys.includes(e.key));
  expect(events.map((e) => [e.type, e.key, e.version])).toEqual(keys.map((key) => ['P', key, 1]));
  // The first went alone; the forty others in one call, so one entry.
  expect(entriesOf(events)).toBe(2);
  expect(new Set(events.slice(1).map((e) => e.entryId)).size).toBe(1);
  const seqs = events.slice(1).map((e) => e.seq);
  expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
  expect((await app.store.getMany(keys)).map((e) => e?.value)).toEqual(['first', ...keys.slice(1).map((_, i) => `v${i}`)]);
});

it('sends a put at once, alone, when nothing is in flight', async () => {
  const keys = keysInOnePartition('alone:', 5);
  const after = await lastEntryOf(keys[0]!);
  for (const key of keys) await app.store.put({ key, value: 'x' });
  const events = await eventsOf(keys[0]!, after);
  expect(events.map((e) => e.key)).toEqual(keys);
  expect(entriesOf(events)).toBe(5);
});

it('writes a key put twice in one turn twice, in the order the puts were issued', async () => {
  const [other, key] = keysInOnePartition('twice:', 2) as [string, string];
  const after = await lastEntryOf(key);
  const [head, rest] = putTogether(other, [
    { key, value: 'a' },
    { key: `${key}-x`, value: 'between' },
    { key, value: 'b' },
    { key, value: 'c' },
  ]);
  await head;
  const settled = await rest;
  const versions = settled.map((s) => (s.status === 'fulfilled' ? [s.value.value, s.value.version] : s.reason));
  expect(versions).toEqual([['a', 1], ['between', 1], ['b', 2], ['c', 3]]);
  expect((await app.store.get(key))).toMatchObject({ value: 'c', version: 3 });
  const mine = (await eventsOf(key, after)).filter((e) => e.key === key);
  expect(mine.map((e) => [e.value, e.version])).toEqual([['a', 1], ['b', 2], ['c', 3]]);
});

it('groups by partition: the puts of each partition share one entry of its own stream', async () => {
  if (PARTITIONS < 2) return;
  // Three keys in each of up to four partitions, issued interleaved.
  const perPartition = new Map<number, string[]>();
  for (let i = 0; perPartition.size < Math.min(PARTITIONS, 4) || [...perPartition.values()].some((l) => l.length < 3); i++) {
    const key = `parts:${i}`;
    const p = app.store.keys.partition(key);
    const list = perPartition.get(p) ?? [];
    if (list.length < 3 && (perPartition.has(p) || perPartition.size < 4)) perPartition.set(p, [...list, key]);
  }
  const lists = [...perPartition.values()];
  const others = [0, 1, 2].flatMap((j) => lists.map((l) => ({ key: l[j]!, value: 'v' })));
  const afters = await Promise.all(lists.map((l) => lastEntryOf(l[0]!)));
  const [head, rest] = putTogether(keysInOnePartition('parts-first:', 1)[0]!, others);
  await head;
  expect((await rest).every((s) => s.status === 'fulfilled')).toBe(true);
  for (const [i, list] of lists.entries()) {
    const mine = (await eventsOf(list[0]!, afters[i]!)).filter((e) => e.key.startsWith('parts:'));
    expect(mine.map((e) => e.key)).toEqual(list);
    expect(entriesOf(mine)).toBe(1);
  }
});

it('writes at most 256 puts per call', async () => {
  const keys = keysInOnePartition('many:', 601);
  const after = await lastEntryOf(keys[0]!);
  const [head, rest] = putTogether(keys[0]!, keys.slice(1).map((key) => ({ key, value: 'm' })));
  await head;
  expect((await rest).every((s) => s.status === 'fulfilled')).toBe(true);
  const events = (await eventsOf(keys[0]!, after)).filter((e) => keys.includes(e.key));
  expect(events).toHaveLength(601);
  // The first alone, then 600 in calls of at most 256.
  const perEntry = new Map<string, number>();
  for (const e of events) perEntry.set(e.entryId, (perEntry.get(e.entryId) ?? 0) + 1);
  expect([...perEntry.values()]).toEqual([1, 256, 256, 88]);
});

it('writes a compare-and-set alone: its conflict fails only itself', async () => {
  const [other, a, b] = keysInOnePartition('cas:', 3) as [string, string, string];
  await app.store.put({ key: b, value: 'b' });
  const [head, rest] = putTogether(other, [
    { key: a, value: 'a' },
    { key: b, value: 'b2', expectedVersion: 5 },
  ]);
  await head;
  const [okA, conflictB] = await rest;
  expect(okA).toMatchObject({ status: 'fulfilled', value: { key: a, version: 1 } });
  expect(conflictB).toMatchObject({ status: 'rejected', reason: { code: 'VERSION_CONFLICT', extensions: { key: b, actualVersion: 1 } } });
  expect(await app.store.get(b)).toMatchObject({ value: 'b', version: 1 });
});

it('fails only the put whose stored entry the script cannot read, and writes the others', async () => {
  const [other, bad, good1, good2] = keysInOnePartition('corrupt:', 4) as [string, string, string, string];
  // Shorter than an entry's header: put.lua puts back the group's writes before it and raises.
  await app.redis.hset(app.store.keys.bucket(bad), bad, 'short');
  const after = await lastEntryOf(bad);
  const [head, rest] = putTogether(other, [
    { key: good1, value: 'g1' },
    { key: bad, value: 'new' },
    { key: good2, value: 'g2' },
  ]);
  await head;
  const [r1, rBad, r2] = (await rest) as [PromiseSettledResult<Entry>, PromiseSettledResult<Entry>, PromiseSettledResult<Entry>];
  expect(r1).toMatchObject({ status: 'fulfilled', value: { key: good1, value: 'g1', version: 1 } });
  expect(r2).toMatchObject({ status: 'fulfilled', value: { key: good2, value: 'g2', version: 1 } });
  expect(rBad.status).toBe('rejected');
  expect(await app.redis.hget(app.store.keys.bucket(bad), bad)).toBe('short');
  const events = (await eventsOf(bad, after)).map((e) => e.key).filter((k) => [other, bad, good1, good2].includes(k));
  expect(events).toEqual([other, good1, good2]);
  await app.redis.hdel(app.store.keys.bucket(bad), bad);
});

it('keeps a group no larger than the feed retains', async () => {
  const small = await createTestApp('putgroups-retention', { feedRetention: 8 });
  try {
    const keys = keysInOnePartition('kept:', 25);
    const stream = small.store.keys.stream(small.store.keys.partition(keys[0]!));
    const all = Promise.all(keys.map((key) => small.store.put({ key, value: 'x' })));
    await all;
    // Two alone, then 23 in calls of at most eight; the stream may have trimmed its oldest entries.
    const sizes = (await streamEvents(small.redis, stream)).reduce((m, e) => m.set(e.entryId, (m.get(e.entryId) ?? 0) + 1), new Map<string, number>());
    expect(Math.max(...sizes.values())).toBe(8);
  } finally {
    await small.close();
  }
});

it('refuses every write of a group when the call they share fails', async () => {
  // A standalone Redis in every project: a Cluster client that was told to disconnect queues
  // later commands at the cluster level, where no timeout reaches them (not kvql's case: it
  // disconnects only at shutdown, after its requests ended).
  const lost = await createTestApp('putgroups-lost', { redisUrl: inject('redisUrl') });
  const keys = keysInOnePartition('lost:', 6);
  try {
    const heads = Promise.allSettled([...keys.slice(0, 2).map((key) => lost.store.put({ key, value: 'x' })), ...keys.slice(0, 2).map((key) => lost.store.delete(`${key}-d`))]);
    const puts = Promise.allSettled(keys.slice(2).map((key) => lost.store.put({ key, value: 'x' })));
    const deletes = Promise.allSettled(keys.slice(2).map((key) => lost.store.delete(`${key}-d`)));
    lost.redis.disconnect();
    await heads;
    const codes = (settled: PromiseSettledResult<unknown>[]) => settled.map((s) => s.status === 'rejected' && (s.reason as { code?: string }).code);
    expect(codes(await puts)).toEqual(keys.slice(2).map(() => 'STORE_UNAVAILABLE'));
    expect(codes(await deletes)).toEqual(keys.slice(2).map(() => 'STORE_UNAVAILABLE'));
  } finally {
    await lost.close();
  }
});

describe('deletes', () => {
  /**
   * Deletes `first` and `${first}+` (each sent alone: fewer than two deletes in flight), then the
   * others in the same turn, while those two are in flight.
   */
  function deleteTogether(first: string, others: { key: string; expectedVersion?: number }[]): [Promise<DeleteOutcome[]>, Promise<PromiseSettledResult<DeleteOutcome>[]>] {
    const heads = Promise.all([app.store.delete(first), app.store.delete(`${first}+`)]);
    return [heads, Promise.allSettled(others.map((d) => app.store.delete(d.key, d.expectedVersion)))];
  }

  it('writes the deletes issued together in one call, each with its own previous entry and event', async () => {
    // The absent key is in the same partition, so its delete is in the same call.
    const [absent, ...keys] = keysInOnePartition('del-together:', 22) as [string, ...string[]];
    await app.store.batchPut(keys.map((key) => ({ key, value: `was ${key}` })));
    await app.store.put({ key: keys[3]!, value: 'again' });
    const after = await lastEntryOf(keys[0]!);
    const others = [...keys.slice(1, 10), absent, ...keys.slice(10)];
    const [head, rest] = deleteTogether(keys[0]!, others.map((key) => ({ key })));
    const [first] = await head;
    const settled = await rest;
    expect(first).toMatchObject({ deleted: true, previous: { key: keys[0], value: `was ${keys[0]}`, version: 1 } });
    expect(settled.map((s) => s.status === 'fulfilled' && [s.value.deleted, s.value.previous?.value, s.value.previous?.version])).toEqual(
      others.map((key) => (key === absent ? [false, undefined, undefined] : key === keys[3] ? [true, 'again', 2] : [true, `was ${key}`, 1])),
    );
    const events = (await eventsOf(keys[0]!, after)).filter((e) => keys.includes(e.key) || e.key === absent);
    // No event for the key that was not there.
    expect(events.map((e) => [e.type, e.key, e.version])).toEqual(keys.map((key) => ['D', key, key === keys[3] ? 2 : 1]));
    // The first went alone; the twenty others in one call, so one entry.
    expect(entriesOf(events)).toBe(2);
    expect((await app.store.getMany(keys)).every((e) => e === null)).toBe(true);
    expect(await app.redis.zscore(app.store.keys.index(app.store.keys.partition(keys[1]!)), keys[1]!)).toBeNull();
  });

  it('deletes a key deleted twice in one turn once: the second finds it gone', async () => {
    const [other, key] = keysInOnePartition('del-twice:', 2) as [string, string];
    await app.store.put({ key, value: 'v' });
    const after = await lastEntryOf(key);
    const [head, rest] = deleteTogether(other, [{ key }, { key: `${key}-x` }, { key }]);
    await head;
    const settled = await rest;
    expect(settled.map((s) => s.status === 'fulfilled' && s.value.deleted)).toEqual([true, false, false]);
    expect((await eventsOf(key, after)).filter((e) => e.key === key).map((e) => e.type)).toEqual(['D']);
  });

  it('writes a compare-and-set delete alone: its conflict fails only itself', async () => {
    const [other, a, b] = keysInOnePartition('del-cas:', 3) as [string, string, string];
    await app.store.batchPut([{ key: a, value: 'a' }, { key: b, value: 'b' }]);
    const [head, rest] = deleteTogether(other, [{ key: a }, { key: b, expectedVersion: 5 }]);
    await head;
    const [okA, conflictB] = await rest;
    expect(okA).toMatchObject({ status: 'fulfilled', value: { deleted: true } });
    expect(conflictB).toMatchObject({ status: 'rejected', reason: { code: 'VERSION_CONFLICT', extensions: { key: b, actualVersion: 1 } } });
    expect(await app.store.get(b)).toMatchObject({ value: 'b', version: 1 });
  });

  it('fails only the delete whose stored entry the script cannot read, and deletes the others', async () => {
    const [other, bad, good1, good2] = keysInOnePartition('del-corrupt:', 4) as [string, string, string, string];
    await app.store.batchPut([{ key: good1, value: 'g1' }, { key: good2, value: 'g2' }]);
    // Shorter than an entry's header: delete.lua raises before its first write.
    await app.redis.hset(app.store.keys.bucket(bad), bad, 'short');
    const after = await lastEntryOf(bad);
    const [head, rest] = deleteTogether(other, [{ key: good1 }, { key: bad }, { key: good2 }]);
    await head;
    const [r1, rBad, r2] = (await rest) as PromiseSettledResult<DeleteOutcome>[];
    expect(r1).toMatchObject({ status: 'fulfilled', value: { deleted: true, previous: { value: 'g1' } } });
    expect(r2).toMatchObject({ status: 'fulfilled', value: { deleted: true, previous: { value: 'g2' } } });
    expect(rBad!.status).toBe('rejected');
    expect(await app.redis.hget(app.store.keys.bucket(bad), bad)).toBe('short');
    expect((await eventsOf(bad, after)).map((e) => e.key).filter((k) => [bad, good1, good2].includes(k))).toEqual([good1, good2]);
    await app.redis.hdel(app.store.keys.bucket(bad), bad);
  });
});
