// The benchmarks' short forms (the full runs are `npm run bench`, `npm run bench:feed` and
// `npm run load-test`): `bench/run.ts --quick` end to end, as its own process, writing to a
// temp directory, `bench/feed.ts --quick`, `bench/load.ts --quick` and a one-second
// `bench/profile.ts`. They check that every
// figure was measured and is a positive finite number, that the chart is well-formed XML, and
// that a full server refuses with OVERLOADED; never how fast anything is. Runs in the p1
// project only.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Figure } from '../../bench/driver.js';
import type { Results } from '../../bench/results.js';
import { createRedis } from '../../src/store/redis.js';
import { startTestRedis } from '../harness/redisServer.js';
import { aofInfo, rewriteAof, rewriteIfGrown } from '../measure/recovery.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** Runs a bench script with `args`; stops it (SIGTERM: it stops what it started) after `ms`. */
function runBench(args: string[], ms: number, script = 'bench/run.ts'): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const term = setTimeout(() => child.kill('SIGTERM'), ms);
    const kill = setTimeout(() => child.kill('SIGKILL'), ms + 20_000);
    // 'close': after its output has all been read ('exit' can come first).
    child.once('close', (code) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ code, output });
    });
  });
}

/** Problems that make `text` not well-formed XML (an empty list when it is). */
function xmlProblems(text: string): string[] {
  const problems: string[] = [];
  const stack: string[] = [];
  let roots = 0;
  const badAmp = /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/;
  const body = text.replace(/^<\?xml[^?]*\?>/, '');
  for (const m of body.matchAll(/<!--[\s\S]*?-->|<[^>]*>|[^<]+/g)) {
    const t = m[0];
    if (t.startsWith('<!--')) continue;
    if (!t.startsWith('<')) {
      if (badAmp.test(t)) problems.push(`a bare & in text: ${t.slice(0, 60)}`);
      if (stack.length === 0 && t.trim() !== '') problems.push(`text outside the root: ${t.slice(0, 60)}`);
      continue;
    }
    const close = /^<\/([A-Za-z_][\w:.-]*)\s*>$/.exec(t);
    if (close) {
      const open = stack.pop();
      if (open !== close[1]) problems.push(`</${close[1]}> closes <${open ?? 'nothing'}>`);
      continue;
    }
    const tag = /^<([A-Za-z_][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*\s*=\s*"[^"<]*")*)\s*(\/?)>$/.exec(t);
    if (!tag) {
      problems.push(`a malformed tag: ${t.slice(0, 80)}`);
      continue;
    }
    const names = [...tag[2]!.matchAll(/([A-Za-z_][\w:.-]*)\s*=/g)].map((a) => a[1]);
    if (new Set(names).size !== names.length) problems.push(`a repeated attribute: ${t.slice(0, 80)}`);
    if (badAmp.test(tag[2]!)) problems.push(`a bare & in an attribute: ${t.slice(0, 80)}`);
    if (stack.length === 0) roots++;
    if (tag[3] !== '/') stack.push(tag[1]!);
  }
  if (stack.length > 0) problems.push(`unclosed: ${stack.join(' > ')}`);
  if (roots !== 1) problems.push(`${roots} root elements`);
  return problems;
}

const positive = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x > 0;

describe('the benchmark, short form', () => {
  it('measures every figure beside its baselines, and writes the JSON and a well-formed SVG', async () => {
    const out = mkdtempSync(join(tmpdir(), 'kvql-bench-'));
    try {
      const { code, output } = await runBench(['--quick', '--out', out], 100_000);
      expect(code, output).toBe(0);
      const r = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Results;

      expect(r.options.quick).toBe(true);
      expect(r.machine.cpu.length).toBeGreaterThan(0);
      expect(r.machine.cores).toBeGreaterThan(0);
      expect(r.machine.node).toMatch(/^v\d+/);
      expect(r.machine.redis).toMatch(/^\d+\.\d+/);

      // Every operation at every concurrency asked, for kvql and each baseline (etcd when installed).
      const systems = ['kvql', 'raw', 'bare', ...(r.machine.etcd !== null ? ['etcd'] : [])];
      const expected = [
        ...r.options.concurrency.flatMap((c) => [`get/${c}/1`, `put/${c}/1`]),
        ...r.options.deleteConcurrency!.map((c) => `delete/${c}/1`),
        `batchPut/${r.options.otherConcurrency}/100`,
        ...r.options.batchConcurrency!.map((c) => `batchPut/${c}/1000`),
        `range/${r.options.otherConcurrency}/100`,
        `getMany/${r.options.otherConcurrency}/100`,
      ];
      expect(r.rows.map((row) => `${row.op}/${row.concurrency}/${row.items}`).sort()).toEqual(expected.sort());
      for (const row of r.rows) {
        expect(Object.keys(row.figures).sort(), `${row.op}@${row.concurrency}`).toEqual([...systems].sort());
        for (const [system, f] of Object.entries(row.figures) as [string, Figure][]) {
          const where = `${system} ${row.op}@${row.concurrency}`;
          for (const name of ['opsPerSec', 'itemsPerSec', 'p50Ms', 'p99Ms', 'meanMs', 'samples'] as const) {
            expect(positive(f[name]), `${where} ${name} = ${f[name]}`).toBe(true);
          }
          expect(f.errors, `${where}: ${f.firstError}`).toBe(0);
          expect(f.p99Ms).toBeGreaterThanOrEqual(f.p50Ms);
        }
        // Each system's windows before pooling, one per round.
        expect(Object.keys(row.windows ?? {}).sort(), `${row.op}@${row.concurrency}`).toEqual([...systems].sort());
        for (const [system, ws] of Object.entries(row.windows!)) {
          expect(ws, `${system} ${row.op}@${row.concurrency}`).toHaveLength(r.options.rounds ?? 1);
          for (const w of ws!) expect(positive(w.opsPerSec) && positive(w.p50Ms), `${system} ${row.op}@${row.concurrency}: ${JSON.stringify(w)}`).toBe(true);
        }
      }
      expect(output).toMatch(/p50 in each window \(ms\), range first:100 @1: kvql [\d.]+/);
      // Redis never began an AOF rewrite inside a window: the bench rewrites between them.
      for (const row of r.rows) expect(row.aofRewrites, `${row.op}@${row.concurrency}`).toEqual({ kvql: 0, raw: 0, bare: 0, ...(r.machine.etcd !== null ? { etcd: 0 } : {}) });
      // The reads ran on the loaded keys alone (the issue: range pages on 1M keys), the writes
      // after them, each adding keys.
      for (const op of ['get', 'range', 'getMany']) {
        for (const row of r.rows.filter((x) => x.op === op)) expect(row.indexKeys, `${op}@${row.concurrency}`).toBe(r.options.keys);
      }
      const batch = r.rows.find((x) => x.op === 'batchPut' && x.items === 1000)!;
      expect(batch.indexKeys).toBeGreaterThan(r.options.keys);
      expect(r.indexKeysAtEnd).toBeGreaterThan(batch.indexKeys!);
      expect(output).toContain("keys in kvql's index as each row began");
      for (const [name, v] of Object.entries({ ...r.memory, ...r.recovery })) expect(positive(v), `${name} = ${v}`).toBe(true);
      for (const q of r.ratios) expect(positive(q.value), `${q.name} = ${q.value}`).toBe(true);
      const ratioNames = r.ratios.map((q) => q.name).join('\n');
      for (const name of ['kvql / bare Node', 'kvql / pipelined ioredis', 'kvql / 2,000 items/s', 'range first:100 p50', 'bytes/key']) {
        expect(ratioNames).toContain(name);
      }
      if (r.machine.etcd !== null) for (const name of ['etcd range', 'etcd put', 'put@1 mean latency']) expect(ratioNames).toContain(name);
      // batchPut of 1,000 at one client and at more, each with its two ratios.
      expect(r.options.batchConcurrency).toEqual([1, 4]);
      for (const suffix of ['kvql / pipelined ioredis (MULTI)', 'kvql / 2,000 items/s']) {
        expect(ratioNames).toContain(`batchPut 1000 items/s, ${suffix}`);
        expect(ratioNames).toContain(`batchPut 1000 @4 items/s, ${suffix}`);
      }

      // The table was printed.
      expect(output).toContain('ratios');
      expect(output).toContain('bytes/key');

      const svg = readFileSync(join(out, 'results.svg'), 'utf8');
      expect(xmlProblems(svg)).toEqual([]);
      expect(svg).toMatch(/<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      expect(svg).toContain('get: throughput');
      expect(svg).toContain('put: latency');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 130_000);

  it('rewrites the AOF between windows once it has grown by half since the last rewrite, and not before', async () => {
    const server = await startTestRedis();
    const redis = createRedis(server.url, { commandTimeoutMs: 30_000 });
    try {
      await redis.connect();
      const info = () => aofInfo(redis);
      const write = async (from: number, n: number) => {
        const pipe = redis.pipeline();
        // Random values: the base file is an RDB, which would compress repeated bytes.
        for (let i = from; i < from + n; i++) pipe.set(`bench-aof:${i}`, randomBytes(750).toString('base64'));
        await pipe.exec();
      };
      await write(0, 1000);
      await rewriteAof(redis);
      const start = await info();
      expect(start.base).toBeGreaterThan(900_000);
      await write(1000, 200); // about a fifth more
      expect(await rewriteIfGrown(redis, 1.5)).toBe(false);
      expect((await info()).rewrites).toBe(start.rewrites);
      await write(1200, 600); // now about four fifths more
      expect(await rewriteIfGrown(redis, 1.5)).toBe(true);
      const after = await info();
      expect(after.rewrites).toBe(start.rewrites + 1);
      expect(after.base).toBeGreaterThan(start.base * 1.5);
      expect(after.current).toBeLessThan(after.base * 1.1);
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });

  it('runs the load experiment: the API stays up, every error is OVERLOADED, and with every slot held it refuses', async () => {
    // --shared: no CPU pinning beside the other test files.
    const { code, output } = await runBench(['--quick', '--shared'], 100_000, 'bench/load.ts');
    expect(code, output).toBe(0);
    expect(output).toContain('the API is up after the run');
    expect(output).toMatch(/; other errors 0;/);
    const figure = (re: RegExp) => {
      const m = re.exec(output);
      expect(m, `${re} in:\n${output}`).not.toBeNull();
      return m!.slice(1).map(Number);
    };
    const [unloadedP50, unloadedP99] = figure(/unloaded \(1 client\): +p50 ([\d.]+) ms, p99 ([\d.]+) ms/);
    expect(positive(unloadedP50!) && unloadedP99! >= unloadedP50!).toBe(true);
    expect(positive(figure(/capacity \(32 clients\): (\d+) requests\/s admitted/)[0]!)).toBe(true);
    expect(positive(figure(/ admitted (\d+) requests\/s;/)[0]!)).toBe(true);
    expect(positive(figure(/admitted, at capacity \(phase 2\): +([\d.]+) µs/)[0]!)).toBe(true);
    // Every slot held (Redis paused): the answers to the flood are refusals.
    const [answers, share503, refusalUs] = figure(/refused, every slot held: +(\d+) answers\/s to 64 connections, ([\d.]+)% of them 503, ([\d.]+) µs/);
    expect(positive(answers!) && positive(refusalUs!)).toBe(true);
    expect(share503).toBeGreaterThanOrEqual(90);
    const [floorAnswers, floorUs] = figure(/a bare node:http server's 503: +(\d+) answers\/s, ([\d.]+) µs each/);
    expect(positive(floorAnswers!) && positive(floorUs!)).toBe(true);
    expect(positive(figure(/would take ([\d.]+) s of CPU time per second/)[0]!)).toBe(true);
  }, 130_000);

  // delete too: its keys are loaded before the profile begins (each deleted once).
  it.each(['get', 'delete'] as const)('profiles the API under load (%s): busy CPU per request by package and function, and a profile DevTools reads', async (op) => {
    const dir = mkdtempSync(join(tmpdir(), 'kvql-profile-test-'));
    const out = join(dir, `${op}.cpuprofile`);
    try {
      const { code, output } = await runBench(['--op', op, '--concurrency', '4', '--seconds', '1', '--keys', '2000', '--top', '10', '--out', out], 100_000, 'bench/profile.ts');
      expect(code, output).toBe(0);
      expect(positive(Number(/^(\d+) requests/m.exec(output)?.[1])), output).toBe(true);
      const busy = Number(/per request: busy ([\d.]+) µs/.exec(output)?.[1]);
      expect(positive(busy), output).toBe(true);
      // Our own code and the executor show up by file and by package; a delete's, the store's.
      expect(output).toMatch(/^ +[\d.]+ {2}src\/fastLane\.ts$/m);
      expect(output).toMatch(/^ +[\d.]+ {2}@graphql-tools\/executor$/m);
      if (op === 'delete') expect(output).toMatch(/^ +[\d.]+ {2}src\/store\/\w+\.ts$/m);
      const profile = JSON.parse(readFileSync(out, 'utf8')) as { nodes: unknown[]; samples: unknown[]; timeDeltas: unknown[] };
      expect(profile.nodes.length).toBeGreaterThan(0);
      expect(profile.samples.length).toBe(profile.timeDeltas.length);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 130_000);

  it('measures the change feed beside raw Redis: every row has latencies, samples and a delivery rate', async () => {
    const { code, output } = await runBench(['--quick'], 100_000, 'bench/feed.ts');
    expect(code, output).toBe(0);
    expect(output).not.toContain('subscription error');
    // system, subscribers, ack p50, ack p99, sent p50, sent p99, samples, events/s
    const rows = [...output.matchAll(/^(kvql|raw Redis)\s+(\d+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(\d+)\s+(\d+)$/gm)];
    expect(rows.map((m) => `${m[1]}/${m[2]}`), output).toEqual(['kvql/1', 'kvql/10', 'raw Redis/1', 'raw Redis/10']);
    for (const m of rows) {
      const [ackP50, ackP99, sentP50, sentP99, samples, perSec] = m.slice(3).map(Number) as [number, number, number, number, number, number];
      const where = `${m[1]} with ${m[2]} subscribers`;
      expect(ackP99, where).toBeGreaterThanOrEqual(ackP50);
      expect(sentP99, where).toBeGreaterThanOrEqual(sentP50);
      // Sent before acknowledged: from sending is never shorter than from the acknowledgement.
      expect(sentP50, where).toBeGreaterThanOrEqual(ackP50);
      expect(positive(sentP50), where).toBe(true);
      expect(samples, where).toBeGreaterThan(0);
      expect(positive(perSec), where).toBe(true);
    }
  }, 130_000);
});
