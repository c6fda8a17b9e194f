// `npm run measure:memory`: Redis memory per key for kvql's layout (bucketed hashes plus the
// sorted-set index), for 16-byte keys and 100-byte values, as quoted in the README: with the
// bucket count the sizing rule gives (keys / 30), with the default KV_BUCKETS (32768), with
// too few buckets (over 1024 keys each: hashtables), with Redis's default listpack limits
// instead of redis.conf's; and per change-feed event.
// Usage: npm run measure:memory [-- <keys> [<buckets>]]   (default 200000 keys, keys/30 buckets)
import type { Redis } from 'ioredis';
import { createRedis } from '../../src/store/redis.js';
import { DEFAULT_BUCKETS } from '../../src/store/keys.js';
import { KvStore } from '../../src/store/store.js';
import { startTestRedis } from '../harness/redisServer.js';
import { BATCH, key, loadKeys, usedMemory, VALUE } from './dataset.js';

const N = Number(process.argv[2] ?? 200_000);
const SIZED = Number(process.argv[3] ?? Math.max(1, Math.round(N / 30)));

async function withStore(
  extra: string[],
  buckets: number,
  feedRetention: number,
  run: (store: KvStore, redis: Redis, used: () => Promise<number>) => Promise<void>,
) {
  const server = await startTestRedis(extra);
  const redis: Redis = createRedis(server.url, { commandTimeoutMs: 60_000 });
  await redis.connect();
  try {
    const store = await KvStore.open(redis, { prefix: 'm', partitions: 1, buckets, feedRetention });
    await run(store, redis, () => usedMemory(redis));
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

/** Bytes per key of the data alone: the feed keeps (almost) nothing. */
async function perKey(label: string, buckets: number, extra: string[]): Promise<void> {
  await withStore(extra, buckets, 1, async (store, redis, used) => {
    const before = await used();
    await loadKeys(store, 0, N);
    const bytes = ((await used()) - before) / N;
    const index = Number(await redis.memory('USAGE', store.keys.index(0), 'SAMPLES', 0)) / N;
    const perBucket = (N / buckets).toFixed(0);
    console.log(
      `${label.padEnd(56)} ${bytes.toFixed(1)} bytes/key  (${N} keys, ${buckets} buckets, ~${perBucket} keys/bucket; ` +
        `of which index ${index.toFixed(1)}; raw data 116 bytes/key)`,
    );
  });
}

/**
 * Bytes per retained change event: rewrites of the same keys, so the data does not grow. Events
 * of batches share stream entries (one per 64 KiB of events); a put's event is an entry of its own.
 */
async function perEvent(label: string, events: number, perWrite: number): Promise<void> {
  await withStore([], SIZED, events + BATCH, async (store, _redis, used) => {
    await store.batchPut(Array.from({ length: BATCH }, (_, j) => ({ key: key(j), value: VALUE })));
    const before = await used();
    for (let i = 0; i < events; i += perWrite) {
      await store.batchPut(Array.from({ length: perWrite }, (_, j) => ({ key: key((i + j) % BATCH), value: VALUE })));
    }
    const bytes = ((await used()) - before) / events;
    console.log(`${label.padEnd(56)} ${bytes.toFixed(1)} bytes/event  (${events} events)`);
  });
}

await perKey('data, redis.conf, buckets = keys / 30', SIZED, []);
if (SIZED !== DEFAULT_BUCKETS) await perKey(`data, redis.conf, default KV_BUCKETS`, DEFAULT_BUCKETS, []);
await perKey('data, redis.conf, buckets = keys / 2000 (hashtables)', Math.max(1, Math.round(N / 2000)), []);
await perKey('data, Redis default listpack limits (128 entries, 64 B)', SIZED, [
  '--hash-max-listpack-entries', '128', '--hash-max-listpack-value', '64',
]);
await perEvent(`change feed, per retained PUT event, batches of ${BATCH}`, N, BATCH);
await perEvent('change feed, per retained PUT event, one put per write', Math.min(N, 20_000), 1);
