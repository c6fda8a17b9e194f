// Where a key lives must never change between versions: data written by one release has to be
// found by the next. These golden values pin the partition and bucket hashes (keys.ts).
import { describe, expect, it } from 'vitest';
import { bucketOf, partitionOf } from '../../src/store/keys.js';

const GOLDEN: [key: string, p4: number, p1024: number, b16384: number, b5: number][] = [
  ['', 1, 453, 11035, 3],
  ['a', 0, 300, 7442, 1],
  ['hello', 3, 171, 7699, 2],
  ['user:42', 2, 898, 1247, 4],
  ['ключ', 1, 481, 8149, 3],
  ['🔑key', 2, 158, 13600, 1],
  ['key:000000000001', 1, 789, 7307, 4],
];

describe('key placement', () => {
  it.each(GOLDEN)('%j stays in its partition and bucket', (key, p4, p1024, b16384, b5) => {
    expect([partitionOf(key, 4), partitionOf(key, 1024), bucketOf(key, 16384), bucketOf(key, 5)]).toEqual([p4, p1024, b16384, b5]);
    expect(partitionOf(key, 1)).toBe(0);
    expect(bucketOf(key, 1)).toBe(0);
  });
});
