// `npm run restore-cluster -- <backup dir>`: restores a cluster backup (`npm run backup` with
// REDIS_CLUSTER_NODES) into the empty cluster that REDIS_CLUSTER_NODES names, signing in as
// REDIS_ADMIN_USERNAME (src/clusterRestore.ts). Start kvql after it. Exit status: 0 restored,
// 1 failed, 2 usage or configuration.
import { restoreCluster } from './clusterRestore.js';
import { commandConfig, exitStatus } from './cli.js';

function main(): Promise<number> | number {
  const [dir, ...rest] = process.argv.slice(2);
  if (!dir || rest.length > 0) {
    console.error('usage: npm run restore-cluster -- <directory written by npm run backup for a cluster>');
    return 2;
  }
  const config = commandConfig('restore-cluster');
  if (!config) return 2;
  if (!config.cluster) {
    console.error('kvql restore-cluster: restores into a Redis Cluster: set REDIS_CLUSTER_NODES (for one Redis, npm run restore-rdb; see README, Operations, "Backups")');
    return 2;
  }
  if (config.redisTls) {
    console.error('kvql restore-cluster: a cluster reached over TLS (KV_REDIS_TLS) is not supported by this command yet');
    return 2;
  }
  return exitStatus('restore-cluster', restoreCluster({ backupDir: dir, seeds: config.cluster.clusterNodes, auth: config.redisAdmin }));
}

process.exitCode = await main();
