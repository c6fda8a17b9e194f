// The one place that creates Redis connections, with the options every guarantee relies on.
import { Cluster, Redis, type RedisOptions as IoRedisOptions } from 'ioredis';
import { coalesceWrites } from './coalesce.js';

export interface RedisOptions {
  /** Upper bound on any single command; past it the client gets STORE_UNAVAILABLE. */
  commandTimeoutMs: number;
  /**
   * TLS (KV_REDIS_TLS_CA, KV_REDIS_TLS_CERT, KV_REDIS_TLS_KEY): the CA that signed the servers'
   * certificates (instead of Node's default trust store), and a client certificate for servers
   * with tls-auth-clients. For a URL target the scheme turns TLS on (rediss://) and these only
   * say whom to trust; for a cluster or Sentinel target, given (even empty), every connection is
   * TLS (for Sentinel: to the sentinels and to the data nodes they name). Never unverified: the server's
   * certificate and its name (the address connected to: an IP SAN for an IP) are always checked.
   */
  tls?: RedisTls;
}

/** PEM contents, as read from the files the configuration names. */
export interface RedisTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** A deployment watched by Redis Sentinel: the sentinels to ask, and the name they watch. */
export interface SentinelTarget {
  sentinels: { host: string; port: number }[];
  masterName: string;
  /** The Redis servers' ACL user (e.g. kvql of users.acl); absent: the default user. */
  username?: string;
  /** The Redis servers' password (requirepass, or the ACL user's), if any. */
  password?: string;
  /** The sentinels' own ACL user, if they have ACLs; absent: their default user. */
  sentinelUsername?: string;
  /** The sentinels' own password, if any. */
  sentinelPassword?: string;
  /** Connect to the primary (default), or to one of its replicas (for eventual reads). */
  role?: 'master' | 'slave';
}

/** A Redis Cluster: a few of its nodes to learn the rest from (REDIS_CLUSTER_NODES). */
export interface ClusterTarget {
  clusterNodes: { host: string; port: number }[];
  /** The nodes' ACL user (e.g. kvql of users.acl, on every node); absent: the default user. */
  username?: string;
  /** The nodes' password (requirepass, or the ACL user's), if any. */
  password?: string;
  /** Send reads to masters (default), or to replicas where a slot has one (eventual reads). */
  reads?: 'master' | 'slave';
}

/** Where Redis is: a redis:// URL, a Sentinel deployment whose primary ioredis follows, or a cluster. */
export type RedisTarget = string | SentinelTarget | ClusterTarget;

/** A connection to one Redis (or Sentinel's primary), or to a whole cluster. */
export type RedisClient = Redis | Cluster;

export function isCluster(redis: RedisClient): redis is Cluster {
  return redis instanceof Cluster;
}

/** The command timeout a client was created with (a cluster keeps it in its node options). */
export function commandTimeoutOf(redis: RedisClient): number {
  const opts = isCluster(redis) ? redis.options.redisOptions : redis.options;
  return opts?.commandTimeout ?? 2000;
}

/** A second connection like `redis` (a second set of node connections, for a cluster). */
export function duplicateClient<T extends RedisClient>(redis: T, commandTimeoutMs: number): T {
  if (isCluster(redis)) {
    return redis.duplicate(undefined, {
      enableAutoPipelining: false,
      redisOptions: { ...redis.options.redisOptions, commandTimeout: commandTimeoutMs },
    }) as T;
  }
  return coalesceWrites((redis as Redis).duplicate({ commandTimeout: commandTimeoutMs, enableAutoPipelining: false })) as T;
}

export function createRedis(target: string | SentinelTarget, opts: RedisOptions): Redis;
export function createRedis(target: RedisTarget, opts: RedisOptions): RedisClient;
export function createRedis(target: RedisTarget, opts: RedisOptions): RedisClient {
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
    // No auto-pipelining: ioredis builds a Pipeline object per batch and sends it on the next
    // tick, which cost more than it saved here. Measured with `npm run bench:ab` against it on:
    // getMany of 100 keys at one client 1.445x, get at one client 1.193x, a range page at one
    // client 1.070x, put at one client 1.076x, put at 32 clients 1.057x, get at 32 clients
    // 1.005x (docs/request-path.md). Commands issued together while the connection is busy
    // still leave in one write (coalesce.ts). It also bounds a request by one command timeout
    // when Redis hangs: a pipeline waiting in flight no longer holds back the commands issued
    // after it.
    enableAutoPipelining: false,
  };
  if (typeof target === 'string') {
    // ioredis turns on TLS for a rediss:// URL; these options only say whom to trust and who we are.
    const tls = opts.tls && /^rediss:/i.test(target) ? { tls: { ...opts.tls } } : {};
    return coalesceWrites(new Redis(target, { ...common, ...tls }));
  }
  if ('clusterNodes' in target) {
    const { enableAutoPipelining: _pipelining, lazyConnect, enableOfflineQueue: _queue, ...node } = common;
    return new Cluster(target.clusterNodes, {
      lazyConnect,
      // A cluster connects to a node when a slot first sends a command there (a new master
      // after a failover or a migration); without a queue every command issued while that
      // connection opens would fail. Queued commands were never sent, and each still fails
      // after the command timeout (node connections set it when queueing); a request's own
      // deadline bounds the wait while the whole cluster is unreachable.
      enableOfflineQueue: true,
      // No auto-pipelining (and no pipelines of our own, but for WAIT: see store.ts): ioredis
      // retries a pipeline as a whole, so while a slot migrates, a pipeline that got ASK for some
      // commands is resent whole to the new owner, where the keys not yet moved read as missing
      // (the cluster experiment's reshard phase caught getMany answering null for them). Each
      // command on its own follows its own MOVED or ASK.
      enableAutoPipelining: false,
      // TLS applies to every node ioredis connects to: the seeds and those CLUSTER SLOTS names
      // (by the address each node announces, so its certificate must name that address).
      redisOptions: { ...node, ...credentials(target.username, target.password), ...(opts.tls ? { tls: { ...opts.tls } } : {}) },
      // With TLS, connect to a seed by the name given, so that its certificate is checked against
      // that name rather than the address the name resolves to.
      ...(opts.tls ? { dnsLookup: (address: string, callback: (err: Error | null, address: string) => void) => callback(null, address) } : {}),
      scaleReads: target.reads ?? 'master',
      // MOVED, ASK, TRYAGAIN and CLUSTERDOWN say the command did not run: ioredis follows or
      // retries them (slot migration, a failover in progress), up to maxRedirections times.
      // A script over a slot whose keys are half moved gets TRYAGAIN until the slot has moved
      // (seconds for a partition of many buckets): 50 retries 100 ms apart ride through it.
      // "Connection is closed" does not say that, so a command lost with its node is never
      // resent (retryDelayOnFailover 0): its caller hears STORE_UNAVAILABLE, as on one Redis.
      retryDelayOnFailover: 0,
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 100,
      maxRedirections: 50,
      // Learn a failover's new master or a migration's new owner even without a MOVED.
      slotsRefreshInterval: 2000,
      slotsRefreshTimeout: Math.max(opts.commandTimeoutMs, 1000),
      clusterRetryStrategy: (attempt: number) => Math.min(100 * attempt, 1000),
    });
  }
  return coalesceWrites(new SentinelRedis({
    ...common,
    // ioredis asks the sentinels for the primary on every (re)connect, and with failoverDetector
    // also listens for +switch-master, so it follows a failover within moments of it.
    sentinels: target.sentinels,
    name: target.masterName,
    role: target.role ?? 'master',
    failoverDetector: true,
    ...credentials(target.username, target.password),
    ...(target.sentinelUsername ? { sentinelUsername: target.sentinelUsername } : {}),
    ...(target.sentinelPassword ? { sentinelPassword: target.sentinelPassword } : {}),
    sentinelRetryStrategy: (attempt: number) => Math.min(100 * attempt, 1000),
    // TLS to both (one switch, KV_REDIS_TLS): sentinelTLS for the sentinels (also the failover
    // detector's connections), tls with enableTLSForSentinelMode for the primary or replica they
    // name, whose certificate is checked against the address they report (an IP SAN for an IP).
    ...(opts.tls ? { tls: { ...opts.tls }, sentinelTLS: { ...opts.tls }, enableTLSForSentinelMode: true } : {}),
    // A demoted primary answers writes with READONLY until ioredis notices the switch:
    // reconnect (through the sentinels) at once, without resending the refused command.
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 1 : false),
  }));
}

/**
 * A client of a Sentinel deployment that ioredis does not leave ended unless kvql closed it.
 * ioredis (5.x) ends it for good, every command then failing with "Connection is closed.", when
 * the failover detector sees +switch-master while a reconnect is asking a sentinel for the
 * primary: the detector calls the connector's disconnect(), which clears `connecting`, and the
 * connect under way then throws "Connection is closed." (SentinelConnector/index.js, after
 * `await this.resolve(...)`), which Redis#_connect turns into status "end" with no retry
 * (Redis.js). It happens when the primary dies: the detector subscribed on the first connection
 * outlives it, and reconnects keep asking the sentinels until the switch; the longer a sentinel
 * takes to answer (a TLS handshake on a loaded machine), the likelier. Such a failed connect is
 * retried here; one that kvql's own disconnect() cut short is not.
 */
class SentinelRedis extends Redis {
  private closedByUs = false;

  constructor(options: IoRedisOptions) {
    super(options);
    // ioredis (5.x) gives the failover detector's sentinel connections no 'error' listener, so
    // an error on one (a TLS handshake cut short when a failover closes them) is printed to
    // stderr as "[ioredis] Unhandled error event", outside kvql's log. Nothing is lost by
    // ignoring it: the detector only hastens noticing a failover, and every reconnect asks the
    // sentinels afresh. (Its resolve() connections already get such a listener from ioredis.)
    const connector = (this as unknown as { connector?: { connectToSentinel?: (...args: unknown[]) => Redis } }).connector;
    const connectToSentinel = connector?.connectToSentinel;
    if (connector && typeof connectToSentinel === 'function') {
      connector.connectToSentinel = (...args: unknown[]) => {
        const client = connectToSentinel.apply(connector, args);
        client.on('error', () => {});
        return client;
      };
    }
  }

  override connect(): Promise<void> {
    // ioredis's own reconnects come here too; it makes none after a disconnect() of ours.
    this.closedByUs = false;
    return super.connect().catch((err: unknown) => {
      if (this.status === 'end' && !this.closedByUs) {
        setTimeout(() => {
          if (this.status === 'end' && !this.closedByUs) this.connect().catch(() => {});
        }, 100);
      }
      throw err;
    });
  }

  override disconnect(reconnect = false): void {
    if (!reconnect) this.closedByUs = true;
    super.disconnect(reconnect);
  }

  /** The writer's and the feed's connections (duplicateClient) need the same care. */
  override duplicate(override?: Partial<IoRedisOptions>): Redis {
    return new SentinelRedis({ ...this.options, ...override });
  }
}

/**
 * Why the first of a cluster's seeds refuses a connection made with the nodes' own options (TLS,
 * password), as "host:port: reason"; undefined when it answers. ioredis's Cluster reports only
 * "Failed to refresh slots cache." when no seed answers, not why (a certificate that does not
 * verify, a refused password): this says it, for the log.
 */
export async function clusterSeedProblem(target: ClusterTarget, opts: RedisOptions): Promise<string | undefined> {
  const seed = target.clusterNodes[0];
  if (!seed) return undefined;
  return refusal(seed, target.username, target.password, opts);
}

/**
 * Why the first sentinel refuses a connection made with kvql's sentinel options (TLS, the
 * sentinels' password), as "host:port: reason"; undefined when it answers. ioredis reports only
 * "All sentinels are unreachable ... Last error: Connection is closed." when a sentinel's TLS
 * handshake fails (a certificate that does not verify): this says why, for the log.
 */
export async function sentinelProblem(target: SentinelTarget, opts: RedisOptions): Promise<string | undefined> {
  const sentinel = target.sentinels[0];
  if (!sentinel) return undefined;
  return refusal(sentinel, target.sentinelUsername, target.sentinelPassword, opts);
}

/**
 * The primary's address as the sentinels name it (SENTINEL get-master-addr-by-name), asking each
 * sentinel in turn until one does, with kvql's sentinel credentials and TLS. For the operator
 * commands (backup, verify), which talk to the primary itself; the server lets ioredis follow
 * the sentinels instead.
 */
export async function sentinelPrimary(target: SentinelTarget, opts: { ms: number; tls?: RedisTls }): Promise<{ host: string; port: number }> {
  let last: Error = new Error('no sentinel given');
  for (const sentinel of target.sentinels) {
    const { client, emitted } = oneShotClient({ ...sentinel, ms: opts.ms, ...credentials(target.sentinelUsername, target.sentinelPassword), ...(opts.tls ? { tls: opts.tls } : {}) });
    try {
      await client.connect();
      const addr = (await client.call('SENTINEL', 'get-master-addr-by-name', target.masterName)) as [string, string] | null;
      if (addr) return { host: addr[0], port: Number(addr[1]) };
      last = new Error(`sentinel ${sentinel.host}:${sentinel.port} does not monitor ${target.masterName}`);
    } catch (err) {
      last = emitted() ?? (err as Error);
    } finally {
      client.disconnect();
    }
  }
  throw new Error(`no sentinel named the primary: ${last.message}`);
}

/** ioredis's AUTH options: AUTH <user> <password> for an ACL user, AUTH <password> otherwise. */
function credentials(username: string | undefined, password: string | undefined): { username?: string; password?: string } {
  if (!password) return {};
  return username ? { username, password } : { password };
}

/** Why `seed` refuses a connection with these credentials and opts.tls; undefined when it answers PING. */
async function refusal(seed: { host: string; port: number }, username: string | undefined, password: string | undefined, opts: RedisOptions): Promise<string | undefined> {
  const { client, emitted } = oneShotClient({ ...seed, ms: Math.max(opts.commandTimeoutMs, 1000), ...credentials(username, password), ...(opts.tls ? { tls: opts.tls } : {}) });
  try {
    await client.connect();
    await client.ping();
    return undefined;
  } catch (err) {
    return `${seed.host}:${seed.port}: ${(emitted() ?? (err as Error)).message}`;
  } finally {
    client.disconnect();
  }
}

export interface OneShotOptions {
  host: string;
  port: number;
  /** Bound on connecting and on each command. */
  ms: number;
  username?: string;
  password?: string;
  tls?: RedisTls;
}

/**
 * A short-lived connection for one question (kvql's probes of a Redis, a sentinel, a seed): no
 * retry, no queue, no ready check, each step bounded by `ms`. `emitted()` is the first error the
 * client emitted: a refused AUTH or TLS handshake closes the connection, and what the command
 * then fails with ("Stream isn't writeable") hides why.
 */
export function oneShotClient(opts: OneShotOptions): { client: Redis; emitted: () => Error | undefined } {
  const client = new Redis({
    host: opts.host,
    port: opts.port,
    ...credentials(opts.username, opts.password),
    ...(opts.tls ? { tls: { ...opts.tls } } : {}),
    lazyConnect: true,
    enableReadyCheck: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: opts.ms,
    commandTimeout: opts.ms,
  });
  let first: Error | undefined;
  client.on('error', (err: Error) => (first ??= err));
  return { client, emitted: () => first };
}
