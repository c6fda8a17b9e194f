// The lean counters and histograms (src/leanMetrics.ts) must render exactly as prom-client's
// own classes do for the same updates: /metrics is read by scrapers and dashboards.
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { LeanCounter, LeanHistogram } from '../../src/leanMetrics.js';

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
// Label values a scrape must escape: a quote, a backslash, a newline.
const ODD = ['get', 'put', 'we"ird', 'back\\slash', 'new\nline'];

function pair() {
  const theirs = new Registry();
  const ours = new Registry();
  const config = (registry: Registry) => ({ help: 'help with a \\ and a\nnewline', registers: [registry] });
  return {
    theirs,
    ours,
    counters: [
      new Counter({ name: 'c_total', labelNames: ['operation', 'outcome'] as const, ...config(theirs) }),
      new LeanCounter({ name: 'c_total', labelNames: ['operation', 'outcome'] as const, ...config(ours) }),
    ] as const,
    plain: [new Counter({ name: 'p_total', ...config(theirs) }), new LeanCounter({ name: 'p_total', labelNames: [], ...config(ours) })] as const,
    histograms: [
      new Histogram({ name: 'h_seconds', labelNames: ['operation'] as const, buckets: BUCKETS, ...config(theirs) }),
      new LeanHistogram({ name: 'h_seconds', labelNames: ['operation'] as const, buckets: BUCKETS, ...config(ours) }),
    ] as const,
    unlabelled: [
      new Histogram({ name: 'u_seconds', buckets: BUCKETS, ...config(theirs) }),
      new LeanHistogram({ name: 'u_seconds', labelNames: [], buckets: BUCKETS, ...config(ours) }),
    ] as const,
  };
}

describe('lean metrics', () => {
  it('render nothing but HELP and TYPE for labelled metrics never updated, and zeros for unlabelled ones', async () => {
    const p = pair();
    const text = await p.ours.metrics();
    expect(text).toBe(await p.theirs.metrics());
    expect(text).toContain('p_total 0');
    expect(text).toContain('u_seconds_count 0');
    expect(text).not.toContain('c_total{');
  });

  it('render exactly as prom-client after the same updates, in the same order', async () => {
    const p = pair();
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    // Children made before any update (as metrics.ts does) list nothing until updated.
    const ourCounters = new Map<string, { inc(by?: number): void }>();
    const ourTimers = new Map<string, { observe(v: number): void }>();
    const values = [...BUCKETS, 0, 1e-9, 11, 1e6, ...Array.from({ length: 500 }, () => random() * random() * 3)];
    for (const [i, v] of values.entries()) {
      const operation = ODD[i % ODD.length]!;
      const outcome = i % 3 === 0 ? 'ok' : 'BAD_USER_INPUT';
      p.counters[0].labels({ operation, outcome }).inc();
      const key = `${operation}\n${outcome}`;
      if (!ourCounters.has(key)) ourCounters.set(key, p.counters[1].labels({ operation, outcome }));
      ourCounters.get(key)!.inc();
      p.histograms[0].labels({ operation }).observe(v);
      if (!ourTimers.has(operation)) ourTimers.set(operation, p.histograms[1].labels({ operation }));
      ourTimers.get(operation)!.observe(v);
      p.unlabelled[0].observe(v);
      p.unlabelled[1].labels().observe(v);
      if (i % 7 === 0) {
        p.plain[0].inc(2);
        p.plain[1].labels().inc(2);
      }
    }
    const text = await p.ours.metrics();
    expect(text).toBe(await p.theirs.metrics());
    // Guards against two empty renderings being equal: the updates are there.
    expect(text).toContain('h_seconds_bucket{le="0.0005",operation="get"}');
    expect(text).toContain('h_seconds_bucket{le="+Inf",operation="new\\nline"}');
    expect(text).toContain('c_total{operation="we\\"ird",outcome="ok"}');
    expect(text).toMatch(/^u_seconds_count 5\d\d$/m);
  });

  it('refuse what prom-client refuses: an unknown label, a value that is not a number, a counter going down', () => {
    const p = pair();
    expect(() => p.counters[1].labels({ operation: 'get', nope: 'x' } as never)).toThrow(/unknown label nope/);
    expect(() => p.histograms[1].labels({ operation: 'get' }).observe(Number.NaN)).toThrow(/not a finite number/);
    expect(() => p.counters[1].labels({ operation: 'get', outcome: 'ok' }).inc(-1)).toThrow(/only goes up/);
    expect(() => p.counters[0].labels({ operation: 'get', outcome: 'ok' }).inc(-1)).toThrow(/decrease/); // as prom-client
    expect(() => new LeanHistogram({ name: 'x', help: 'x', labelNames: [], buckets: [1, 0.5], registers: [] })).toThrow(/increase/);
  });
});
