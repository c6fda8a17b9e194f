// The tail of Redis's append-only file after a crash: find a torn tail and cut it off before Redis
// loads the file, at the start of the incomplete write (before its MULTI).
//
// Why: with `appendfsync always`, a crash of the machine (not of the process: the kernel keeps
// what was written) can leave the last record of the AOF incomplete. Every kvql write is one Lua
// script, which Redis 7 logs as MULTI, the script's commands, EXEC. `aof-load-truncated yes`
// makes Redis cut a torn tail, but Redis 7.0 cuts a record torn *inside a command* within a
// MULTI block only back to the last complete command, leaving "MULTI, HSET ..." without EXEC at
// the file's end. That load is still right (the transaction is not run), but the next writes are
// appended after the open MULTI, and the next restart runs the torn transaction's first commands
// together with the following transaction: half a script applied (found by the crash experiment,
// test/experiments/crash.ts; fixed upstream in Valkey, valkey-io/valkey#4342). redis-check-aof
// --fix cuts before the MULTI, but it cuts at any error, also corruption in the middle of the
// file, which would throw away acknowledged writes after it.
//
// This module cuts only what a crash can leave: a last file that ends inside a command or inside
// a MULTI block. Anything else that does not parse is left alone (Redis then refuses to start and
// says why; see README "After a crash").
import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';

export interface AofTailCheck {
  /** The last incremental AOF file, or null when there is none (no AOF yet). */
  file: string | null;
  size: number;
  /**
   * ok: ends after a complete command outside any transaction; torn: ends inside a command or
   * a MULTI block (a crash's doing); corrupt: does not parse, not at the tail only.
   */
  state: 'ok' | 'torn' | 'corrupt' | 'none';
  /** Where the last complete command outside a transaction ends: the size after a repair. */
  validUpTo: number;
  /** What was found, for the log. */
  detail: string;
}

export interface AofFiles {
  dir: string;
  manifest: string;
  /** File names in manifest order; `type` b (base), h (history) or i (incremental). */
  files: { name: string; type: string }[];
}

/** redis.conf's appenddirname: where a data directory keeps its multi-part AOF. */
export const AOF_DIR = 'appendonlydir';

/** The multi-part AOF of a Redis data directory (redis.conf: appenddirname, appendfilename). */
export function readAofManifest(dataDir: string, dirName = AOF_DIR, fileName = 'appendonly.aof'): AofFiles | null {
  const dir = join(dataDir, dirName);
  const manifest = join(dir, `${fileName}.manifest`);
  if (!existsSync(manifest)) return null;
  const files: { name: string; type: string }[] = [];
  for (const line of readFileSync(manifest, 'utf8').split('\n')) {
    // "file appendonly.aof.1.incr.aof seq 1 type i" (names with spaces are quoted; ours are not)
    const m = /^file (\S+) seq \d+ type ([bhi])\s*$/.exec(line.trim());
    if (m) files.push({ name: m[1]!, type: m[2]! });
  }
  return { dir, manifest, files };
}

/** The path of the last incremental AOF file named by the manifest, or null. */
export function lastIncrAof(dataDir: string): string | null {
  const aof = readAofManifest(dataDir);
  const incr = aof?.files.filter((f) => f.type === 'i').at(-1);
  return aof && incr ? join(aof.dir, incr.name) : null;
}

/** Reads a file through a window of `size` bytes, moving it as asked. */
class Reader {
  private buf = Buffer.alloc(0);
  private start = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly window = 1 << 20,
  ) {}

  /** The bytes [pos, pos + n), fewer at the end of the file. */
  bytes(pos: number, n: number): Buffer {
    if (pos < this.start || pos + n > this.start + this.buf.length) {
      const length = Math.max(n, this.window);
      const buf = Buffer.alloc(Math.min(length, Math.max(0, this.size - pos)));
      let got = 0;
      while (got < buf.length) {
        const r = readSync(this.fd, buf, got, buf.length - got, pos + got);
        if (r === 0) break;
        got += r;
      }
      this.buf = buf.subarray(0, got);
      this.start = pos;
    }
    return this.buf.subarray(pos - this.start, pos - this.start + n);
  }
}

type Step = { end: number; name: string } | { torn: string } | { corrupt: string };

/** One "\r\n"-terminated header line ("*3", "$5") at `pos`: its text and where the next begins. */
function line(r: Reader, pos: number): { text: string; next: number } | { torn: string } | { corrupt: string } {
  const chunk = r.bytes(pos, 32);
  const cr = chunk.indexOf('\r\n');
  if (cr < 0) {
    // A header is a prefix and a number: short. Cut by the end of the file, or not a header.
    return pos + chunk.length >= r.size ? { torn: `a header cut at byte ${r.size}` } : { corrupt: `no line end in a header at byte ${pos}` };
  }
  return { text: chunk.subarray(0, cr).toString('latin1'), next: pos + cr + 2 };
}

/** Parses the command (RESP array of bulk strings) or annotation starting at `pos`. */
function command(r: Reader, pos: number): Step {
  const head = line(r, pos);
  if (!('text' in head)) return head;
  if (head.text.startsWith('#')) return { end: head.next, name: head.text }; // an annotation ("#TS:<seconds>", aof-timestamp-enabled)
  const argc = /^\*([1-9][0-9]{0,8})$/.exec(head.text);
  if (!argc) return { corrupt: `expected a command ("*<count>") at byte ${pos}, found ${JSON.stringify(head.text.slice(0, 16))}` };
  let at = head.next;
  let name = '';
  for (let i = 0; i < Number(argc[1]); i++) {
    const h = line(r, at);
    if (!('text' in h)) return h;
    const len = /^\$(0|[1-9][0-9]{0,11})$/.exec(h.text);
    if (!len) return { corrupt: `expected an argument ("$<length>") at byte ${at}, found ${JSON.stringify(h.text.slice(0, 16))}` };
    const n = Number(len[1]);
    if (h.next + n + 2 > r.size) return { torn: `an argument cut at byte ${r.size}` };
    if (i === 0) name = r.bytes(h.next, Math.min(n, 16)).toString('latin1').toUpperCase();
    if (!r.bytes(h.next + n, 2).equals(Buffer.from('\r\n'))) return { corrupt: `no line end after an argument at byte ${h.next + n}` };
    at = h.next + n + 2;
  }
  return { end: at, name };
}

/** Checks the last incremental AOF file of `dataDir` (read-only). */
export function checkAofTail(dataDir: string): AofTailCheck {
  return checkAofFile(lastIncrAof(dataDir));
}

/** Checks that an incremental AOF file ends after a whole write (read-only). */
export function checkAofFile(file: string | null): AofTailCheck {
  if (file === null || !existsSync(file)) return { file, size: 0, state: 'none', validUpTo: 0, detail: 'no incremental AOF file' };
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const r = new Reader(fd, size);
    let pos = 0;
    let validUpTo = 0;
    let multiAt = -1;
    while (pos < size) {
      const step = command(r, pos);
      if ('torn' in step) {
        const where = multiAt >= 0 ? `inside the transaction (MULTI) that starts at byte ${multiAt}` : 'in its last command';
        return { file, size, state: 'torn', validUpTo, detail: `torn ${where}: ${step.torn}` };
      }
      if ('corrupt' in step) return { file, size, state: 'corrupt', validUpTo, detail: step.corrupt };
      if (step.name === 'MULTI') {
        if (multiAt >= 0) return { file, size, state: 'corrupt', validUpTo, detail: `MULTI at byte ${pos} inside the transaction that starts at byte ${multiAt}` };
        multiAt = pos;
      } else if (step.name === 'EXEC') {
        if (multiAt < 0) return { file, size, state: 'corrupt', validUpTo, detail: `EXEC without MULTI at byte ${pos}` };
        multiAt = -1;
        validUpTo = step.end;
      } else if (multiAt < 0) {
        validUpTo = step.end;
      }
      pos = step.end;
    }
    if (multiAt >= 0) {
      return { file, size, state: 'torn', validUpTo, detail: `torn: the transaction (MULTI) that starts at byte ${multiAt} has no EXEC` };
    }
    return { file, size, state: 'ok', validUpTo: size, detail: 'complete' };
  } finally {
    closeSync(fd);
  }
}

/** What an AOF file says of when its writes were made (aof-timestamp-enabled's `#TS:` lines). */
export interface AofTimes {
  /** The first and the last `#TS:<unix seconds>` annotation; null when it has none. */
  first: number | null;
  last: number | null;
  /** Whether commands come before its first annotation (or it has commands and no annotation). */
  untimed: boolean;
}

/**
 * The annotations of an AOF file, read up to its end or to a part that does not parse. With
 * `firstOnly`, stops at the first (`last` is then the first too).
 */
export function aofTimes(file: string, firstOnly = false): AofTimes {
  const times: AofTimes = { first: null, last: null, untimed: false };
  for (const { time } of steps(file)) {
    if (time !== null) {
      times.last = time;
      times.first ??= time;
      if (firstOnly) break;
    } else if (times.first === null) {
      times.untimed = true;
    }
  }
  return times;
}

/**
 * Where to cut an AOF file to keep every write of second `seconds` and before it, and none
 * after: at its first `#TS:` annotation later than that second; null when it has none.
 * Redis writes an annotation only between writes, never inside a script's MULTI/EXEC.
 */
export function timeCut(file: string, seconds: number): number | null {
  for (const { time, pos } of steps(file)) if (time !== null && time > seconds) return pos;
  return null;
}

/**
 * Each command or annotation of an AOF file with where it starts and, for a `#TS:` annotation,
 * its time; up to the file's end or to a part that does not parse.
 */
function* steps(file: string): Generator<{ pos: number; time: number | null }> {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const r = new Reader(fd, size);
    for (let pos = 0; pos < size; ) {
      const step = command(r, pos);
      if (!('end' in step)) return;
      const ts = /^#TS:(\d+)$/.exec(step.name);
      yield { pos, time: ts ? Number(ts[1]) : null };
      pos = step.end;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Cuts a torn tail off the last incremental AOF file of `dataDir`, at the start of the
 * incomplete write. Call it only while Redis is not running. Leaves every other file, and a
 * file that is corrupt elsewhere than at its tail, as it is.
 */
export function repairTornAofTail(dataDir: string): AofTailCheck & { truncated: number } {
  const check = checkAofTail(dataDir);
  if (check.state !== 'torn' || check.file === null) return { ...check, truncated: 0 };
  const fd = openSync(check.file, 'r+');
  try {
    ftruncateSync(fd, check.validUpTo);
  } finally {
    closeSync(fd);
  }
  return { ...check, truncated: check.size - check.validUpTo };
}
