// The one place that creates Redis connections, with the options every guarantee relies on.
import { Redis } from 'ioredis';

export interface RedisOptions {
  /** Upper bound on any single command; past it the client gets STORE_UNAVAILABLE. */
  commandTimeoutMs: number;
}

/** A deployment watched by Redis Sentinel: the sentinels to ask, and the name they watch. */
export interface SentinelTarget {
  sentinels: { host: string; port: number }[];
  masterName: string;
  /** The Redis servers' password (requirepass), if any. */
  password?: string;
  /** The sentinels' own password, if any. */
  sentinelPassword?: string;
  /** Connect to the primary (default), or to one of its replicas (for eventual reads). */
  role?: 'master' | 'slave';
}

/** Where Redis is: a redis:// URL, or a Sentinel deployment whose primary ioredis follows. */
export type RedisTarget = string | SentinelTarget;

export function createRedis(target: RedisTarget, opts: RedisOptions): Redis {
  const common = {
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
    retryStrategy: (attempt: number) => Math.min(50 * attempt, 1000),
    // Many concurrent requests share one connection; commands issued in the same tick go out
    // in one write.
    enableAutoPipelining: true,
  };
  if (typeof target === 'string') return new Redis(target, common);
  return new Redis({
    ...common,
    // ioredis asks the sentinels for the primary on every (re)connect, and with failoverDetector
    // also listens for +switch-master, so it follows a failover within moments of it.
    sentinels: target.sentinels,
    name: target.masterName,
    role: target.role ?? 'master',
    failoverDetector: true,
    ...(target.password ? { password: target.password } : {}),
    ...(target.sentinelPassword ? { sentinelPassword: target.sentinelPassword } : {}),
    sentinelRetryStrategy: (attempt: number) => Math.min(100 * attempt, 1000),
    // A demoted primary answers writes with READONLY until ioredis notices the switch:
    // reconnect (through the sentinels) at once, without resending the refused command.
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 1 : false),
  });
}
