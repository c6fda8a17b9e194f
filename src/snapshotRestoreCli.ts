// `npm run restore-snapshots -- <backup dir>`: restores a backup of snapshots (`npm run backup`
// with REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES) into the empty Redis, Sentinel primary
// or cluster that the configuration names, signing in as REDIS_ADMIN_USERNAME
// (src/snapshotRestore.ts). Start kvql after it. Exit status: 0 restored, 1 failed, 2 usage or
// configuration.
import { commandConfig, exitStatus } from './cli.js';
import { restoreSnapshots } from './snapshotRestore.js';

function main(): Promise<number> | number {
  const [dir, ...rest] = process.argv.slice(2);
  if (!dir || rest.length > 0) {
    console.error('usage: npm run restore-snapshots -- <directory that npm run backup wrote>');
    return 2;
  }
  const config = commandConfig('restore-snapshots');
  if (!config) return 2;
  const target = config.sentinel ?? config.cluster ?? config.redisUrl;
  if (target === undefined) {
    console.error(
      'kvql restore-snapshots: restores over the network into REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES; ' +
        'for the managed Redis, use npm run restore-rdb on each snapshot (README, Operations, "Backups")',
    );
    return 2;
  }
  return exitStatus('restore-snapshots', restoreSnapshots({ backupDir: dir, target, auth: config.redisAdmin, ...(config.redisTls ? { tls: config.redisTls } : {}) }));
}

process.exitCode = await main();
