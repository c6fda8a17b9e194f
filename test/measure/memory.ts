// `npm run measure:memory`: Redis memory per key for kvql's layout, with redis.conf's listpack
// limit and with Redis's default (64), 16-byte keys and 100-byte values, as in the README.
// Usage: npm run measure:memory [-- <keys>]   (default 200000)
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { startTestRedis } from '../harness/redisServer.js';

const N = Number(process.argv[2] ?? 200_000);
const BATCH = 1000;

async function measure(label: string, extra: string[]): Promise<void> {
  const server = await startTestRedis(extra);
  const redis = createRedis(server.url, { commandTimeoutMs: 60_000 });
  await redis.connect();
  try {
    const store = await KvStore.open(redis, { prefix: 'm', partitions: 1 });
    const used = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
    const before = await used();
    for (let i = 0; i < N; i += BATCH) {
      const items = Array.from({ length: Math.min(BATCH, N - i) }, (_, j) => ({
        key: `key:${String(i + j).padStart(12, '0')}`, // 16 bytes
        value: 'v'.repeat(100),
      }));
      await store.batchPut(items);
    }
    const perKey = ((await used()) - before) / N;
    console.log(`${label.padEnd(36)} ${perKey.toFixed(1)} bytes/key  (${N} keys, raw data 116 bytes/key)`);
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

await measure('redis.conf (hash-max-listpack-value 4096)', []);
await measure('Redis default (hash-max-listpack-value 64)', ['--hash-max-listpack-value', '64']);
