// `npm run measure:recovery`: how long Redis takes from a crash (kill -9) to answering again,
// with kvql's data in the AOF: once right after BGREWRITEAOF (an RDB-preamble base file, as
// redis.conf's auto-rewrite keeps it), once with every write still in the incremental file.
// 16-byte keys, 100-byte values, KV_FEED_RETENTION's default.
// Usage: npm run measure:recovery [-- <keys> ...]   (default 1000000 5000000)
import { statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import { waitReady } from '../../src/managedRedis.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { startTestRedis, type TestRedis } from '../harness/redisServer.js';
import { loadKeys, usedMemory } from './dataset.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Bytes of the AOF (base and incremental files) in a Redis data directory. */
export function aofBytes(dir: string): number {
  const aofDir = join(dir, 'appendonlydir');
  return readdirSync(aofDir).reduce((n, f) => n + statSync(join(aofDir, f)).size, 0);
}

async function connect(server: TestRedis): Promise<Redis> {
  const redis = createRedis(server.url, { commandTimeoutMs: 120_000 });
  await redis.connect();
  return redis;
}

/** kill -9, start again, and time until PING answers (past LOADING): seconds. */
export async function crashAndTime(server: TestRedis): Promise<number> {
  await server.kill9();
  const t0 = performance.now();
  await server.restart();
  await waitReady(server.port, 30 * 60_000);
  return (performance.now() - t0) / 1000;
}

/** Waits until Redis runs no AOF rewrite and has none scheduled (at most `ms`). */
export async function rewriteDone(redis: Redis, ms = Infinity, pollMs = 200): Promise<void> {
  const until = performance.now() + ms;
  while (/aof_rewrite_in_progress:1|aof_rewrite_scheduled:1/.test(await redis.info('persistence')) && performance.now() < until) await sleep(pollMs);
}

/** BGREWRITEAOF, and wait until it is done. */
export async function rewriteAof(redis: Redis): Promise<void> {
  await rewriteDone(redis);
  await redis.bgrewriteaof();
  await rewriteDone(redis);
}

/**
 * INFO persistence's AOF figures: the file's size now and right after the last rewrite, and how
 * many rewrites Redis has run since it started (0 for a field it does not give).
 */
export async function aofInfo(redis: Redis): Promise<{ current: number; base: number; rewrites: number }> {
  const info = await redis.info('persistence');
  const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return { current: field('aof_current_size'), base: field('aof_base_size'), rewrites: field('aof_rewrites') };
}

/**
 * BGREWRITEAOF, and wait until it is done, when the AOF has grown past `factor` times its size
 * after the last rewrite. Says whether it did.
 */
export async function rewriteIfGrown(redis: Redis, factor: number): Promise<boolean> {
  const { current, base } = await aofInfo(redis);
  if (base === 0 || current <= factor * base) return false;
  await rewriteAof(redis);
  return true;
}

async function measure(n: number): Promise<void> {
  const server = await startTestRedis(['--auto-aof-rewrite-percentage', '0']);
  try {
    let redis = await connect(server);
    const store = await KvStore.open(redis, { prefix: 'r', partitions: 1 });
    const loadStart = performance.now();
    await loadKeys(store, 0, n);
    const loadSeconds = (performance.now() - loadStart) / 1000;
    const usedBytes = await usedMemory(redis);
    const incrBytes = aofBytes(server.dir);
    redis.disconnect();
    const incrSeconds = await crashAndTime(server);

    redis = await connect(server);
    await rewriteAof(redis);
    const baseBytes = aofBytes(server.dir);
    const keys = await redis.zcard('{r:0}:i');
    redis.disconnect();
    const baseSeconds = await crashAndTime(server);

    const gb = usedBytes / 2 ** 30;
    console.log(
      `${n} keys: loaded in ${loadSeconds.toFixed(1)} s (${Math.round(n / loadSeconds)} keys/s through batchPut); ` +
        `used_memory ${(usedBytes / 2 ** 20).toFixed(0)} MiB; index holds ${keys}\n` +
        `  after BGREWRITEAOF (AOF ${(baseBytes / 2 ** 20).toFixed(0)} MiB): crash -> ready in ${baseSeconds.toFixed(2)} s = ${(baseSeconds / gb).toFixed(2)} s per GiB of memory\n` +
        `  all in the incremental AOF (${(incrBytes / 2 ** 20).toFixed(0)} MiB): crash -> ready in ${incrSeconds.toFixed(2)} s = ${(incrSeconds / gb).toFixed(2)} s per GiB`,
    );
  } finally {
    await server.stop();
  }
}

// Run only as a script; the benchmark (bench/run.ts) imports the helpers above.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  for (const n of sizes.length > 0 ? sizes : [1_000_000, 5_000_000]) await measure(n);
}
