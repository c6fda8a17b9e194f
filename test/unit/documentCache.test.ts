import { expect, it } from 'vitest';
import { BoundedCache } from '../../src/graphql/documentCache.js';

it('keeps small documents and never large ones', () => {
  const c = new BoundedCache<number>();
  c.set('{ get(key: "a") { value } }', 1);
  expect(c.get('{ get(key: "a") { value } }')).toBe(1);
  const large = `mutation { put(key: "k", value: "${'x'.repeat(10_000)}") { version } }`;
  c.set(large, 2);
  expect(c.get(large)).toBeUndefined();
});

it('evicts the least recently used beyond its size', () => {
  const c = new BoundedCache<number>();
  for (let i = 0; i < 1024; i++) c.set(`q${i}`, i);
  expect(c.get('q0')).toBe(0); // now most recent
  c.set('q1024', 1024); // evicts q1, the least recent
  expect(c.get('q1')).toBeUndefined();
  expect(c.get('q0')).toBe(0);
  expect(c.get('q1024')).toBe(1024);
});
