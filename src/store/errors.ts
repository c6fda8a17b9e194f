// The store's errors. Each carries a stable code that the GraphQL layer exposes as
// `extensions.code`; this module is the one place that maps Redis and script failures to them.

export type StoreErrorCode =
  | 'BAD_USER_INPUT'
  | 'VERSION_CONFLICT'
  | 'PAYLOAD_TOO_LARGE'
  | 'STORE_UNAVAILABLE'
  | 'CAPACITY_EXCEEDED'
  | 'CURSOR_EXPIRED'
  | 'SLOW_CONSUMER'
  | 'REPLICATION_TIMEOUT'
  | 'CROSS_PARTITION_CAS'
  | 'OVERLOADED';

export class StoreError extends Error {
  /**
   * Code and details in the shape GraphQL servers (and graphql-js's locatedError) read from a
   * thrown error, so they reach the client's `extensions` without a translation table.
   */
  readonly extensions: Record<string, unknown>;

  constructor(
    readonly code: StoreErrorCode,
    message: string,
    details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'StoreError';
    this.extensions = { code, ...details };
  }
}

export interface Conflict {
  key: string;
  actualVersion: number;
}

export class VersionConflictError extends StoreError {
  constructor(readonly conflicts: Conflict[]) {
    const first = conflicts[0]!;
    const message =
      conflicts.length === 1
        ? `version conflict on key ${JSON.stringify(first.key)}: actual version is ${first.actualVersion}`
        : `version conflict on ${conflicts.length} keys`;
    super('VERSION_CONFLICT', message, {
      key: first.key,
      actualVersion: first.actualVersion,
      conflicts,
    });
  }
}

/**
 * Checks a write script's reply: returns when its status is "OK", throws the error its status
 * names otherwise ({"VERSION_CONFLICT", key, version, ...}; see the header of each .lua file).
 */
export function checkScriptReply(reply: unknown[]): void {
  const status = reply[0];
  if (status === 'OK') return;
  if (status === 'VERSION_CONFLICT') {
    const conflicts: Conflict[] = [];
    for (let i = 1; i < reply.length; i += 2) {
      conflicts.push({ key: String(reply[i]), actualVersion: Number(reply[i + 1]) });
    }
    throw new VersionConflictError(conflicts);
  }
  throw new Error(`unexpected script reply ${JSON.stringify(status)}`);
}

// Redis replies and ioredis client errors that mean "the store cannot answer right now".
const UNAVAILABLE = [
  /^LOADING\b/,
  /^BUSY\b/,
  /^MASTERDOWN\b/,
  /^READONLY\b/,
  /^NOREPLICAS\b/,
  /^TRYAGAIN\b/,
  /^CLUSTERDOWN\b/,
  // ioredis Cluster: redirections or retries ran out (a slot's master is failing over), or no
  // node is reachable. Neither ran the command.
  /^Too many Cluster redirections/,
  // A redirection that reached us (ioredis follows them, but not inside a pipeline whose other
  // commands succeeded), or a script the node had not loaded: neither ran.
  /^(MOVED|ASK) \d+ /,
  /^NOSCRIPT\b/,
  /^Cluster isn't ready/,
  /^Cluster is ended/,
  /^Failed to refresh slots cache/,
  /^None of startup nodes is available/,
  /Connection is closed/,
  /Stream isn't writeable/,
  /Command timed out/,
  /Reached the max retries per request limit/,
  // ioredis's AbortError: the connection closed while a pipeline was partly answered.
  /Command aborted due to connection close/,
  /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH/,
];

// The client errors for a command that was sent and may have run, but whose reply never came:
// timed out, or in flight when the connection was lost (with autoResendUnfulfilledCommands off
// and maxRetriesPerRequest 0, ioredis rejects those with "max retries" or, inside a partly
// answered pipeline, "aborted"). Every other failure above means the command did not run.
const OUTCOME_UNKNOWN = /Command timed out|Connection is closed|Reached the max retries per request limit|Command aborted due to connection close/;

/**
 * Turns a failure from Redis into a StoreError where it has a meaning for clients; anything
 * else is returned unchanged, to be masked and logged as an internal error.
 * `write` says whether the failed command may have changed data, which decides what we can
 * promise the client about its outcome.
 */
export function fromRedisError(err: unknown, write: boolean): unknown {
  if (err instanceof StoreError || !(err instanceof Error)) return err;
  const message = err.message;
  if (/^OOM\b/.test(message)) {
    return new StoreError('CAPACITY_EXCEEDED', 'the store is full: writes are refused until space is freed (reads and deletes still work)');
  }
  if (UNAVAILABLE.some((re) => re.test(message)) || ('code' in err && typeof err.code === 'string' && /^E[A-Z]+$/.test(err.code))) {
    const outcome = write && OUTCOME_UNKNOWN.test(message)
      ? ' The write may or may not have been applied; read the key to find out.'
      : '';
    return new StoreError('STORE_UNAVAILABLE', `the store is unavailable (${message}).${outcome}`);
  }
  return err;
}

/** Runs reads against Redis, turning their failures into StoreErrors where they have a code. */
export async function redisRead<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw fromRedisError(err, false);
  }
}
