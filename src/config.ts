// Configuration: environment variables, parsed once by one zod schema. A wrong value stops the
// start with a message that names the variable.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { readTokens, type TokenSources } from './auth/tokenSource.js';
import type { TokenEntry } from './auth/tokens.js';
import { readTrustedDocuments, type TrustedDocuments } from './auth/trustedDocuments.js';
import { LOG_LEVELS, type LogLevel } from './log.js';
import { MAX_BUCKETS, PREFIX_PATTERN } from './store/keys.js';
import type { ClusterTarget, RedisTls, SentinelTarget } from './store/redis.js';
import type { ReplicationOptions } from './store/store.js';

const MiB = 1024 * 1024;

/** A whole number in [min, max] from an environment string; undefined when unset. */
function optionalInt(min: number, max: number) {
  return z.string().regex(/^\d+$/, 'expected a whole number').transform(Number).pipe(z.number().int().min(min).max(max)).optional();
}

/** A whole number in [min, max] from an environment string, `def` when unset. */
function int(def: number, min: number, max: number) {
  return optionalInt(min, max).transform((v) => v ?? def);
}

/** A yes/no switch from an environment string. */
function flag() {
  return z.enum(['true', 'false', '1', '0'], 'expected true or false').transform((v) => v === 'true' || v === '1');
}

function isHostUrl(s: string): boolean {
  try {
    return new URL(s).hostname !== '';
  } catch {
    return false;
  }
}

const EnvSchema = z.object({
  HOST: z.string().default('127.0.0.1'),
  PORT: int(4000, 0, 65535),
  LOG_LEVEL: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(LOG_LEVELS, `expected one of ${LOG_LEVELS.join(', ')}`))
    .default('info' as never),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL')
    .refine(isHostUrl, 'expected a URL with a host, e.g. redis://127.0.0.1:6379')
    .optional(),
  // A Sentinel deployment instead of REDIS_URL (README, "Operations: replication and failover").
  REDIS_SENTINELS: z
    .string()
    .regex(/^[^\s,:]+:\d{1,5}(,[^\s,:]+:\d{1,5})*$/, 'expected comma-separated host:port pairs, e.g. 10.0.0.1:26379,10.0.0.2:26379')
    .optional(),
  // A Redis Cluster instead (README, "Scaling out"): a few of its nodes, the rest is learned.
  REDIS_CLUSTER_NODES: z
    .string()
    .regex(/^[^\s,:]+:\d{1,5}(,[^\s,:]+:\d{1,5})*$/, 'expected comma-separated host:port pairs of cluster nodes, e.g. 10.0.0.1:7000,10.0.0.2:7000')
    .optional(),
  REDIS_MASTER_NAME: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected the name the sentinels monitor, e.g. kvql').default('kvql'),
  // The ACL user kvql signs in as on a Sentinel deployment's or a cluster's Redis servers, and
  // on the sentinels (with REDIS_URL the user is in the URL: redis://kvql:<password>@host).
  REDIS_USERNAME: z.string().regex(/^[!-~]{1,128}$/, 'expected an ACL user name (printable, no spaces), e.g. kvql').optional(),
  REDIS_PASSWORD: z.string().optional(),
  // Operator commands only (npm run backup and restore-snapshots, for a Redis kvql does not manage):
  // a Redis user that may run CONFIG, CLIENT PAUSE, SYNC and RESTORE, which kvql's own ACL user may
  // not. Never used by the API.
  REDIS_ADMIN_USERNAME: z.string().regex(/^[!-~]{1,128}$/, 'expected an ACL user name (printable, no spaces), e.g. admin').optional(),
  REDIS_ADMIN_PASSWORD: z.string().optional(),
  REDIS_SENTINEL_USERNAME: z.string().regex(/^[!-~]{1,128}$/, 'expected an ACL user name (printable, no spaces)').optional(),
  REDIS_SENTINEL_PASSWORD: z.string().optional(),
  // TLS to Redis (README, "The path to Redis"): on for a rediss:// REDIS_URL, or with KV_REDIS_TLS
  // for a cluster or Sentinel (no URL to say it); the CA, client certificate and key are PEM files, read at start.
  KV_REDIS_TLS: flag().optional(),
  KV_REDIS_TLS_CA: z.string().optional(),
  KV_REDIS_TLS_CERT: z.string().optional(),
  KV_REDIS_TLS_KEY: z.string().optional(),
  KV_MIN_REPLICAS: int(0, 0, 64),
  KV_REPLICATION_TIMEOUT_MS: int(1000, 1, 600_000),
  KV_DATA_DIR: z.string().default('./data'),
  KV_MANAGED_REDIS_PORT: int(6390, 1, 65535),
  // Hours the managed Redis's AOF files are kept after each rewrite (aofArchive.ts); 0: not kept.
  KV_AOF_ARCHIVE_HOURS: int(0, 0, 24 * 366),
  KV_PREFIX: z.string().regex(PREFIX_PATTERN, 'expected 1-64 characters from A-Z a-z 0-9 _ . : -').default('kv'),
  // Default: 1 on one Redis, CLUSTER_PARTITIONS on a cluster (see loadConfig).
  KV_PARTITIONS: optionalInt(1, 1024),
  // Bucket hashes per partition, fixed at creation (README, "The Redis layout, and why"). Unset:
  // an existing keyspace's own count, DEFAULT_BUCKETS for a new one (KvStore.open).
  KV_BUCKETS: optionalInt(1, MAX_BUCKETS),
  KV_MAX_KEY_BYTES: int(1024, 1, 64 * 1024),
  KV_MAX_VALUE_BYTES: int(1 * MiB, 0, 512 * MiB),
  KV_MAX_BATCH_ITEMS: int(10_000, 1, 1_000_000),
  KV_MAX_BATCH_BYTES: int(64 * MiB, 1, 1024 * MiB),
  KV_MAX_BODY_BYTES: int(160 * MiB, 1024, 2048 * MiB),
  KV_PAGE_DEFAULT: int(100, 1, 1_000_000),
  KV_PAGE_MAX: int(1000, 1, 1_000_000),
  KV_DELETE_RANGE_DEFAULT: int(1000, 1, 1_000_000),
  KV_DELETE_RANGE_MAX: int(1000, 1, 1_000_000),
  KV_REDIS_TIMEOUT_MS: int(2000, 10, 600_000),
  KV_FEED_RETENTION: int(100_000, 1, 100_000_000),
  KV_FEED_BUFFER: int(1000, 1, 1_000_000),
  KV_FEED_BUFFER_BYTES: int(16 * MiB, 1, 4096 * MiB),
  KV_MAX_SUBSCRIPTIONS: int(10_000, 1, 10_000_000),
  // Limits under load (README, "Limits under load"): admission, deadline, operation limits.
  KV_MAX_IN_FLIGHT: int(128, 1, 1_000_000),
  KV_REQUEST_TIMEOUT_MS: int(10_000, 10, 3_600_000),
  KV_MAX_BODY_BYTES_IN_FLIGHT: int(512 * MiB, 1024, 64 * 1024 * MiB),
  KV_MAX_CONNECTIONS: int(10_000, 1, 1_000_000),
  KV_HEADERS_TIMEOUT_MS: int(10_000, 100, 3_600_000),
  KV_RECEIVE_TIMEOUT_MS: int(30_000, 100, 3_600_000),
  KV_MAX_DEPTH: int(8, 1, 1000),
  KV_MAX_ALIASES: int(30, 0, 100_000),
  KV_MAX_TOKENS: int(5000, 1, 10_000_000),
  KV_MAX_COST: int(50_000, 1, 1_000_000_000),
  KV_MAX_DIRECTIVES: int(50, 0, 100_000),
  KV_MAX_REQUEST_ITEMS: int(20_000, 1, 100_000_000),
  // Bearer tokens (README, "Security"): a JSON array of entries inline, and/or a file holding one.
  KV_TOKENS: z.string().optional(),
  // What the endpoint tells about itself (README, "Security"); defaults depend on NODE_ENV.
  NODE_ENV: z.string().optional(),
  KV_GRAPHIQL: flag().optional(),
  KV_INTROSPECTION: flag().optional(),
  // Browsers (README, "Security"): the origins allowed to call from another site, and CSRF prevention.
  KV_CORS_ORIGINS: z
    .string()
    .transform((s) => s.split(',').map((o) => o.trim()).filter(Boolean))
    .refine((list) => list.every((o) => o === '*' || isOrigin(o)), 'a comma-separated list of origins like https://app.example.com (scheme, host and port only), or *')
    .optional(),
  KV_CSRF_PREVENTION: flag().default(true),
  // Trusted documents: the path of a JSON file of persisted operations; set, only they are accepted.
  KV_TRUSTED_DOCUMENTS: z.string().optional(),
  KV_TOKENS_FILE: z.string().optional(),
});

export type Env = z.input<typeof EnvSchema>;

export interface Limits {
  maxKeyBytes: number;
  maxValueBytes: number;
  maxBatchItems: number;
  maxBatchBytes: number;
  maxBodyBytes: number;
  pageDefault: number;
  pageMax: number;
  deleteRangeDefault: number;
  deleteRangeMax: number;
  /** Operation limits (GraphQL Armor), checked before execution: nesting depth. */
  maxDepth: number;
  /** Aliased fields in one operation. */
  maxAliases: number;
  /** Tokens in one document, counted while parsing. */
  maxTokens: number;
  /** Armor's static cost estimate of one operation. */
  maxCost: number;
  /** Directives in one operation. */
  maxDirectives: number;
  /** Work budget: keys, items and page sizes summed over one operation's fields. */
  maxRequestItems: number;
}

/** Admission control and the per-request deadline (src/admission.ts). */
export interface LoadConfig {
  /** GraphQL requests (and graphql-ws operations) one process runs at once; beyond: OVERLOADED. */
  maxInFlight: number;
  /** A query or mutation still running after this long ends with DEADLINE_EXCEEDED. */
  requestTimeoutMs: number;
  /**
   * Bytes of request bodies one process holds at once, from before the first byte is read until
   * the response is done; a request that would go over is refused with OVERLOADED.
   */
  maxBodyBytesInFlight: number;
  /** Open client connections (HTTP and WebSocket) one process keeps; beyond, new ones are closed at once. */
  maxConnections: number;
  /** A request whose headers have not all arrived this long after it began gets 408 and its connection closed. */
  headersTimeoutMs: number;
  /** The same for the whole request, headers and body (not the response: subscriptions last). */
  receiveTimeoutMs: number;
}

export interface Config {
  host: string;
  port: number;
  /** Structured (JSON) log lines at this level and above. */
  logLevel: LogLevel;
  /** Unset (and no sentinels): kvql starts and manages its own redis-server. */
  redisUrl: string | undefined;
  /** REDIS_SENTINELS: Redis through Sentinel, following its primary across failovers. */
  sentinel: SentinelTarget | undefined;
  /** REDIS_CLUSTER_NODES: a Redis Cluster; every partition lives in one slot. */
  cluster: ClusterTarget | undefined;
  /**
   * KV_REDIS_TLS_*: set when kvql speaks TLS to Redis (a rediss:// REDIS_URL, or KV_REDIS_TLS=true
   * with REDIS_CLUSTER_NODES or REDIS_SENTINELS), to every connection (sentinels included): whom to trust (no CA: Node's default CAs) and who we are.
   */
  redisTls: RedisTls | undefined;
  /**
   * REDIS_ADMIN_USERNAME and REDIS_ADMIN_PASSWORD: whom the operator commands for a Redis kvql does
   * not manage (npm run backup, restore-snapshots) sign in as; empty: the default user without a
   * password. Not the API's.
   */
  redisAdmin: { username?: string; password?: string };
  /** KV_MIN_REPLICAS and KV_REPLICATION_TIMEOUT_MS. */
  replication: ReplicationOptions;
  dataDir: string;
  managedRedisPort: number;
  /** KV_AOF_ARCHIVE_HOURS: how long the managed Redis's AOF files are kept after a rewrite; 0: not. */
  aofArchiveHours: number;
  prefix: string;
  partitions: number;
  /**
   * Bucket hashes per partition: fixed when the keyspace is created. Undefined (KV_BUCKETS
   * unset): the keyspace's own count, or DEFAULT_BUCKETS when it is new.
   */
  buckets: number | undefined;
  redisTimeoutMs: number;
  limits: Limits;
  feed: FeedConfig;
  load: LoadConfig;
  /** Bearer tokens (hashes only); empty: auth is off, which only a loopback HOST may be. */
  tokens: TokenEntry[];
  /** Where they came from: the server reads them again when KV_TOKENS_FILE changes or on SIGHUP. */
  tokenSources: TokenSources;
  /** KV_GRAPHIQL: serve GraphiQL to browsers; off by default with NODE_ENV=production. */
  graphiql: boolean;
  /** KV_INTROSPECTION: answer __schema and __type; off by default with NODE_ENV=production. */
  introspection: boolean;
  /** KV_CORS_ORIGINS: other sites' origins allowed to call from a browser ("*": any); none by default. */
  corsOrigins: string[];
  /** KV_CSRF_PREVENTION: requests a browser would send without a preflight need a CSRF header (default on). */
  csrfPrevention: boolean;
  /** KV_TRUSTED_DOCUMENTS: only these persisted operations (by SHA-256), when set. */
  trustedDocuments?: TrustedDocuments;
}

export interface FeedConfig {
  /** About how many events each partition's change stream keeps. */
  retention: number;
  /** Events one subscription may have waiting before it ends as a slow consumer. */
  bufferSize: number;
  /** Bytes of keys and values one subscription may have waiting, likewise. */
  bufferBytes: number;
  /** Subscriptions one process serves at once; beyond: OVERLOADED. */
  maxSubscriptions: number;
}

/**
 * KV_PARTITIONS's default on a cluster: each partition is one slot, so the partitions are what
 * spreads the data over masters; a range page reads every partition (README, "Scaling out").
 */
export const CLUSTER_PARTITIONS = 64;

function hostPorts(list: string): { host: string; port: number }[] {
  return list.split(',').map((hp) => {
    const at = hp.lastIndexOf(':');
    return { host: hp.slice(0, at), port: Number(hp.slice(at + 1)) };
  });
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** An origin as browsers send it: scheme://host[:port], nothing more. */
function isOrigin(text: string): boolean {
  try {
    const u = new URL(text);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === text;
  } catch {
    return false;
  }
}

/** Hosts that only this machine can reach: the only ones kvql may serve without tokens. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || /^::ffff:127(\.\d{1,3}){3}$/.test(h);
}

/** The PEM file `name` names, checked by `check`; a problem line naming the variable otherwise. */
function readPem(name: string, path: string, check: (pem: Buffer) => void, problems: string[]): Buffer | undefined {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    problems.push(`  ${name}: cannot read ${JSON.stringify(path)}: ${(err as Error).message}`);
    return undefined;
  }
  try {
    check(pem);
  } catch (err) {
    problems.push(`  ${name}: ${JSON.stringify(path)} is not a PEM ${name.endsWith('KEY') ? 'private key' : 'certificate'} (${(err as Error).message})`);
    return undefined;
  }
  return pem;
}

/**
 * Whether kvql speaks TLS to Redis, and KV_REDIS_TLS_CA, _CERT and _KEY, read and checked now.
 * TLS is on for a rediss:// REDIS_URL, or with KV_REDIS_TLS=true for REDIS_CLUSTER_NODES or
 * REDIS_SENTINELS (which have no URL scheme to say it; for Sentinel, to the sentinels and the data
 * nodes alike). Set, the result is defined (its files may all be absent: Node's
 * default CAs, no client certificate); off, undefined.
 */
function readRedisTls(
  e: {
    REDIS_URL?: string;
    REDIS_SENTINELS?: string;
    REDIS_CLUSTER_NODES?: string;
    KV_REDIS_TLS?: boolean;
    KV_REDIS_TLS_CA?: string;
    KV_REDIS_TLS_CERT?: string;
    KV_REDIS_TLS_KEY?: string;
  },
  problems: string[],
): RedisTls | undefined {
  const given = (['KV_REDIS_TLS_CA', 'KV_REDIS_TLS_CERT', 'KV_REDIS_TLS_KEY'] as const).filter((n) => e[n] !== undefined);
  const urlTls = e.REDIS_URL === undefined ? undefined : /^rediss:/i.test(e.REDIS_URL);
  if (e.KV_REDIS_TLS !== undefined) {
    // Said twice, it must agree; and only where kvql can do it.
    const why =
      urlTls !== undefined
        ? urlTls === e.KV_REDIS_TLS
          ? undefined
          : `contradicts REDIS_URL, which is ${urlTls ? 'rediss:// (TLS)' : 'redis:// (plain TCP)'}: the URL's scheme says it (remove KV_REDIS_TLS)`
        : !e.KV_REDIS_TLS || e.REDIS_SENTINELS !== undefined || e.REDIS_CLUSTER_NODES !== undefined
          ? undefined
          : 'REDIS_URL, REDIS_SENTINELS and REDIS_CLUSTER_NODES are unset (the managed Redis listens on loopback, without TLS)';
    if (why !== undefined) {
      problems.push(`  KV_REDIS_TLS: ${why}`);
      return undefined;
    }
  }
  // Sentinel: one switch for both, the sentinels and the data nodes they name.
  const on = urlTls ?? (e.KV_REDIS_TLS === true && (e.REDIS_CLUSTER_NODES !== undefined || e.REDIS_SENTINELS !== undefined));
  if (!on) {
    if (given.length === 0) return undefined;
    const why =
      e.REDIS_SENTINELS !== undefined
        ? 'with REDIS_SENTINELS, set KV_REDIS_TLS=true'
        : e.REDIS_CLUSTER_NODES !== undefined
          ? 'with REDIS_CLUSTER_NODES, set KV_REDIS_TLS=true'
          : e.REDIS_URL === undefined
            ? 'REDIS_URL is unset (the managed Redis listens on loopback, without TLS)'
            : 'REDIS_URL is redis:// (plain TCP): use rediss://';
    problems.push(`  ${given[0]}: applies only with TLS to Redis (a rediss:// REDIS_URL, or KV_REDIS_TLS=true); ${why}`);
    return undefined;
  }
  if ((e.KV_REDIS_TLS_CERT === undefined) !== (e.KV_REDIS_TLS_KEY === undefined)) {
    problems.push(`  ${e.KV_REDIS_TLS_CERT === undefined ? 'KV_REDIS_TLS_KEY' : 'KV_REDIS_TLS_CERT'}: a client certificate needs both KV_REDIS_TLS_CERT and KV_REDIS_TLS_KEY`);
  }
  const tls: RedisTls = {};
  if (e.KV_REDIS_TLS_CA !== undefined) tls.ca = readPem('KV_REDIS_TLS_CA', e.KV_REDIS_TLS_CA, (pem) => new X509Certificate(pem), problems);
  if (e.KV_REDIS_TLS_CERT !== undefined) tls.cert = readPem('KV_REDIS_TLS_CERT', e.KV_REDIS_TLS_CERT, (pem) => new X509Certificate(pem), problems);
  if (e.KV_REDIS_TLS_KEY !== undefined) tls.key = readPem('KV_REDIS_TLS_KEY', e.KV_REDIS_TLS_KEY, (pem) => createPrivateKey(pem), problems);
  if (tls.cert && tls.key && !new X509Certificate(tls.cert).checkPrivateKey(createPrivateKey(tls.key))) {
    problems.push(`  KV_REDIS_TLS_KEY: is not the private key of the certificate in KV_REDIS_TLS_CERT`);
  }
  return tls;
}

/** Parses the environment; throws ConfigError naming every wrong variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // An empty variable counts as unset, as most shells and compose files mean it.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const name = String(i.path[0]);
      let shown = present[name] ?? '';
      // A URL may carry a password: never print it.
      if (name === 'REDIS_URL') shown = shown.replace(/\/\/[^/@]*@/, '//***@');
      return `  ${name}=${JSON.stringify(shown)}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const problems: string[] = [];
  if (e.KV_PAGE_DEFAULT > e.KV_PAGE_MAX) problems.push('  KV_PAGE_DEFAULT: must not exceed KV_PAGE_MAX');
  if (e.KV_DELETE_RANGE_DEFAULT > e.KV_DELETE_RANGE_MAX)
    problems.push('  KV_DELETE_RANGE_DEFAULT: must not exceed KV_DELETE_RANGE_MAX');
  if (e.KV_MAX_VALUE_BYTES > e.KV_MAX_BATCH_BYTES)
    problems.push('  KV_MAX_VALUE_BYTES: must not exceed KV_MAX_BATCH_BYTES');
  if (e.KV_FEED_RETENTION < e.KV_MAX_BATCH_ITEMS)
    problems.push('  KV_FEED_RETENTION: must be at least KV_MAX_BATCH_ITEMS, or one batch would trim its own events before subscribers read them');
  const targets = (['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'] as const).filter((name) => e[name] !== undefined);
  if (targets.length > 1)
    problems.push(`  ${targets[1]}: give one of REDIS_URL (one Redis), REDIS_SENTINELS (a Sentinel deployment) or REDIS_CLUSTER_NODES (a cluster), not ${targets.join(' and ')}`);
  // An ACL user name alone would silently sign in as nobody (ioredis sends AUTH only with a
  // password), and with REDIS_URL or the managed Redis it would be ignored: say so instead.
  if (e.REDIS_USERNAME !== undefined && e.REDIS_SENTINELS === undefined && e.REDIS_CLUSTER_NODES === undefined)
    problems.push('  REDIS_USERNAME: applies to REDIS_SENTINELS or REDIS_CLUSTER_NODES only; with REDIS_URL put the user in the URL (redis://kvql:<password>@host:6379)');
  else if (e.REDIS_USERNAME !== undefined && e.REDIS_PASSWORD === undefined)
    problems.push('  REDIS_USERNAME: needs REDIS_PASSWORD (an ACL user signs in with both)');
  for (const name of ['REDIS_ADMIN_USERNAME', 'REDIS_ADMIN_PASSWORD'] as const)
    if (e[name] !== undefined && targets.length === 0)
      problems.push(`  ${name}: applies to REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES only (the managed Redis's backup uses its own admin password)`);
  if (e.REDIS_ADMIN_USERNAME !== undefined && targets.length > 0 && e.REDIS_ADMIN_PASSWORD === undefined)
    problems.push('  REDIS_ADMIN_USERNAME: needs REDIS_ADMIN_PASSWORD (an ACL user signs in with both)');
  if (e.REDIS_SENTINEL_USERNAME !== undefined && e.REDIS_SENTINELS === undefined)
    problems.push('  REDIS_SENTINEL_USERNAME: applies to REDIS_SENTINELS only');
  else if (e.REDIS_SENTINEL_USERNAME !== undefined && e.REDIS_SENTINEL_PASSWORD === undefined)
    problems.push('  REDIS_SENTINEL_USERNAME: needs REDIS_SENTINEL_PASSWORD (an ACL user signs in with both)');
  if (e.KV_AOF_ARCHIVE_HOURS > 0 && targets.length > 0)
    problems.push(`  KV_AOF_ARCHIVE_HOURS: applies to the managed Redis only (not with ${targets[0]}): for a Redis of your own, keep copies of its appendonlydir/ from before each rewrite (README, "Point-in-time restore")`);
  if (targets.length === 0 && e.PORT !== 0 && e.PORT === e.KV_MANAGED_REDIS_PORT)
    problems.push('  KV_MANAGED_REDIS_PORT: the managed Redis cannot listen on the API port (PORT)');
  if (e.KV_MAX_BODY_BYTES_IN_FLIGHT < e.KV_MAX_BODY_BYTES)
    problems.push('  KV_MAX_BODY_BYTES_IN_FLIGHT: must be at least KV_MAX_BODY_BYTES, or a request of the largest size allowed could never be read');
  if (e.KV_RECEIVE_TIMEOUT_MS < e.KV_HEADERS_TIMEOUT_MS)
    problems.push('  KV_RECEIVE_TIMEOUT_MS: must be at least KV_HEADERS_TIMEOUT_MS (the headers are part of the request)');
  if (e.KV_MAX_REQUEST_ITEMS < Math.max(e.KV_MAX_BATCH_ITEMS, e.KV_PAGE_MAX, e.KV_DELETE_RANGE_MAX))
    problems.push('  KV_MAX_REQUEST_ITEMS: must be at least KV_MAX_BATCH_ITEMS, KV_PAGE_MAX and KV_DELETE_RANGE_MAX, or one field at its own limit would exceed the budget');
  const tokenSources = { inline: e.KV_TOKENS, file: e.KV_TOKENS_FILE };
  const { tokens, problems: tokenProblems } = readTokens(tokenSources);
  problems.push(...tokenProblems);
  // Safe by default: without tokens, anyone who can reach the port may read and write every key,
  // so that is allowed only where no one else can reach it.
  if (tokens.length === 0 && e.KV_TOKENS === undefined && e.KV_TOKENS_FILE === undefined && !isLoopback(e.HOST))
    problems.push(`  HOST: listening on ${JSON.stringify(e.HOST)} (not loopback) requires bearer tokens: set KV_TOKENS or KV_TOKENS_FILE (create one with npm run token), or listen on 127.0.0.1`);
  if (tokens.length === 0 && (e.KV_TOKENS !== undefined || e.KV_TOKENS_FILE !== undefined) && problems.length === 0)
    problems.push(`  ${e.KV_TOKENS !== undefined ? 'KV_TOKENS' : 'KV_TOKENS_FILE'}: holds no token; remove it to run without auth (loopback only)`);
  let trustedDocuments: TrustedDocuments | undefined;
  if (e.KV_TRUSTED_DOCUMENTS !== undefined) {
    try {
      trustedDocuments = readTrustedDocuments(e.KV_TRUSTED_DOCUMENTS);
    } catch (err) {
      problems.push(`  KV_TRUSTED_DOCUMENTS: ${(err as Error).message}`);
    }
  }
  const redisTls = readRedisTls(e, problems);
  const partitions = e.KV_PARTITIONS ?? (e.REDIS_CLUSTER_NODES !== undefined ? CLUSTER_PARTITIONS : 1);
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n${problems.join('\n')}`);
  return {
    host: e.HOST,
    port: e.PORT,
    graphiql: e.KV_GRAPHIQL ?? e.NODE_ENV !== 'production',
    introspection: e.KV_INTROSPECTION ?? e.NODE_ENV !== 'production',
    corsOrigins: e.KV_CORS_ORIGINS ?? [],
    csrfPrevention: e.KV_CSRF_PREVENTION,
    ...(trustedDocuments ? { trustedDocuments } : {}),
    logLevel: e.LOG_LEVEL as LogLevel,
    redisUrl: e.REDIS_URL,
    sentinel:
      e.REDIS_SENTINELS === undefined
        ? undefined
        : {
            sentinels: hostPorts(e.REDIS_SENTINELS),
            masterName: e.REDIS_MASTER_NAME,
            ...(e.REDIS_USERNAME ? { username: e.REDIS_USERNAME } : {}),
            ...(e.REDIS_PASSWORD ? { password: e.REDIS_PASSWORD } : {}),
            ...(e.REDIS_SENTINEL_USERNAME ? { sentinelUsername: e.REDIS_SENTINEL_USERNAME } : {}),
            ...(e.REDIS_SENTINEL_PASSWORD ? { sentinelPassword: e.REDIS_SENTINEL_PASSWORD } : {}),
          },
    cluster:
      e.REDIS_CLUSTER_NODES === undefined
        ? undefined
        : {
            clusterNodes: hostPorts(e.REDIS_CLUSTER_NODES),
            ...(e.REDIS_USERNAME ? { username: e.REDIS_USERNAME } : {}),
            ...(e.REDIS_PASSWORD ? { password: e.REDIS_PASSWORD } : {}),
          },
    redisTls,
    redisAdmin: {
      ...(e.REDIS_ADMIN_USERNAME ? { username: e.REDIS_ADMIN_USERNAME } : {}),
      ...(e.REDIS_ADMIN_PASSWORD ? { password: e.REDIS_ADMIN_PASSWORD } : {}),
    },
    replication: { minReplicas: e.KV_MIN_REPLICAS, timeoutMs: e.KV_REPLICATION_TIMEOUT_MS },
    dataDir: e.KV_DATA_DIR,
    managedRedisPort: e.KV_MANAGED_REDIS_PORT,
    aofArchiveHours: e.KV_AOF_ARCHIVE_HOURS,
    prefix: e.KV_PREFIX,
    partitions,
    buckets: e.KV_BUCKETS,
    redisTimeoutMs: e.KV_REDIS_TIMEOUT_MS,
    feed: { retention: e.KV_FEED_RETENTION, bufferSize: e.KV_FEED_BUFFER, bufferBytes: e.KV_FEED_BUFFER_BYTES, maxSubscriptions: e.KV_MAX_SUBSCRIPTIONS },
    limits: {
      maxKeyBytes: e.KV_MAX_KEY_BYTES,
      maxValueBytes: e.KV_MAX_VALUE_BYTES,
      maxBatchItems: e.KV_MAX_BATCH_ITEMS,
      maxBatchBytes: e.KV_MAX_BATCH_BYTES,
      maxBodyBytes: e.KV_MAX_BODY_BYTES,
      pageDefault: e.KV_PAGE_DEFAULT,
      pageMax: e.KV_PAGE_MAX,
      deleteRangeDefault: e.KV_DELETE_RANGE_DEFAULT,
      deleteRangeMax: e.KV_DELETE_RANGE_MAX,
      maxDepth: e.KV_MAX_DEPTH,
      maxAliases: e.KV_MAX_ALIASES,
      maxTokens: e.KV_MAX_TOKENS,
      maxCost: e.KV_MAX_COST,
      maxDirectives: e.KV_MAX_DIRECTIVES,
      maxRequestItems: e.KV_MAX_REQUEST_ITEMS,
    },
    load: { maxInFlight: e.KV_MAX_IN_FLIGHT, requestTimeoutMs: e.KV_REQUEST_TIMEOUT_MS, maxBodyBytesInFlight: e.KV_MAX_BODY_BYTES_IN_FLIGHT, maxConnections: e.KV_MAX_CONNECTIONS,
      headersTimeoutMs: e.KV_HEADERS_TIMEOUT_MS, receiveTimeoutMs: e.KV_RECEIVE_TIMEOUT_MS },
    tokens,
    tokenSources,
  };
}

/** The defaults, for tests and tools that build a server without an environment. */
export const defaultLimits = (): Limits => loadConfig({}).limits;
export const defaultLoad = (): LoadConfig => loadConfig({}).load;
