// The bench's pooling of a row's rounds (bench/driver.ts poolFigures): one figure as if every
// window had been one, so its percentiles are those of all the latencies together, not an
// average of each window's.
import { describe, expect, it } from 'vitest';
import { deleteKey, mergeConcurrent, poolFigures, splitJob, type Figure, type Job } from '../../bench/driver.js';
import { key } from '../measure/dataset.js';

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

describe('deleteKey', () => {
  it('gives 16-byte keys, all different, spread over the fresh keys\' range rather than in a run', () => {
    const n = 200_000;
    const keys = Array.from({ length: n }, (_, i) => deleteKey(i));
    expect(new Set(keys).size).toBe(n);
    for (const k of keys.slice(0, 1000)) expect(Buffer.byteLength(k)).toBe(16);
    // Above every loaded key (the dataset's key(0 .. keys-1), up to 10 million here).
    expect(keys.every((k) => k > key(10_000_000))).toBe(true);
    // Neighbours in i are far apart in the index: the first 100 fall in at least 8 of the range's
    // 9 ninths (its first digit, 1-9), and no two of the first 1,000 within 1/2,000 of it.
    expect(new Set(keys.slice(0, 100).map((k) => k.slice(4, 5))).size).toBeGreaterThanOrEqual(8);
    const numbers = keys.slice(0, 1000).map((k) => Number(k.slice(4))).sort((a, b) => a - b);
    const gaps = numbers.slice(1).map((x, j) => x - numbers[j]!);
    expect(Math.min(...gaps)).toBeGreaterThan(900_000_000_000 / 2000);
  });
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

  it('counts a window that ended early (a delete row out of keys) for the time it ran', () => {
    // 100 requests in a full 2 s window, then 50 in one that ran out after 0.5 s.
    const full = window(Array(100).fill(1), 2);
    const short = { ...window(Array(50).fill(1), 0.5), seconds: 0.5 };
    expect(poolFigures([full, short], 2, 1).opsPerSec).toBe(60);
    // Counted as a full window it would say 37.5.
    expect(poolFigures([full, { ...short, seconds: undefined }], 2, 1).opsPerSec).toBe(37.5);
  });

  it('refuses windows measured without their latencies', () => {
    const { latencies: _, ...bare } = window([1, 2], 1);
    expect(() => poolFigures([bare], 1, 1)).toThrow(/keepSamples/);
  });
});

describe('splitJob and mergeConcurrent (npm run bench -- --drivers N)', () => {
  const job: Job = { system: 'kvql', op: 'delete', concurrency: 32, items: 1, seconds: 2, warmupSeconds: 0.5, loadedKeys: 100, target: 'http://x/graphql', deletes: { from: 1000, to: 1101 } };

  it('deals the clients and a delete job\'s keys out evenly, each key to one job, never a job of no client', () => {
    const three = splitJob(job, 3);
    expect(three.map((j) => j.concurrency)).toEqual([11, 11, 10]);
    expect(three.map((j) => j.deletes)).toEqual([{ from: 1000, to: 1034 }, { from: 1034, to: 1068 }, { from: 1068, to: 1101 }]);
    expect(three.every((j) => j.keepSamples === true && j.target === job.target && j.seconds === 2)).toBe(true);
    const { deletes: _, ...put } = job;
    expect(splitJob({ ...put, op: 'put', concurrency: 1 }, 4).map((j) => [j.concurrency, j.deletes])).toEqual([[1, undefined]]);
    expect(splitJob(job, 1)).toEqual([{ ...job, keepSamples: true }]);
  });

  it('adds the throughputs of windows that ran at once and takes percentiles over all their latencies', () => {
    // Two drivers over the same 2 s: 100 requests at 1 ms and 300 at 3 ms.
    const a = window(Array(100).fill(1), 2);
    const b = window(Array(300).fill(3), 2, 1, 'boom');
    // Nearest rank over the 400: the 200th and the 396th are 3 ms ones.
    expect(mergeConcurrent([a, b], 10)).toEqual({ opsPerSec: 200, itemsPerSec: 2000, samples: 400, meanMs: 2.5, p50Ms: 3, p99Ms: 3, errors: 1, firstError: 'boom' });
    expect(mergeConcurrent([a, b], 10, true).latencies).toHaveLength(400);
    // One ran out of its delete keys after 0.5 s: at its own rate, and the figure says when.
    const short = { ...window(Array(50).fill(1), 0.5), seconds: 0.5 };
    const g = mergeConcurrent([a, short], 1);
    expect(g.opsPerSec).toBe(150);
    expect(g.seconds).toBe(0.5);
    expect(() => mergeConcurrent([{ ...a, latencies: undefined }], 1)).toThrow(/latencies/);
  });
});
