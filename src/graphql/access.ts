// Authorization: whether the request's principal may read or write the keys and key ranges a
// field touches. Checked in the resolvers, before the store is reached (the store stays free of
// auth). A field that reaches outside the token's prefixes is refused with FORBIDDEN, never
// narrowed or filtered into a misleading answer.
import { GraphQLError } from 'graphql';
import type { Principal } from '../auth/tokens.js';
import type { KeyRange } from '../store/order.js';

export const FORBIDDEN = 'FORBIDDEN';
export type Access = 'read' | 'write';

function forbidden(p: Principal, message: string): GraphQLError {
  return new GraphQLError(`token "${p.id}" ${message}`, { extensions: { code: FORBIDDEN } });
}

function needScope(p: Principal, access: Access): void {
  if (!p[access]) throw forbidden(p, `lacks the ${access} scope`);
}

/** For well-formed strings, a UTF-16 prefix is a UTF-8 byte prefix (keys and prefixes are validated as such). */
const keyAllowed = (p: Principal, key: string) => p.prefixes.some((prefix) => key.startsWith(prefix));

/** Refuses unless every key is allowed for `access`. */
export function requireKeys(p: Principal, access: Access, keys: readonly string[]): void {
  needScope(p, access);
  for (const key of keys) if (!keyAllowed(p, key)) throw forbidden(p, `may not ${access} key ${JSON.stringify(key)}: outside its prefixes`);
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');

/**
 * The first byte string after every key that starts with `prefix`: the prefix with its last byte
 * + 1. Keys in [prefix, successor) are exactly the keys that start with prefix (a key that is >=
 * prefix and does not start with it differs at a byte greater than prefix's, so it is >=
 * successor). UTF-8 has no 0xFF byte, so the increment never carries.
 */
function successor(prefix: Buffer): Buffer {
  const s = Buffer.from(prefix);
  s[s.length - 1]! += 1;
  return s;
}

/**
 * Whether every key of `r` starts with `prefix` ("" contains everything). Bytes order, as the
 * store's. Conservative: a range that is empty but not bounded inside the prefix is refused too.
 */
export function rangeWithin(r: KeyRange, prefix: string): boolean {
  if (prefix === '') return true;
  const p = utf8(prefix);
  const end = successor(p);
  // Lower bound: at or after the prefix itself (inclusive or not, both keep keys >= prefix).
  if (r.lo.key === null || Buffer.compare(utf8(r.lo.key), p) < 0) return false;
  if (r.hi.key === null) return false;
  const hi = utf8(r.hi.key);
  // A prefix bound q covers every key that starts with q: inside only when q starts with prefix
  // (so "tenantA" is outside "tenantA:", and "tenantAB" is outside "tenantA:").
  if (r.hi.afterPrefix) return hi.length >= p.length && hi.subarray(0, p.length).equals(p);
  const c = Buffer.compare(hi, end);
  return r.hi.inclusive ? c < 0 : c <= 0;
}

/** Refuses unless the whole range lies inside one allowed prefix. */
export function requireRange(p: Principal, access: Access, r: KeyRange): void {
  needScope(p, access);
  if (!p.prefixes.some((prefix) => rangeWithin(r, prefix)))
    throw forbidden(p, `may not ${access} this range: it is not wholly inside one of its prefixes (give prefix, or start and end, inside one)`);
}
