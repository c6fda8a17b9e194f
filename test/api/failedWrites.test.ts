// A write that fails partway leaves the store exactly as it was. put.lua writes the entries of an
// unconditional batch within one partition as it reads them (lua/put.lua, "written as read"), and
// delete.lua deletes a deleteRange's or a group's entries within one partition likewise, so an
// item they cannot write after others were written (an unreadable stored entry, a bucket of
// another type, a stream XADD refuses) makes them put those back: their old bytes, or no field.
// These tests compare every Redis key of the keyspace, byte for byte, before and after.
import { afterEach, beforeEach, expect, it } from 'vitest';
import { prefixRange } from '../../src/store/order.js';
import type { Entry } from '../../src/store/store.js';
import { createTestApp, keysInOnePartition, keysOf, type TestApp } from '../harness/app.js';

let app: TestApp;
beforeEach(async () => {
  app = await createTestApp('failed-writes');
});
afterEach(async () => {
  await app?.close();
});

/** Every key of the keyspace with its type and whole contents (values as hex). */
async function stateOf(): Promise<string[]> {
  const out: string[] = [];
  for (const k of await keysOf(app.redis, app.prefix)) {
    const type = await app.redis.type(k);
    let body: unknown;
    if (type === 'hash') {
      const fields = await app.redis.hgetallBuffer(k);
      body = Object.entries(fields)
        .map(([f, v]) => `${f}=${v.toString('hex')}`)
        .sort();
    } else if (type === 'zset') body = await app.redis.zrange(k, 0, -1, 'WITHSCORES');
    else if (type === 'stream') body = (await app.redis.xrangeBuffer(k, '-', '+')).map(([id, f]) => `${id.toString()} ${Buffer.concat(f).toString('hex')}`);
    else body = (await app.redis.getBuffer(k))?.toString('hex');
    out.push(`${k} ${type} ${JSON.stringify(body)}`);
  }
  return out.sort();
}

/**
 * Six keys of one partition: two stored before (to be overwritten), three new, and `bad` fifth,
 * between them, in a bucket of its own (the others may share theirs: in some test projects a
 * partition has five buckets).
 */
async function scene(base: string) {
  const keys = keysInOnePartition(base, 40);
  const bad = keys[0]!;
  const others = keys.filter((k) => app.store.keys.bucket(k) !== app.store.keys.bucket(bad)).slice(0, 5);
  expect(others).toHaveLength(5);
  const [old1, old2, new1, new2, new3] = others as [string, string, string, string, string];
  await app.store.batchPut([
    { key: old1, value: 'old one' },
    { key: old2, value: 'old two' },
  ]);
  await app.store.put({ key: old1, value: 'old one, again' });
  const items = [
    { key: old1, value: 'new one' },
    { key: new1, value: 'n1' },
    { key: old2, value: 'new two' },
    { key: new2, value: 'n2' },
    { key: bad, value: 'b' },
    { key: new3, value: 'n3' },
  ];
  return { items, bad, old1, old2 };
}

it('an unreadable stored entry after others were written: the batch fails and nothing changed', async () => {
  const { items, bad, old1, old2 } = await scene('undo-short:');
  await app.redis.hset(app.store.keys.bucket(bad), bad, 'short');
  const before = await stateOf();
  await expect(app.store.batchPut(items)).rejects.toThrow(/too short/);
  expect(await stateOf()).toEqual(before);
  // The overwritten entries read as they were, versions and all.
  expect(await app.store.get(old1)).toMatchObject({ value: 'old one, again', version: 2 });
  expect(await app.store.get(old2)).toMatchObject({ value: 'old two', version: 1 });
});

it('a bucket of another type after others were written: the batch fails and nothing changed', async () => {
  const { items, bad } = await scene('undo-type:');
  await app.redis.set(app.store.keys.bucket(bad), 'not a hash');
  const before = await stateOf();
  await expect(app.store.batchPut(items)).rejects.toThrow(/WRONGTYPE/);
  expect(await stateOf()).toEqual(before);
});

it('a stream that refuses XADD (an entry past its counter) after the entries were written: nothing changed', async () => {
  const { items } = await scene('undo-xadd:');
  const p = app.store.keys.partition(items[0]!.key);
  const counter = Number(await app.redis.get(app.store.keys.sequence(p)));
  await app.redis.xadd(app.store.keys.stream(p), `0-${counter + 1000}`, 'x', 'written by someone else');
  const before = await stateOf();
  await expect(app.store.batchPut(items)).rejects.toThrow(/XADD/);
  expect(await stateOf()).toEqual(before);
});

it('a feed counter that is not a count, read after the entries were written: the batch fails and nothing changed', async () => {
  // "1e3" and " 7" are numbers to Lua's tonumber, not to INCRBY; a hash is of another type.
  for (const [i, bad] of ['abc', '1e3', ' 7', { h: 'x' }].entries()) {
    const { items } = await scene(`undo-counter-${i}:`);
    const counter = app.store.keys.sequence(app.store.keys.partition(items[0]!.key));
    const count = (await app.redis.get(counter))!;
    if (typeof bad === 'string') await app.redis.set(counter, bad);
    else await app.redis.multi().del(counter).hset(counter, bad).exec();
    const before = await stateOf();
    await expect(app.store.batchPut(items)).rejects.toThrow(typeof bad === 'string' ? /feed counter .* not a count/ : /WRONGTYPE/);
    // Compare-and-set (checked first, then events, then entries) and a single put stop too.
    await expect(app.store.batchPut([{ key: items[0]!.key, value: 'x' }, { key: items[1]!.key, value: 'y', expectedVersion: 0 }])).rejects.toThrow();
    await expect(app.store.put({ key: items[1]!.key, value: 'alone' })).rejects.toThrow();
    expect(await stateOf()).toEqual(before);
    await app.redis.multi().del(counter).set(counter, count).exec();
  }
});

it('the same batch without the bad item writes every entry, its events and its index entries', async () => {
  const { items, bad, old1, old2 } = await scene('undo-none:');
  const good = items.filter((i) => i.key !== bad);
  const p = app.store.keys.partition(old1);
  const counter = Number(await app.redis.get(app.store.keys.sequence(p)));
  const stored = await app.store.get(old1);
  const written = await app.store.batchPut(good);
  expect(written.map((e) => [e.key, e.value, e.version])).toEqual(good.map((i) => [i.key, i.value, i.key === old1 ? 3 : i.key === old2 ? 2 : 1]));
  expect(Number(await app.redis.get(app.store.keys.sequence(p)))).toBe(counter + good.length);
  for (const { key } of good) expect(await app.redis.zscore(app.store.keys.index(p), key)).toBe('0');
  // createdAt kept for the overwritten, the batch's clock for the new.
  const [e1, n1] = written as [Entry, Entry];
  expect(e1.createdAt).toBe(stored!.createdAt);
  expect(n1.createdAt).toBe(n1.updatedAt);
  expect(n1.updatedAt).toBe(e1.updatedAt);
  expect(await app.store.get(old1)).toEqual(e1);
});

/**
 * For deleteRange: six keys of one partition under `base`, stored, `bad` in the middle by byte
 * order (so that keys before it are deleted first) and in a bucket of its own.
 */
async function rangeScene(base: string) {
  const keys = keysInOnePartition(base, 40).sort();
  const bad = keys[20]!;
  const apart = keys.filter((k) => app.store.keys.bucket(k) !== app.store.keys.bucket(bad));
  const below = apart.filter((k) => k < bad).slice(-2);
  const above = apart.filter((k) => k > bad).slice(0, 3);
  expect([below.length, above.length]).toEqual([2, 3]);
  const stored = [...below, bad, ...above];
  await app.store.batchPut(stored.map((key) => ({ key, value: `v-${key}` })));
  await app.store.put({ key: below[0]!, value: 'again' });
  return { bad, stored };
}

it('deleteRange within one partition: an unreadable entry after others were deleted fails it, and nothing changed', async () => {
  const { bad } = await rangeScene('undo-del-short:');
  await app.redis.hset(app.store.keys.bucket(bad), bad, 'short');
  const before = await stateOf();
  await expect(app.store.deleteRange(prefixRange('undo-del-short:'), 100)).rejects.toThrow(/too short/);
  expect(await stateOf()).toEqual(before);
});

it('deleteRange within one partition: a bucket of another type after others were deleted fails it, and nothing changed', async () => {
  const { bad } = await rangeScene('undo-del-type:');
  await app.redis.set(app.store.keys.bucket(bad), 'not a hash');
  const before = await stateOf();
  await expect(app.store.deleteRange(prefixRange('undo-del-type:'), 100)).rejects.toThrow(/WRONGTYPE/);
  expect(await stateOf()).toEqual(before);
});

it('deleteRange within one partition: a stream that refuses XADD after the deletes fails it, and nothing changed', async () => {
  const { stored } = await rangeScene('undo-del-xadd:');
  const p = app.store.keys.partition(stored[0]!);
  const counter = Number(await app.redis.get(app.store.keys.sequence(p)));
  await app.redis.xadd(app.store.keys.stream(p), `0-${counter + 1000}`, 'x', 'written by someone else');
  const before = await stateOf();
  await expect(app.store.deleteRange(prefixRange('undo-del-xadd:'), 100)).rejects.toThrow(/XADD/);
  expect(await stateOf()).toEqual(before);
});

it('deleteRange within one partition: a feed counter that is not a count fails it after the deletes, and nothing changed', async () => {
  const { stored } = await rangeScene('undo-del-counter:');
  const counter = app.store.keys.sequence(app.store.keys.partition(stored[0]!));
  await app.redis.set(counter, '12abc');
  const before = await stateOf();
  await expect(app.store.deleteRange(prefixRange('undo-del-counter:'), 100)).rejects.toThrow(/feed counter .* not a count/);
  await expect(app.store.delete(stored[1]!)).rejects.toThrow(/feed counter .* not a count/);
  expect(await stateOf()).toEqual(before);
});

it('deleteRange within one partition deletes every key, with its event and without its index entry', async () => {
  const { stored } = await rangeScene('undo-del-none:');
  const p = app.store.keys.partition(stored[0]!);
  const counter = Number(await app.redis.get(app.store.keys.sequence(p)));
  expect(await app.store.deleteRange(prefixRange('undo-del-none:'), 100)).toEqual({ deleted: 6, hasMore: false });
  expect(Number(await app.redis.get(app.store.keys.sequence(p)))).toBe(counter + 6);
  for (const key of stored) {
    expect(await app.store.get(key)).toBeNull();
    expect(await app.redis.zscore(app.store.keys.index(p), key)).toBeNull();
  }
  // A group of deletes of one partition takes the same path: each answers its previous entry.
  const { stored: again } = await rangeScene('undo-del-group:');
  const heads = Promise.all(again.slice(0, 2).map((key) => app.store.delete(key)));
  const rest = await Promise.all(again.slice(2).map((key) => app.store.delete(key)));
  await heads;
  expect(rest.map((r) => [r.deleted, r.previous?.key, r.previous?.value])).toEqual(again.slice(2).map((key) => [true, key, `v-${key}`]));
});
