// `npm run verify`: checks a keyspace's invariants (src/store/verify.ts) and prints a report.
// Reads REDIS_URL (or REDIS_SENTINELS, or REDIS_CLUSTER_NODES, with KV_REDIS_TLS*), KV_PREFIX,
// KV_PARTITIONS and KV_BUCKETS like the server; with REDIS_SENTINELS it checks the primary the
// sentinels name. Without any it checks the managed Redis that `npm start` runs
// (redis://127.0.0.1:$KV_MANAGED_REDIS_PORT), if it answers.
// Exit status: 0 no problems, 1 problems found, 2 it could not check (configuration, no Redis).
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { commandConfig } from './cli.js';
import type { Config } from './config.js';
import { managedKvqlUrl } from './managedRedis.js';
import { clusterSeedProblem, sentinelPrimary, type ClusterTarget } from './store/redis.js';
import { formatReport, verifyKeyspace } from './store/verify.js';

/** Never print a password that a URL may carry. */
const shown = (url: string) => url.replace(/\/\/[^/@]*@/, '//***@');

/** Connecting and each command: a check reads the whole keyspace, in bounded steps. */
const OPTIONS: RedisOptions = {
  lazyConnect: true,
  maxRetriesPerRequest: 0,
  retryStrategy: () => null,
  connectTimeout: 5000,
  commandTimeout: 60_000,
  enableOfflineQueue: false,
};

async function main(): Promise<number> {
  const config = commandConfig('verify');
  if (!config) return 2;
  if (config.cluster) return verifyCluster(config.cluster, config);
  if (config.sentinel) {
    const { sentinels, masterName, username, password } = config.sentinel;
    const asked = `sentinels ${sentinels.map((s) => `${s.host}:${s.port}`).join(',')}`;
    let primary: { host: string; port: number };
    try {
      primary = await sentinelPrimary(config.sentinel, { ms: 5000, ...(config.redisTls ? { tls: config.redisTls } : {}) });
    } catch (err) {
      console.error(`kvql verify: cannot learn the primary "${masterName}" from ${asked}: ${err instanceof Error ? err.message : String(err)}`);
      return 2;
    }
    // With Sentinel, KV_REDIS_TLS* given means TLS to the data nodes too, as for the server.
    const redis = new Redis({ ...OPTIONS, ...primary, ...(password ? { password, ...(username ? { username } : {}) } : {}), ...(config.redisTls ? { tls: { ...config.redisTls } } : {}) });
    return check(redis, config, `the primary "${masterName}" at ${primary.host}:${primary.port} (from ${asked})`);
  }
  const managed = `redis://127.0.0.1:${config.managedRedisPort}`;
  // The managed Redis: as user kvql, with the password its start left in KV_DATA_DIR.
  const url = config.redisUrl ?? managedKvqlUrl(config.dataDir, config.managedRedisPort) ?? managed;
  if (!config.redisUrl) console.log(`kvql verify: no REDIS_URL; checking the managed Redis of \`npm start\` at ${managed}`);
  const redis = new Redis(url, { ...OPTIONS, ...(config.redisTls && /^rediss:/i.test(url) ? { tls: { ...config.redisTls } } : {}) });
  return check(redis, config, shown(url), (why) =>
    config.redisUrl
      ? `kvql verify: cannot connect to ${shown(url)}: ${why}`
      : `kvql verify: no Redis answers at ${managed} (${why}). Set REDIS_URL to the Redis to check ` +
        `(e.g. REDIS_URL=redis://127.0.0.1:6379 npm run verify), or start kvql (npm start) so that its managed Redis runs.`,
  );
}

/**
 * Connects `redis` (not yet connected), checks the keyspace there and disconnects; `refused` says
 * why it could not connect.
 */
async function check(
  redis: Redis | Cluster,
  config: Config,
  where: string,
  refused: (why: string) => string | Promise<string> = (why) => `kvql verify: cannot connect to ${where}: ${why}`,
): Promise<number> {
  redis.on('error', () => {}); // reported by the connect or the command that fails
  try {
    try {
      await redis.connect();
    } catch (err) {
      console.error(await refused(err instanceof Error ? err.message : String(err)));
      return 2;
    }
    const buckets = config.buckets === undefined ? "the keyspace's own bucket count" : `${config.buckets} buckets per partition`;
    console.log(`kvql verify: ${where}, prefix "${config.prefix}", ${config.partitions} partition(s), ${buckets}`);
    const report = await verifyKeyspace(redis, { prefix: config.prefix, partitions: config.partitions, buckets: config.buckets });
    console.log(formatReport(report));
    return report.ok ? 0 : 1;
  } finally {
    redis.disconnect();
  }
}

/** The same check on a cluster: every master is scanned, each partition read from its node. */
function verifyCluster(target: ClusterTarget, config: Config): Promise<number> {
  const { clusterNodes: nodes, username, password } = target;
  const where = `the cluster of ${nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
  const redis = new Cluster(nodes, {
    lazyConnect: true,
    clusterRetryStrategy: () => null,
    redisOptions: { maxRetriesPerRequest: 0, connectTimeout: 5000, commandTimeout: 60_000, ...(password ? { password, ...(username ? { username } : {}) } : {}), ...(config.redisTls ? { tls: { ...config.redisTls } } : {}) },
    // With TLS (KV_REDIS_TLS=true), a seed's certificate is checked against its name as given.
    ...(config.redisTls ? { dnsLookup: (address: string, callback: (err: Error | null, address: string) => void) => callback(null, address) } : {}),
  });
  return check(redis, config, where, async (why) => {
    // The cluster does not say why no seed answered; the first seed does.
    const seed = await clusterSeedProblem(target, { commandTimeoutMs: 5000, ...(config.redisTls ? { tls: config.redisTls } : {}) });
    return `kvql verify: cannot connect to ${where}: ${why}${seed ? ` (${seed})` : ''}`;
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('kvql verify: failed:', err instanceof Error ? err.message : err);
    process.exit(2);
  },
);
