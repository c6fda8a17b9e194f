// `npm run bench:auth`: what security costs on the hot path, in one bounded run on 127.0.0.1.
//
// One Redis (redis.conf, appendfsync always) with 100,000 loaded keys, and two kvql API
// processes on it: one without tokens (auth off, as `npm run bench` runs it) and one with
// KV_TOKENS holding two admin tokens, one of them with a rate limit far above what this machine
// can send (none of its requests is refused; it pays the Redis check once per lease, see
// src/auth/rateLimit.ts). The load driver
// (bench/driver.ts, its own process) runs get and put at each concurrency against the three:
//   no auth | token | token + rate limit
// in rounds, interleaved, so that the machine's drift falls on all three alike. Each figure is
// printed beside the no-auth one of its round, as a ratio.
//
// Usage: npm run bench:auth [-- --seconds S] [--rounds N] [--concurrency 1,32]
import { parseArgs } from 'node:util';
import { newToken } from '../src/auth/tokens.js';
import { createRedis } from '../src/store/redis.js';
import { KvStore } from '../src/store/store.js';
import { startApiProcess, type ApiProcess } from '../test/harness/apiProcess.js';
import { startTestRedis, type TestRedis } from '../test/harness/redisServer.js';
import { loadKeys } from '../test/measure/dataset.js';
import { startDriver, type Driver, type Figure, type Op } from './driver.js';
import { KV_PREFIX } from './rawRedis.js';

const { values } = parseArgs({ options: { seconds: { type: 'string' }, rounds: { type: 'string' }, concurrency: { type: 'string' } } });
const SECONDS = Number(values.seconds ?? '8');
const ROUNDS = Number(values.rounds ?? '2');
const CONCURRENCY = (values.concurrency ?? '1,32').split(',').map(Number);
const KEYS = 100_000;
const OPS: Op[] = ['get', 'put'];

const plain = newToken('bench', ['admin'], []);
const limited = newToken('bench-limited', ['admin'], []);
const limitedEntry = { ...limited.entry, rateLimit: { requestsPerSecond: 1_000_000, bytesPerSecond: 1_000_000_000_000, burstSeconds: 60 } };

const log = (line: string) => process.stdout.write(`${line}\n`);
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

let redis: TestRedis | undefined;
const apis: ApiProcess[] = [];
let driver: Driver | undefined;

async function main(): Promise<void> {
  const t0 = performance.now();
  redis = await startTestRedis();
  const client = createRedis(redis.url, { commandTimeoutMs: 60_000 });
  await client.connect();
  const store = await KvStore.open(client, { prefix: KV_PREFIX, partitions: 1 });
  await loadKeys(store, 0, KEYS);
  client.disconnect();
  const open = await startApiProcess({ redisUrl: redis.url, prefix: KV_PREFIX, partitions: 1, env: { NODE_ENV: 'production' } });
  apis.push(open);
  const authed = await startApiProcess({
    redisUrl: redis.url,
    prefix: KV_PREFIX,
    partitions: 1,
    env: { NODE_ENV: 'production', KV_TOKENS: JSON.stringify([plain.entry, limitedEntry]) },
  });
  apis.push(authed);
  driver = await startDriver();
  const variants = [
    { name: 'no auth', target: open.url, authorization: undefined },
    { name: 'token', target: authed.url, authorization: `Bearer ${plain.token}` },
    { name: 'token + rate limit', target: authed.url, authorization: `Bearer ${limited.token}` },
  ];
  log(`bench:auth: ${KEYS.toLocaleString('en-US')} keys, ${SECONDS} s per measurement, ${ROUNDS} rounds, interleaved`);
  log(`${'round'.padEnd(6)}${'operation'.padEnd(11)}${'conc'.padStart(5)}  ${'variant'.padEnd(20)}${'ops/s'.padStart(9)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'vs no auth'.padStart(12)}${'errors'.padStart(8)}`);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const op of OPS) {
      for (const concurrency of CONCURRENCY) {
        let base: Figure | undefined;
        for (const v of variants) {
          const f = await driver.run({
            system: 'kvql',
            op,
            concurrency,
            items: 1,
            seconds: SECONDS,
            warmupSeconds: 2,
            loadedKeys: KEYS,
            target: v.target,
            ...(v.authorization ? { authorization: v.authorization } : {}),
          });
          base ??= f;
          log(
            `${String(round).padEnd(6)}${op.padEnd(11)}${String(concurrency).padStart(5)}  ${v.name.padEnd(20)}${fmt(f.opsPerSec).padStart(9)}${fmt(f.p50Ms, 3).padStart(9)}${fmt(f.p99Ms, 2).padStart(9)}${fmt(f.opsPerSec / base.opsPerSec, 3).padStart(12)}${String(f.errors).padStart(8)}`,
          );
        }
      }
    }
  }
  log(`done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

async function cleanup(): Promise<void> {
  await driver?.stop().catch(() => {});
  for (const api of apis) await api.stop().catch(() => {});
  await redis?.stop().catch(() => {});
}

process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
main().then(
  () => cleanup(),
  async (err: unknown) => {
    process.stderr.write(`bench:auth failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanup();
    process.exit(1);
  },
);
