// `npm run bench:ab -- <git revision>`: this tree's API against another commit's, in one run.
//
// On a noisy machine two benchmark runs minutes apart differ by more than most changes do, so a
// change is judged by running both versions side by side: one Redis (redis.conf), this tree's
// API, the other revision's API (checked out with `git worktree` into a temp dir, sharing this
// tree's node_modules) and the bare-Node baseline, each its own process, driven
// in turn by the bench's driver process, round after round (each round starting with the next
// system; use a multiple of three rounds). Prints each measurement, then the sums over the
// rounds and their ratios. Everything it starts, and the worktree, is removed.
//
// The same keys, in two keyspaces: this tree's store loads them into KV_PREFIX, which this tree's
// API and the baseline serve; the other revision's API serves a keyspace of its own, which it
// creates and is loaded through (batchPut over HTTP). So a revision with another Redis layout
// (a layout is fixed when a keyspace is created) is measured on its own layout, not refused.
//
// For --op delete, each window's keys are loaded into its system just before it (through its
// batchPut over HTTP, driver.ts loadThrough), each deleted once: twice as many as the
// system's deletes in its last window needed (12,000 a second in the first round).
//
// Usage: npm run bench:ab -- <rev> [--op get|put|delete|getMany|batchPut|range] [--concurrency 32]
//                                  [--items 1] [--seconds 1] [--rounds 30] [--keys 100000]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApiProcess, type ApiProcess } from '../test/harness/apiProcess.js';
import { cpuMs } from '../test/measure/cpu.js';
import { key } from '../test/measure/dataset.js';
import { deleteKey, loadThrough, startDriver, type Op, type System } from './driver.js';
import { startLoadedRedis } from './loadedRedis.js';
import { KV_PREFIX } from './rawRedis.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const argv = process.argv.slice(2);
const value = (name: string, def: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : def;
};
const rev = argv[0];
if (!rev || rev.startsWith('--')) {
  console.error('usage: npm run bench:ab -- <git revision> [--op get] [--concurrency 32] [--items 1] [--seconds 1] [--rounds 30] [--keys 100000]');
  process.exit(2);
}
const op = value('op', 'get') as Op;
const concurrency = Number(value('concurrency', '32'));
const items = Number(value('items', op === 'getMany' || op === 'batchPut' || op === 'range' ? '100' : '1'));
// Many short rounds: the machine's speed drifts by tens of percent within seconds, and the
// shorter each system's window, the less of a drift falls on one system alone. The same code
// against itself, get at 32 clients (2026-11-27): 1.143 of the CPU in 9 rounds of 3 s, 1.022 in
// 30 rounds of 1 s.
const seconds = Number(value('seconds', '1'));
const rounds = Number(value('rounds', '30'));
const keys = Number(value('keys', '100000'));

// CPU time (cpuMs) is steadier than throughput on a shared machine: the other processes' load
// moves a system's ops/s far more than it moves what each request costs the system's own process.
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The other revision's keyspace. */
const OTHER_PREFIX = `${KV_PREFIX}-ab`;

const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO, encoding: 'utf8' }).trim();
const commit = git('rev-parse', '--verify', `${rev}^{commit}`);
const dir = mkdtempSync(join(tmpdir(), 'kvql-ab-'));
const started: (() => Promise<void>)[] = [];
try {
  git('worktree', 'add', '--detach', '--force', dir, commit);
  started.push(async () => void git('worktree', 'remove', '--force', dir));
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));

  const server = await startLoadedRedis(keys);
  started.push(() => server.stop());

  const api = (prefix: string, script?: string) =>
    startApiProcess({ redisUrl: server.url, prefix, partitions: 1, env: { NODE_ENV: 'production' }, ...(script ? { script } : {}) });
  const systems: [name: string, system: System, process: ApiProcess, target: (p: ApiProcess) => string][] = [];
  for (const [name, system, script, prefix, target] of [
    ['this tree', 'kvql', undefined, KV_PREFIX, (p: ApiProcess) => p.url],
    [commit.slice(0, 7), 'kvql', join(dir, 'src/main.ts'), OTHER_PREFIX, (p: ApiProcess) => p.url],
    ['bare Node', 'bare', 'bench/baseline.ts', KV_PREFIX, (p: ApiProcess) => p.base],
  ] as const) {
    const p = await api(prefix, script);
    started.push(() => p.stop());
    if (prefix === OTHER_PREFIX) await loadThrough('kvql', p.url, 0, keys, key);
    systems.push([name, system, p, target]);
  }
  const driver = await startDriver();
  started.push(() => driver.stop());

  console.log(`bench:ab: ${op} at concurrency ${concurrency}${items > 1 ? `, ${items} items` : ''}, ${rounds} rounds of ${seconds} s, ${keys} keys`);
  const sums = new Map<string, number>();
  const lastRate = new Map<string, number>();
  let deletesLoaded = 0;
  const cpu = new Map<string, { ms: number; redisMs: number; driverMs: number; requests: number }>();
  for (let round = 1; round <= rounds; round++) {
    // Each round starts one system further on, so that over a multiple of three rounds each
    // system runs in each place alike (the machine's drift within a round falls on all).
    const start = (round - 1) % systems.length;
    for (const [name, system, p, target] of [...systems.slice(start), ...systems.slice(0, start)]) {
      const warmupSeconds = 1;
      let deletes: { from: number; to: number } | undefined;
      if (op === 'delete') {
        const count = Math.ceil(2 * (lastRate.get(name) ?? 6000) * (seconds + warmupSeconds));
        deletes = { from: deletesLoaded, to: (deletesLoaded += count) };
        await loadThrough(system === 'bare' ? 'bare' : 'kvql', target(p), deletes.from, deletes.to, deleteKey);
      }
      const running = driver.run({ system, op, concurrency, items, seconds, warmupSeconds, loadedKeys: keys, target: target(p), ...(deletes ? { deletes } : {}) });
      // The CPU time over the measured window (from the end of the warm-up to the end) of the
      // system's process, of Redis and of the driver: what one request costs each of them.
      const pids = [p.pid, server.pid!, driver.pid];
      const window = sleep(warmupSeconds * 1000).then(async () => {
        const before = pids.map(cpuMs);
        await sleep(seconds * 1000);
        return pids.map((pid, i) => cpuMs(pid) - before[i]!);
      });
      const [f, [used, redisUsed, driverUsed]] = (await Promise.all([running, window])) as [Awaited<typeof running>, number[]];
      if (f.errors > 0) throw new Error(`${name}: ${f.errors} errors, the first: ${f.firstError}`);
      // The CPU window below is the whole window: one that ended early would not match it.
      if (f.seconds !== undefined) throw new Error(`${name}: ran out of the keys loaded to delete after ${f.seconds} s`);
      lastRate.set(name, f.opsPerSec);
      sums.set(name, (sums.get(name) ?? 0) + f.opsPerSec);
      const c = cpu.get(name) ?? { ms: 0, redisMs: 0, driverMs: 0, requests: 0 };
      cpu.set(name, { ms: c.ms + used!, redisMs: c.redisMs + redisUsed!, driverMs: c.driverMs + driverUsed!, requests: c.requests + f.samples });
      const per = (ms: number) => ((ms * 1000) / f.samples).toFixed(1);
      console.log(
        `  round ${round} ${name.padEnd(10)} ${f.opsPerSec.toFixed(0).padStart(7)} ops/s  p50 ${f.p50Ms.toFixed(3)} ms  p99 ${f.p99Ms.toFixed(3)} ms  CPU ${per(used!)} µs/request (Redis ${per(redisUsed!)}, driver ${per(driverUsed!)})`,
      );
    }
  }
  const [mine, theirs, bare] = systems.map(([name]) => sums.get(name)!);
  console.log(`sum of ops/s over the rounds: this tree ${mine!.toFixed(0)}, ${commit.slice(0, 7)} ${theirs!.toFixed(0)}, bare Node ${bare!.toFixed(0)}`);
  console.log(`this tree / ${commit.slice(0, 7)}: ${(mine! / theirs!).toFixed(3)}; this tree / bare Node: ${(mine! / bare!).toFixed(3)}; ${commit.slice(0, 7)} / bare Node: ${(theirs! / bare!).toFixed(3)}`);
  // Lower is better: the CPU each system's own process spent per request, over all rounds.
  const [cMine, cTheirs, cBare] = systems.map(([name]) => {
    const c = cpu.get(name)!;
    return (c.ms * 1000) / c.requests;
  });
  console.log(`CPU per request of each process (µs, all rounds): this tree ${cMine!.toFixed(1)}, ${commit.slice(0, 7)} ${cTheirs!.toFixed(1)}, bare Node ${cBare!.toFixed(1)}`);
  // What each system's requests cost Redis and the load generator too: on two shared cores the
  // sum over the three processes is what throughput is divided into.
  const others = systems.map(([name]) => {
    const c = cpu.get(name)!;
    return `${name} Redis ${((c.redisMs * 1000) / c.requests).toFixed(1)} + driver ${((c.driverMs * 1000) / c.requests).toFixed(1)} = all ${(((c.ms + c.redisMs + c.driverMs) * 1000) / c.requests).toFixed(1)}`;
  });
  console.log(`CPU per request in Redis and the driver (µs, all rounds): ${others.join('; ')}`);
  console.log(`CPU per request, this tree / ${commit.slice(0, 7)}: ${(cMine! / cTheirs!).toFixed(3)} (lower is cheaper); this tree / bare Node: ${(cMine! / cBare!).toFixed(3)}`);
} finally {
  for (let stop = started.pop(); stop; stop = started.pop()) await stop().catch((err: unknown) => console.error(`bench:ab: cleanup: ${String(err)}`));
  rmSync(dir, { recursive: true, force: true });
}
