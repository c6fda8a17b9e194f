// `npm run load-test`: drive the API at several times its capacity with mixed reads and writes,
// and show that it refuses the excess quickly (OVERLOADED) instead of collapsing.
//
// Starts its own Redis (redis.conf, appendfsync always) and the API as a separate process, on
// 127.0.0.1. Phases, each bounded in time:
//   0. warm-up: 32 clients for 3 s, not counted;
//   1. unloaded: one request at a time -> the unloaded latency;
//   2. capacity: 32 concurrent clients, closed loop -> the admitted requests/s the server
//      sustains (its capacity);
//   3. overload: an open loop at OVERLOAD x capacity (requests are sent on schedule whether or
//      not earlier ones returned; at most MAX_OUTSTANDING at once, the rest counted as not sent)
//      -> admitted/s, refused share, latency of admitted requests, API memory every second.
//   4. the price of an answer on the server's core: API + Redis CPU time per admitted request
//      (during phase 2), per refusal (every admission slot held while Redis is paused, 64
//      connections asking as fast as they can), and per answer of a bare node:http server
//      sending the same 503 (bench/bareRefusal.ts: Node's floor on this machine) -> how much of
//      the core answering everything offered in phase 3 would take.
// Mix: 70% get, 20% put, 10% range(first: 20), over 10,000 keys.
// Unless --shared: the server (API and Redis) runs on CPU 0 and this generator on CPU 1 (taskset),
// so that the load it offers is not taken out of the capacity it measures; on two cores the
// generator would otherwise compete with the server it overloads.
// Usage: npm run load-test [-- --seconds S --overload X | --rate R --outstanding N --shared --quick]
import { execFileSync, spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { defaultLoad } from '../src/config.js';
import { freePort, startTestRedis } from '../test/harness/redisServer.js';
import { startArgs } from '../test/harness/startCommand.js';
import { cpuMs } from '../test/measure/cpu.js';
import { httpClient } from './driver.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
// --quick: every phase short (npm test runs it, with --shared): a smoke run, not a measurement.
const QUICK = process.argv.includes('--quick');
const PHASE_MS = QUICK ? 1000 : 3000;
const SECONDS = arg('seconds', QUICK ? 2 : 15);
const OVERLOAD = arg('overload', 4);
// A fixed offered rate (requests/s) instead of OVERLOAD x the capacity measured: to compare
// server settings (KV_MAX_IN_FLIGHT, ...) that change the capacity they would be measured at.
const RATE = arg('rate', 0);
const MAX_OUTSTANDING = arg('outstanding', 512);
const KEYS = 10_000;
const PIN = !process.argv.includes('--shared') && cpus().length >= 2;

/** Pins a process and all its threads to one CPU. */
function pin(pid: number, cpu: number): void {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;
}

/** The API's request-duration histogram from /metrics, summed over operations: le -> count. */
async function serverHistogram(base: string): Promise<Map<number, number>> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const buckets = new Map<number, number>();
  for (const m of text.matchAll(/^kvql_graphql_request_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\d+)/gm)) {
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]));
  }
  return buckets;
}

/** The upper bound of the bucket holding the p-th percentile of what was recorded between two snapshots. */
function histogramPercentile(before: Map<number, number>, after: Map<number, number>, p: number): string {
  const les = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  for (const le of les) {
    if ((after.get(le) ?? 0) - (before.get(le) ?? 0) >= (p / 100) * total) return le === Infinity ? '> 10 s' : `<= ${le * 1000} ms`;
  }
  return 'n/a';
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main(): Promise<void> {
  const redis = await startTestRedis();
  const port = await freePort();
  const api = spawn(process.execPath, startArgs(), {
    env: { ...process.env, REDIS_URL: redis.url, PORT: String(port), KV_PREFIX: 'load', NODE_ENV: 'production', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}/graphql`;
  if (PIN) {
    pin(redis.pid!, 0);
    pin(process.pid, 1);
  }
  try {
    for (let t = 0; !(await fetch(`http://127.0.0.1:${port}/ready`).then((r) => r.ok, () => false)); t++) {
      if (t > 300) throw new Error('the API did not become ready');
      await sleep(100);
    }
    // Once it runs: the API's threads (libuv's pool, V8's) exist by now.
    if (PIN) pin(api.pid!, 0);
    // Seed the keys.
    for (let i = 0; i < KEYS; i += 1000) {
      const items = Array.from({ length: 1000 }, (_, j) => ({ key: `k${i + j}`, value: 'x'.repeat(100) }));
      await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: 'mutation($i:[PutInput!]!){ batchPut(items:$i){ version } }', variables: { i: items } }),
      });
    }

    // The bench's keep-alive client (httpClient): the generator shares the cores, so its cost per
    // request matters.
    const client = httpClient(url, MAX_OUTSTANDING);
    let seq = 0;
    const request = async (): Promise<{ status: number; ms: number; code?: string }> => {
      const r = seq++ % 10;
      const key = `k${Math.floor(Math.random() * KEYS)}`;
      const body =
        r < 7
          ? { query: 'query($k:String!){ get(key:$k){ value version } }', variables: { k: key } }
          : r < 9
            ? { query: 'mutation($k:String!,$v:String!){ put(key:$k, value:$v){ version } }', variables: { k: key, v: 'y'.repeat(100) } }
            : { query: 'query($s:String!){ range(start:$s, first:20){ edges { node { key } } } }', variables: { s: key } };
      const t0 = now();
      try {
        const res = await client.send('/graphql', JSON.stringify(body));
        const json = JSON.parse(res.text) as { errors?: { extensions?: { code?: string } }[] };
        return { status: res.status, ms: now() - t0, code: json.errors?.[0]?.extensions?.code };
      } catch {
        return { status: 0, ms: now() - t0, code: 'NETWORK' };
      }
    };

    // 0. Warm-up, not counted (the JIT, the caches): a cold server would overstate its unloaded
    // latency and understate its capacity, and so the overload.
    const closedLoop = async (ms: number) => {
      let ok = 0;
      const end = now() + ms;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (now() < end) if ((await request()).status === 200) ok++;
        }),
      );
      return ok;
    };
    await closedLoop(PHASE_MS);

    // 1. Unloaded latency.
    const unloaded: number[] = [];
    for (const end = now() + PHASE_MS; now() < end; ) unloaded.push((await request()).ms);
    unloaded.sort((a, b) => a - b);

    // 2. Capacity: closed loop, 32 clients.
    const serverCpu = () => cpuMs(api.pid!) + cpuMs(redis.pid!);
    const capCpu = serverCpu();
    const capStart = now();
    const done = await closedLoop(QUICK ? 2000 : 5000);
    const capacity = done / ((now() - capStart) / 1000);
    const admittedCpuUs = ((serverCpu() - capCpu) * 1000) / done;

    // 3. Overload: open loop at OVERLOAD x capacity.
    const histBefore = await serverHistogram(`http://127.0.0.1:${port}`);
    const rate = RATE > 0 ? RATE : OVERLOAD * capacity;
    const admitted: number[] = [];
    const perSecond: { admitted: number; refused: number; other: number; notSent: number; rss: number }[] = [];
    let outstanding = 0;
    let current = { admitted: 0, refused: 0, other: 0, notSent: 0, rss: 0 };
    const inflight: Promise<void>[] = [];
    const start = now();
    let sent = 0;
    let nextTick = start + 1000;
    while (now() - start < SECONDS * 1000) {
      const due = Math.floor(((now() - start) / 1000) * rate);
      while (sent < due) {
        sent++;
        if (outstanding >= MAX_OUTSTANDING) {
          current.notSent++;
          continue;
        }
        outstanding++;
        const bucket = current;
        inflight.push(
          request().then((r) => {
            outstanding--;
            if (r.status === 200 && !r.code) {
              bucket.admitted++;
              admitted.push(r.ms);
            } else if (r.status === 503 && r.code === 'OVERLOADED') bucket.refused++;
            else bucket.other++;
          }),
        );
      }
      if (now() >= nextTick) {
        current.rss = rssMiB(api.pid!);
        perSecond.push(current);
        current = { admitted: 0, refused: 0, other: 0, notSent: 0, rss: 0 };
        nextTick += 1000;
      }
      await sleep(1);
    }
    await Promise.all(inflight);
    const elapsed = (now() - start) / 1000;
    const histAfter = await serverHistogram(`http://127.0.0.1:${port}`);
    admitted.sort((a, b) => a - b);
    const total = perSecond.reduce(
      (t, s) => ({ admitted: t.admitted + s.admitted, refused: t.refused + s.refused, other: t.other + s.other, notSent: t.notSent + s.notSent }),
      { admitted: 0, refused: 0, other: 0, notSent: 0 },
    );
    const answered = total.admitted + total.refused + total.other;

    // 4. The price of a refusal, and Node's floor under it.
    const body = JSON.stringify({ query: 'query($k:String!){ get(key:$k){ value version } }', variables: { k: 'k1' } });
    const flood = async (target: ReturnType<typeof httpClient>, pid: number, ms: number) => {
      const statuses = new Map<number, number>();
      const cpu0 = cpuMs(pid);
      const end = now() + ms;
      const t0 = now();
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (now() < end) {
            const { status } = await target.send('/graphql', body);
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
          }
        }),
      );
      const n = [...statuses.values()].reduce((a, b) => a + b, 0);
      return { perSecond: n / ((now() - t0) / 1000), cpuUs: ((cpuMs(pid) - cpu0) * 1000) / n, refusedShare: (statuses.get(503) ?? 0) / n };
    };
    const slots = Number(process.env.KV_MAX_IN_FLIGHT ?? defaultLoad().maxInFlight);
    const admin = new Redis(redis.url, { lazyConnect: true });
    await admin.connect();
    // Held for 1.9 s: less than the API's Redis command timeout (2 s), so the held requests
    // simply wait, and then answer.
    await admin.call('CLIENT', 'PAUSE', '1900', 'ALL');
    const holders = Array.from({ length: slots }, () => client.send('/graphql', body).catch(() => undefined));
    await sleep(200);
    const refusing = await flood(client, api.pid!, QUICK ? 500 : 1500);
    await Promise.all(holders);
    admin.disconnect();
    const floorPort = await freePort();
    const floor = spawn(process.execPath, ['--import', 'tsx', 'bench/bareRefusal.ts'], { env: { ...process.env, PORT: String(floorPort) }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    let bare: Awaited<ReturnType<typeof flood>>;
    try {
      await new Promise((resolve, reject) => {
        floor.once('message', resolve);
        floor.once('exit', () => reject(new Error('bench/bareRefusal.ts exited before it listened')));
      });
      if (PIN) pin(floor.pid!, 0);
      const floorClient = httpClient(`http://127.0.0.1:${floorPort}/graphql`, 64);
      await flood(floorClient, floor.pid!, 500); // warm-up
      bare = await flood(floorClient, floor.pid!, QUICK ? 500 : 1500);
      floorClient.close();
    } finally {
      floor.kill('SIGTERM');
    }
    const everything = (capacity * admittedCpuUs + Math.max(0, rate - capacity) * refusing.cpuUs) / 1e6;

    console.log(`\nload experiment: mix 70% get / 20% put / 10% range(first: 20), ${KEYS} keys`);
    console.log(PIN ? 'server (API + Redis) on CPU 0, this generator on CPU 1' : 'server and generator share every CPU (--shared)');
    console.log(`unloaded (1 client):   p50 ${pct(unloaded, 50).toFixed(2)} ms, p99 ${pct(unloaded, 99).toFixed(2)} ms`);
    console.log(`capacity (32 clients): ${capacity.toFixed(0)} requests/s admitted`);
    console.log(`overload: offered ${rate.toFixed(0)} requests/s (${(rate / capacity).toFixed(1)}x capacity${RATE > 0 ? ', fixed by --rate' : ''}) for ${SECONDS} s`);
    console.log(`  admitted ${(total.admitted / elapsed).toFixed(0)} requests/s; refused (503 OVERLOADED) ${((100 * total.refused) / Math.max(1, answered)).toFixed(1)}% of answers; other errors ${total.other}; not sent (generator at ${MAX_OUTSTANDING} outstanding) ${total.notSent}`);
    console.log(`  admitted latency: p50 ${pct(admitted, 50).toFixed(2)} ms, p99 ${pct(admitted, 99).toFixed(2)} ms, max ${(admitted.at(-1) ?? NaN).toFixed(2)} ms`);
    console.log(
      `  inside the API (its /metrics histogram, all answers): p50 ${histogramPercentile(histBefore, histAfter, 50)}, p99 ${histogramPercentile(histBefore, histAfter, 99)}`,
    );
    console.log('  second  admitted  refused  other  not-sent  API RSS MiB');
    perSecond.forEach((s, i) =>
      console.log(`  ${String(i + 1).padStart(6)} ${String(s.admitted).padStart(9)} ${String(s.refused).padStart(8)} ${String(s.other).padStart(6)} ${String(s.notSent).padStart(9)} ${s.rss.toFixed(0).padStart(12)}`),
    );
    console.log(`the price of an answer on the server's core (${PIN ? 'CPU 0' : 'shared CPUs'}):`);
    console.log(`  admitted, at capacity (phase 2):   ${admittedCpuUs.toFixed(1)} µs of API + Redis CPU time per request`);
    console.log(
      `  refused, every slot held:          ${refusing.perSecond.toFixed(0)} answers/s to 64 connections, ${(100 * refusing.refusedShare).toFixed(1)}% of them 503, ${refusing.cpuUs.toFixed(1)} µs of API CPU time each`,
    );
    console.log(`  a bare node:http server's 503:     ${bare.perSecond.toFixed(0)} answers/s, ${bare.cpuUs.toFixed(1)} µs each (Node's floor here)`);
    console.log(
      `  answering all ${rate.toFixed(0)} requests/s offered (capacity admitted, the rest refused) would take ${everything.toFixed(2)} s of CPU time per second${PIN ? ' of the one core' : ''}`,
    );
    client.close();
    const alive = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false);
    console.log(`  the API is ${alive ? 'up' : 'DOWN'} after the run`);
  } finally {
    api.kill('SIGTERM');
    await new Promise((r) => api.once('exit', r));
    await redis.stop();
  }
}

await main();
