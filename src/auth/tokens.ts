// Bearer tokens (API keys): their entries as configured (KV_TOKENS, KV_TOKENS_FILE), and the
// check of a presented `Authorization: Bearer <token>`. Only SHA-256 hashes are configured, so a
// leaked configuration file holds no usable secret.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { z } from 'zod';
import { TOKEN_ID_PATTERN } from '../store/keys.js';

export const SCOPES = ['read', 'write', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** A lone surrogate has no UTF-8 form: a prefix holding one could never match a key's bytes. */
const LONE_SURROGATE = /\p{Surrogate}/u;

/**
 * A token's rate limits: sustained requests and request-body bytes per second, each allowed to
 * burst to `burstSeconds` worth at once. Unset: that dimension is unlimited.
 */
export const RateLimitSchema = z
  .object({
    requestsPerSecond: z.number().positive('rateLimit.requestsPerSecond: above 0').max(1e6).optional(),
    bytesPerSecond: z.number().int().positive('rateLimit.bytesPerSecond: a whole number above 0').max(1e12).optional(),
    burstSeconds: z.number().min(0.001, 'rateLimit.burstSeconds: at least 0.001').max(3600).default(1),
  })
  .strict()
  .refine((r) => r.requestsPerSecond !== undefined || r.bytesPerSecond !== undefined, 'rateLimit: set requestsPerSecond, bytesPerSecond or both');

export type RateLimit = z.output<typeof RateLimitSchema>;

export const TokenEntrySchema = z
  .object({
    // Part of its rate-limit key's name: the pattern lives with the key (store/keys.ts).
    id: z.string().regex(TOKEN_ID_PATTERN, 'id: 1-64 characters from A-Z a-z 0-9 _ . : @ -'),
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'sha256: the hex SHA-256 of the token (64 hex digits), never the token itself')
      .transform((s) => s.toLowerCase()),
    scopes: z.array(z.enum(SCOPES, `scopes: each one of ${SCOPES.join(', ')}`)).min(1, 'scopes: at least one'),
    // "" means every key. admin needs none (it grants every key).
    prefixes: z.array(z.string().refine((s) => !LONE_SURROGATE.test(s), 'prefixes: well-formed Unicode only')).default([]),
    // Optional, per token, shared by every API process through Redis (auth/rateLimit.ts).
    rateLimit: RateLimitSchema.optional(),
  })
  .strict()
  .refine((e) => e.scopes.includes('admin') || e.prefixes.length > 0, 'prefixes: a read or write token needs at least one prefix ("" for every key)');

export type TokenEntry = z.output<typeof TokenEntrySchema>;

export const TokenListSchema = z.array(TokenEntrySchema);

/** Who a request acts for: what it may do, on which keys. */
export interface Principal {
  id: string;
  read: boolean;
  write: boolean;
  /** A key is allowed when it starts with one of these; "" allows every key. */
  prefixes: readonly string[];
  /** Its rate limits, when it has any. */
  rateLimit?: RateLimit;
}

/** Auth off (no tokens configured, loopback only): everything, as before tokens existed. */
export const UNRESTRICTED: Principal = Object.freeze({ id: 'anonymous', read: true, write: true, prefixes: Object.freeze(['']) });

export function principalOf(e: TokenEntry): Principal {
  const admin = e.scopes.includes('admin');
  return Object.freeze({
    id: e.id,
    read: admin || e.scopes.includes('read'),
    write: admin || e.scopes.includes('write'),
    prefixes: Object.freeze(admin ? [''] : [...e.prefixes]),
    ...(e.rateLimit ? { rateLimit: Object.freeze({ ...e.rateLimit }) } : {}),
  });
}

export const hashToken = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

/** A new token: 32 random bytes as base64url (43 characters), and its configuration entry. */
export function newToken(id: string, scopes: Scope[], prefixes: string[]): { token: string; entry: TokenEntry } {
  const token = randomBytes(32).toString('base64url');
  return { token, entry: { id, sha256: hashToken(token).toString('hex'), scopes, prefixes } };
}

// RFC 6750's b64token, and exactly one of them: "Bearer", "Basic x", "Bearer a b" are refused.
const BEARER = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/;

/**
 * Checks presented credentials against the configured hashes. The lookup is by the token's
 * SHA-256, so its timing depends on the hash, never on how much of the secret a guess got right;
 * the found entry is then compared in constant time all the same.
 */
export class Authenticator {
  private byHash = new Map<string, { digest: Buffer; principal: Principal; entry: string }>();
  /** Aborted when its principal stops being current: open subscriptions end on it. */
  private readonly revocations = new WeakMap<Principal, AbortController>();

  constructor(entries: readonly TokenEntry[]) {
    this.update(entries);
  }

  /**
   * Puts a new token list in force (KV_TOKENS_FILE reloaded). A token whose entry is unchanged
   * keeps its principal; one removed, or changed in any way (scopes, prefixes, limits), is
   * revoked: its principal's signal aborts, which ends its open subscriptions and WebSockets,
   * and the changed token authenticates as a new principal from its next request on.
   * Returns the ids revoked.
   */
  update(entries: readonly TokenEntry[]): string[] {
    const next = new Map<string, { digest: Buffer; principal: Principal; entry: string }>();
    for (const e of entries) {
      const hex = e.sha256.toLowerCase();
      const entry = JSON.stringify({ id: e.id, scopes: [...e.scopes].sort(), prefixes: e.prefixes, rateLimit: e.rateLimit ?? null });
      const old = this.byHash.get(hex);
      next.set(hex, old && old.entry === entry ? old : { digest: Buffer.from(hex, 'hex'), principal: principalOf(e), entry });
    }
    const revoked: string[] = [];
    for (const [hex, old] of this.byHash) {
      if (next.get(hex) === old) continue;
      revoked.push(old.principal.id);
      this.revocations.get(old.principal)?.abort();
    }
    this.byHash = next;
    return revoked;
  }

  /** Whether tokens are required at all (none configured: auth is off, loopback only). */
  get enabled(): boolean {
    return this.byHash.size > 0;
  }

  /** A signal that aborts when `principal`'s token is revoked or changed (never, for auth off). */
  signalFor(principal: Principal): AbortSignal {
    let c = this.revocations.get(principal);
    if (!c) {
      c = new AbortController();
      // One listener per open subscription and WebSocket of the token: no leak warning at 10.
      setMaxListeners(0, c.signal);
      // A principal no longer in force (revoked between its authentication and now) starts aborted.
      if (principal !== UNRESTRICTED && ![...this.byHash.values()].some((v) => v.principal === principal)) c.abort();
      this.revocations.set(principal, c);
    }
    return c.signal;
  }

  /** The principal of an Authorization header value; null when it is missing, malformed or unknown. */
  authenticate(authorization: string | null | undefined): Principal | null {
    if (!this.enabled) return UNRESTRICTED;
    if (typeof authorization !== 'string') return null;
    const m = BEARER.exec(authorization);
    if (!m) return null;
    const digest = hashToken(m[1]!);
    const found = this.byHash.get(digest.toString('hex'));
    if (!found || !timingSafeEqual(found.digest, digest)) return null;
    return found.principal;
  }
}

/** The error that ends a subscription (or refuses an operation) whose token was revoked. */
export const REVOKED_MESSAGE = 'the token this request was authenticated with has been revoked or changed: authenticate again';

export const UNAUTHENTICATED = 'UNAUTHENTICATED';
export const UNAUTHENTICATED_MESSAGE = 'a valid bearer token is required: send "Authorization: Bearer <token>"';
/** The one body every refused request gets (HTTP and SSE: 401 with WWW-Authenticate: Bearer). */
export const unauthenticatedBody = JSON.stringify({ errors: [{ message: UNAUTHENTICATED_MESSAGE, extensions: { code: UNAUTHENTICATED } }] });
export const UNAUTHENTICATED_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'www-authenticate': 'Bearer realm="kvql"',
} as const;
