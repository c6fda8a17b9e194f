// Copying a running Redis's appendonlydir/ as Redis documents it ("Backing up AOF
// persistence"): Redis only appends to those files, or replaces them whole in a rewrite, so a
// copy made while no rewrite runs is consistent. Rewrites are paused (auto-aof-rewrite-percentage
// 0, and none running or scheduled) only while the files are hard-linked, which is instant; the
// setting is put back whatever happens; then the links are copied to the destination and removed.
// Writes go on throughout: the copy holds every write acknowledged before it began (a write
// being appended as the last file is copied may leave a torn tail, which a start cuts).
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Redis } from 'ioredis';
import { AOF_DIR } from './aofTail.js';
import { askRedis, type RedisAuth } from './managedRedis.js';
import { untilPersistence } from './redisInfo.js';

/** How long a rewrite already running may take to finish before the backup gives up. */
const REWRITE_WAIT_MS = 30 * 60_000;

export interface AofBackupOptions {
  /** The Redis on 127.0.0.1 whose files are copied, as a user that may run CONFIG and INFO. */
  port: number;
  auth: RedisAuth;
  /** Its data directory, as this process sees it: it must be the one Redis reports (CONFIG GET dir). */
  dataDir: string;
  /** Where the copy goes, as <dest>/appendonlydir/; must not exist yet. */
  dest: string;
  log?: (message: string) => void;
}

type Ask = <T>(f: (client: Redis) => Promise<T>) => Promise<T>;

export interface AofBackup {
  dir: string;
  files: string[];
  bytes: number;
}

export async function backupAof(opts: AofBackupOptions): Promise<AofBackup> {
  const log = opts.log ?? console.log;
  const ask: Ask = (f) => askRedis(opts.port, f, 10_000, opts.auth);
  const config = async (name: string) => ((await ask((c) => c.config('GET', name))) as string[])[1]!;
  const dest = resolve(opts.dest);
  if (existsSync(dest)) throw new Error(`${dest} exists: give a new directory for the backup`);
  const dataDir = resolve(opts.dataDir);
  const reported = await config('dir');
  if (!existsSync(reported) || statSync(reported).ino !== statSync(dataDir).ino) {
    throw new Error(`the Redis on port ${opts.port} keeps its data in ${reported}, not in ${dataDir}`);
  }
  const source = join(dataDir, await config('appenddirname'));
  const staging = join(dataDir, `backup-in-progress-${process.pid}`);

  const previous = await config('auto-aof-rewrite-percentage');
  try {
    await ask((c) => c.config('SET', 'auto-aof-rewrite-percentage', '0'));
    let files: string[];
    try {
      await untilPersistence(
        () => ask((c) => c.info('persistence')),
        (info) => info.aof_rewrite_in_progress === '0' && info.aof_rewrite_scheduled === '0',
        REWRITE_WAIT_MS,
        'an AOF rewrite was still running',
      );
      mkdirSync(staging);
      files = readdirSync(source);
      for (const f of files) linkSync(join(source, f), join(staging, f));
    } finally {
      await ask((c) => c.config('SET', 'auto-aof-rewrite-percentage', previous));
    }
    log(`kvql backup: ${files.length} files linked with rewrites paused; copying them to ${dest}`);
    const out = join(dest, AOF_DIR);
    mkdirSync(out, { recursive: true });
    let bytes = 0;
    for (const f of files) {
      copyFileSync(join(staging, f), join(out, f));
      bytes += statSync(join(out, f)).size;
    }
    log(`kvql backup: ${out} holds ${files.join(', ')} (${bytes} bytes)`);
    return { dir: out, files, bytes };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
