// Starts kvql: the Redis connection (managed, REDIS_URL or Sentinel), the store, and the HTTP listener.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { WebSocketServer } from 'ws';
import { FeedHub } from './feed/hub.js';
import type { Config } from './config.js';
import { createLogger, loggerFromFunction, redactUrl, type Logger } from './log.js';
import { startManagedRedis, type ManagedRedis } from './managedRedis.js';
import { createRedis, type RedisTarget } from './store/redis.js';
import { KvStore } from './store/store.js';
import { attachWebSocket } from './websocket.js';
import { createKvYoga } from './yoga.js';

/** The longest a feed read blocks in Redis; shutdown waits for at most this long. */
const FEED_BLOCK_MS = 1000;

export interface RunningServer {
  url: string;
  redis: Redis;
  managed?: ManagedRedis;
  feed: FeedHub;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Connects, retrying while Redis is starting or loading its data. */
async function connect(target: RedisTarget, timeoutMs: number, log: Logger): Promise<Redis> {
  const redis = createRedis(target, { commandTimeoutMs: timeoutMs });
  // Never the URL as given: it may carry a password.
  const where = typeof target === 'string' ? redactUrl(target) : `the primary "${target.masterName}" of sentinels ${target.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}`;
  let lastError = '';
  redis.on('error', (err: Error) => {
    if (err.message !== lastError) log.warn(`redis: ${err.message}`);
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
    config.redisUrl || config.sentinel
      ? undefined
      : await startManagedRedis({ dataDir: config.dataDir, port: config.managedRedisPort, log: (m, level = 'info') => logger[level](m) });
  const target: RedisTarget = config.sentinel ?? config.redisUrl ?? managed!.url;
  let redis: Redis | undefined;
  let replica: Redis | undefined;
  let store: KvStore | undefined;
  let feed: FeedHub | undefined;
  let wss: WebSocketServer | undefined;
  const server: Server = createServer();
  try {
    redis = await connect(target, config.redisTimeoutMs, logger);
    if (config.sentinel) {
      // Reads asked with consistency EVENTUAL go to a replica the sentinels name (or, while
      // none answers, to the primary). Not waited for: a deployment may run without replicas.
      replica = createRedis({ ...config.sentinel, role: 'slave' }, { commandTimeoutMs: config.redisTimeoutMs });
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
    });
    feed = new FeedHub(store.feedReader(FEED_BLOCK_MS), { bufferSize: config.feed.bufferSize, blockMs: FEED_BLOCK_MS, batchSize: 500, log: (m) => logger.warn(m) });
    const yoga = createKvYoga({ store, limits: config.limits, feed, load: config.load, log: logger });
    server.on('request', yoga.listener);
    wss = attachWebSocket(server, yoga);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, resolve);
    });
  } catch (err) {
    // A start that fails half-way (port taken, keyspace refused) leaves nothing running: not
    // the connection, and not the redis-server it started, which would outlive the process.
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
    async close() {
      // End the subscriptions (their clients resume from their last cursor elsewhere), stop
      // taking requests, let those in flight finish (for at most a few seconds), close Redis.
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
