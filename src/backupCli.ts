// `npm run backup -- <destination>`: copies the appendonlydir/ of the managed Redis that `npm
// start` runs (KV_DATA_DIR, KV_MANAGED_REDIS_PORT) to <destination>/appendonlydir/ while it runs
// and takes writes (src/aofBackup.ts). For a Redis kvql does not manage: README, Operations,
// "Backups". Exit status: 0 copied, 1 failed, 2 usage or configuration.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { backupAof } from './aofBackup.js';
import { ConfigError, loadConfig } from './config.js';
import { ADMIN_PASSWORD_FILE } from './managedRedis.js';

function main(): Promise<number> | number {
  const [dest, ...rest] = process.argv.slice(2);
  if (!dest || rest.length > 0) {
    console.error('usage: npm run backup -- <destination directory, not existing yet>');
    return 2;
  }
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`kvql backup: ${err.message}`);
    return 2;
  }
  if (config.redisUrl !== undefined || config.sentinel || config.cluster) {
    console.error(
      'kvql backup: copies the files of the managed Redis that `npm start` runs. For REDIS_URL, REDIS_SENTINELS or ' +
        'REDIS_CLUSTER_NODES, see README, Operations, "Backups" (`redis-cli --rdb <file>` works from any host).',
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
  return backupAof({ port: config.managedRedisPort, auth: { password }, dataDir: config.dataDir, dest }).then(
    () => 0,
    (err: Error) => {
      console.error(`kvql backup: ${err.message}`);
      return 1;
    },
  );
}

process.exitCode = await main();
