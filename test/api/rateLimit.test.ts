// Per-token rate limits (store/lua/rateLimit.lua, KvStore.rateLimit, auth/rateLimit.ts) against
// real Redis: the shared one (or, in the cluster project, the Redis Cluster) for the algorithm
// and its consistency across two API processes' connections; redis-servers of this file's own
// for what needs one (command counts, an outage, a full Redis).
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { clusterSeedsFromEnv, uniquePrefix } from '../harness/app.js';
import { startTestRedis, type TestRedis } from '../harness/redisServer.js';
import { createRedis, type RedisClient } from '../../src/store/redis.js';
import { rateLimitKey } from '../../src/store/keys.js';
import { KvStore, type RateLimitSpec } from '../../src/store/store.js';
import {
  RATE_LIMITED,
  RateLimiter,
  leaseSize,
  rateLimitError,
  rateLimitRefusal,
  rateLimitedBody,
  retryAfterSeconds,
  type RateLimiterLogger,
} from '../../src/auth/rateLimit.js';
import type { Principal } from '../../src/auth/tokens.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const opened: { store: KvStore; redis: RedisClient }[] = [];

/** A connection of its own and a store on it: what one API process has. */
async function openStore(prefix: string, url?: string): Promise<{ store: KvStore; redis: RedisClient }> {
  const seeds = url === undefined ? clusterSeedsFromEnv() : undefined;
  const redis: RedisClient = seeds
    ? createRedis({ clusterNodes: seeds }, { commandTimeoutMs: 2000 })
    : createRedis(url ?? inject('redisUrl'), { commandTimeoutMs: 2000 });
  redis.on('error', () => {});
  await redis.connect();
  const store = await KvStore.open(redis, { prefix, partitions: 1, buckets: 5 });
  const s = { store, redis };
  opened.push(s);
  return s;
}

afterAll(() => {
  for (const { store, redis } of opened) {
    store.close();
    redis.disconnect();
  }
});

let tokenCounter = 0;
const freshToken = (name: string) => `${name}-${tokenCounter++}`;

describe('rateLimit.lua through KvStore.rateLimit', () => {
  let prefix: string;
  let store: KvStore;
  let redis: RedisClient;

  beforeAll(async () => {
    prefix = uniquePrefix('ratelimit');
    ({ store, redis } = await openStore(prefix));
  });

  it('gives a token exactly its burst at once, then refuses with the wait, then passes again', async () => {
    const id = freshToken('req');
    // 1 request per second, 5 s of burst: 5 at once; the 6th must wait about 1 s.
    const limit: RateLimitSpec = { requestsPerSecond: 1, burstSeconds: 5 };
    const outcomes = [];
    for (let i = 0; i < 8; i++) outcomes.push(await store.rateLimit(id, limit, 0));
    expect(outcomes.slice(0, 5)).toEqual(Array(5).fill({ ok: true }));
    for (const o of outcomes.slice(5)) {
      expect(o.ok).toBe(false);
      const wait = (o as { retryAfterMs: number }).retryAfterMs;
      expect(wait).toBeGreaterThan(800);
      expect(wait).toBeLessThanOrEqual(1000);
    }
    // Refusals consumed nothing: the waits do not grow.
    const waits = outcomes.slice(5).map((o) => (o as { retryAfterMs: number }).retryAfterMs);
    expect(waits[2]!).toBeLessThanOrEqual(waits[0]!);

    const again = (await store.rateLimit(id, limit, 0)) as { retryAfterMs: number };
    await sleep(again.retryAfterMs + 15);
    expect(await store.rateLimit(id, limit, 0)).toEqual({ ok: true });
    // One request's worth drained, and it is used: refused again.
    expect((await store.rateLimit(id, limit, 0)).ok).toBe(false);
  });

  it('counts a burst that rounds (3 requests of 1/3 s in 1 s) exactly, and a burst under one request as one', async () => {
    const id = freshToken('third');
    const limit = { requestsPerSecond: 3, burstSeconds: 1 };
    const got = [];
    for (let i = 0; i < 4; i++) got.push((await store.rateLimit(id, limit, 0)).ok);
    expect(got).toEqual([true, true, true, false]);

    // 2 per second with a burst of 0.001 s (0.002 requests): one request per 0.5 s.
    const tiny = freshToken('tiny');
    const small = { requestsPerSecond: 2, burstSeconds: 0.001 };
    expect(await store.rateLimit(tiny, small, 0)).toEqual({ ok: true });
    const refused = (await store.rateLimit(tiny, small, 0)) as { retryAfterMs: number };
    expect(refused.retryAfterMs).toBeGreaterThan(400);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(500);
  });

  it('limits bytes likewise, and answers tooLarge for one request over the byte burst', async () => {
    const id = freshToken('bytes');
    // 1000 bytes per second, burst 1 s: 1000 bytes at once.
    const limit = { bytesPerSecond: 1000, burstSeconds: 1 };
    expect(await store.rateLimit(id, limit, 400)).toEqual({ ok: true });
    expect(await store.rateLimit(id, limit, 400)).toEqual({ ok: true });
    const refused = (await store.rateLimit(id, limit, 400)) as { ok: false; retryAfterMs: number };
    expect(refused.ok).toBe(false);
    // 200 bytes must drain at 1000 bytes/s: about 200 ms.
    expect(refused.retryAfterMs).toBeGreaterThan(150);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(200);
    // Small requests still fit (requests are not limited here).
    expect(await store.rateLimit(id, limit, 100)).toEqual({ ok: true });
    expect(await store.rateLimit(id, limit, 0)).toEqual({ ok: true });

    await sleep(refused.retryAfterMs + 120);
    expect(await store.rateLimit(id, limit, 400)).toEqual({ ok: true });

    // Over the burst alone: never, whatever the wait. A distinct answer, nothing consumed.
    const big = freshToken('big');
    expect(await store.rateLimit(big, limit, 1001)).toEqual({ ok: false, tooLarge: true, maxBytes: 1000 });
    expect(await redis.exists(rateLimitKey(prefix, big))).toBe(0);
    expect(await store.rateLimit(big, limit, 1000)).toEqual({ ok: true });
    // A full bucket does not turn a too-large request into a wait.
    expect(await store.rateLimit(big, limit, 5000)).toEqual({ ok: false, tooLarge: true, maxBytes: 1000 });
  });

  it('a refusal in one dimension consumes nothing in the other', async () => {
    const id = freshToken('both');
    const key = rateLimitKey(prefix, id);
    // 2 requests and 2000 bytes at once.
    const limit = { requestsPerSecond: 1, bytesPerSecond: 1000, burstSeconds: 2 };
    // The buckets refill while the test runs: bounds below allow for the time it took (a loaded
    // machine once took 60 ms between these calls), measured rather than guessed.
    const t0 = Date.now();
    const elapsed = () => Date.now() - t0 + 5;
    expect(await store.rateLimit(id, limit, 1900)).toEqual({ ok: true });
    const state = await redis.hgetall(key);

    // Refused by bytes: the request it would have counted is not counted...
    const byBytes = (await store.rateLimit(id, limit, 500)) as { retryAfterMs: number };
    expect(byBytes.retryAfterMs).toBeGreaterThan(400 - elapsed());
    expect(byBytes.retryAfterMs).toBeLessThanOrEqual(400);
    expect(await redis.hgetall(key)).toEqual(state);
    // ...so one more request (of few bytes) still fits in the request burst of 2.
    expect(await store.rateLimit(id, limit, 50)).toEqual({ ok: true });
    const state2 = await redis.hgetall(key);

    // Refused by requests: its bytes are not counted either (the state is not written at all).
    const byRequests = (await store.rateLimit(id, limit, 10)) as { retryAfterMs: number };
    expect(byRequests.retryAfterMs).toBeGreaterThan(1000 - elapsed());
    expect(byRequests.retryAfterMs).toBeLessThanOrEqual(1000);
    expect(await redis.hgetall(key)).toEqual(state2);
    // 1950 bytes at 1000/s, in microseconds, less the time elapsed.
    expect(Number(state2.b)).toBeGreaterThan(1_950_000 - elapsed() * 1000);
    expect(Number(state2.b)).toBeLessThanOrEqual(1_950_000);
  });

  it('sets the key to expire when the token would be idle, so it leaves nothing behind', async () => {
    const id = freshToken('idle');
    const key = rateLimitKey(prefix, id);
    expect(await redis.exists(key)).toBe(0);
    // 10 per second: one request is 100 ms of backlog.
    expect(await store.rateLimit(id, { requestsPerSecond: 10, burstSeconds: 1 }, 0)).toEqual({ ok: true });
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(50);
    expect(pttl).toBeLessThanOrEqual(101);
    // Three more: 400 ms of backlog.
    for (let i = 0; i < 3; i++) await store.rateLimit(id, { requestsPerSecond: 10, burstSeconds: 1 }, 0);
    const pttl4 = await redis.pttl(key);
    expect(pttl4).toBeGreaterThan(300);
    expect(pttl4).toBeLessThanOrEqual(401);
    await sleep(pttl4 + 100);
    expect(await redis.exists(key)).toBe(0);
  });

  it('asks Redis nothing for a limit without rates, and refuses bad arguments', async () => {
    expect(await store.rateLimit('x', { burstSeconds: 1 }, 10)).toEqual({ ok: true });
    await expect(store.rateLimit('bad id!', { requestsPerSecond: 1, burstSeconds: 1 }, 0)).rejects.toThrow(/invalid token id/);
    await expect(store.rateLimit('ok', { requestsPerSecond: 1, burstSeconds: 1 }, -1)).rejects.toThrow(/invalid byte count/);
    await expect(store.rateLimit('ok', { requestsPerSecond: 1, burstSeconds: 1 }, 1.5)).rejects.toThrow(/invalid byte count/);
    await expect(store.rateLimit('ok', { requestsPerSecond: 1, burstSeconds: 0 }, 0)).rejects.toThrow(/burstSeconds/);
  });

  it('holds across two API processes: two stores on two connections never exceed the limit together', async () => {
    const other = await openStore(prefix); // a second connection (a second set of node connections on a cluster)
    const id = freshToken('shared');
    const rate = 50;
    const burst = 0.2; // 10 at once
    const limit = { requestsPerSecond: rate, burstSeconds: burst };
    const stores = [store, other.store];
    const passes = [0, 0];
    let refusals = 0;
    /** When each request was sent (ms): where the loops stalled, no request asked. */
    const asks: number[] = [];
    const windowMs = 1200;
    const t0 = performance.now();
    const deadline = t0 + windowMs;
    // Four concurrent loops per store, as many requests of one token over two processes would be.
    const loops = stores.flatMap((s, i) =>
      Array.from({ length: 4 }, async () => {
        while (performance.now() < deadline) {
          asks.push(performance.now());
          const o = await s.rateLimit(id, limit, 0);
          if (o.ok) passes[i]!++;
          else refusals++;
        }
      }),
    );
    await Promise.all(loops);
    const elapsedS = (performance.now() - t0) / 1000;
    const total = passes[0]! + passes[1]!;
    const allowed = rate * burst + rate * elapsedS;
    // Never above the limit (plus one request of slack for the clocks' edges)...
    expect(total).toBeLessThanOrEqual(Math.floor(allowed) + 1);
    // ...and not far below what an exact bucket would have let through at the moments the loops
    // asked: it does limit rather than refuse everything. On a loaded machine the loops can stall
    // for longer than the burst (0.2 s), and a bucket does not keep what it could not hold, so
    // the bound follows the asks, not the clock (fresh-clone CI runs got 51 and 28 of the 70 a
    // steady 1.2 s would allow). Half of it: the bucket runs on Redis's clock, not this one's.
    expect(total).toBeGreaterThanOrEqual(Math.floor(exactBucket(asks, rate, rate * burst) * 0.5));
    expect(refusals).toBeGreaterThan(total); // the loops asked far more than the limit
    // Both processes got a share.
    expect(passes[0]).toBeGreaterThan(0);
    expect(passes[1]).toBeGreaterThan(0);
  });
});

/** How many of requests asked at `asks` (ms) a token bucket of `capacity`, refilled at `rate`/s, lets through. */
function exactBucket(asks: number[], rate: number, capacity: number): number {
  const sorted = [...asks].sort((a, b) => a - b);
  let tokens = capacity;
  let last = sorted[0] ?? 0;
  let passed = 0;
  for (const t of sorted) {
    tokens = Math.min(capacity, tokens + ((t - last) / 1000) * rate);
    last = t;
    if (tokens >= 1) {
      tokens -= 1;
      passed++;
    }
  }
  return passed;
}

describe('RateLimiter', () => {
  let server: TestRedis;
  let store: KvStore;
  let admin: Redis;
  const prefix = uniquePrefix('ratelimiter');

  beforeAll(async () => {
    server = await startTestRedis();
    ({ store } = await openStore(prefix, server.url));
    admin = new Redis(server.url);
    admin.on('error', () => {});
  });
  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });

  const scriptCalls = async (): Promise<number> => {
    const stats = await admin.info('commandstats');
    let n = 0;
    for (const cmd of ['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall']) {
      const m = new RegExp(`^cmdstat_${cmd}:calls=(\\d+)`, 'm').exec(stats);
      if (m) n += Number(m[1]);
    }
    return n;
  };

  it('costs a principal without limits nothing: no Redis call', async () => {
    const limiter = new RateLimiter(store);
    const free: Principal = { id: 'free', read: true, write: true, prefixes: [''] };
    // This Redis is fresh: a script's first call there is an EVALSHA that meets NOSCRIPT, then
    // an EVAL (scripts.ts). Load rateLimit.lua first, so that a check below is one call.
    await new RateLimiter(store).check({ ...free, id: 'warm', rateLimit: { requestsPerSecond: 100, burstSeconds: 1 } }, 10);
    const before = await scriptCalls();
    for (let i = 0; i < 100; i++) expect(await limiter.check(free, 1_000_000)).toEqual({ ok: true });
    expect(await scriptCalls()).toBe(before);
    expect(limiter.stats.checked).toBe(0);

    // The count does see a limited principal's check.
    const limited: Principal = { ...free, id: 'limited', rateLimit: { requestsPerSecond: 100, burstSeconds: 1 } };
    expect(await limiter.check(limited, 10)).toEqual({ ok: true });
    expect(await scriptCalls()).toBe(before + 1);
  });

  it('leases: a token with a high rate costs one Redis call per lease of LEASE_MS of its rate, not one per request', async () => {
    const limiter = new RateLimiter(store);
    const p: Principal = { id: freshToken('lease'), read: true, write: true, prefixes: [''], rateLimit: { requestsPerSecond: 1000, burstSeconds: 1 } };
    expect(leaseSize(p.rateLimit!, 0)).toEqual({ requests: 50, bytes: 0 });
    const before = await scriptCalls();
    for (let i = 0; i < 200; i++) expect(await limiter.check(p, 0)).toEqual({ ok: true });
    const calls = (await scriptCalls()) - before;
    expect(calls).toBeGreaterThanOrEqual(4);
    expect(calls).toBeLessThanOrEqual(5);
    expect(limiter.stats.leased).toBe(200 - limiter.stats.checked);
    // A low rate leases nothing: each request is asked about, exactly as without leases.
    expect(leaseSize({ requestsPerSecond: 10, burstSeconds: 1 }, 0)).toEqual({ requests: 1, bytes: 0 });
    expect(leaseSize({ bytesPerSecond: 100_000, burstSeconds: 1 }, 300)).toEqual({ requests: 1, bytes: 5000 });
    expect(leaseSize({ bytesPerSecond: 100_000, burstSeconds: 1 }, 9000)).toEqual({ requests: 1, bytes: 9000 });
  });

  it('leases: two processes leasing one token never exceed its limit together', async () => {
    const other = await openStore(prefix, server.url);
    const id = freshToken('lease-shared');
    const rate = 400;
    const limit = { requestsPerSecond: rate, burstSeconds: 0.25 }; // 100 at once; leases of 20
    const limiters = [new RateLimiter(store), new RateLimiter(other.store)];
    // One principal object per process, as each process authenticates the token itself.
    const principals: Principal[] = [0, 1].map(() => ({ id, read: true, write: true, prefixes: [''], rateLimit: limit }));
    const passes = [0, 0];
    const t0 = performance.now();
    const deadline = t0 + 1200;
    await Promise.all(
      limiters.flatMap((l, i) =>
        Array.from({ length: 4 }, async () => {
          while (performance.now() < deadline) {
            const v = await l.check(principals[i]!, 0);
            if (v.ok) passes[i]!++;
            else await new Promise((r) => setTimeout(r, 1));
          }
        }),
      ),
    );
    const elapsedS = (performance.now() - t0) / 1000;
    const total = passes[0]! + passes[1]!;
    // Every pass was paid for in Redis: never above the limit (one request of slack for the edges).
    expect(total).toBeLessThanOrEqual(Math.floor(rate * 0.25 + rate * elapsedS) + 1);
    // Not far below it either: at most one unspent lease per process is lost.
    expect(total).toBeGreaterThanOrEqual(Math.floor((rate * 0.25 + rate * elapsedS) * 0.8) - 2 * 20);
    expect(passes[0]).toBeGreaterThan(0);
    expect(passes[1]).toBeGreaterThan(0);
    // Leases served the burst; at the limit, single requests are asked about (one call each).
    expect(limiters[0]!.stats.leased + limiters[1]!.stats.leased).toBeGreaterThan(0);
  });

  it('answers RATE_LIMITED with Retry-After seconds, and PAYLOAD_TOO_LARGE for a request over the byte burst', async () => {
    const limiter = new RateLimiter(store);
    const p: Principal = { id: 'verdicts', read: true, write: true, prefixes: [''], rateLimit: { requestsPerSecond: 0.5, bytesPerSecond: 100, burstSeconds: 2 } };
    expect(await limiter.check(p, 10)).toEqual({ ok: true });
    const refused = await limiter.check(p, 10);
    expect(refused).toMatchObject({ ok: false, code: RATE_LIMITED, retryAfterSeconds: 2 });
    if (refused.ok || refused.code !== RATE_LIMITED) throw new Error('unreachable');
    expect(refused.retryAfterMs).toBeGreaterThan(1900);
    const answer = rateLimitRefusal(refused);
    expect(answer.status).toBe(429);
    expect(answer.headers['retry-after']).toBe('2');
    expect(JSON.parse(answer.body)).toEqual({
      errors: [{ message: expect.stringMatching(/rate limit.*retry in 2 s/), extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 2 } }],
    });
    expect(rateLimitError(refused).extensions).toEqual({ code: 'RATE_LIMITED', retryAfterSeconds: 2 });

    const tooLarge = await limiter.check(p, 201);
    expect(tooLarge).toEqual({ ok: false, code: 'PAYLOAD_TOO_LARGE', bytes: 201, maxBytes: 200 });
    if (tooLarge.ok) throw new Error('unreachable');
    const big = rateLimitRefusal(tooLarge);
    expect(big.status).toBe(413);
    expect(big.headers['retry-after']).toBeUndefined();
    expect(JSON.parse(big.body).errors[0]).toMatchObject({ message: expect.stringMatching(/201 bytes.*200 bytes.*never/), extensions: { code: 'PAYLOAD_TOO_LARGE', maxBytes: 200 } });
    expect(limiter.stats).toEqual({ checked: 3, leased: 0, refused: 1, tooLarge: 1, failed: 0 });
    expect(() => limiter.check(p, -1)).toThrow(RangeError);
  });

  it('fails open when Redis is down or hangs, logging once per interval', async () => {
    const lines: { level: string; obj: object; msg: string }[] = [];
    const logger: RateLimiterLogger = {
      warn: (obj, msg) => lines.push({ level: 'warn', obj, msg }),
      info: (obj, msg) => lines.push({ level: 'info', obj, msg }),
    };
    const limiter = new RateLimiter(store, { logger, logIntervalMs: 60_000, timeoutMs: 150 });
    const p: Principal = { id: 'outage', read: true, write: true, prefixes: [''], rateLimit: { requestsPerSecond: 1, burstSeconds: 1 } };
    expect(await limiter.check(p, 0)).toEqual({ ok: true });
    expect((await limiter.check(p, 0)).ok).toBe(false);

    // A hung Redis (SIGSTOP): each check passes after the limiter's timeout, not the command's.
    server.pause!();
    try {
      const t0 = performance.now();
      expect(await limiter.check(p, 0)).toEqual({ ok: true, unchecked: true });
      expect(performance.now() - t0).toBeLessThan(1000);
    } finally {
      server.resume!();
    }
    // A Redis that is gone: every check passes, unchecked, at once.
    await server.kill9();
    const t1 = performance.now();
    for (let i = 0; i < 20; i++) expect(await limiter.check(p, 0)).toEqual({ ok: true, unchecked: true });
    expect(performance.now() - t1).toBeLessThan(2000);
    expect(limiter.stats.failed).toBe(21);
    expect(lines.filter((l) => l.level === 'warn')).toHaveLength(1);
    expect(lines[0]!.msg).toMatch(/pass unchecked/);

    // Back: limiting resumes (the state may be gone with the crash), and the recovery is logged.
    await server.restart();
    const verdicts: boolean[] = [];
    for (let i = 0; i < 50 && !verdicts.includes(false); i++) {
      const v = await limiter.check(p, 0);
      if ('unchecked' in v) {
        await sleep(100); // ioredis reconnecting
        continue;
      }
      verdicts.push(v.ok);
    }
    expect(verdicts).toContain(false);
    expect(lines.at(-1)).toMatchObject({ level: 'info', msg: expect.stringMatching(/work again/) });
  });
});

describe('a full Redis (maxmemory, noeviction)', () => {
  let server: TestRedis;
  let store: KvStore;
  let admin: Redis;
  const prefix = uniquePrefix('ratelimit-oom');

  beforeAll(async () => {
    server = await startTestRedis(['--maxmemory', '3mb']);
    ({ store } = await openStore(prefix, server.url));
    admin = new Redis(server.url);
    admin.on('error', () => {});
  });
  afterAll(async () => {
    admin?.disconnect();
    await server?.stop();
  });

  it('goes on limiting: the script has allow-oom (one small hash per token)', async () => {
    // A shebang script without allow-oom that writes: refused at maxmemory (the proof it is full).
    const plainWrite = () => admin.eval('#!lua\nreturn redis.call("SET", KEYS[1], "x")', 1, `${prefix}:probe`);
    let filled = false;
    for (let i = 0; i < 20_000 && !filled; i++) {
      try {
        await admin.set(`${prefix}:fill:${i}`, 'x'.repeat(2000));
      } catch (err) {
        expect(String(err)).toMatch(/OOM/);
        filled = true;
      }
    }
    expect(filled).toBe(true);
    await admin.script('FLUSH'); // and ioredis must send the script by EVAL: its flags are read there
    let proven = false;
    for (let attempt = 0; attempt < 10 && !proven; attempt++) {
      await expect(plainWrite()).rejects.toThrow(/OOM/);
      const id = freshToken('oom');
      const limit = { requestsPerSecond: 1, burstSeconds: 2 };
      const got = [await store.rateLimit(id, limit, 0), await store.rateLimit(id, limit, 0), await store.rateLimit(id, limit, 0)];
      // Still full after it (memory drifts near maxmemory: try again if Redis freed some meanwhile).
      proven = await plainWrite().then(
        () => false,
        (err) => /OOM/.test(String(err)),
      );
      expect(got.map((o) => o.ok)).toEqual([true, true, false]);
    }
    expect(proven).toBe(true);
    expect(await admin.info('stats')).toMatch(/evicted_keys:0\r?\n/);
  });
});

describe('Retry-After and the 429 body', () => {
  it('rounds the wait up to whole seconds, at least 1', () => {
    expect([0, 1, 999, 1000, 1001, 2500].map(retryAfterSeconds)).toEqual([1, 1, 1, 1, 2, 3]);
  });

  it('builds the body as admission.ts builds OVERLOADED', () => {
    expect(JSON.parse(rateLimitedBody(3))).toEqual({
      errors: [{ message: "this token's rate limit is exceeded; retry in 3 s", extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 3 } }],
    });
  });
});
