// Structured logs: one JSON object per line (pino), on stdout. The level comes from LOG_LEVEL
// (default info). Lines about one HTTP request carry its request id as `reqId`. Credentials in
// URLs (REDIS_URL may carry a password) are blanked in every line, whatever field holds them;
// request bodies, keys and values are never logged (not even inside a Redis error).
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `scheme://user:password@` → `scheme://***@`, also inside a JSON string. */
const CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/)[^\s/@"\\]*@/gi;

/** A URL or any text, with the user and password of every URL in it blanked. */
export function redactUrl(text: string): string {
  return text.includes('://') ? text.replace(CREDENTIALS, '$1***@') : text;
}

/**
 * An error as pino serializes it (message, stack, causes, own fields), without the data of the
 * Redis command it was about: ioredis errors carry `command.args`, which hold keys and values.
 */
function serializeError(err: unknown): unknown {
  const out = pino.stdSerializers.err(err as Error);
  withoutCommandData(out, 0);
  return out;
}

function withoutCommandData(o: unknown, depth: number): void {
  if (typeof o !== 'object' || o === null || depth > 4) return;
  for (const [k, v] of Object.entries(o)) {
    if (k === 'command' && typeof v === 'object' && v !== null) {
      (o as Record<string, unknown>)[k] = { name: (v as { name?: unknown }).name };
    } else if (typeof v === 'object') {
      withoutCommandData(v, depth + 1);
    }
  }
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where the lines go; stdout by default. Tests pass a stream to read them. */
  destination?: DestinationStream;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      name: 'kvql',
      level: opts.level ?? 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeError },
      // Defence in depth: nothing in kvql logs these fields, and no line may show them.
      redact: { paths: ['redisUrl', '*.redisUrl', 'password', '*.password', 'headers.authorization', '*.headers.authorization'], censor: '***' },
      // The last step before a line is written: no field, message, stack or cause can carry a
      // password out, whoever put it there (an ioredis error message, an error's stack).
      hooks: { streamWrite: redactUrl },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/**
 * A pino logger over a plain `(message) => void` function, for callers (tests) that take
 * messages as text: each line's message, with its error's message if it has one.
 */
export function loggerFromFunction(fn: (message: string) => void, level: LogLevel = 'info'): Logger {
  return createLogger({
    level,
    destination: {
      write(line: string) {
        try {
          const o = JSON.parse(line) as { msg?: string; err?: { message?: string } };
          fn(o.err?.message && o.err.message !== o.msg ? `${o.msg ?? ''}: ${o.err.message}` : (o.msg ?? line));
        } catch {
          fn(line);
        }
      },
    },
  });
}

// The request an error happened in, for the line that logs it: the request plugin tags the
// errors of a request's result before graphql-yoga masks them and logs the originals.
const errorRequests = new WeakMap<object, string>();

export function tagError(error: unknown, requestId: string): void {
  if (typeof error === 'object' && error !== null) errorRequests.set(error, requestId);
}

export function requestIdOf(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? errorRequests.get(error) : undefined;
}

/** What graphql-yoga needs of a logger (its `logging` option). */
export interface YogaLogger {
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/**
 * graphql-yoga's logger over pino. Yoga logs every error it masks, in full, through `error`:
 * here that becomes one line with the original error (message, stack, cause), the GraphQL path
 * and the request id. Yoga's own debug chatter goes to `trace`.
 */
export function yogaLogger(log: Logger): YogaLogger {
  const line = (level: 'info' | 'warn' | 'error', args: unknown[]) => {
    for (const arg of args) {
      if (arg instanceof Error) {
        const original = (arg as { originalError?: unknown }).originalError;
        const path = (arg as { path?: readonly (string | number)[] }).path;
        const err = original instanceof Error ? original : arg;
        log[level](
          { err, reqId: requestIdOf(arg), ...(path ? { path: path.join('.') } : {}) },
          level === 'error' ? `unexpected error, masked for the client: ${err.message}` : err.message,
        );
      } else {
        log[level](typeof arg === 'string' ? arg : String(arg));
      }
    }
  };
  return {
    debug: (...args) => {
      if (log.isLevelEnabled('trace')) log.trace(args.map(String).join(' '));
    },
    info: (...args) => line('info', args),
    warn: (...args) => line('warn', args),
    error: (...args) => line('error', args),
  };
}
