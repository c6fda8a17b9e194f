// Starts kvql: the Redis connection (managed, REDIS_URL, Sentinel or a cluster), the store, and the HTTP listener.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WebSocketServer } from 'ws';
import { watchTokens, type TokenWatch } from './auth/tokenSource.js';
import { FeedHub } from './feed/hub.js';
import type { Config } from './config.js';
import { createLogger, loggerFromFunction, redactUrl, type Logger } from './log.js';
import { startManagedRedis, type ManagedRedis } from './managedRedis.js';
import { clusterSeedProblem, createRedis, sentinelProblem, type RedisClient, type RedisTarget, type RedisTls } from './store/redis.js';
import { KvStore } from './store/store.js';
import { attachWebSocket } from './websocket.js';
import { Metrics } from './metrics.js';
import { createKvYoga } from './yoga.js';

/** The longest a feed read blocks in Redis; shutdown waits for at most this long. */
const FEED_BLOCK_MS = 1000;

export interface RunningServer {
  url: string;
  redis: RedisClient;
  managed?: ManagedRedis;
  feed: FeedHub;
  /** Reads KV_TOKENS and KV_TOKENS_FILE again (main.ts calls it on SIGHUP); false when the new list was refused. */
  reloadTokens(reason: string): boolean;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often each API process looks for multi-partition batches a crashed writer left pending. */
const ROLL_FORWARD_EVERY_MS = 5000;

/**
 * On a cluster, completes the multi-partition batches whose writer died after committing them
 * (store/clusterBatch.ts): now, then every ROLL_FORWARD_EVERY_MS. A batch is left to its own
 * writer for twice the request deadline first (doing it twice would be harmless, only wasted).
 */
function startRollForward(store: KvStore, requestTimeoutMs: number, log: Logger): NodeJS.Timeout {
  let running = false;
  const pass = async () => {
    if (running) return;
    running = true;
    try {
      const { completed, missingParts } = await store.rollForward(2 * requestTimeoutMs);
      if (completed > 0) log.warn(`rolled forward ${completed} multi-partition batch(es) left pending by a crashed writer`);
      if (missingParts.length > 0) log.error(`multi-partition batch parts missing (lost with an unreplicated failover, or expired): ${missingParts.join(', ')}`);
    } catch (err) {
      log.warn(`batch roll-forward: ${(err as Error).message}; retrying in ${ROLL_FORWARD_EVERY_MS} ms`);
    } finally {
      running = false;
    }
  };
  void pass();
  const timer = setInterval(() => void pass(), ROLL_FORWARD_EVERY_MS);
  timer.unref();
  return timer;
}

/** Connects, retrying while Redis is starting or loading its data. */
async function connect(target: RedisTarget, timeoutMs: number, log: Logger, tls?: RedisTls): Promise<RedisClient> {
  const redis = createRedis(target, { commandTimeoutMs: timeoutMs, ...(tls ? { tls } : {}) });
  // Never the URL as given: it may carry a password.
  const where =
    typeof target === 'string'
      ? redactUrl(target)
      : 'clusterNodes' in target
        ? `the cluster of ${target.clusterNodes.map((n) => `${n.host}:${n.port}`).join(',')}`
        : `the primary "${target.masterName}" of sentinels ${target.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}`;
  let lastError = '';
  let lastSentinelProblem = '';
  redis.on('error', (err: Error) => {
    if (err.message !== lastError) {
      log.warn(`redis: ${err.message}`);
      // A cluster that cannot be reached does not say why: ask a seed (once per new message).
      if (typeof target !== 'string' && 'clusterNodes' in target && redis.status !== 'ready') {
        void clusterSeedProblem(target, { commandTimeoutMs: timeoutMs, ...(tls ? { tls } : {}) }).then((why) => {
          if (why !== undefined) log.warn(`redis: cluster seed ${why}`);
        });
      }
      // Nor do sentinels that refuse the connection (a TLS handshake): ask the first (said once per reason).
      if (typeof target !== 'string' && 'sentinels' in target && /sentinels are unreachable/i.test(err.message) && redis.status !== 'ready') {
        void sentinelProblem(target, { commandTimeoutMs: timeoutMs, ...(tls ? { tls } : {}) }).then((why) => {
          if (why !== undefined && why !== lastSentinelProblem) log.warn(`redis: sentinel ${why}`);
          lastSentinelProblem = why ?? '';
        });
      }
    }
    lastError = err.message;
  });
  await redis.connect().catch(() => {});
  // ioredis reconnects by itself; wait for it to report ready (past LOADING).
  for (let waited = 0; redis.status !== 'ready'; waited += 200) {
    if (waited > 0 && waited % 10_000 === 0) log.info(`waiting for Redis at ${where} (${redis.status})`);
    await sleep(200);
  }
  return redis;
}

/**
 * `log`: the structured logger (JSON lines on stdout at config.logLevel by default), or a
 * function that takes each line's message as text.
 */
export async function startServer(
  config: Config,
  log: Logger | ((m: string) => void) = createLogger({ level: config.logLevel }),
): Promise<RunningServer> {
  const logger = typeof log === 'function' ? loggerFromFunction(log, config.logLevel) : log;
  const managed =
    config.redisUrl || config.sentinel || config.cluster
      ? undefined
      : await startManagedRedis({
          dataDir: config.dataDir,
          port: config.managedRedisPort,
          prefix: config.prefix,
          log: (m, level = 'info') => logger[level](m),
          ...(config.aofArchiveHours > 0 ? { aofArchive: { keepMs: config.aofArchiveHours * 3_600_000 } } : {}),
        });
  // The managed Redis: as its least-privileged ACL user kvql (users.acl).
  const target: RedisTarget = config.sentinel ?? config.cluster ?? config.redisUrl ?? managed!.kvqlUrl;
  let redis: RedisClient | undefined;
  let replica: RedisClient | undefined;
  let rollForward: NodeJS.Timeout | undefined;
  let store: KvStore | undefined;
  let feed: FeedHub | undefined;
  let wss: WebSocketServer | undefined;
  let tokenWatch: TokenWatch | undefined;
  // Node's own bounds on receiving a request are 60 s for the headers and 300 s for the whole,
  // checked every 30 s: a client trickling bytes held its connection (one of
  // KV_MAX_CONNECTIONS) for minutes. Checked every second, a stalled request gets 408 within a
  // second of its bound.
  const server: Server = createServer({ connectionsCheckingInterval: Math.min(1000, config.load.headersTimeoutMs) });
  server.headersTimeout = config.load.headersTimeoutMs;
  server.requestTimeout = config.load.receiveTimeoutMs;
  try {
    redis = await connect(target, config.redisTimeoutMs, logger, config.redisTls);
    if (config.sentinel) {
      // Reads asked with consistency EVENTUAL go to a replica the sentinels name (or, while
      // none answers, to the primary). Not waited for: a deployment may run without replicas.
      replica = createRedis({ ...config.sentinel, role: 'slave' }, { commandTimeoutMs: config.redisTimeoutMs, ...(config.redisTls ? { tls: config.redisTls } : {}) });
      replica.on('error', () => {});
      void replica.connect().catch(() => {});
    }
    if (config.cluster) {
      // On a cluster, EVENTUAL reads go to each slot's replica (a master where it has none).
      replica = createRedis({ ...config.cluster, reads: 'slave' }, { commandTimeoutMs: config.redisTimeoutMs, ...(config.redisTls ? { tls: config.redisTls } : {}) });
      replica.on('error', () => {});
      void replica.connect().catch(() => {});
    }
    store = await KvStore.open(redis, {
      prefix: config.prefix,
      partitions: config.partitions,
      buckets: config.buckets,
      feedRetention: config.feed.retention,
      replication: config.replication,
      replicaReader: replica,
      log: (m) => logger.warn(m),
    });
    // The bucket count actually in use: with KV_BUCKETS unset it is the keyspace's own.
    logger.info(`keyspace "${config.prefix}": ${config.partitions} partition(s) of ${store.keys.buckets} buckets`);
    if (store.cluster) rollForward = startRollForward(store, config.load.requestTimeoutMs, logger);
    feed = new FeedHub(store.feedReader(FEED_BLOCK_MS), { bufferSize: config.feed.bufferSize, bufferBytes: config.feed.bufferBytes, largestEventBytes: config.limits.maxKeyBytes + config.limits.maxValueBytes, maxSubscriptions: config.feed.maxSubscriptions, blockMs: FEED_BLOCK_MS, batchSize: 500, log: (m) => logger.warn(m) });
    const metrics = new Metrics();
    metrics.observeConnections(server);
    if (managed?.archiver) metrics.observeArchive(managed.archiver);
    const yoga = createKvYoga({
      store,
      limits: config.limits,
      feed,
      metrics,
      load: config.load,
      log: logger,
      tokens: config.tokens,
      graphiql: config.graphiql,
      introspection: config.introspection,
      browser: { corsOrigins: config.corsOrigins, csrfPrevention: config.csrfPrevention },
      trustedDocuments: config.trustedDocuments,
    });
    // A token removed or changed in KV_TOKENS_FILE is refused from the next request on, and its
    // open subscriptions end (auth/tokens.ts, update).
    tokenWatch = watchTokens(
      config.tokenSources,
      (tokens) => {
        const revoked = yoga.auth.update(tokens);
        if (revoked.length > 0) logger.warn(`tokens revoked or changed: ${revoked.join(', ')}; their open subscriptions end`);
      },
      logger,
    );
    server.on('request', yoga.listener);
    // Every connection holds a file descriptor and buffers: past the bound, a new one is closed
    // as soon as it is accepted (before anything is read), so the process never runs out of
    // descriptors and the connections it has keep being served. Said once a minute at most.
    server.maxConnections = config.load.maxConnections;
    let droppedSince = 0;
    let lastSaid = 0;
    server.on('drop', () => {
      droppedSince++;
      if (Date.now() - lastSaid < 60_000) return;
      logger.warn(`KV_MAX_CONNECTIONS (${config.load.maxConnections}) reached: new connections are closed at once (${droppedSince} since this was last said)`);
      droppedSince = 0;
      lastSaid = Date.now();
    });
    wss = attachWebSocket(server, yoga, (m) => logger.error(m));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, resolve);
    });
  } catch (err) {
    // A start that fails half-way (port taken, keyspace refused) leaves nothing running: not
    // the connection, and not the redis-server it started, which would outlive the process.
    clearInterval(rollForward);
    tokenWatch?.stop();
    feed?.close();
    wss?.close();
    store?.close();
    replica?.disconnect();
    redis?.disconnect();
    await managed?.stop();
    throw err;
  }
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  return {
    url: `http://${host}:${port}/graphql`,
    redis,
    managed,
    feed: feed!,
    reloadTokens: (reason) => tokenWatch!.reload(reason),
    async close() {
      // End the subscriptions (their clients resume from their last cursor elsewhere), stop
      // taking requests, let those in flight finish (for at most a few seconds), close Redis.
      clearInterval(rollForward);
      tokenWatch!.stop();
      feed!.close();
      for (const client of wss!.clients) client.close(1001, 'server shutting down');
      wss!.close();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), 5000);
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
      store!.close();
      replica?.disconnect();
      await redis.quit().catch(() => redis.disconnect());
      await managed?.stop();
    },
  };
}
