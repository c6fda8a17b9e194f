// `npm run measure:buckets`: what the bucket count (KV_BUCKETS) costs in memory and in Redis's
// CPU per write, at one dataset size. One Redis from a copy of redis.conf holds one keyspace per
// bucket count, each loaded with the same keys (16-byte keys, 100-byte values, as
// measure:memory); then rounds of batchPuts of 1,000 new random keys go to each keyspace in
// turn (each round starting with the next), and Redis's CPU time (/proc) per batch is summed
// per keyspace. Alternating within one Redis puts the machine's drift on every count alike.
// Usage: npm run measure:buckets [-- <keys> [<counts, comma-separated>] [<rounds>]]
//        (default 1000000 keys, 10000,16384,32768,65536 buckets, 12 rounds of 20 batches;
//        0 rounds: the memory only)
import type { Redis } from 'ioredis';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { startTestRedis } from '../harness/redisServer.js';
import { cpuMs } from './cpu.js';
import { BATCH, key, loadKeys, usedMemory, VALUE } from './dataset.js';

const N = Number(process.argv[2] ?? 1_000_000);
const COUNTS = (process.argv[3] ?? '10000,16384,32768,65536').split(',').map(Number);
const ROUNDS = Number(process.argv[4] ?? 12);
const BATCHES_PER_ROUND = 20;

const server = await startTestRedis([]);
const redis: Redis = createRedis(server.url, { commandTimeoutMs: 60_000 });
await redis.connect();
try {
  const pid = Number(/process_id:(\d+)/.exec(await redis.info('server'))![1]);
  const stores: KvStore[] = [];
  for (const [i, buckets] of COUNTS.entries()) {
    // A feed that keeps (almost) nothing: the memory is the data's, as in measure:memory.
    const store = await KvStore.open(redis, { prefix: `b${i}`, partitions: 1, buckets, feedRetention: 1 });
    const before = await usedMemory(redis);
    await loadKeys(store, 0, N);
    const bytes = ((await usedMemory(redis)) - before) / N;
    console.log(`${String(buckets).padStart(7)} buckets (~${(N / buckets).toFixed(0)} keys each): ${bytes.toFixed(1)} bytes/key`);
    stores.push(store);
  }
  // New keys beyond the loaded ones, in random order: each lands in a random bucket, as a stream
  // of random writes does.
  const newKey = () => key(N + Math.floor(Math.random() * (1e12 - N)));
  const perRound: number[][] = COUNTS.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    const line: string[] = [];
    for (let k = 0; k < COUNTS.length; k++) {
      const s = (r + k) % COUNTS.length;
      const cpu0 = cpuMs(pid);
      for (let b = 0; b < BATCHES_PER_ROUND; b++) {
        await stores[s]!.batchPut(Array.from({ length: BATCH }, () => ({ key: newKey(), value: VALUE })));
      }
      perRound[s]!.push((cpuMs(pid) - cpu0) / BATCHES_PER_ROUND);
      line.push(`${COUNTS[s]} ${perRound[s]!.at(-1)!.toFixed(1)} ms`);
    }
    console.log(`round ${r + 1}: ${line.join(', ')}`);
  }
  if (ROUNDS > 0) {
    const median = (xs: number[]) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const mid = sorted.length >> 1;
      return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
    };
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    console.log(`Redis CPU per batch of ${BATCH} new keys, ${ROUNDS} rounds of ${BATCHES_PER_ROUND} (mean, median):`);
    for (const [i, buckets] of COUNTS.entries()) {
      console.log(`  ${String(buckets).padStart(7)} buckets: ${mean(perRound[i]!).toFixed(2)} ms, ${median(perRound[i]!).toFixed(2)} ms`);
    }
  }
} finally {
  redis.disconnect();
  await server.stop();
}
