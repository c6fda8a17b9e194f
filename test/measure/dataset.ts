// The dataset the measurements and the benchmark load: 16-byte keys (`key:` and 12 digits, so
// their byte order is their number order) with 100-byte values, written through the store's
// batchPut in batches of 1,000 (one script, one fsync, each).
import type { Redis } from 'ioredis';
import type { KvStore } from '../../src/store/store.js';

export const BATCH = 1000;
export const VALUE = 'v'.repeat(100);

/** The i-th key: 16 bytes. */
export const key = (i: number): string => `key:${String(i).padStart(12, '0')}`;

/** Writes keys [from, to) with VALUE through batchPut, BATCH at a time. */
export async function loadKeys(store: KvStore, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i += BATCH) {
    await store.batchPut(Array.from({ length: Math.min(BATCH, to - i) }, (_, j) => ({ key: key(i + j), value: VALUE })));
  }
}

/** Redis's used_memory, in bytes. */
export async function usedMemory(redis: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
}
