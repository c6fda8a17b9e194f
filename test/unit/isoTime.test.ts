// isoTime must be toISOString, character for character: clients parse what the DateTime scalar sends.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isoTime } from '../../src/graphql/isoTime.js';

const LAST = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
const iso = (ms: number) => new Date(ms).toISOString();

describe('isoTime', () => {
  it('matches toISOString at the edges: epoch, leap days, century rules, year ends, the last four-digit year', () => {
    const edges = [
      0, 1, 999, 1000, 59_999, 86_399_999, 86_400_000,
      Date.UTC(1972, 1, 29), Date.UTC(2000, 1, 29, 23, 59, 59, 999), Date.UTC(2000, 2, 1), Date.UTC(2100, 1, 28, 12), Date.UTC(2100, 2, 1),
      Date.UTC(1999, 11, 31, 23, 59, 59, 999), Date.UTC(2000, 0, 1), Date.UTC(2026, 10, 27, 8, 40, 1, 7), Date.UTC(2400, 1, 29),
      2 ** 48 - 1, // the largest timestamp a packed entry holds (6 bytes): past 9999, so toISOString's own form
      LAST, LAST + 1, -1, -86_400_001, 1.5, 8.64e15,
    ];
    for (const ms of edges) expect(isoTime(ms), String(ms)).toBe(iso(ms));
    // Where toISOString throws, so does isoTime.
    for (const ms of [Number.NaN, 8.64e15 + 1]) expect(() => isoTime(ms)).toThrow(RangeError);
  });

  it('matches toISOString for any whole millisecond from 1970 to 9999', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: LAST }), (ms) => isoTime(ms) === iso(ms)), { numRuns: 20_000 });
  });

  it('matches toISOString for every day boundary of the years timestamps are written in', () => {
    for (let day = Date.UTC(1970, 0, 1) / 86_400_000; day <= Date.UTC(2200, 0, 1) / 86_400_000; day++) {
      for (const ms of [day * 86_400_000, day * 86_400_000 + 86_399_999]) if (isoTime(ms) !== iso(ms)) expect(isoTime(ms)).toBe(iso(ms));
    }
  });
});
