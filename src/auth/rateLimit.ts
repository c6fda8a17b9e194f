// Per-token rate limits: requests and request bytes per second (a token's `rateLimit`, see
// tokens.ts), enforced in Redis so every API process sharing it shares each token's budget
// (store/lua/rateLimit.lua: GCRA on the Redis clock, both dimensions in one atomic step).
//
// A refused request gets HTTP 429 with Retry-After and a GraphQL-shaped body with code
// RATE_LIMITED and `extensions.retryAfterSeconds` (over graphql-ws: an error of that shape for
// the operation). A request whose byte count alone exceeds its token's byte burst
// (bytesPerSecond × burstSeconds) could never pass: it gets 413 PAYLOAD_TOO_LARGE with the
// limit in the message, and no Retry-After.
//
// Failure policy: fail open. When the check fails (Redis down, a failover, a timeout past
// `timeoutMs`), the request goes on unchecked: the limits protect the store from one token's
// excess, and a store that cannot answer the check will answer the request's own commands with
// STORE_UNAVAILABLE anyway (or serve it, if only the rate-limit key's node is away), so refusing
// would only turn a degraded store into a refused one. The failure is logged at most once per
// `logIntervalMs` (with how many more there were), and counted in `stats.failed`.
// Principals without a `rateLimit` (and auth off: UNRESTRICTED) cost nothing: no Redis call.
import { GraphQLError } from 'graphql';
import { PAYLOAD_TOO_LARGE } from '../bodyLimit.js';
import type { KvStore } from '../store/store.js';
import type { Principal } from './tokens.js';

export const RATE_LIMITED = 'RATE_LIMITED';

/** The answer of RateLimiter.check. */
export type RateVerdict =
  /** Allowed; `unchecked` when the check failed and the request passes by the failure policy. */
  | { ok: true; unchecked?: true }
  /** Over the limit for now: nothing was consumed; retry after `retryAfterSeconds`. */
  | { ok: false; code: typeof RATE_LIMITED; retryAfterMs: number; retryAfterSeconds: number }
  /** Never allowed: `bytes` exceed the token's byte burst `maxBytes`. */
  | { ok: false; code: typeof PAYLOAD_TOO_LARGE; bytes: number; maxBytes: number };

export interface RateLimiterLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface RateLimiterOptions {
  /** Where failed checks are reported (pino's Logger fits); silent when absent. */
  logger?: RateLimiterLogger;
  /** At most one failure line per this many ms (default 30 000). */
  logIntervalMs?: number;
  /**
   * A check unanswered after this many ms lets its request through (default 500). Bounds the
   * delay when only the node holding the token's key is unreachable (on a cluster it may be
   * another master than the data's); the store's command timeout bounds it anyway.
   */
  timeoutMs?: number;
}

export const DEFAULT_RATE_LOG_INTERVAL_MS = 30_000;
export const DEFAULT_RATE_CHECK_TIMEOUT_MS = 500;

const ALLOWED: RateVerdict = Object.freeze({ ok: true });
const ALLOWED_NOW: Promise<RateVerdict> = Promise.resolve(ALLOWED);
const UNCHECKED: RateVerdict = Object.freeze({ ok: true, unchecked: true });

class CheckTimeout extends Error {
  constructor(ms: number) {
    super(`the rate-limit check did not answer within ${ms} ms`);
  }
}

/** A lease is this long's worth of a token's rate (see check). */
export const LEASE_MS = 50;
/** A lease not spent within this long is dropped: it was paid for, so only budget is lost. */
export const LEASE_TTL_MS = 1000;

/** What one Redis check asks for: LEASE_MS of each rate, within the burst, at least this request. */
export function leaseSize(limit: NonNullable<Principal['rateLimit']>, bytes: number): { requests: number; bytes: number } {
  const rps = limit.requestsPerSecond;
  const bps = limit.bytesPerSecond;
  const requests = rps ? Math.max(1, Math.min(Math.floor(rps * limit.burstSeconds), Math.ceil((rps * LEASE_MS) / 1000))) : 1;
  const leaseBytes = bps ? Math.max(bytes, Math.min(Math.floor(bps * limit.burstSeconds), Math.ceil((bps * LEASE_MS) / 1000))) : bytes;
  return { requests, bytes: leaseBytes };
}

export class RateLimiter {
  private readonly logIntervalMs: number;
  private readonly timeoutMs: number;
  /** Date.now() of the last failure line; failures since it that were not logged. */
  private lastLogAt = -Infinity;
  private suppressed = 0;
  private failing = false;

  /** Counters for metrics and tests: `checked` went to Redis, `leased` were served from a lease. */
  readonly stats = { checked: 0, leased: 0, refused: 0, tooLarge: 0, failed: 0 };
  /** Each principal's lease: what this process may still pass without asking Redis. */
  private readonly leases = new WeakMap<object, { requests: number; bytes: number; until: number; noLeaseUntil: number }>();

  constructor(
    private readonly store: Pick<KvStore, 'rateLimit'>,
    private readonly opts: RateLimiterOptions = {},
  ) {
    this.logIntervalMs = opts.logIntervalMs ?? DEFAULT_RATE_LOG_INTERVAL_MS;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_RATE_CHECK_TIMEOUT_MS;
  }

  /**
   * Counts one request of `bytes` bytes (its body, or what the operation carries) against the
   * principal's limits. Never rejects for a Redis failure (see the failure policy above); throws
   * a RangeError for a `bytes` that is not a whole number >= 0 (a caller's bug).
   *
   * Leases: a token with a high rate would pay a Redis round trip per request. So this process
   * takes LEASE_MS worth of the token's rate from Redis at once (never more than its burst) and
   * spends it locally; only when the lease is spent (or older than LEASE_TTL_MS) does it ask
   * Redis again. Every request is still paid for in Redis before it passes, so the processes
   * together never exceed the rate; a lease lets one process run ahead by at most LEASE_MS of
   * the rate, and an unspent lease is budget lost, never budget gained. A token whose lease
   * would be one request (a rate under 1000/LEASE_MS per second) is asked about each request,
   * exactly as without leases.
   */
  check(principal: Pick<Principal, 'id' | 'rateLimit'>, bytes: number): Promise<RateVerdict> {
    const limit = principal.rateLimit;
    if (!limit) return ALLOWED_NOW;
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`invalid byte count ${bytes}`);
    const lease = this.leases.get(principal);
    if (lease && lease.requests >= 1 && lease.bytes >= bytes && performance.now() < lease.until) {
      lease.requests -= 1;
      lease.bytes -= bytes;
      this.stats.leased++;
      return ALLOWED_NOW;
    }
    return this.run(principal, limit, bytes);
  }

  private async run(principal: Pick<Principal, 'id' | 'rateLimit'>, limit: NonNullable<Principal['rateLimit']>, bytes: number): Promise<RateVerdict> {
    this.stats.checked++;
    const size = leaseSize(limit, bytes);
    const previous = this.leases.get(principal);
    if ((size.requests > 1 || size.bytes > bytes) && !(previous && performance.now() < previous.noLeaseUntil)) {
      const leased = await this.ask(principal.id, limit, size.bytes, size.requests);
      if (leased === 'failed') return UNCHECKED;
      if (leased.ok) {
        this.leases.set(principal, {
          requests: limit.requestsPerSecond ? size.requests - 1 : Infinity,
          bytes: limit.bytesPerSecond ? size.bytes - bytes : Infinity,
          until: performance.now() + LEASE_TTL_MS,
          noLeaseUntil: 0,
        });
        return ALLOWED;
      }
      // No room for a whole lease (the token runs at its limit): ask for this request alone,
      // for an exact answer, and for single requests only until a lease could fit again, so
      // that a saturated token costs one Redis call per request, not two.
      if (!('tooLarge' in leased)) this.leases.set(principal, { requests: 0, bytes: 0, until: 0, noLeaseUntil: performance.now() + leased.retryAfterMs });
    }
    const outcome = await this.ask(principal.id, limit, bytes, 1);
    if (outcome === 'failed') return UNCHECKED;
    if (outcome.ok) return ALLOWED;
    if ('tooLarge' in outcome) {
      this.stats.tooLarge++;
      return { ok: false, code: PAYLOAD_TOO_LARGE, bytes, maxBytes: outcome.maxBytes };
    }
    this.stats.refused++;
    return { ok: false, code: RATE_LIMITED, retryAfterMs: outcome.retryAfterMs, retryAfterSeconds: retryAfterSeconds(outcome.retryAfterMs) };
  }

  /** One check in Redis, bounded by timeoutMs; 'failed' (logged, counted) when it cannot be made. */
  private async ask(id: string, limit: NonNullable<Principal['rateLimit']>, bytes: number, requests: number): Promise<Awaited<ReturnType<KvStore['rateLimit']>> | 'failed'> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const checking = this.store.rateLimit(id, limit, bytes, requests);
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CheckTimeout(this.timeoutMs)), this.timeoutMs);
      });
      checking.catch(() => {}); // after a timeout its outcome is nobody's
      const outcome = await Promise.race([checking, expired]);
      this.recovered();
      return outcome;
    } catch (err) {
      this.failed(err);
      return 'failed';
    } finally {
      clearTimeout(timer);
    }
  }

  private failed(err: unknown): void {
    this.stats.failed++;
    this.failing = true;
    const now = Date.now();
    if (now - this.lastLogAt < this.logIntervalMs) {
      this.suppressed++;
      return;
    }
    this.opts.logger?.warn(
      { err, failuresNotLogged: this.suppressed, logIntervalMs: this.logIntervalMs },
      'rate-limit check failed: requests of rate-limited tokens pass unchecked until it works again',
    );
    this.lastLogAt = now;
    this.suppressed = 0;
  }

  private recovered(): void {
    if (!this.failing) return;
    this.failing = false;
    this.opts.logger?.info({ failuresNotLogged: this.suppressed }, 'rate-limit checks work again');
    this.suppressed = 0;
    this.lastLogAt = -Infinity;
  }
}

/** Retry-After in whole seconds for a wait in ms: rounded up, at least 1. */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}

export function rateLimitedMessage(retryAfterSeconds: number): string {
  return `this token's rate limit is exceeded; retry in ${retryAfterSeconds} s`;
}

export function tooLargeMessage(bytes: number, maxBytes: number): string {
  return (
    `the request's ${bytes} bytes exceed this token's rate limit of ${maxBytes} bytes at once ` +
    `(bytesPerSecond × burstSeconds): it can never be accepted; send smaller requests`
  );
}

/** The body of a 429 answer (with `Retry-After: <retryAfterSeconds>`), as overloadedBody in admission.ts. */
export function rateLimitedBody(retryAfterSeconds: number): string {
  return JSON.stringify({ errors: [{ message: rateLimitedMessage(retryAfterSeconds), extensions: { code: RATE_LIMITED, retryAfterSeconds } }] });
}

/** The body of a 413 answer for a request larger than its token's byte burst (no Retry-After). */
export function tooLargeBody(bytes: number, maxBytes: number): string {
  return JSON.stringify({ errors: [{ message: tooLargeMessage(bytes, maxBytes), extensions: { code: PAYLOAD_TOO_LARGE, maxBytes } }] });
}

/** An HTTP answer for a refused verdict: status, headers and body, for the listener's paths. */
export function rateLimitRefusal(verdict: Exclude<RateVerdict, { ok: true }>): { status: number; headers: Record<string, string>; body: string } {
  const contentType = 'application/json; charset=utf-8';
  if (verdict.code === RATE_LIMITED) {
    return {
      status: 429,
      headers: { 'content-type': contentType, 'retry-after': String(verdict.retryAfterSeconds) },
      body: rateLimitedBody(verdict.retryAfterSeconds),
    };
  }
  return { status: 413, headers: { 'content-type': contentType }, body: tooLargeBody(verdict.bytes, verdict.maxBytes) };
}

/** The same refusal as a GraphQLError, for a graphql-ws operation (which has no HTTP status). */
export function rateLimitError(verdict: Exclude<RateVerdict, { ok: true }>): GraphQLError {
  if (verdict.code === RATE_LIMITED) {
    const s = verdict.retryAfterSeconds;
    return new GraphQLError(rateLimitedMessage(s), { extensions: { code: RATE_LIMITED, retryAfterSeconds: s } });
  }
  return new GraphQLError(tooLargeMessage(verdict.bytes, verdict.maxBytes), { extensions: { code: PAYLOAD_TOO_LARGE, maxBytes: verdict.maxBytes } });
}
