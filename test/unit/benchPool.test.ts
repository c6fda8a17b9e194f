// The bench's pooling of a row's rounds (bench/driver.ts poolFigures): one figure as if every
// window had been one, so its percentiles are those of all the latencies together, not an
// average of each window's.
import { describe, expect, it } from 'vitest';
import { poolFigures, type Figure } from '../../bench/driver.js';

const window = (latencies: number[], seconds: number, errors = 0, firstError?: string): Figure => ({
  opsPerSec: latencies.length / seconds,
  itemsPerSec: latencies.length / seconds,
  p50Ms: NaN,
  p99Ms: NaN,
  meanMs: NaN,
  samples: latencies.length,
  errors,
  ...(firstError ? { firstError } : {}),
  latencies: [...latencies].sort((a, b) => a - b),
});

describe('poolFigures', () => {
  it('takes throughput over the total time and percentiles over every latency', () => {
    // A fast window and a slow one: 100 requests at 1 ms, then 100 at 3 ms, 2 s each.
    const fast = window(Array(100).fill(1), 2);
    const slow = window(Array(100).fill(3), 2, 2, 'first');
    const f = poolFigures([fast, slow], 2, 10);
    expect(f.samples).toBe(200);
    expect(f.opsPerSec).toBe(50);
    expect(f.itemsPerSec).toBe(500);
    expect(f.meanMs).toBe(2);
    // Nearest rank over the 200: the 100th is the last 1 ms, the 198th a 3 ms one.
    expect(f.p50Ms).toBe(1);
    expect(f.p99Ms).toBe(3);
    expect(f.errors).toBe(2);
    expect(f.firstError).toBe('first');
    expect(f.latencies).toBeUndefined();
  });

  it('refuses windows measured without their latencies', () => {
    const { latencies: _, ...bare } = window([1, 2], 1);
    expect(() => poolFigures([bare], 1, 1)).toThrow(/keepSamples/);
  });
});
