// A write that fails partway leaves the store exactly as it was. put.lua writes the entries of an
// unconditional batch within one partition as it reads them (lua/put.lua, "written as read"), so
// an item it cannot write after others were written (an unreadable stored entry, a bucket of
// another type, a stream XADD refuses) makes it put those back: their old bytes, or no field.
// These tests compare every Redis key of the keyspace, byte for byte, before and after.
import { afterEach, beforeEach, expect, it } from 'vitest';
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
