// The AOF archive of the managed Redis (KV_AOF_ARCHIVE_HOURS): so that `npm run restore-to-time`
// reaches back hours with no gaps, not only to the last rewrite.
//
// Why: an AOF rewrite replaces appendonlydir/'s files with a new base (the keyspace at that
// moment) and Redis deletes the old ones, with every write they held between their base and the
// rewrite. A copy of the directory can then be restored only from its base on. Redis 7.0 keeps
// no history of its own, so the managed Redis runs with its own rewrites off
// (auto-aof-rewrite-percentage 0) and this makes them instead, by the same rule Redis uses
// (redis.conf's percentage, the running Redis's auto-aof-rewrite-min-size): first it hard-links
// the files into <data dir>/aof-archive/<moment>/appendonlydir/ (instant, no copy: the links keep
// the files Redis then deletes), then it asks for BGREWRITEAOF. Writes made between the two go
// to the same incremental file, so they are in the archived copy too; the rewrite's new base
// starts where that copy ends. Entries older than the retention are removed.
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { AOF_DIR } from './aofTail.js';
import { parseInfo } from './redisInfo.js';

/** The archive's directory, inside the data directory. */
export const ARCHIVE_DIR = 'aof-archive';

/** An entry's name: the moment its files were linked, in UTC (20261128T151335.123Z). */
export function entryName(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '');
}

/** The moment an entry's name gives; undefined for a name the archive did not make. */
export function entryTime(name: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z$/.exec(name);
  if (!m) return undefined;
  const at = new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`);
  return Number.isNaN(at.getTime()) ? undefined : at;
}

/**
 * Hard-links every file of `<dataDir>/appendonlydir/` into a new entry of `archive`, named for
 * `at`; returns the entry's directory (the one holding appendonlydir/, as restore-to-time takes it).
 * No rewrite may run meanwhile (the caller makes them). The manifest is linked last: an entry
 * left half made by a crash has none, and restore-to-time passes over it.
 */
export function linkIntoArchive(dataDir: string, archive: string, at: Date): string {
  const entry = join(archive, entryName(at));
  const target = join(entry, AOF_DIR);
  mkdirSync(target, { recursive: true });
  const files = readdirSync(join(dataDir, AOF_DIR)).sort((a, b) => Number(a.endsWith('.manifest')) - Number(b.endsWith('.manifest')));
  try {
    for (const f of files) linkSync(join(dataDir, AOF_DIR, f), join(target, f));
  } catch (err) {
    rmSync(entry, { recursive: true, force: true });
    throw err;
  }
  return entry;
}

/**
 * Removes the entries archived before `now - keepMs`: what an entry holds ends when it was
 * archived, so every moment since `now - keepMs` stays restorable. Directories not named by the
 * archive (a copy put there by hand) are left alone. Returns the names removed.
 */
export function pruneArchive(archive: string, keepMs: number, now = new Date()): string[] {
  if (!existsSync(archive)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(archive).sort()) {
    const at = entryTime(name);
    if (at === undefined || at.getTime() >= now.getTime() - keepMs) continue;
    rmSync(join(archive, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** What the archive holds now (its metrics). */
export interface ArchiveContents {
  /** Entries the archive made (named by their moment). */
  entries: number;
  /** Bytes of their files, each file once however many links it has. */
  bytes: number;
}

export function archiveContents(archive: string): ArchiveContents {
  let entries = 0;
  let bytes = 0;
  const seen = new Set<number>();
  for (const name of existsSync(archive) ? readdirSync(archive) : []) {
    if (entryTime(name) === undefined) continue;
    entries++;
    const dir = join(archive, name, AOF_DIR);
    try {
      for (const f of readdirSync(dir)) {
        const st = statSync(join(dir, f));
        if (seen.has(st.ino)) continue;
        seen.add(st.ino);
        bytes += st.size;
      }
    } catch {
      // Removed by a prune meanwhile.
    }
  }
  return { entries, bytes };
}

/** The rewrite rule: redis.conf's percentage, and the running Redis's minimum size. */
export interface RewriteRule {
  /** Rewrite once the AOF has grown by this many percent over its last base; 0: never. */
  percentage: number;
  /** ... and is larger than this many bytes. */
  minBytes: number;
}

/**
 * Whether Redis would rewrite its AOF now under `rule`, from its INFO persistence fields: the
 * test of Redis 7.0's serverCron, which this replaces (nothing forked, the AOF on, grown enough).
 */
export function rewriteDue(info: Record<string, string>, rule: RewriteRule): boolean {
  if (info.aof_enabled !== '1' || rule.percentage <= 0) return false;
  if (info.aof_rewrite_in_progress !== '0' || info.aof_rewrite_scheduled !== '0' || info.rdb_bgsave_in_progress !== '0') return false;
  const current = Number(info.aof_current_size);
  if (!(current > rule.minBytes)) return false;
  const base = Number(info.aof_base_size) || 1;
  return Math.floor((current * 100) / base) - 100 >= rule.percentage;
}

/** `auto-aof-rewrite-percentage` as a config file sets it (Redis's default, 100, when it does not). */
export function configuredPercentage(confFile: string): number {
  const m = /^\s*auto-aof-rewrite-percentage\s+(\d+)\s*$/m.exec(readFileSync(confFile, 'utf8'));
  return m ? Number(m[1]) : 100;
}

export interface AofArchiverOptions {
  /** Runs `f` on a connection to the Redis, as a user that may run CONFIG, INFO and BGREWRITEAOF. */
  ask: <T>(f: (client: Redis) => Promise<T>) => Promise<T>;
  /** The Redis's data directory (holding appendonlydir/ and the archive). */
  dataDir: string;
  /** How long entries are kept, in ms. */
  keepMs: number;
  /** The rewrite percentage (redis.conf's): Redis's own stays 0. */
  percentage: number;
  /** How often it looks, in ms (Redis's own check runs ten times a second). */
  everyMs?: number;
  log: (message: string, level?: 'info' | 'warn') => void;
}

export interface AofArchiver {
  /** One look: puts Redis's own rewrites back off if someone turned them on, archives and rewrites if due, prunes. */
  pass(): Promise<void>;
  /** What the archive holds, read now. */
  contents(): ArchiveContents;
  /** When a look last went through (undefined: none yet): a look that keeps failing leaves the AOF unrewritten. */
  lastLookAt(): Date | undefined;
  stop(): Promise<void>;
}

export function startAofArchiver(opts: AofArchiverOptions): AofArchiver {
  const archive = join(opts.dataDir, ARCHIVE_DIR);
  let percentage = opts.percentage;
  let running: Promise<void> | undefined;
  let lastProblem = '';
  let lastLookAt: Date | undefined;
  // Whether the rewrite now running (or asked for) is one this made, or one it has linked the
  // files of: a rewrite someone else started is archived as it runs (below).
  let rewriteArchived = false;

  // One look, on one connection.
  const once = () => opts.ask(async (c) => {
    const config = (await c.config('GET', 'auto-aof-rewrite-*')) as string[];
    const infoText = await c.info('persistence');
    const settings = new Map<string, string>();
    for (let i = 0; i + 1 < config.length; i += 2) settings.set(config[i]!, config[i + 1]!);
    // Redis's own rewrite would drop the files unarchived: an operator's CONFIG SET (or a tool
    // putting back what it read before this started) is taken as the new rule, and Redis's own
    // is turned off again.
    const own = Number(settings.get('auto-aof-rewrite-percentage') ?? '0');
    if (own !== 0) {
      await c.config('SET', 'auto-aof-rewrite-percentage', '0');
      opts.log(`AOF archive: auto-aof-rewrite-percentage was ${own}; kvql makes the rewrites at that growth now, archiving each, and keeps Redis's own at 0`, 'warn');
      percentage = own;
    }
    const rule = { percentage, minBytes: Number(settings.get('auto-aof-rewrite-min-size') ?? '0') };
    const info = parseInfo(infoText);
    const rewriting = info.aof_rewrite_in_progress !== '0' || info.aof_rewrite_scheduled !== '0';
    if (!rewriting) rewriteArchived = false;
    else if (!rewriteArchived) {
      // A rewrite this did not start (a BGREWRITEAOF by hand): Redis deletes the old files only
      // when it finishes, so linking them now still keeps them. The entry also links the new
      // incremental file, which goes on growing in place; it stays a whole copy, one that ends
      // later. A rewrite that starts and ends between two looks is missed (README).
      const entry = linkIntoArchive(opts.dataDir, archive, new Date());
      rewriteArchived = true;
      opts.log(`AOF archive: ${entry} holds the AOF before a rewrite kvql did not start (a BGREWRITEAOF by hand?); leave the rewrites to kvql`, 'warn');
    }
    if (rewriteDue(info, rule)) {
      const entry = linkIntoArchive(opts.dataDir, archive, new Date());
      try {
        await c.bgrewriteaof();
        rewriteArchived = true;
      } catch (err) {
        // Nothing was rewritten, so the live files are the entry's: it goes, and the rewrite is
        // asked again at the next look.
        rmSync(entry, { recursive: true, force: true });
        throw new Error(`BGREWRITEAOF refused: ${(err as Error).message}`);
      }
      opts.log(`AOF archive: ${entry} holds the AOF before this rewrite (${info.aof_current_size} bytes)`);
    }
    const removed = pruneArchive(archive, opts.keepMs);
    if (removed.length > 0) opts.log(`AOF archive: removed ${removed.length} entries older than ${opts.keepMs / 3_600_000} h (${removed[0]}${removed.length > 1 ? ` ... ${removed.at(-1)}` : ''})`);
  });
  const pass = () => {
    running ??= once()
      .then(() => {
        lastProblem = '';
        lastLookAt = new Date();
      })
      .catch((err: unknown) => {
        // Redis restarting, say: the next look tries again. Said once per new problem.
        const problem = (err as Error).message;
        if (problem !== lastProblem) opts.log(`AOF archive: ${problem}; looking again in ${opts.everyMs ?? 1000} ms`, 'warn');
        lastProblem = problem;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = setInterval(() => void pass(), opts.everyMs ?? 1000);
  timer.unref();
  return {
    pass,
    contents: () => archiveContents(archive),
    lastLookAt: () => lastLookAt,
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
