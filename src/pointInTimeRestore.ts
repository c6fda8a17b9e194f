// Restoring a keyspace as it was at a moment in the past, from a copy of appendonlydir/ (what
// `npm run backup` writes for the managed Redis, or a stopped Redis's data directory).
//
// Why: a backup restores the moment it was taken, and a crash restores every acknowledged
// write; neither undoes a mistake (a deleteRange over the wrong prefix, a client writing
// garbage) made minutes before. redis.conf runs `aof-timestamp-enabled yes`, so Redis writes a
// `#TS:<unix seconds>` line into the AOF before the first write of each second: the files can
// be cut after a given second. What a copy covers: from its base (the snapshot of the last AOF
// rewrite before it was taken) to its last write; a time before the base needs an older copy.
//
// The steps, each undone on failure: copy the AOF into a data directory that has none (it is
// what Redis would start from); cut a torn tail (a copy taken while writes went on may end
// inside one, never acknowledged: aofTail.ts); check it with Redis's redis-check-aof; cut after
// the second asked for; check that the cut file ends after a whole write (a script's MULTI/EXEC
// is never split: Redis writes an annotation only between them); then start Redis on it as
// kvql would and count the keys.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, truncateSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ARCHIVE_DIR } from './aofArchive.js';
import { AOF_DIR, aofTimes, checkAofFile, readAofManifest, repairTornAofTail, timeCut } from './aofTail.js';
import { askRedis } from './managedRedis.js';
import { withRedis } from './rdbRestore.js';

export interface PointInTimeRestore {
  /** Keys in the restored data directory. */
  keys: number;
  /** The second restored to: every write of that second and before it is kept, none after. */
  at: Date;
  /** When the copy's base was written (the last AOF rewrite before the copy), as Redis recorded it. */
  baseAt: Date;
  /** The directory written, holding appendonlydir/. */
  dir: string;
}

/**
 * A moment as the tool takes it: an ISO 8601 date and time with its zone (`Z` or `+01:00`), or
 * Unix seconds. A time without a zone is refused: the server's clock is UTC, the operator's
 * may not be.
 */
export function parseMoment(text: string): Date {
  if (/^\d{9,11}$/.test(text)) return new Date(Number(text) * 1000);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(text)) {
    throw new Error(`${JSON.stringify(text)} is not a moment: give an ISO 8601 time with its zone (2026-11-28T13:05:00Z) or Unix seconds`);
  }
  const at = new Date(text);
  if (Number.isNaN(at.getTime())) throw new Error(`${JSON.stringify(text)} is not a valid date`);
  return at;
}

/**
 * Writes `<dataDir>/appendonlydir/` from the copy in `<from>/appendonlydir/`, cut after the
 * second of `at`. Refuses, changing nothing, when the data directory already holds an
 * appendonlydir/ or a dump.rdb, or when `at` is before the copy's base or in the future; on
 * any later failure it removes what it wrote. Redis must not run on `dataDir`.
 */
export async function restoreToTime(from: string, dataDir: string, at: Date, log: (message: string) => void = console.log): Promise<PointInTimeRestore> {
  const dir = resolve(dataDir);
  const copies = copiesIn(from);
  if (at.getTime() > Date.now()) throw new Error(`${at.toISOString()} is in the future (nothing was changed)`);
  const aofDir = join(dir, AOF_DIR);
  if (existsSync(aofDir)) throw new Error(`${aofDir} exists: Redis would start from it. Move it away first (nothing was changed)`);
  if (existsSync(join(dir, 'dump.rdb'))) throw new Error(`${join(dir, 'dump.rdb')} exists: move it away first (nothing was changed)`);
  const source = copies.length === 1 && copies[0] === resolve(from) ? copies[0] : await copyFor(copies, at, log);
  const manifest = readAofManifest(source)!;
  const seconds = Math.floor(at.getTime() / 1000);
  mkdirSync(dir, { recursive: true });
  cpSync(manifest.dir, aofDir, { recursive: true, errorOnExist: true, force: false });
  try {
    const torn = repairTornAofTail(dir);
    if (torn.truncated > 0) log(`kvql restore-to-time: cut the copy's torn tail (${torn.truncated} bytes, a write never acknowledged)`);
    // Writes at the start of the first incremental file may carry no time: Redis writes a
    // second's `#TS:` only before the first write of that second, so a file opened by a rewrite
    // gets none for the rest of the rewrite's second, and writes appended before
    // aof-timestamp-enabled was on have none either. Which of the two they are the file does not
    // tell, so they are placed only for a moment at or after the first time that follows them.
    // (In a later incremental file, opened by a rewrite that failed or was still running, they
    // belong to the second of the file before's last `#TS:`, and are cut or kept with it.)
    const incr = readAofManifest(dir)!.files.filter((f) => f.type === 'i').map((f) => join(aofDir, f.name));
    let untimedProblem: string | undefined;
    if (incr[0] !== undefined) {
      const { first, untimed } = aofTimes(incr[0], true);
      if (untimed && (first === null || seconds < first)) {
        const after = first === null ? '' : `; choose ${new Date(first * 1000).toISOString()} or later`;
        untimedProblem = `${incr[0]} holds writes without a time (made in the second of the AOF rewrite before them, or before aof-timestamp-enabled was on): ${at.toISOString()} cannot be placed among them${after}`;
      }
    }
    // Redis's own check of the whole copy, which also gives the base's time of writing.
    const { ok, output } = await checkAof([join(aofDir, 'appendonly.aof.manifest')]);
    // The base is the keyspace when it was written: nothing before that moment can be restored
    // from this copy, whatever the cut says.
    const baseAt = baseTime(output);
    if (baseAt.getTime() > seconds * 1000) {
      throw new Error(`${at.toISOString()} is before what the copy holds: this copy begins at ${baseAt.toISOString()}, its base; an earlier moment needs an older copy`);
    }
    if (untimedProblem) throw new Error(untimedProblem);
    if (!ok) throw new Error(`redis-check-aof finds the copy damaged, so it is not cut:\n${lastLines(output)}`);
    // The cut: the first incremental file (in the manifest's order) with a `#TS:` after the
    // second is cut there, and every file after it emptied. Not redis-check-aof
    // --truncate-to-timestamp: it cuts only the last file, refusing when the cut falls in an
    // earlier one, and gives up on a later file that holds nothing before the second, leaving
    // the earlier files uncut (a copy holds several incremental files after a rewrite that
    // failed, or one taken while a rewrite ran).
    let cutIn: string | undefined;
    for (const file of incr) {
      if (cutIn !== undefined) {
        truncateSync(file, 0);
        continue;
      }
      const cut = timeCut(file, seconds);
      if (cut !== null) {
        truncateSync(file, cut);
        cutIn = file;
      }
    }
    const check = checkAofFile(cutIn ?? incr.at(-1) ?? null);
    if (check.state !== 'ok' && check.state !== 'none') throw new Error(`the cut AOF does not end after a whole write: ${check.detail}`);
    const auth = { password: randomBytes(24).toString('hex') };
    const keys = await withRedis(dir, [], auth, (port) => askRedis(port, (c) => c.dbsize(), 10_000, auth));
    const restoredAt = new Date(seconds * 1000);
    log(`kvql restore-to-time: ${dir} holds appendonlydir/ as of ${restoredAt.toISOString()} (every write of that second and before), ${keys} keys; start kvql (or Redis) on it`);
    return { keys, at: restoredAt, baseAt, dir };
  } catch (err) {
    rmSync(aofDir, { recursive: true, force: true });
    throw err;
  }
}

export interface CopyCoverage {
  /** When the copy's base was written: the earliest moment it can be restored to. */
  baseAt: Date;
  /** The second of its last write (its last `#TS:` line), if any was made after the base. */
  lastWriteAt?: Date;
  /** Whether writes without a time (made in a rewrite's second, or before aof-timestamp-enabled) follow the base, in its first incremental file. */
  untimedWrites: boolean;
}

/**
 * What a copy of appendonlydir/ can be restored to (`npm run restore-to-time -- <dir> --show`),
 * read without changing it: from its base's moment to its last write's second.
 */
export async function describeCopy(from: string): Promise<CopyCoverage> {
  const manifest = readAofManifest(resolve(from));
  if (!manifest) throw new Error(`${join(resolve(from), AOF_DIR)} holds no AOF manifest: give a backup directory (the one holding appendonlydir/)`);
  const { output } = await checkAof([manifest.manifest]);
  const baseAt = baseTime(output);
  let last: number | undefined;
  let untimedWrites = false;
  manifest.files
    .filter((f) => f.type === 'i')
    .forEach((f, i) => {
      const times = aofTimes(join(manifest.dir, f.name));
      // Only the first file's untimed writes cannot be placed (restoreToTime).
      if (i === 0 && times.untimed) untimedWrites = true;
      if (times.last !== null) last = times.last;
    });
  return { baseAt, ...(last !== undefined ? { lastWriteAt: new Date(last * 1000) } : {}), untimedWrites };
}

/**
 * The copies `from` holds: itself when it holds appendonlydir/ (a backup, or a data directory,
 * with the copies of its AOF archive, aof-archive/, if it has one: aofArchive.ts), otherwise
 * each of its directories that does (an archive given as such), in name order.
 */
export function copiesIn(from: string): string[] {
  const source = resolve(from);
  const within = (dir: string) =>
    existsSync(dir)
      ? readdirSync(dir, { withFileTypes: true })
          .filter((d) => d.isDirectory() && readAofManifest(join(dir, d.name)))
          .map((d) => join(dir, d.name))
          .sort()
      : [];
  if (readAofManifest(source)) return [...within(join(source, ARCHIVE_DIR)), source];
  const copies = within(source);
  if (copies.length === 0) {
    throw new Error(`${source} holds no AOF manifest, nor directories that do: give a backup directory (the one holding appendonlydir/) or an archive of them`);
  }
  return copies;
}

/** Each of copiesIn's copies with what it covers, the earliest base first (a copy with more writes after another of the same base). */
export async function describeArchive(copies: string[]): Promise<{ dir: string; coverage: CopyCoverage }[]> {
  const described = [];
  for (const dir of copies) described.push({ dir, coverage: await describeCopy(dir) });
  const key = (c: CopyCoverage) => [c.baseAt.getTime(), (c.lastWriteAt ?? c.baseAt).getTime()] as const;
  return described.sort((a, b) => key(a.coverage)[0] - key(b.coverage)[0] || key(a.coverage)[1] - key(b.coverage)[1]);
}

/**
 * The copy of an archive to restore `at` from: of those whose base is at or before it, the
 * latest (it holds every write from its base to when it was taken, and the next copy's base is
 * after `at`).
 */
async function copyFor(copies: string[], at: Date, log: (message: string) => void): Promise<string> {
  const described = await describeArchive(copies);
  const chosen = described.filter((c) => c.coverage.baseAt.getTime() <= Math.floor(at.getTime() / 1000) * 1000).at(-1);
  if (!chosen) {
    throw new Error(`${at.toISOString()} is before what the archive holds: its earliest copy begins at ${described[0]!.coverage.baseAt.toISOString()} (nothing was changed)`);
  }
  log(`kvql restore-to-time: of ${copies.length} copies, ${chosen.dir} (from ${chosen.coverage.baseAt.toISOString()}) holds ${at.toISOString()}`);
  return chosen.dir;
}

/** The base's time of writing, as redis-check-aof prints it from the RDB preamble's `ctime`. */
function baseTime(output: string): Date {
  const ctime = /AUX FIELD ctime = '(\d+)'/.exec(output);
  if (!ctime) throw new Error(`the copy's base has no time of writing (aof-use-rdb-preamble yes gives it one):\n${lastLines(output)}`);
  return new Date(Number(ctime[1]) * 1000);
}

async function checkAof(args: string[]): Promise<{ ok: boolean; output: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('redis-check-aof', args, { maxBuffer: 16 << 20 });
    return { ok: true, output: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: unknown; message: string };
    if (e.code === 'ENOENT') throw new Error('redis-check-aof is not on the PATH (apt-get install redis-server has it)');
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` || e.message };
  }
}

const lastLines = (text: string) => text.trimEnd().split('\n').slice(-3).join('\n');
