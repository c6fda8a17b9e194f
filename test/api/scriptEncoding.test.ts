// How script calls are written to Redis (src/store/scripts.ts flatWritable): a call of 64
// arguments or more as one flat RESP string when every argument is ASCII, as ioredis writes it
// otherwise. A bulk string's header counts bytes, so a wrong count for a non-ASCII argument
// would corrupt the call: these writes of keys and values in several UTF-8 lengths must come
// back byte for byte, from the store, from the bucket hashes and from the change feed.
import { Command } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { flatWritable } from '../../src/store/scripts.js';
import { createTestApp, type TestApp } from '../harness/app.js';
import { streamEvents } from '../harness/feedStream.js';

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp('scriptenc');
});
afterAll(async () => {
  await app?.close();
});

/** Keys and values of 1-, 2-, 3- and 4-byte UTF-8 characters, each also beside plain ASCII. */
const TEXTS = ['plain', 'café', 'naïve-€', '日本語', 'emoji-😀', '\u007f\u0080', 'é'.repeat(300)];

it("writes a call of ASCII arguments as exactly the bytes ioredis's own encoding writes", () => {
  const args = ['0123456789abcdef0123456789abcdef01234567', '2', '{p:0}:b:17', '{p:0}:i', '2', '100', 'key:1', 'v'.repeat(100), ''];
  const command = new Command('evalsha', args);
  const flat = flatWritable.call(command, {});
  expect(typeof flat).toBe('string');
  expect(Buffer.from(flat as string)).toEqual(Buffer.from(command.toWritable({}) as string));
});

it("falls back to ioredis's encoding as soon as one argument is not ASCII, or not a string", () => {
  for (const odd of ['café', '😀', '\u0080']) {
    const command = new Command('evalsha', ['sha', '1', 'k', odd]);
    expect(flatWritable.call(command, {})).toEqual(command.toWritable({}));
    expect(Buffer.byteLength(flatWritable.call(command, {}) as string)).toBeGreaterThan((flatWritable.call(command, {}) as string).length);
  }
  const buffers = new Command('evalsha', ['sha', '1', 'k', Buffer.from([0xff, 0x00])]);
  buffers.stringifyArguments();
  expect(Buffer.isBuffer(flatWritable.call(buffers, {}))).toBe(true);
});

it('stores and feeds a batch of ASCII keys and values intact (one flat string: over 64 arguments)', async () => {
  const items = Array.from({ length: 20 }, (_, i) => ({ key: `enc:ascii:${i}`, value: `value ${i} ${'~'.repeat(i * 10)}` }));
  const stream = app.store.keys.stream(app.store.keys.partition(items[0]!.key));
  const [last] = await app.redis.xrevrange(stream, '+', '-', 'COUNT', 1);
  const written = await app.store.batchPut(items);
  expect(written.map((e) => [e.key, e.value, e.version])).toEqual(items.map((i) => [i.key, i.value, 1]));
  const read = await app.store.getMany(items.map((i) => i.key));
  expect(read.map((e) => e && [e.key, e.value])).toEqual(items.map((i) => [i.key, i.value]));
  if (app.store.keys.partitions === 1) {
    const events = await streamEvents(app.redis, stream, last ? last[0] : '-');
    expect(events.map((e) => [e.key, e.value])).toEqual(items.map((i) => [i.key, i.value]));
  }
});

it('stores and feeds keys and values of every UTF-8 length intact, alone and in a batch with ASCII ones', async () => {
  const items = TEXTS.flatMap((text, i) => [
    { key: `enc:${i}:${text}`, value: text },
    { key: `enc:${i}:ascii`, value: `ascii ${i}` },
  ]);
  const stream = app.store.keys.stream(app.store.keys.partition(items[0]!.key));
  const [last] = await app.redis.xrevrange(stream, '+', '-', 'COUNT', 1);
  const written = await app.store.batchPut(items);
  expect(written.map((e) => [e.key, e.value, e.version])).toEqual(items.map((i) => [i.key, i.value, 1]));
  // A single put is a call of its own: the path for one item.
  const single = await app.store.put({ key: 'enc:single:😀', value: 'ünïcödé 日本' });
  expect(single).toMatchObject({ key: 'enc:single:😀', value: 'ünïcödé 日本', version: 1 });

  const read = await app.store.getMany([...items.map((i) => i.key), 'enc:single:😀']);
  expect(read.map((e) => e && [e.key, e.value])).toEqual([...items.map((i) => [i.key, i.value]), ['enc:single:😀', 'ünïcödé 日本']]);
  // The packed entry in its bucket: the 18-byte header, then the value's UTF-8 bytes.
  for (const item of items) {
    const packed = await app.redis.hgetBuffer(app.store.keys.bucket(item.key), item.key);
    expect(packed!.subarray(18)).toEqual(Buffer.from(item.value, 'utf8'));
  }
  if (app.store.keys.partitions === 1) {
    const events = await streamEvents(app.redis, stream, last ? last[0] : '-');
    expect(events.map((e) => [e.key, e.value])).toEqual([...items.map((i) => [i.key, i.value]), ['enc:single:😀', 'ünïcödé 日本']]);
  }
});
