// A Redis for a benchmark: from redis.conf in a temp dir (startTestRedis), holding keys
// 0 .. keys-1 of the bench's dataset (test/measure/dataset.ts) in kvql's keyspace KV_PREFIX,
// one partition, loaded through the store's batchPut.
import { createRedis } from '../src/store/redis.js';
import { KvStore } from '../src/store/store.js';
import { startTestRedis, type TestRedis } from '../test/harness/redisServer.js';
import { loadKeys } from '../test/measure/dataset.js';
import { KV_PREFIX } from './rawRedis.js';

export async function startLoadedRedis(keys: number): Promise<TestRedis> {
  const server = await startTestRedis();
  try {
    const redis = createRedis(server.url, { commandTimeoutMs: 120_000 });
    await redis.connect();
    try {
      await loadKeys(await KvStore.open(redis, { prefix: KV_PREFIX, partitions: 1 }), 0, keys);
    } finally {
      redis.disconnect();
    }
    return server;
  } catch (err) {
    await server.stop();
    throw err;
  }
}
