// Starts kvql: the Redis connection (managed or REDIS_URL), the store, and the HTTP listener.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { WebSocketServer } from 'ws';
import { FeedHub } from './feed/hub.js';
import type { Config } from './config.js';
import { startManagedRedis, type ManagedRedis } from './managedRedis.js';
import { createRedis } from './store/redis.js';
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
async function connect(url: string, timeoutMs: number, log: (m: string) => void): Promise<Redis> {
  const redis = createRedis(url, { commandTimeoutMs: timeoutMs });
  let lastError = '';
  redis.on('error', (err: Error) => {
    if (err.message !== lastError) log(`redis: ${err.message}`);
    lastError = err.message;
  });
  await redis.connect().catch(() => {});
  // ioredis reconnects by itself; wait for it to report ready (past LOADING).
  for (let waited = 0; redis.status !== 'ready'; waited += 200) {
    if (waited > 0 && waited % 10_000 === 0) log(`waiting for Redis at ${url} (${redis.status})`);
    await sleep(200);
  }
  return redis;
}

export async function startServer(config: Config, log: (m: string) => void = console.log): Promise<RunningServer> {
  const managed = config.redisUrl
    ? undefined
    : await startManagedRedis({ dataDir: config.dataDir, port: config.managedRedisPort, log });
  const redisUrl = config.redisUrl ?? managed!.url;
  let redis: Redis | undefined;
  let feed: FeedHub | undefined;
  let wss: WebSocketServer | undefined;
  const server: Server = createServer();
  try {
    redis = await connect(redisUrl, config.redisTimeoutMs, log);
    const store = await KvStore.open(redis, {
      prefix: config.prefix,
      partitions: config.partitions,
      feedRetention: config.feed.retention,
    });
    feed = new FeedHub(store.feedReader(FEED_BLOCK_MS), { bufferSize: config.feed.bufferSize, blockMs: FEED_BLOCK_MS, batchSize: 500, log });
    const yoga = createKvYoga({ store, limits: config.limits, feed });
    server.on('request', yoga);
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
      await redis.quit().catch(() => redis.disconnect());
      await managed?.stop();
    },
  };
}
