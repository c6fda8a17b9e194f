// The one place that creates Redis connections, with the options every guarantee relies on.
import { Redis } from 'ioredis';

export interface RedisOptions {
  /** Upper bound on any single command; past it the client gets STORE_UNAVAILABLE. */
  commandTimeoutMs: number;
}

export function createRedis(url: string, opts: RedisOptions): Redis {
  return new Redis(url, {
    lazyConnect: true,
    // Fail fast while disconnected instead of queueing without bound: a request gets
    // STORE_UNAVAILABLE within the command timeout, never a hang.
    enableOfflineQueue: false,
    // Never replay a command whose outcome is unknown: a put sent twice would bump the version
    // twice. The client is told the outcome is unknown instead.
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs,
    connectTimeout: Math.max(opts.commandTimeoutMs, 1000),
    retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
    // Many concurrent requests share one connection; commands issued in the same tick go out
    // in one write.
    enableAutoPipelining: true,
  });
}
