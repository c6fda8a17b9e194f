// Keys are ordered as Redis orders them: by their UTF-8 bytes (memcmp). JavaScript's `<` compares
// UTF-16 code units, which disagrees for characters outside the Basic Multilingual Plane
// (U+10000 and up sort *above* U+E000..U+FFFF in UTF-8, but their surrogates sort below).

/** Maps a UTF-16 code unit so that code-unit order equals UTF-8 byte order. */
function rank(unit: number): number {
  if (unit < 0xd800) return unit;
  if (unit < 0xe000) return unit + 0x2000; // surrogates: astral code points, above U+FFFF
  return unit - 0x800; // U+E000..U+FFFF: below the astral range
}

/** Compares two well-formed strings by their UTF-8 bytes: negative, zero or positive. */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return rank(x) - rank(y);
  }
  return a.length - b.length;
}

/**
 * One end of a key range. `key: null` is unbounded (-inf for a lower bound, +inf for an upper).
 * `inclusive` says whether the key itself belongs to the range.
 */
export interface Bound {
  key: string | null;
  inclusive: boolean;
  /** The prefix form of an upper bound: every key that starts with `key` is below it. */
  afterPrefix?: boolean;
}

export const UNBOUNDED: Bound = { key: null, inclusive: true };

/** A range of keys: lower and upper bound. */
export interface KeyRange {
  lo: Bound;
  hi: Bound;
}

/** The range of keys that start with `prefix`. */
export function prefixRange(prefix: string): KeyRange {
  if (prefix === '') return { lo: UNBOUNDED, hi: UNBOUNDED };
  return { lo: { key: prefix, inclusive: true }, hi: { key: prefix, inclusive: false, afterPrefix: true } };
}

// 0xFF never occurs in UTF-8, so "prefix + 0xFF" is above every key that starts with prefix and
// below every greater key that does not.
const FF = Buffer.from([0xff]);

/**
 * The ZRANGE BYLEX / ZLEXCOUNT argument for a bound: a string (sent as its UTF-8 bytes) wherever
 * one can say it, because ioredis sends a command whose arguments are all strings as one
 * string, and one with a Buffer among them piece by piece (a range page's check call has about
 * 200 arguments).
 *
 * A prefix's upper bound is "(" + prefix + 0xFF, which no string's UTF-8 holds. When the prefix
 * ends in an ASCII character below DEL, the same bound is "(" + the prefix with that character
 * moved up by one: every key that starts with the prefix is below it, and every key above the
 * prefix's keys differs from the prefix at its last character or earlier, by more, so is at or
 * above it. Otherwise (a last character of 0x7F or above) the Buffer form stays.
 */
export function lexArg(b: Bound, side: 'lo' | 'hi'): Buffer | string {
  if (b.key === null) return side === 'lo' ? '-' : '+';
  if (b.afterPrefix) {
    const last = b.key.charCodeAt(b.key.length - 1);
    if (last < 0x7f) return '(' + b.key.slice(0, -1) + String.fromCharCode(last + 1);
    return Buffer.concat([Buffer.from('('), Buffer.from(b.key, 'utf8'), FF]);
  }
  return (b.inclusive ? '[' : '(') + b.key;
}

/** Compares two bounds by position; for equal keys, the exclusive one is "inner". */
function position(b: Bound, side: 'lo' | 'hi'): [number, string | null, number] {
  // Rank: where the bound sits relative to its key: before it (-1), at it (0) or after it (1).
  if (b.key === null) return [side === 'lo' ? -1 : 1, null, 0];
  if (b.afterPrefix) return [0, b.key, 2];
  if (side === 'lo') return [0, b.key, b.inclusive ? -1 : 1];
  return [0, b.key, b.inclusive ? 1 : -1];
}

function comparePositions(a: [number, string | null, number], b: [number, string | null, number]): number {
  if (a[0] !== b[0]) return a[0] - b[0];
  if (a[1] === null || b[1] === null) return 0;
  if (a[1] !== b[1]) {
    // A prefix bound sits after every key that extends it.
    if (a[2] === 2 && b[1].startsWith(a[1])) return 1;
    if (b[2] === 2 && a[1].startsWith(b[1])) return -1;
    return compareKeys(a[1], b[1]);
  }
  return a[2] - b[2];
}

/** The tighter (greater) of two lower bounds. */
export function maxLower(a: Bound, b: Bound): Bound {
  return comparePositions(position(a, 'lo'), position(b, 'lo')) >= 0 ? a : b;
}

/** The tighter (smaller) of two upper bounds. */
export function minUpper(a: Bound, b: Bound): Bound {
  return comparePositions(position(a, 'hi'), position(b, 'hi')) <= 0 ? a : b;
}

/** Whether a key lies inside a range. */
export function inRange(key: string, r: KeyRange): boolean {
  const { lo, hi } = r;
  if (lo.key !== null) {
    const c = compareKeys(key, lo.key);
    if (c < 0 || (c === 0 && !lo.inclusive)) return false;
  }
  if (hi.key !== null) {
    if (hi.afterPrefix) return key.startsWith(hi.key) || compareKeys(key, hi.key) < 0;
    const c = compareKeys(key, hi.key);
    if (c > 0 || (c === 0 && !hi.inclusive)) return false;
  }
  return true;
}
