// What `npm run bench` measures and writes to results.json, and how it prints it.
import type { Figure, Op, System } from './driver.js';

export const SYSTEMS: readonly { id: System; label: string }[] = [
  { id: 'kvql', label: 'kvql' },
  { id: 'raw', label: 'raw Redis' },
  { id: 'bare', label: 'bare Node' },
  { id: 'etcd', label: 'etcd' },
];

export interface Options {
  quick: boolean;
  /** Measurement window, per measurement and round. */
  seconds: number;
  warmupSeconds: number;
  /**
   * Rounds per row: each system is measured once per round, in the order of SYSTEMS and then
   * back (kvql raw bare etcd, etcd bare raw kvql, ...), and its rounds' windows are pooled, so
   * that the machine's drift during a row falls on every system alike. Absent in older results: 1.
   */
  rounds?: number;
  /** Keys loaded into kvql (and read by get, getMany, range, of every system but etcd). */
  keys: number;
  /** Keys loaded into etcd. */
  etcdKeys: number;
  /** Concurrencies of get and put. */
  concurrency: number[];
  /** Concurrency of getMany, range and batchPut of 100. */
  otherConcurrency: number;
  /** Concurrencies of delete (absent in runs before 2026-11-28: no delete rows). */
  deleteConcurrency?: number[];
  /** Concurrencies of batchPut of 1,000 (absent in runs before 2026-11-27 17:51 UTC: otherConcurrency alone). */
  batchConcurrency?: number[];
  /**
   * Driver processes each measurement's clients are dealt out over (driver.ts splitJob), every
   * row and system alike. Absent in runs before 2026-11-28 14:30 UTC: 1.
   */
  drivers?: number;
  out: string;
  etcd: boolean;
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  redis: string;
  etcd: string | null;
}

/** One operation at one concurrency, for each system measured. */
export interface Row {
  op: Op;
  concurrency: number;
  /** Items per batchPut, keys per getMany, page size of range; 1 for get and put. */
  items: number;
  figures: Partial<Record<System, Figure>>;
  /** Keys in kvql's index when the row began (absent in runs before 2026-11-27 13:45 UTC). */
  indexKeys?: number;
  /** AOF rewrites Redis began during each system's windows (absent in runs before 2026-11-27 10:10 UTC). */
  aofRewrites?: Partial<Record<System, number>>;
  /**
   * Each system's windows (one per round) in the order measured, before pooling: how far one
   * window lies from the next shows how much a figure is the machine's noise (absent in runs
   * before 2026-11-27 15:50 UTC).
   */
  windows?: Partial<Record<System, WindowFigure[]>>;
}

/** One window of one system in a row. */
export interface WindowFigure {
  opsPerSec: number;
  p50Ms: number;
}

export interface Ratio {
  name: string;
  value: number;
  /** e.g. ">= 0.6"; null where the issue states none. */
  target: string | null;
  met: boolean | null;
}

export interface Results {
  date: string;
  durationSeconds: number;
  options: Options;
  machine: Machine;
  rows: Row[];
  memory: {
    keys: number;
    /** used_memory after loading minus before, per key: data, index and the retained change feed. */
    bytesPerKey: number;
    /** The same without the change feed's stream (MEMORY USAGE of it). */
    bytesPerKeyWithoutFeed: number;
    feedBytes: number;
    usedMemoryBytes: number;
  };
  recovery: {
    keys: number;
    /** kill -9 of Redis right after BGREWRITEAOF, restart, until PING answers. */
    seconds: number;
    aofBytes: number;
  };
  /**
   * Time inside Redis per batch of the batchPut 1000 row (INFO commandstats, usec per call):
   * kvql's batch script (EVALSHA) and raw Redis's MULTI/EXEC of the same writes
   * (bench/rawRedis.ts), each measured around its own run. Redis runs one
   * command at a time, so this bounds the items/s any client can get from one Redis.
   */
  redisTimePerBatch?: { items: number; kvqlScriptMs: number | null; rawExecMs: number | null };
  /** Keys in kvql's index once every row had run (absent in runs before 2026-11-27 13:45 UTC). */
  indexKeysAtEnd?: number;
  ratios: Ratio[];
  notes: string[];
}

export const opLabel = (r: Pick<Row, 'op' | 'items'>): string =>
  r.op === 'get' || r.op === 'put' || r.op === 'delete' ? r.op : r.op === 'range' ? `range first:${r.items}` : `${r.op} ${r.items}`;

/** Batches are reported in items/s, everything else in operations/s. */
export const rate = (r: Pick<Row, 'op'>, f: Figure): number => (r.op === 'batchPut' ? f.itemsPerSec : f.opsPerSec);

const num = (x: number, digits = 0) => x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
/** Milliseconds: three significant decimals below 1 ms, two below 100. */
export const ms = (x: number): string => (x < 1 ? x.toFixed(3) : x < 100 ? x.toFixed(2) : x.toFixed(1));

const msOrNa = (v: number | null) => (v === null ? 'n/a' : `${v.toFixed(2)} ms`);

/** The printed report: machine, the table of every figure beside its baselines, the ratios. */
export function formatReport(r: Results): string {
  const o = r.options;
  const lines: string[] = [];
  const m = r.machine;
  lines.push(
    `machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB.toFixed(0)} GiB, ${m.os}; Node ${m.node}, Redis ${m.redis}, etcd ${m.etcd ?? 'not installed'}`,
    `run: ${r.date}, ${r.durationSeconds.toFixed(0)} s; ${o.rounds && o.rounds > 1 ? `${o.rounds} rounds of ${o.seconds} s` : `${o.seconds} s`} per measurement after ${o.warmupSeconds} s warm-up each${o.quick ? ' (--quick)' : ''}; ` +
      `kvql holds ${num(o.keys)} keys (16-byte keys, 100-byte values)${m.etcd !== null ? `, etcd ${num(o.etcdKeys)}` : ''}; closed loop${(o.drivers ?? 1) > 1 ? ` from ${o.drivers} driver processes` : ''}, latency per request in ms`,
    '',
  );
  const systems = SYSTEMS.filter((s) => r.rows.some((row) => row.figures[s.id]));
  const cell = 26;
  const head1 = 'operation'.padEnd(24) + 'conc'.padStart(5) + systems.map((s) => `   ${s.label.padEnd(cell - 3)}`).join('');
  const head2 =
    ''.padEnd(29) + systems.map(() => `   ${'ops/s'.padStart(8)} ${'p50'.padStart(7)} ${'p99'.padStart(7)}`).join('');
  lines.push(head1, head2);
  for (const row of r.rows) {
    let line = (opLabel(row) + (row.op === 'batchPut' ? ' (items/s)' : '')).padEnd(24) + String(row.concurrency).padStart(5);
    for (const s of systems) {
      const f = row.figures[s.id];
      line += f
        ? `   ${num(rate(row, f)).padStart(8)} ${ms(f.p50Ms).padStart(7)} ${ms(f.p99Ms).padStart(7)}`
        : `   ${'n/a'.padStart(8)} ${''.padStart(7)} ${''.padStart(7)}`;
    }
    lines.push(line);
  }
  const mem = r.memory;
  lines.push(
    '',
    `memory at ${num(mem.keys)} keys: ${mem.bytesPerKey.toFixed(1)} bytes/key of Redis used_memory ` +
      `(${mem.bytesPerKeyWithoutFeed.toFixed(1)} without the change feed's ${(mem.feedBytes / 2 ** 20).toFixed(1)} MiB stream; raw data 116 bytes/key)`,
    `recovery at ${num(r.recovery.keys)} keys: Redis kill -9 -> answering PING in ${r.recovery.seconds.toFixed(2)} s ` +
      `(AOF right after BGREWRITEAOF, ${(r.recovery.aofBytes / 2 ** 20).toFixed(0)} MiB)`,
    ...aofRewriteLines(r),
    ...(r.rows.some((row) => row.indexKeys !== undefined)
      ? [
          `keys in kvql's index as each row began: ${r.rows.map((row) => `${opLabel(row)} @${row.concurrency} ${row.indexKeys === undefined ? 'n/a' : num(row.indexKeys)}`).join(', ')}` +
            (r.indexKeysAtEnd !== undefined ? `; at the end ${num(r.indexKeysAtEnd)}` : ''),
        ]
      : []),
    ...windowLines(r),
    ...(r.redisTimePerBatch
      ? [
          `inside Redis per batchPut of ${num(r.redisTimePerBatch.items)} items (INFO commandstats): kvql's script ${msOrNa(r.redisTimePerBatch.kvqlScriptMs)}, ` +
            `raw Redis's MULTI/EXEC of the same writes ${msOrNa(r.redisTimePerBatch.rawExecMs)}`,
        ]
      : []),
    '',
    'ratios'.padEnd(58) + 'value'.padStart(10) + '   target',
  );
  for (const q of r.ratios) {
    const met = q.met === null ? '' : q.met ? '  met' : '  NOT met';
    lines.push(q.name.padEnd(58) + q.value.toFixed(q.value < 10 ? 3 : 1).padStart(10) + `   ${q.target ?? '-'}${met}`);
  }
  if (r.notes.length > 0) lines.push('', ...r.notes.map((n) => `note: ${n}`));
  return lines.join('\n');
}

/**
 * The range rows' p50 in each window, beside the pooled figure of the table: the issue's target
 * for a page is a p50, and one window can differ from the next by more than the target's margin.
 */
function windowLines(r: Results): string[] {
  return r.rows
    .filter((row) => row.op === 'range' && row.windows !== undefined)
    .map((row) => {
      const each = SYSTEMS.filter((s) => row.windows![s.id]).map((s) => `${s.label} ${row.windows![s.id]!.map((w) => ms(w.p50Ms)).join(', ')}`);
      return `p50 in each window (ms), ${opLabel(row)} @${row.concurrency}: ${each.join(' | ')}`;
    });
}

/** Which rows' windows an AOF rewrite began in (each window starts with none running). */
function aofRewriteLines(r: Results): string[] {
  const parts = r.rows
    .filter((row) => Object.values(row.aofRewrites ?? {}).some((n) => n > 0))
    .map((row) => {
      const who = SYSTEMS.filter((s) => (row.aofRewrites?.[s.id] ?? 0) > 0).map((s) => `${s.label} ${row.aofRewrites![s.id]}`);
      return `${opLabel(row)} @${row.concurrency}: ${who.join(', ')}`;
    });
  return parts.length > 0 ? [`AOF rewrites begun in the windows (Redis rewrites when the file has doubled): ${parts.join('; ')}`] : [];
}
