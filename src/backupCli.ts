// `npm run backup -- <destination>`: copies the appendonlydir/ of the managed Redis that `npm
// start` runs (KV_DATA_DIR, KV_MANAGED_REDIS_PORT) to <destination>/appendonlydir/ while it runs
// and takes writes (src/aofBackup.ts); with REDIS_CLUSTER_NODES, takes one snapshot per master of
// the cluster, all of one moment, into <destination>/ (src/clusterBackup.ts). For REDIS_URL and
// Sentinel: README, Operations, "Backups". Exit status: 0 copied, 1 failed, 2 usage or configuration.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { backupAof } from './aofBackup.js';
import { backupCluster } from './clusterBackup.js';
import { commandConfig, exitStatus } from './cli.js';
import { ADMIN_PASSWORD_FILE } from './managedRedis.js';

function main(): Promise<number> | number {
  const [dest, ...rest] = process.argv.slice(2);
  if (!dest || rest.length > 0) {
    console.error('usage: npm run backup -- <destination directory, not existing yet>');
    return 2;
  }
  const config = commandConfig('backup');
  if (!config) return 2;
  if (config.cluster) {
    if (config.redisTls) {
      console.error('kvql backup: a cluster reached over TLS (KV_REDIS_TLS) is not supported by this command yet: see README, "Scaling out: Redis Cluster", Backups');
      return 2;
    }
    return exitStatus('backup', backupCluster({ seeds: config.cluster.clusterNodes, auth: config.redisAdmin, dest }));
  }
  if (config.redisUrl !== undefined || config.sentinel) {
    console.error(
      'kvql backup: copies the files of the managed Redis that `npm start` runs, or snapshots a cluster (REDIS_CLUSTER_NODES). ' +
        'For REDIS_URL or REDIS_SENTINELS, see README, Operations, "Backups" (`redis-cli --rdb <file>` works from any host).',
    );
    return 2;
  }
  let password: string;
  try {
    password = readFileSync(resolve(config.dataDir, ADMIN_PASSWORD_FILE), 'utf8').trim();
  } catch {
    console.error(`kvql backup: no ${ADMIN_PASSWORD_FILE} in ${resolve(config.dataDir)}: has \`npm start\` run with this KV_DATA_DIR?`);
    return 2;
  }
  return exitStatus('backup', backupAof({ port: config.managedRedisPort, auth: { password }, dataDir: config.dataDir, dest }));
}


process.exitCode = await main();
