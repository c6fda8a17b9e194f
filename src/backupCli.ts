// `npm run backup -- <destination>`: copies the appendonlydir/ of the managed Redis that `npm
// start` runs (KV_DATA_DIR, KV_MANAGED_REDIS_PORT) to <destination>/appendonlydir/ while it runs
// and takes writes (src/aofBackup.ts). With REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES it
// takes one snapshot per master over the network, all of one moment, into <destination>/, signing
// in as REDIS_ADMIN_USERNAME (src/snapshotBackup.ts). Exit status: 0 copied, 1 failed, 2 usage or
// configuration.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { backupAof } from './aofBackup.js';
import { commandConfig, exitStatus } from './cli.js';
import { ADMIN_PASSWORD_FILE } from './managedRedis.js';
import { backupSnapshots } from './snapshotBackup.js';

function main(): Promise<number> | number {
  const [dest, ...rest] = process.argv.slice(2);
  if (!dest || rest.length > 0) {
    console.error('usage: npm run backup -- <destination directory, not existing yet>');
    return 2;
  }
  const config = commandConfig('backup');
  if (!config) return 2;
  const target = config.sentinel ?? config.cluster ?? config.redisUrl;
  if (target !== undefined) {
    return exitStatus('backup', backupSnapshots({ target, auth: config.redisAdmin, ...(config.redisTls ? { tls: config.redisTls } : {}), dest }));
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
