// `npm run verify`: checks a keyspace's invariants (src/store/verify.ts) and prints a report.
// Reads REDIS_URL (or REDIS_CLUSTER_NODES, with KV_REDIS_TLS*), KV_PREFIX, KV_PARTITIONS and KV_BUCKETS like the server. Without either it checks the
// managed Redis that `npm start` runs (redis://127.0.0.1:$KV_MANAGED_REDIS_PORT), if it answers.
// Exit status: 0 no problems, 1 problems found, 2 it could not check (configuration, no Redis).
import { Cluster, Redis } from 'ioredis';
import { commandConfig } from './cli.js';
import type { Config } from './config.js';
import { managedKvqlUrl } from './managedRedis.js';
import { clusterSeedProblem, type ClusterTarget } from './store/redis.js';
import { formatReport, verifyKeyspace } from './store/verify.js';

/** Never print a password that a URL may carry. */
const shown = (url: string) => url.replace(/\/\/[^/@]*@/, '//***@');

async function main(): Promise<number> {
  const config = commandConfig('verify');
  if (!config) return 2;
  if (config.sentinel) {
    console.error(
      `kvql verify: give the primary's address as REDIS_URL instead of REDIS_SENTINELS ` +
        `(redis-cli -p <sentinel port> SENTINEL get-master-addr-by-name ${config.sentinel.masterName} prints it)`,
    );
    return 2;
  }
  if (config.cluster) return verifyCluster(config.cluster, config);
  const managed = `redis://127.0.0.1:${config.managedRedisPort}`;
  // The managed Redis: as user kvql, with the password its start left in KV_DATA_DIR.
  const url = config.redisUrl ?? managedKvqlUrl(config.dataDir, config.managedRedisPort) ?? managed;
  if (!config.redisUrl) console.log(`kvql verify: no REDIS_URL; checking the managed Redis of \`npm start\` at ${managed}`);
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 5000,
    commandTimeout: 60_000,
    enableOfflineQueue: false,
    ...(config.redisTls && /^rediss:/i.test(url) ? { tls: { ...config.redisTls } } : {}),
  });
  redis.on('error', () => {}); // reported by the connect or the command that fails
  try {
    try {
      await redis.connect();
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      console.error(
        config.redisUrl
          ? `kvql verify: cannot connect to ${shown(url)}: ${why}`
          : `kvql verify: no Redis answers at ${managed} (${why}). Set REDIS_URL to the Redis to check ` +
              `(e.g. REDIS_URL=redis://127.0.0.1:6379 npm run verify), or start kvql (npm start) so that its managed Redis runs.`,
      );
      return 2;
    }
    console.log(`kvql verify: ${shown(url)}, prefix "${config.prefix}", ${config.partitions} partition(s), ${config.buckets} buckets per partition`);
    const report = await verifyKeyspace(redis, { prefix: config.prefix, partitions: config.partitions, buckets: config.buckets });
    console.log(formatReport(report));
    return report.ok ? 0 : 1;
  } finally {
    redis.disconnect();
  }
}

/** The same check on a cluster: every master is scanned, each partition read from its node. */
async function verifyCluster(target: ClusterTarget, config: Config): Promise<number> {
  const { clusterNodes: nodes, username, password } = target;
  const where = nodes.map((n) => `${n.host}:${n.port}`).join(',');
  const redis = new Cluster(nodes, {
    lazyConnect: true,
    clusterRetryStrategy: () => null,
    redisOptions: { maxRetriesPerRequest: 0, connectTimeout: 5000, commandTimeout: 60_000, ...(password ? { password, ...(username ? { username } : {}) } : {}), ...(config.redisTls ? { tls: { ...config.redisTls } } : {}) },
    // With TLS (KV_REDIS_TLS=true), a seed's certificate is checked against its name as given.
    ...(config.redisTls ? { dnsLookup: (address: string, callback: (err: Error | null, address: string) => void) => callback(null, address) } : {}),
  });
  redis.on('error', () => {});
  try {
    try {
      await redis.connect();
    } catch (err) {
      // The cluster does not say why no seed answered; the first seed does.
      const why = await clusterSeedProblem(target, { commandTimeoutMs: 5000, ...(config.redisTls ? { tls: config.redisTls } : {}) });
      console.error(`kvql verify: cannot connect to the cluster of ${where}: ${err instanceof Error ? err.message : String(err)}${why ? ` (${why})` : ''}`);
      return 2;
    }
    console.log(`kvql verify: the cluster of ${where}, prefix "${config.prefix}", ${config.partitions} partition(s), ${config.buckets} buckets per partition`);
    const report = await verifyKeyspace(redis, { prefix: config.prefix, partitions: config.partitions, buckets: config.buckets });
    console.log(formatReport(report));
    return report.ok ? 0 : 1;
  } finally {
    redis.disconnect();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('kvql verify: failed:', err instanceof Error ? err.message : err);
    process.exit(2);
  },
);
