// Where a key lives must never change between versions: data written by one release has to be
// found by the next. These golden values pin the partition and bucket hashes (keys.ts).
import { describe, expect, it } from 'vitest';
import { bucketOf, partitionOf, rateLimitKey } from '../../src/store/keys.js';

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

describe('the rate-limit key', () => {
  it('is one hash tag per token, of the keyspace prefix and the token id', () => {
    expect(rateLimitKey('kv', 'alice@example.com')).toBe('{kv:rl/alice@example.com}');
    expect(rateLimitKey('a:b', '0')).toBe('{a:b:rl/0}');
  });

  it('can never carry a partition tag {<prefix>:<number>} of any keyspace, nor two pairs one key', () => {
    const partitionTag = /^\{[A-Za-z0-9_.:-]{1,64}:(0|[1-9][0-9]*)\}/;
    const pairs: [string, string][] = [
      ['kv', '0'],
      ['kv', '12'],
      ['kv:rl', '3'],
      ['a', 'rl:5'],
      ['a:rl', '5'],
      ['a', 'b:rl:x'],
      ['a:rl:b', 'x'],
    ];
    const seen = new Set<string>();
    for (const [prefix, id] of pairs) {
      const key = rateLimitKey(prefix, id);
      expect(key, key).not.toMatch(partitionTag);
      // The hash tag is the whole key: the first "{" to the first "}".
      expect(key.indexOf('}')).toBe(key.length - 1);
      expect(seen.has(key), key).toBe(false);
      seen.add(key);
    }
  });

  it('refuses token ids and prefixes outside their patterns (no braces, no "/")', () => {
    for (const id of ['', 'a}b', '{x', 'a/b', 'a b', 'x'.repeat(65)]) expect(() => rateLimitKey('kv', id), id).toThrow(/token id/);
    expect(() => rateLimitKey('k/v', 'a')).toThrow(/prefix/);
  });
});
