// Reading a region of an append-only file as Redis commands and transactions, for experiments
// that cut the file at a chosen byte and predict what Redis will load.
import { closeSync, openSync, readSync } from 'node:fs';
import { decodeEntry } from '../../src/store/feedFormat.js';

export interface AofCommand {
  /** File offsets: the command occupies [start, end). */
  start: number;
  end: number;
  /** The arguments as UTF-8 text, and as the bytes they are (the feed's events are binary). */
  args: string[];
  raw: Buffer[];
}

/** A MULTI ... EXEC block, or a single command outside one. */
export interface AofTransaction {
  start: number;
  end: number;
  commands: AofCommand[];
}

/** The bytes [from, to) of a file. */
export function readRegion(file: string, from: number, to: number): Buffer {
  const buf = Buffer.alloc(Math.max(0, to - from));
  const fd = openSync(file, 'r');
  try {
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, from + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/**
 * Parses `buf` (the file's bytes from offset `base`) into complete commands; stops at the first
 * incomplete one. Throws on bytes that are not RESP.
 */
export function parseCommands(buf: Buffer, base: number): { commands: AofCommand[]; complete: number } {
  const commands: AofCommand[] = [];
  let pos = 0;
  const lineAt = (p: number): [string, number] | null => {
    const cr = buf.indexOf('\r\n', p);
    return cr < 0 ? null : [buf.subarray(p, cr).toString('latin1'), cr + 2];
  };
  outer: while (pos < buf.length) {
    const start = pos;
    const head = lineAt(pos);
    if (!head) break;
    if (head[0].startsWith('#')) {
      pos = head[1];
      continue;
    }
    if (!/^\*\d+$/.test(head[0])) throw new Error(`not a command at byte ${base + pos}: ${JSON.stringify(head[0].slice(0, 20))}`);
    let at = head[1];
    const args: string[] = [];
    const raw: Buffer[] = [];
    for (let i = 0; i < Number(head[0].slice(1)); i++) {
      const h = lineAt(at);
      if (!h) break outer;
      if (!/^\$\d+$/.test(h[0])) throw new Error(`not an argument at byte ${base + at}`);
      const n = Number(h[0].slice(1));
      if (h[1] + n + 2 > buf.length) break outer;
      raw.push(buf.subarray(h[1], h[1] + n));
      args.push(raw[raw.length - 1]!.toString('utf8'));
      at = h[1] + n + 2;
    }
    commands.push({ start: base + start, end: base + at, args, raw });
    pos = at;
  }
  return { commands, complete: base + pos };
}

/** Groups commands into transactions: MULTI ... EXEC blocks, and single commands. */
export function transactions(commands: readonly AofCommand[]): { complete: AofTransaction[]; open: AofTransaction | null } {
  const complete: AofTransaction[] = [];
  let open: AofTransaction | null = null;
  for (const c of commands) {
    const name = c.args[0]?.toUpperCase();
    if (name === 'MULTI') open = { start: c.start, end: c.end, commands: [c] };
    else if (open) {
      open.commands.push(c);
      open.end = c.end;
      if (name === 'EXEC') {
        complete.push(open);
        open = null;
      }
    } else complete.push({ start: c.start, end: c.end, commands: [c] });
  }
  return { complete, open };
}

/** The change-feed events a transaction appends (kvql's XADD entries, feedFormat.ts). */
export function eventsOf(t: AofTransaction): { type: 'P' | 'D'; key: string; version: string; value?: string }[] {
  const out: { type: 'P' | 'D'; key: string; version: string; value?: string }[] = [];
  for (const c of t.commands) {
    if (c.args[0]?.toUpperCase() !== 'XADD') continue;
    // XADD <stream> [trimming] <id> q <first> e <events>: the fields are the last four arguments.
    const n = c.args.length;
    if (n < 6 || c.args[n - 4] !== 'q' || c.args[n - 2] !== 'e') continue;
    for (const e of decodeEntry(c.args[n - 5]!, c.raw.slice(n - 4)).events) {
      out.push({ type: e.type, key: e.key, version: String(e.version), ...(e.value !== undefined ? { value: e.value } : {}) });
    }
  }
  return out;
}
