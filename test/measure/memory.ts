// `npm run measure:memory`: Redis memory per key for kvql's layout (with redis.conf's listpack
// limit and with Redis's default of 64), and per change-feed event, for 16-byte keys and
// 100-byte values, as quoted in the README.
// Usage: npm run measure:memory [-- <keys>]   (default 200000)
import type { Redis } from 'ioredis';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { startTestRedis } from '../harness/redisServer.js';
import { BATCH, key, loadKeys, usedMemory, VALUE } from './dataset.js';

const N = Number(process.argv[2] ?? 200_000);

async function withStore(extra: string[], feedRetention: number, run: (store: KvStore, used: () => Promise<number>) => Promise<void>) {
  const server = await startTestRedis(extra);
  const redis: Redis = createRedis(server.url, { commandTimeoutMs: 60_000 });
  await redis.connect();
  try {
    const store = await KvStore.open(redis, { prefix: 'm', partitions: 1, feedRetention });
    await run(store, () => usedMemory(redis));
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

/** Bytes per key of the data alone: the feed keeps (almost) nothing. */
async function perKey(label: string, extra: string[]): Promise<void> {
  await withStore(extra, 1, async (store, used) => {
    const before = await used();
    await loadKeys(store, 0, N);
    const bytes = ((await used()) - before) / N;
    console.log(`${label.padEnd(46)} ${bytes.toFixed(1)} bytes/key    (${N} keys; raw data 116 bytes/key)`);
  });
}

/** Bytes per retained change event: rewrites of the same keys, so the data does not grow. */
async function perEvent(): Promise<void> {
  await withStore([], N + BATCH, async (store, used) => {
    await store.batchPut(Array.from({ length: BATCH }, (_, j) => ({ key: key(j), value: VALUE })));
    const before = await used();
    for (let i = 0; i < N; i += BATCH) {
      await store.batchPut(Array.from({ length: BATCH }, (_, j) => ({ key: key(j), value: VALUE })));
    }
    const bytes = ((await used()) - before) / N;
    console.log(`${'change feed, per retained PUT event'.padEnd(46)} ${bytes.toFixed(1)} bytes/event  (${N} events)`);
  });
}

await perKey('data, redis.conf (hash-max-listpack-value 4096)', []);
await perKey('data, Redis default (hash-max-listpack-value 64)', ['--hash-max-listpack-value', '64']);
await perEvent();
