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

it('evicts the oldest not used since it was last passed over, beyond its size', () => {
  const c = new BoundedCache<number>();
  for (let i = 0; i < 1024; i++) c.set(`q${i}`, i);
  expect(c.get('q0')).toBe(0); // used: a second chance
  c.set('q1024', 1024); // passes over q0, evicts q1
  expect(c.get('q1')).toBeUndefined();
  expect(c.get('q0')).toBe(0);
  expect(c.get('q1024')).toBe(1024);
});

it('keeps a document in use however many others pass through', () => {
  const c = new BoundedCache<number>();
  c.set('hot', -1);
  for (let i = 0; i < 10_000; i++) {
    c.set(`cold${i}`, i);
    expect(c.get('hot'), `after ${i} others`).toBe(-1);
  }
  // The cache stays bounded: of the cold ones only the most recent fit.
  expect(c.get('cold0')).toBeUndefined();
  expect(c.get('cold9999')).toBe(9999);
  expect(c.get(`cold${10_000 - 1023}`)).toBe(10_000 - 1023);
  expect(c.get(`cold${10_000 - 1024}`)).toBeUndefined();
});
