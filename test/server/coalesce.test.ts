// Coalesced writes (src/store/coalesce.ts): on a busy connection, the commands of one turn of the
// event loop reach the socket in one write; on an idle one, a command is written at once.
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createRedis, duplicateClient } from '../../src/store/redis.js';
import { uniquePrefix } from '../harness/app.js';

const prefix = uniquePrefix('coalesce');
let redis: Redis;

/** Counts the writes that reach the socket itself (one per system call Node makes). */
function countSocketWrites(client: Redis): { readonly n: number } {
  const socket = (client as unknown as { stream: Socket & { _write: Function; _writev: Function } }).stream;
  const counter = { n: 0 };
  for (const method of ['_write', '_writev'] as const) {
    const original = socket[method];
    socket[method] = function (this: Socket, ...args: unknown[]) {
      counter.n++;
      return original.apply(this, args);
    };
  }
  return counter;
}

beforeAll(async () => {
  redis = createRedis(inject('redisUrl'), { commandTimeoutMs: 2000 });
  await redis.connect();
  await redis.set(`${prefix}:k`, 'v');
});
afterAll(async () => {
  await redis.del(`${prefix}:k`);
  redis.disconnect();
});

it('writes a command at once when nothing is outstanding', async () => {
  const writes = countSocketWrites(redis);
  for (let i = 0; i < 5; i++) {
    const reply = redis.get(`${prefix}:k`);
    // Already on the socket, before any later turn of the loop.
    expect(writes.n).toBe(i + 1);
    expect(await reply).toBe('v');
  }
});

it('sends the commands issued while replies are outstanding in one write, each with its own reply', async () => {
  const writes = countSocketWrites(redis);
  const first = redis.get(`${prefix}:k`);
  expect(writes.n).toBe(1);
  const rest = Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? redis.get(`${prefix}:k`) : redis.exists(`${prefix}:k`)));
  // Held until the loop's check phase...
  expect(writes.n).toBe(1);
  expect(await first).toBe('v');
  expect(await Promise.all(rest)).toEqual(Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? 'v' : 1)));
  // ...then written together.
  expect(writes.n).toBe(2);
});

it('coalesces on a duplicated connection and again after a reconnect', async () => {
  const dup = duplicateClient(redis, 2000) as Redis;
  try {
    await dup.connect();
    for (let round = 0; round < 2; round++) {
      const writes = countSocketWrites(dup);
      const all = Array.from({ length: 20 }, () => dup.get(`${prefix}:k`));
      expect(await Promise.all(all)).toEqual(Array.from({ length: 20 }, () => 'v'));
      expect(writes.n).toBe(2);
      if (round === 0) {
        const ready = new Promise((resolve) => dup.once('ready', resolve));
        dup.disconnect(true);
        await ready;
      }
    }
  } finally {
    dup.disconnect();
  }
});
