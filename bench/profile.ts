// `npm run bench:profile`: where a server's CPU goes per request, under the bench's load.
//
// Starts Redis (redis.conf, in a temp dir) with `--keys` keys, the server under the inspector's
// sampling profiler (bench/profiled.ts: kvql's src/main.ts, or with `--system bare` the bare-Node
// baseline), and the bench's driver; warms up, profiles `--seconds` of load, and prints the
// server's busy CPU per request, by package or file and by function (self time), and writes the
// profile for Chrome DevTools or speedscope. Function-level: tsx puts each module's code on a
// few lines, so line numbers are not the source's. Native "dispatch" is mostly the inspector's
// own work of stopping the profile.
//
// For --op delete, the keys of each run (warm-up, then the profile) are loaded just before it,
// 12,000 for each of its seconds, through the server's batchPut (driver.ts loadThrough).
//
// Usage: npm run bench:profile -- [--op get|put|delete|getMany|batchPut|range] [--concurrency 32]
//                                  [--items N] [--seconds 6] [--keys 100000] [--system kvql|bare]
//                                  [--top 40] [--out kvql.cpuprofile]
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApiProcess } from '../test/harness/apiProcess.js';
import { deleteKey, loadThrough, startDriver, type Job, type Op } from './driver.js';
import { startLoadedRedis } from './loadedRedis.js';
import { KV_PREFIX } from './rawRedis.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));

/** The parts of a .cpuprofile this reads (the inspector's Profiler.Profile). */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Microseconds per request the process was busy (not idle) while profiled. */
  busyUs: number;
  idleUs: number;
  /** Self time per request, by package, repo file, "node:" internals or native function. */
  groups: { name: string; us: number }[];
  /** Self time per request, by function. */
  functions: { name: string; us: number }[];
}

/** Where a frame's code lives: a package of node_modules, a file of ours, Node's own, or native. */
function groupOf(url: string, functionName: string): string {
  // The innermost node_modules: a package nested inside another is itself.
  const pkg = [...url.matchAll(/node_modules\/((?:@[^/]+\/)?[^/]+)/g)].at(-1);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:')) return 'node (internals)';
  if (url.startsWith('file://')) return fileURLToPath(url).replace(REPO, '');
  return functionName || '(native)';
}

/** Self time per request of `profile` over `requests` requests. */
export function summarize(profile: CpuProfile, requests: number): ProfileSummary {
  const selfTime = new Map<number, number>();
  profile.samples.forEach((id, i) => selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const groups = new Map<string, number>();
  const functions = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const node of profile.nodes) {
    const t = selfTime.get(node.id) ?? 0;
    if (t === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idle += t;
      continue;
    }
    busy += t;
    const group = groupOf(url, functionName);
    groups.set(group, (groups.get(group) ?? 0) + t);
    const name = `${functionName || '(anonymous)'} ${url ? `${group}:${lineNumber + 1}` : ''}`.trim();
    functions.set(name, (functions.get(name) ?? 0) + t);
  }
  const perRequest = (m: Map<string, number>) =>
    [...m].map(([name, t]) => ({ name, us: t / requests })).sort((a, b) => b.us - a.us);
  return { busyUs: busy / requests, idleUs: idle / requests, groups: perRequest(groups), functions: perRequest(functions) };
}

function option(argv: string[], name: string, def: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : def;
}

async function main(argv: string[]): Promise<void> {
  const op = option(argv, 'op', 'get') as Op;
  const concurrency = Number(option(argv, 'concurrency', '32'));
  const items = Number(option(argv, 'items', op === 'getMany' || op === 'batchPut' || op === 'range' ? '100' : '1'));
  const seconds = Number(option(argv, 'seconds', '6'));
  const keys = Number(option(argv, 'keys', '100000'));
  const system = option(argv, 'system', 'kvql');
  const top = Number(option(argv, 'top', '40'));
  const out = resolve(option(argv, 'out', `${system}-${op}-${concurrency}.cpuprofile`));
  if (system !== 'kvql' && system !== 'bare') throw new Error(`--system: kvql or bare, not ${system}`);

  const dir = mkdtempSync(join(tmpdir(), 'kvql-profile-'));
  const raw = join(dir, 'server.cpuprofile');
  const started: (() => Promise<void>)[] = [];
  try {
    const server = await startLoadedRedis(keys);
    started.push(() => server.stop());
    const api = await startApiProcess({
      redisUrl: server.url,
      prefix: KV_PREFIX,
      partitions: 1,
      script: 'bench/profiled.ts',
      env: { NODE_ENV: 'production', BENCH_PROFILE_OUT: raw, BENCH_PROFILE_TARGET: system === 'bare' ? 'bench/baseline.ts' : 'src/main.ts' },
    });
    started.push(() => api.stop());
    const driver = await startDriver();
    started.push(() => driver.stop());
    const job = { system, op, concurrency, items, loadedKeys: keys, target: system === 'bare' ? api.base : api.url } as const;
    // A run of `seconds` after `warmupSeconds`, with its keys to delete loaded (before the
    // profile starts: loading is not the load profiled).
    let deletesLoaded = 0;
    const runOf = async (seconds: number, warmupSeconds: number): Promise<Job> => {
      if (op !== 'delete') return { ...job, seconds, warmupSeconds };
      const deletes = { from: deletesLoaded, to: (deletesLoaded += Math.ceil(12_000 * (seconds + warmupSeconds))) };
      await loadThrough(system, job.target, deletes.from, deletes.to, deleteKey);
      return { ...job, seconds, warmupSeconds, deletes };
    };
    // Warm-up first: the JIT's work and the first requests' caches are not the steady state.
    await driver.run(await runOf(Math.min(3, seconds), 1));
    const profiled = await runOf(seconds, 0);
    process.kill(api.pid, 'SIGUSR2');
    const f = await driver.run(profiled);
    process.kill(api.pid, 'SIGUSR2');
    for (let waited = 0; !existsSync(raw) && waited < 20_000; waited += 100) await new Promise((r) => setTimeout(r, 100));
    if (!existsSync(raw)) throw new Error(`the server wrote no profile; its output:\n${api.output()}`);
    const text = readFileSync(raw, 'utf8');
    writeFileSync(out, text);
    const s = summarize(JSON.parse(text) as CpuProfile, f.samples);
    const row = (us: number, name: string) => `${us.toFixed(1).padStart(9)}  ${name}`;
    console.log(`bench:profile: ${system} ${op} at concurrency ${concurrency}${items > 1 ? `, ${items} items` : ''}, ${seconds} s, ${keys} keys`);
    console.log(`${f.samples} requests, ${f.opsPerSec.toFixed(0)}/s, p50 ${f.p50Ms.toFixed(3)} ms (under the profiler, which slows the server)`);
    console.log(`per request: busy ${s.busyUs.toFixed(1)} µs, idle ${s.idleUs.toFixed(1)} µs`);
    console.log('\nself time per request (µs) by package, file or native function:');
    for (const g of s.groups.slice(0, 25)) console.log(row(g.us, g.name));
    console.log(`\nself time per request (µs) by function, top ${top}:`);
    for (const fn of s.functions.slice(0, top)) console.log(row(fn.us, fn.name));
    console.log(`\nwrote ${out} (open it in Chrome DevTools' Performance panel or speedscope)`);
  } finally {
    for (let stop = started.pop(); stop; stop = started.pop()) await stop().catch((err: unknown) => console.error(`bench:profile: cleanup: ${String(err)}`));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(`bench:profile failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  });
}
