// The crash experiment (`npm run crash-test [-- --rounds N --seed S --minutes M --buckets B --no-repair]`): crashes a
// dedicated redis-server and the API again and again under concurrent writers, and checks after
// every crash that what kvql promised still holds. Everything runs on 127.0.0.1: a redis-server
// from a copy of redis.conf (appendonly yes, appendfsync always), the API as its own process
// (as `npm start` runs it, with REDIS_URL), writers in this process speaking GraphQL over
// HTTP, 4 partitions so that batches span partitions, of 16 buckets each (KV_BUCKETS) so that
// most keys share their bucket hash with others. Three kinds of crash, interleaved:
//
//   redis  kill -9 of redis-server at a random moment while writers run (put, compare-and-set
//          put, put/delete cycles, create-then-delete, batchPut over partitions); restart it from
//          the same config and data.
//   api    kill -9 of the API process while writers send large batchPuts; start a new one.
//   torn   writers acknowledged up to a point; note the size of the last incremental AOF file;
//          send more writes without waiting for them; kill -9 Redis; cut that file at a random
//          byte past the noted size (only unacknowledged data); restart. Every cut is also
//          predicted from the AOF's bytes: the writes whose MULTI ... EXEC lies wholly before the
//          cut must be there, the others not.
//
// Before every Redis restart the experiment does what kvql's managed Redis does at every start:
// cut a torn AOF tail (src/aofTail.ts). `--no-repair` skips that, to show why it is needed.
//
// After every crash: every write the API acknowledged is there, at least at its acknowledged
// version (a later write of the same key may have superseded it); nothing is there that no
// sequence of the attempted writes explains (a refused write applied); no batch is partly
// applied (each batch writes fresh keys, all or none); every applied write has its change-feed
// event and every event its write (a large feed retention keeps them all); and verifyKeyspace
// finds nothing. At the end everything is checked again, across all rounds.
//
// Bounded: rounds per kind, each writer's operations, every wait, and the whole run
// (--minutes). Every process it starts is stopped, also on failure.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { lastIncrAof, repairTornAofTail } from '../../src/aofTail.js';
import { Keyspace, unpackEntry } from '../../src/store/keys.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { eventsOf, parseCommands, readRegion, transactions } from '../harness/aof.js';
import { streamEvents } from '../harness/feedStream.js';
import { startApiProcess, waitForReady, type ApiProcess } from '../harness/apiProcess.js';
import { startTestRedis, type TestRedis } from '../harness/redisServer.js';
import { arg, commonOptions, flag, runExperimentCli, summaryEnd } from './cli.js';
import { codeOf, post, random, sleep } from './tools.js';

export type CrashKind = 'redis' | 'api' | 'torn';
export const KINDS: readonly CrashKind[] = ['redis', 'api', 'torn'];

export interface CrashOptions {
  /** Rounds of each kind (default 20: 60 crashes). */
  rounds?: number | Partial<Record<CrashKind, number>>;
  partitions?: number;
  /** Buckets per partition (default 16: most keys share a bucket with others). */
  buckets?: number;
  /** Stop starting rounds after this long (default 20 minutes); the run then fails. */
  timeLimitMs?: number;
  /** Cut a torn AOF tail before every Redis restart, as the managed Redis does (default true). */
  repairTornTail?: boolean;
  seed?: number;
  log?: (line: string) => void;
  /** Stops the run after the round in progress (Ctrl+C in `npm run crash-test`). */
  signal?: AbortSignal;
}

/** What one check found. Every count but the first three of each group must be 0. */
export interface CheckFigures {
  ackedWritesChecked: number;
  keysChecked: number;
  batchesChecked: number;
  /** Acknowledged writes whose effect is gone (or contradicted): must be 0. */
  ackedWritesLost: number;
  /** Keys in a state that no sequence of their attempted writes explains: must be 0. */
  unexplainedStates: number;
  /** Batches with some but not all keys (or events) present: must be 0. */
  batchesPartial: number;
  /** Applied writes without their change-feed event: must be 0. */
  writesWithoutEvent: number;
  /** Events without a write that explains them: must be 0. */
  eventsWithoutWrite: number;
  /** verifyKeyspace problems: must be 0. */
  verifyProblems: number;
  /** Batches whose outcome the client did not learn (connection lost) but that were applied. */
  batchesAppliedUnacknowledged: number;
}

export interface CrashSummary {
  seed: number;
  partitions: number;
  buckets: number;
  repairTornTail: boolean;
  rounds: Record<CrashKind, number>;
  crashes: number;
  durationMs: number;
  /** Set when the run stopped early (time limit, a restart that failed, an error). */
  aborted: string | null;
  attempts: { acknowledged: number; refused: number; unknown: number };
  /** Error codes (or transport failures) clients saw, by name. */
  errors: Record<string, number>;
  /** Checked after each round's crash. */
  perRound: CheckFigures;
  /** Everything again at the end. */
  final: CheckFigures;
  api: { killedWithBatchesInFlight: number; restarts: number; firstWriteAfterRestartOk: number; startRetries: number };
  torn: {
    /** Rounds whose AOF was cut. */
    cut: number;
    bytesCut: number;
    /** Cuts inside a MULTI ... EXEC block, at a command boundary / inside a command. */
    insideTransactionAtBoundary: number;
    insideTransactionInsideCommand: number;
    /** Phase-two writes whose presence after the restart the cut did not predict: must be 0. */
    predictionMismatches: number;
    writesPredictedApplied: number;
    writesPredictedCut: number;
    /** Bytes the tail repair cut before Redis started, and times Redis logged a truncation. */
    repairedBytes: number;
    redisTruncationWarnings: number;
    redisRevertedTransactions: number;
  };
  restartFailures: number;
  /** Distinct problems verifyKeyspace reported over all its runs (a problem persists). */
  verifyProblemsDistinct: number;
  /** The first failures, described. */
  failures: string[];
  /** Whether every must-be-0 figure is 0 and the run was complete. */
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP, with what each answer means for the write's outcome
// ---------------------------------------------------------------------------------------------

const PUT = `mutation($key: String!, $value: String!, $expectedVersion: Int) {
  put(key: $key, value: $value, expectedVersion: $expectedVersion) { version }
}`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key version } }`;
const DELETE = `mutation($key: String!, $expectedVersion: Int) {
  delete(key: $key, expectedVersion: $expectedVersion) { deleted previous { version } }
}`;

/** acknowledged: it happened; refused: it certainly did not; unknown: it may have. */
type Outcome = 'acked' | 'refused' | 'unknown';

interface Answer {
  outcome: Outcome;
  data?: any;
  /** The error code, or the transport failure. */
  code?: string;
  message?: string;
  actualVersion?: number;
}

/** Codes after which the README promises nothing changed. */
const NOTHING_CHANGED = new Set(['VERSION_CONFLICT', 'BAD_USER_INPUT', 'PAYLOAD_TOO_LARGE', 'CAPACITY_EXCEEDED', 'OVERLOADED', 'QUERY_TOO_COMPLEX']);
const MAYBE_APPLIED = /may or may not have been applied/;

async function send(url: string, query: string, variables: Record<string, unknown>, timeoutMs = 15_000): Promise<Answer> {
  const r = await post(url, query, variables, timeoutMs);
  const code = codeOf(r);
  if (code === null) return { outcome: 'acked', data: r.body!.data };
  // Refused: no connection, so the request never reached the API.
  if (r.transport) return { outcome: code === 'transport:ECONNREFUSED' ? 'refused' : 'unknown', code };
  const e = r.body?.errors?.[0];
  if (!e) return { outcome: 'unknown', code };
  const refused = NOTHING_CHANGED.has(code) || (code === 'STORE_UNAVAILABLE' && !MAYBE_APPLIED.test(e.message));
  return {
    outcome: refused ? 'refused' : 'unknown',
    code,
    message: e.message,
    ...(code === 'VERSION_CONFLICT' ? { actualVersion: Number(e.extensions!.actualVersion) } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// The ledger: every write attempted, per key in the order sent (one writer per key)
// ---------------------------------------------------------------------------------------------

interface Attempt {
  op: 'put' | 'delete';
  key: string;
  /** Unique per attempt and key: how its event and its effect are recognised. */
  value: string | null;
  expectedVersion: number | null;
  outcome: Outcome;
  ackVersion?: number;
  /** An acknowledged delete: whether it deleted, and which version. */
  deleted?: boolean;
  deletedVersion?: number;
  /** A refused compare-and-set: the version the key had. */
  observedVersion?: number;
  batch?: Batch;
  /** Sent without waiting for its answer (torn rounds): counted as unknown whatever it was. */
  unawaited?: boolean;
  /** Set by the check: whether its event is in the feed. */
  applied?: boolean;
}

interface Batch {
  id: number;
  items: Attempt[];
  outcome: Outcome;
}

class Ledger {
  readonly keys = new Map<string, Attempt[]>();
  readonly batches: Batch[] = [];
  acked = 0;
  refused = 0;
  unknown = 0;

  constructor(
    readonly round: string,
    private readonly errors: Record<string, number>,
  ) {}

  add(a: Attempt): void {
    let list = this.keys.get(a.key);
    if (!list) this.keys.set(a.key, (list = []));
    list.push(a);
  }

  /** Records an answer: counts it, and its error code. */
  count(answer: Answer, writes = 1): void {
    if (answer.outcome === 'acked') this.acked += writes;
    else if (answer.outcome === 'refused') this.refused += writes;
    else this.unknown += writes;
    if (answer.code) this.errors[answer.code] = (this.errors[answer.code] ?? 0) + 1;
  }

  last(key: string): Attempt | undefined {
    return this.keys.get(key)?.at(-1);
  }
}

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------


/** Most operations one writer loop makes in one round: a bound, far above what a round needs. */
const MAX_OPS = 5000;

interface WriterContext {
  url: string;
  ledger: Ledger;
  rand: () => number;
  running: () => boolean;
  /** Unique suffixes for values and keys. */
  next: () => number;
  inFlightBatches: { n: number };
}

/** After a failure, a short pause: a failing request answers at once. */
const backoff = (ctx: WriterContext) => sleep(5 + ctx.rand() * 10);

async function putWriter(ctx: WriterContext, key: string, cas: boolean): Promise<void> {
  let expected = 0;
  for (let i = 0; ctx.running() && i < MAX_OPS; i++) {
    const value = `${key}#${ctx.next()}`;
    const a: Attempt = { op: 'put', key, value, expectedVersion: cas ? expected : null, outcome: 'unknown' };
    ctx.ledger.add(a);
    const r = await send(ctx.url, PUT, { key, value, expectedVersion: a.expectedVersion });
    ctx.ledger.count(r);
    a.outcome = r.outcome;
    if (r.outcome === 'acked') {
      a.ackVersion = r.data.put.version;
      expected = a.ackVersion!;
    } else {
      if (r.actualVersion !== undefined) {
        a.observedVersion = r.actualVersion;
        expected = r.actualVersion;
      }
      await backoff(ctx);
    }
  }
}

/** Put, delete, put, delete ... the same key; a failed step is tried again (as a new attempt). */
async function cycleWriter(ctx: WriterContext, key: string): Promise<void> {
  let op: 'put' | 'delete' = 'put';
  for (let i = 0; ctx.running() && i < MAX_OPS; i++) {
    const value = op === 'put' ? `${key}#${ctx.next()}` : null;
    const a: Attempt = { op, key, value, expectedVersion: null, outcome: 'unknown' };
    ctx.ledger.add(a);
    const r = op === 'put' ? await send(ctx.url, PUT, { key, value }) : await send(ctx.url, DELETE, { key });
    ctx.ledger.count(r);
    a.outcome = r.outcome;
    if (r.outcome !== 'acked') {
      await backoff(ctx);
      continue;
    }
    if (op === 'put') a.ackVersion = r.data.put.version;
    else {
      a.deleted = r.data.delete.deleted;
      a.deletedVersion = r.data.delete.previous?.version;
    }
    op = op === 'put' ? 'delete' : 'put';
  }
}

/** Creates a fresh key (expectedVersion 0), then deletes it; never writes it again. */
async function deleteWriter(ctx: WriterContext, prefix: string): Promise<void> {
  for (let i = 0; ctx.running() && i < MAX_OPS; i++) {
    const key = `${prefix}:${ctx.next()}`;
    let created = false;
    for (let j = 0; ctx.running() && !created && j < 50; j++) {
      const value = `${key}#${ctx.next()}`;
      const a: Attempt = { op: 'put', key, value, expectedVersion: 0, outcome: 'unknown' };
      ctx.ledger.add(a);
      const r = await send(ctx.url, PUT, { key, value, expectedVersion: 0 });
      ctx.ledger.count(r);
      a.outcome = r.outcome;
      if (r.outcome === 'acked') a.ackVersion = r.data.put.version;
      if (r.actualVersion !== undefined) a.observedVersion = r.actualVersion;
      // A conflict: an earlier attempt of ours, whose outcome we did not learn, created it.
      created = r.outcome === 'acked' || r.code === 'VERSION_CONFLICT';
      if (!created) await backoff(ctx);
    }
    for (let j = 0; ctx.running() && created && j < 50; j++) {
      const a: Attempt = { op: 'delete', key, value: null, expectedVersion: null, outcome: 'unknown' };
      ctx.ledger.add(a);
      const r = await send(ctx.url, DELETE, { key });
      ctx.ledger.count(r);
      a.outcome = r.outcome;
      if (r.outcome === 'acked') {
        a.deleted = r.data.delete.deleted;
        a.deletedVersion = r.data.delete.previous?.version;
        break;
      }
      await backoff(ctx);
    }
  }
}

/** A batch of fresh keys (so all-or-none is visible): `size` items of `valueBytes` bytes. */
function makeBatch(ctx: WriterContext, prefix: string, size: number, valueBytes: number): Batch {
  const id = ctx.next();
  const pad = 'x'.repeat(Math.max(0, valueBytes - 24));
  const batch: Batch = { id, items: [], outcome: 'unknown' };
  for (let j = 0; j < size; j++) {
    const key = `${prefix}:${id}:${j}`;
    const a: Attempt = { op: 'put', key, value: `B${id}:${j}:${pad}`, expectedVersion: null, outcome: 'unknown', batch };
    batch.items.push(a);
    ctx.ledger.add(a);
  }
  ctx.ledger.batches.push(batch);
  return batch;
}

async function sendBatch(ctx: WriterContext, batch: Batch): Promise<Answer> {
  ctx.inFlightBatches.n++;
  try {
    return await send(ctx.url, BATCH, { items: batch.items.map((a) => ({ key: a.key, value: a.value })) });
  } finally {
    ctx.inFlightBatches.n--;
  }
}

function settleBatch(ctx: WriterContext, batch: Batch, r: Answer): void {
  ctx.ledger.count(r, batch.items.length);
  batch.outcome = r.outcome;
  batch.items.forEach((a, i) => {
    a.outcome = r.outcome;
    if (r.outcome === 'acked') a.ackVersion = r.data.batchPut[i].version;
  });
}

async function batchWriter(ctx: WriterContext, prefix: string, size: () => number, valueBytes: number): Promise<void> {
  for (let i = 0; ctx.running() && i < MAX_OPS; i++) {
    const batch = makeBatch(ctx, prefix, size(), valueBytes);
    const r = await sendBatch(ctx, batch);
    settleBatch(ctx, batch, r);
    if (r.outcome !== 'acked') await backoff(ctx);
  }
}

/** Starts writer loops; the returned function stops them and waits for each to finish. */
function startWriters(loops: ((running: () => boolean) => Promise<void>)[]): () => Promise<void> {
  let running = true;
  const done = loops.map((loop) => loop(() => running));
  return async () => {
    running = false;
    await Promise.all(done);
  };
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

const emptyFigures = (): CheckFigures => ({
  ackedWritesChecked: 0,
  keysChecked: 0,
  batchesChecked: 0,
  ackedWritesLost: 0,
  unexplainedStates: 0,
  batchesPartial: 0,
  writesWithoutEvent: 0,
  eventsWithoutWrite: 0,
  verifyProblems: 0,
  batchesAppliedUnacknowledged: 0,
});

const BAD: (keyof CheckFigures)[] = ['ackedWritesLost', 'unexplainedStates', 'batchesPartial', 'writesWithoutEvent', 'eventsWithoutWrite', 'verifyProblems'];

function addFigures(into: CheckFigures, from: CheckFigures): void {
  for (const k of Object.keys(from) as (keyof CheckFigures)[]) into[k] += from[k];
}

interface Stored {
  version: number;
  value: string;
}

interface Ev {
  type: 'PUT' | 'DELETE';
  version: number;
  value: string | null;
}

async function readStates(admin: Redis, ks: Keyspace, keys: string[]): Promise<Map<string, Stored | null>> {
  const out = new Map<string, Stored | null>();
  for (let i = 0; i < keys.length; i += 1000) {
    const chunk = keys.slice(i, i + 1000);
    const pipe = admin.pipeline();
    for (const k of chunk) pipe.hgetBuffer(ks.bucket(k), k);
    const replies = (await pipe.exec())!;
    chunk.forEach((k, j) => {
      const [err, packed] = replies[j]!;
      if (err) throw err;
      if (packed == null) return void out.set(k, null);
      const e = unpackEntry(packed as Buffer);
      if (e === null) throw new Error(`the stored entry of ${JSON.stringify(k)} is shorter than its header`);
      out.set(k, { version: e.version, value: e.value });
    });
  }
  return out;
}

/** The last entry ID of each partition's stream ("0-0" when empty): where a round's events start. */
async function streamEnds(admin: Redis, ks: Keyspace): Promise<string[]> {
  const out: string[] = [];
  for (let p = 0; p < ks.partitions; p++) {
    const last = (await admin.xrevrange(ks.stream(p), '+', '-', 'COUNT', 1)) as [string, string[]][];
    out.push(last[0]?.[0] ?? '0-0');
  }
  return out;
}

/** Every event after `from` (per partition), by key, in order. */
async function readEvents(admin: Redis, ks: Keyspace, from: string[] | null): Promise<Map<string, Ev[]>> {
  const out = new Map<string, Ev[]>();
  for (let p = 0; p < ks.partitions; p++) {
    for (const e of await streamEvents(admin, ks.stream(p), from ? from[p] : '-')) {
      let list = out.get(e.key);
      if (!list) out.set(e.key, (list = []));
      list.push({ type: e.type === 'P' ? 'PUT' : 'DELETE', version: e.version, value: e.value ?? null });
    }
  }
  return out;
}

type State = Stored | null;
const stateId = (s: State) => (s ? `${s.version}\u0000${s.value}` : '-');
const describeState = (s: State | undefined) => (s ? `v${s.version} ${JSON.stringify(s.value.slice(0, 40))}` : 'absent');
const describeAttempt = (a: Attempt) =>
  `${a.op}${a.value ? ` ${JSON.stringify(a.value.slice(0, 40))}` : ''}${a.expectedVersion != null ? ` ev=${a.expectedVersion}` : ''} ${a.outcome}` +
  (a.ackVersion !== undefined ? ` v${a.ackVersion}` : '') +
  (a.deleted !== undefined ? ` deleted=${a.deleted}` : '') +
  (a.observedVersion !== undefined ? ` actual=${a.observedVersion}` : '');

/**
 * Checks one key: its stored state against every state its attempts can have produced (each
 * unknown attempt applied or not, acknowledged ones applied, refused ones not), and its events
 * against its attempts (in order: each applied write has its event, each event a write).
 */
function checkKey(key: string, attempts: Attempt[], actual: State, events: Ev[], f: CheckFigures, fail: (m: string) => void): void {
  f.keysChecked++;
  const history = () => `${key}: stored ${describeState(actual)}; attempts: ${attempts.map(describeAttempt).join('; ')}; events: ${events.map((e) => `${e.type} v${e.version}${e.value ? ` ${JSON.stringify(e.value.slice(0, 40))}` : ''}`).join(', ') || 'none'}`;
  let states = new Map<string, State>([['-', null]]);
  let acked = 0;
  let impossible: string | null = null;
  const versionOf = (s: State) => s?.version ?? 0;
  for (const a of attempts) {
    const allowed = (s: State) => a.expectedVersion == null || versionOf(s) === a.expectedVersion;
    if (a.outcome === 'refused') {
      if (a.observedVersion !== undefined) {
        const kept = new Map([...states].filter(([, s]) => versionOf(s) === a.observedVersion));
        if (kept.size === 0) impossible ??= `a conflict reported version ${a.observedVersion}`;
        else states = kept;
      }
      continue;
    }
    if (a.outcome === 'acked') {
      acked++;
      if (a.op === 'put') {
        if (![...states.values()].some((s) => allowed(s) && versionOf(s) + 1 === a.ackVersion)) impossible ??= `put acknowledged at version ${a.ackVersion}`;
        const s = { version: a.ackVersion!, value: a.value! };
        states = new Map([[stateId(s), s]]);
      } else {
        const ok = a.deleted ? [...states.values()].some((s) => s?.version === a.deletedVersion) : states.has('-');
        if (!ok) impossible ??= `delete acknowledged with deleted=${a.deleted}`;
        states = new Map([['-', null]]);
      }
      continue;
    }
    const next = new Map(states);
    for (const s of states.values()) {
      if (!allowed(s)) continue;
      if (a.op === 'put') {
        const t = { version: versionOf(s) + 1, value: a.value! };
        next.set(stateId(t), t);
      } else next.set('-', null);
    }
    states = next;
  }
  f.ackedWritesChecked += acked;
  if (impossible !== null) {
    f.unexplainedStates++;
    fail(`unexplained (${impossible}): ${history()}`);
  } else if (!states.has(stateId(actual))) {
    if (acked > 0) {
      f.ackedWritesLost++;
      fail(`acknowledged write lost: ${history()}`);
    } else {
      f.unexplainedStates++;
      fail(`unexplained state: ${history()}`);
    }
  }

  // The events, matched in order to the attempts. A run of deletes (retries) deletes at most once.
  let ei = 0;
  for (let i = 0; i < attempts.length; ) {
    const a = attempts[i]!;
    const e = events[ei];
    if (a.op === 'put') {
      a.applied = e !== undefined && e.type === 'PUT' && e.value === a.value;
      if (a.applied) {
        ei++;
        if (a.outcome === 'refused') {
          f.eventsWithoutWrite++;
          fail(`a refused write was applied: ${history()}`);
        } else if (a.outcome === 'acked' && e!.version !== a.ackVersion) {
          f.unexplainedStates++;
          fail(`event version ${e!.version} for a write acknowledged at ${a.ackVersion}: ${history()}`);
        }
      } else if (a.outcome === 'acked') {
        f.writesWithoutEvent++;
        fail(`acknowledged write without its event: ${history()}`);
      }
      i++;
      continue;
    }
    let j = i;
    while (j < attempts.length && attempts[j]!.op === 'delete') j++;
    const run = attempts.slice(i, j);
    const consumed = e !== undefined && e.type === 'DELETE';
    if (consumed) ei++;
    const ackedDelete = run.find((x) => x.outcome === 'acked' && x.deleted);
    for (const x of run) x.applied = consumed && (ackedDelete ? x === ackedDelete : x === run.find((y) => y.outcome !== 'refused'));
    if (ackedDelete && !consumed) {
      f.writesWithoutEvent++;
      fail(`acknowledged delete without its event: ${history()}`);
    } else if (consumed && run.every((x) => x.outcome === 'refused')) {
      f.eventsWithoutWrite++;
      fail(`a refused delete was applied: ${history()}`);
    } else if (consumed && ackedDelete && e!.version !== ackedDelete.deletedVersion) {
      f.unexplainedStates++;
      fail(`delete event of version ${e!.version}, acknowledged as deleting ${ackedDelete.deletedVersion}: ${history()}`);
    }
    i = j;
  }
  if (ei < events.length) {
    f.eventsWithoutWrite += events.length - ei;
    fail(`${events.length - ei} events without a write: ${history()}`);
  }
}

async function check(
  admin: Redis,
  ks: Keyspace,
  ledgers: Ledger[],
  from: string[] | null,
  fail: (m: string) => void,
  seenProblems: Set<string>,
): Promise<{ figures: CheckFigures; keys: number; events: number }> {
  const f = emptyFigures();
  const keys = ledgers.flatMap((l) => [...l.keys.keys()]);
  const states = await readStates(admin, ks, keys);
  const events = await readEvents(admin, ks, from);
  for (const l of ledgers) {
    for (const [key, attempts] of l.keys) checkKey(key, attempts, states.get(key)!, events.get(key) ?? [], f, fail);
    for (const b of l.batches) {
      f.batchesChecked++;
      const present = b.items.filter((a) => states.get(a.key)?.value === a.value).length;
      const withEvent = b.items.filter((a) => a.applied).length;
      const n = b.items.length;
      if ((present !== 0 && present !== n) || (withEvent !== 0 && withEvent !== n)) {
        f.batchesPartial++;
        fail(`batch ${b.id} (${l.round}, ${b.outcome}) partly applied: ${present} of ${n} keys present, ${withEvent} with events`);
      }
      if (present === n && b.outcome === 'unknown' && !b.items[0]!.unawaited) f.batchesAppliedUnacknowledged++;
    }
  }
  const report = await verifyKeyspace(admin, { prefix: ks.prefix, partitions: ks.partitions, buckets: ks.buckets });
  f.verifyProblems += report.problemCount;
  // A problem stays in the keyspace: report each one once, however many checks see it.
  for (const p of report.problems) {
    const id = `${p.kind} ${p.redisKey ?? ''} ${p.key ?? ''}`;
    if (seenProblems.has(id)) continue;
    seenProblems.add(id);
    fail(`verify: ${p.kind}: ${p.message}`);
  }
  return { figures: f, keys: report.keys, events: report.events };
}

// ---------------------------------------------------------------------------------------------
// The experiment
// ---------------------------------------------------------------------------------------------

function roundsOf(opt: CrashOptions['rounds']): Record<CrashKind, number> {
  if (typeof opt === 'number') return { redis: opt, api: opt, torn: opt };
  return { redis: 20, api: 20, torn: 20, ...opt };
}

export async function runCrashExperiment(opts: CrashOptions = {}): Promise<CrashSummary> {
  const t0 = performance.now();
  const log = opts.log ?? ((line: string) => console.log(line));
  const seed = opts.seed ?? randomBytes(4).readUInt32LE();
  const rand = random(seed);
  const partitions = opts.partitions ?? 4;
  const buckets = opts.buckets ?? 16;
  const planned = roundsOf(opts.rounds);
  const repair = opts.repairTornTail ?? true;
  const deadline = Date.now() + (opts.timeLimitMs ?? 20 * 60_000);
  const errors: Record<string, number> = {};
  const summary: CrashSummary = {
    seed,
    partitions,
    buckets,
    repairTornTail: repair,
    rounds: { redis: 0, api: 0, torn: 0 },
    crashes: 0,
    durationMs: 0,
    aborted: null,
    attempts: { acknowledged: 0, refused: 0, unknown: 0 },
    errors,
    perRound: emptyFigures(),
    final: emptyFigures(),
    api: { killedWithBatchesInFlight: 0, restarts: 0, firstWriteAfterRestartOk: 0, startRetries: 0 },
    torn: {
      cut: 0,
      bytesCut: 0,
      insideTransactionAtBoundary: 0,
      insideTransactionInsideCommand: 0,
      predictionMismatches: 0,
      writesPredictedApplied: 0,
      writesPredictedCut: 0,
      repairedBytes: 0,
      redisTruncationWarnings: 0,
      redisRevertedTransactions: 0,
    },
    restartFailures: 0,
    verifyProblemsDistinct: 0,
    failures: [],
    ok: false,
  };
  const fail = (m: string) => {
    if (summary.failures.length < 50) summary.failures.push(m);
    if (summary.failures.length <= 10) log(`  FAILURE: ${m}`);
  };

  const work = mkdtempSync(join(tmpdir(), 'kvql-crash-'));
  const redisLog = join(work, 'redis.log');
  const prefix = `crash-${randomBytes(3).toString('hex')}`;
  const ks = new Keyspace(prefix, partitions, buckets);
  const ledgers: Ledger[] = [];
  const seenProblems = new Set<string>();
  let seq = 0;
  const next = () => ++seq;
  let redis: TestRedis | undefined;
  let api: ApiProcess | undefined;
  let admin: Redis | undefined;
  const apiEnv = { KV_FEED_RETENTION: '100000000', KV_BUCKETS: String(buckets) };

  const startApi = async () => {
    try {
      api = await startApiProcess({ redisUrl: redis!.url, prefix, partitions, env: apiEnv });
    } catch (err) {
      // Once more: a start can fail for reasons outside kvql (a busy machine); twice is a failure.
      summary.api.startRetries++;
      log(`  the API did not start (${(err as Error).message.split('\n')[0]}); trying once more`);
      api = await startApiProcess({ redisUrl: redis!.url, prefix, partitions, env: apiEnv });
    }
  };
  /** Reads new lines of Redis's log since `offset`. */
  const logSince = (offset: number) => (existsSync(redisLog) ? readFileSync(redisLog, 'utf8').slice(offset) : '');
  const logSize = () => (existsSync(redisLog) ? statSync(redisLog).size : 0);

  /** What kvql's managed Redis does at every start, then the restart itself. */
  const restartRedis = async (skipRepair = false): Promise<number> => {
    if (repair && !skipRepair) {
      const r = repairTornAofTail(redis!.dir);
      summary.torn.repairedBytes += r.truncated;
      if (r.state === 'corrupt') fail(`the AOF does not parse: ${r.detail}`);
    }
    const from = logSize();
    const t = performance.now();
    try {
      await redis!.restart();
    } catch (err) {
      summary.restartFailures++;
      throw new Error(`Redis did not start again: ${(err as Error).message}\n${logSince(from).slice(-2000)}`);
    }
    const lines = logSince(from);
    summary.torn.redisTruncationWarnings += (lines.match(/loaded anyway because aof-load-truncated is enabled/g) ?? []).length;
    summary.torn.redisRevertedTransactions += (lines.match(/Revert incomplete MULTI\/EXEC transaction/g) ?? []).length;
    return performance.now() - t;
  };

  const context = (ledger: Ledger, running: () => boolean): WriterContext => ({
    url: api!.url,
    ledger,
    rand,
    running,
    next,
    inFlightBatches: { n: 0 },
  });

  /** The usual mix of writers for one round (redis and torn kinds). */
  const mixedWriters = (ledger: Ledger, tag: string) => {
    const shared = { n: 0 };
    const ctx = (running: () => boolean) => ({ ...context(ledger, running), inFlightBatches: shared });
    return startWriters([
      (r) => putWriter(ctx(r), `${tag}:put:0`, false),
      (r) => putWriter(ctx(r), `${tag}:put:1`, false),
      // Four more plain put writers, so that puts meet while others are in flight and are
      // grouped into shared script calls (src/store/writeGroups.ts) when Redis dies under them.
      (r) => putWriter(ctx(r), `${tag}:put:2`, false),
      (r) => putWriter(ctx(r), `${tag}:put:3`, false),
      (r) => putWriter(ctx(r), `${tag}:put:4`, false),
      (r) => putWriter(ctx(r), `${tag}:put:5`, false),
      (r) => putWriter(ctx(r), `${tag}:cas:0`, true),
      (r) => putWriter(ctx(r), `${tag}:cas:1`, true),
      (r) => cycleWriter(ctx(r), `${tag}:cycle:0`),
      (r) => cycleWriter(ctx(r), `${tag}:cycle:1`),
      // Four more, so that deletes too meet while others are in flight and are grouped
      // (src/store/writeGroups.ts): with two more, a 2-round run grouped none.
      (r) => cycleWriter(ctx(r), `${tag}:cycle:2`),
      (r) => cycleWriter(ctx(r), `${tag}:cycle:3`),
      (r) => cycleWriter(ctx(r), `${tag}:cycle:4`),
      (r) => cycleWriter(ctx(r), `${tag}:cycle:5`),
      (r) => deleteWriter(ctx(r), `${tag}:del`),
      (r) => batchWriter(ctx(r), `${tag}:b0`, () => 8, 48),
      (r) => batchWriter(ctx(r), `${tag}:b1`, () => 4 + Math.floor(rand() * 12), 48),
    ]);
  };

  const afterRound = async (ledger: Ledger, from: string[], kind: CrashKind, n: number, what: string) => {
    const tc = performance.now();
    const { figures, keys, events } = await check(admin!, ks, [ledger], from, fail, seenProblems);
    const checkMs = performance.now() - tc;
    addFigures(summary.perRound, figures);
    summary.attempts.acknowledged += ledger.acked;
    summary.attempts.refused += ledger.refused;
    summary.attempts.unknown += ledger.unknown;
    const bad = BAD.reduce((s, k) => s + figures[k], 0);
    log(
      `[${kind} ${n}/${planned[kind]}] ${what}; writes ${ledger.acked} acknowledged, ${ledger.unknown} unknown, ${ledger.refused} refused; ` +
        `checked ${figures.ackedWritesChecked} acknowledged writes, ${figures.batchesChecked} batches: ${bad === 0 ? 'ok' : `${bad} FAILURES`} ` +
        `(keyspace: ${keys} keys, ${events} events; checked in ${checkMs.toFixed(0)} ms)`,
    );
  };

  // --- kind: redis -----------------------------------------------------------------------------
  const redisRound = async (n: number) => {
    const tag = `r${n}`;
    const ledger = new Ledger(tag, errors);
    const from = await streamEnds(admin!, ks);
    const stop = mixedWriters(ledger, tag);
    const wait = 150 + Math.floor(rand() * 600);
    await sleep(wait);
    for (let i = 0; i < 150 && ledger.acked < 20; i++) await sleep(20);
    await redis!.kill9();
    summary.crashes++;
    await sleep(50 + rand() * 200); // the writers meet the outage
    await stop();
    const restartMs = await restartRedis();
    await waitForReady(api!.base, 30_000);
    await afterRound(ledger, from, 'redis', n, `kill -9 Redis after ${wait} ms, restarted in ${restartMs.toFixed(0)} ms`);
    ledgers.push(ledger);
  };

  // --- kind: api -------------------------------------------------------------------------------
  const apiRound = async (n: number) => {
    const tag = `a${n}`;
    const ledger = new Ledger(tag, errors);
    const from = await streamEnds(admin!, ks);
    const shared = { n: 0 };
    const ctx = (running: () => boolean) => ({ ...context(ledger, running), inFlightBatches: shared });
    const big = () => 100 + Math.floor(rand() * 101);
    const stop = startWriters([
      (r) => batchWriter(ctx(r), `${tag}:b0`, big, 100),
      (r) => batchWriter(ctx(r), `${tag}:b1`, big, 100),
      (r) => batchWriter(ctx(r), `${tag}:b2`, big, 100),
      (r) => batchWriter(ctx(r), `${tag}:b3`, big, 100),
      (r) => putWriter(ctx(r), `${tag}:put:0`, false),
      (r) => cycleWriter(ctx(r), `${tag}:cycle:0`),
    ]);
    const wait = 150 + Math.floor(rand() * 500);
    await sleep(wait);
    // In the middle of batches: wait (briefly) until one is in flight.
    for (let i = 0; i < 100 && shared.n === 0; i++) await sleep(2);
    if (shared.n > 0) summary.api.killedWithBatchesInFlight++;
    const inFlight = shared.n;
    await api!.kill9();
    summary.crashes++;
    await sleep(50 + rand() * 100);
    await stop();
    await afterRound(ledger, from, 'api', n, `kill -9 API after ${wait} ms with ${inFlight} batches in flight`);
    ledgers.push(ledger);
    // A new API process, and a first write through it.
    await startApi();
    summary.api.restarts++;
    const probe = new Ledger(`${tag}:after`, errors);
    const key = `${tag}:after-restart`;
    const value = `${key}#${next()}`;
    const a: Attempt = { op: 'put', key, value, expectedVersion: 0, outcome: 'unknown' };
    probe.add(a);
    const r = await send(api!.url, PUT, { key, value, expectedVersion: 0 });
    a.outcome = r.outcome;
    if (r.outcome === 'acked') {
      a.ackVersion = r.data.put.version;
      summary.api.firstWriteAfterRestartOk++;
    } else fail(`the first write through the new API process failed: ${r.code} ${r.message}`);
    ledgers.push(probe);
  };

  // --- kind: torn ------------------------------------------------------------------------------
  const tornRound = async (n: number) => {
    const tag = `t${n}`;
    const ledger = new Ledger(tag, errors);
    const from = await streamEnds(admin!, ks);
    // Phase 1: writers, acknowledged (or not) up to a point; then nothing in flight.
    const stop = mixedWriters(ledger, tag);
    await sleep(150 + Math.floor(rand() * 350));
    await stop();
    const file = lastIncrAof(redis!.dir);
    if (file === null) throw new Error('no incremental AOF file');
    const noted = statSync(file).size;

    // Phase 2: writes sent without waiting for them: one per key at most, so that each key's
    // attempts stay in the order sent.
    const ctx = context(ledger, () => true);
    const pending: Promise<void>[] = [];
    const unawaited = (a: Attempt) => {
      a.unawaited = true;
      ledger.add(a);
    };
    for (const key of [`${tag}:put:0`, `${tag}:put:1`, `${tag}:cas:0`, `${tag}:cas:1`]) {
      const value = `${key}#${next()}`;
      const a: Attempt = { op: 'put', key, value, expectedVersion: null, outcome: 'unknown' };
      unawaited(a);
      pending.push(send(api!.url, PUT, { key, value }).then((r) => ledger.count({ ...r, outcome: 'unknown' })));
    }
    for (const key of [`${tag}:cycle:0`, `${tag}:cycle:1`]) {
      // A delete of a key whose last step was an acknowledged put starts a run of its own.
      const last = ledger.last(key);
      if (last?.op !== 'put' || last.outcome !== 'acked') continue;
      const a: Attempt = { op: 'delete', key, value: null, expectedVersion: null, outcome: 'unknown' };
      unawaited(a);
      pending.push(send(api!.url, DELETE, { key }).then((r) => ledger.count({ ...r, outcome: 'unknown' })));
    }
    for (let b = 0; b < 6; b++) {
      const batch = makeBatch(ctx, `${tag}:u${b}`, 4 + Math.floor(rand() * 12), 48);
      for (const a of batch.items) a.unawaited = true;
      pending.push(sendBatch(ctx, batch).then((r) => ledger.count({ ...r, outcome: 'unknown' }, batch.items.length)));
    }
    // Kill Redis once some of them reached the file, at a random moment (sometimes only once
    // every one was answered, so that the whole of phase two is in the file).
    for (let i = 0; i < 3000 && statSync(file).size === noted; i++) await sleep(1);
    if (rand() < 0.25) await Promise.race([Promise.all(pending), sleep(3000)]);
    else await sleep(rand() * 40);
    await redis!.kill9();
    summary.crashes++;
    await Promise.all(pending);

    // Cut the last incremental file at a random byte past the noted size.
    const now = lastIncrAof(redis!.dir);
    const size = statSync(file).size;
    let what = `nothing written past ${noted} bytes`;
    let predicted: Map<Attempt, boolean> | null = null;
    let leaveToRedis = false;
    if (now !== file) {
      what = `the AOF was rewritten meanwhile (${basename(now ?? 'none')}): not cut`;
    } else if (size > noted) {
      const { commands } = parseCommands(readRegion(file, noted, size), noted);
      const { complete } = transactions(commands);
      // A random byte; one round in three a random command boundary inside a transaction (the
      // case Redis itself reverts), which uniform bytes would seldom hit.
      const boundaries = complete.filter((t) => t.commands.length > 1).flatMap((t) => t.commands.slice(0, -1).map((c) => c.end));
      const cut =
        n % 3 === 0 && boundaries.length > 0 ? boundaries[Math.floor(rand() * boundaries.length)]! : noted + Math.floor(rand() * (size - noted));
      const inside = complete.find((t) => t.start < cut && cut < t.end && t.commands.length > 1);
      const atBoundary = inside ? inside.commands.some((c) => c.end === cut || c.start === cut) : false;
      if (inside && atBoundary) summary.torn.insideTransactionAtBoundary++;
      if (inside && !atBoundary) summary.torn.insideTransactionInsideCommand++;
      // Which writes survive the cut: those whose transaction lies wholly before it.
      const byValue = new Map<string, Attempt>();
      const byDeleteKey = new Map<string, Attempt>();
      for (const [, attempts] of ledger.keys) {
        for (const a of attempts) {
          if (!a.unawaited) continue;
          if (a.value !== null) byValue.set(`${a.key}\u0000${a.value}`, a);
          else byDeleteKey.set(a.key, a);
        }
      }
      predicted = new Map([...byValue.values(), ...byDeleteKey.values()].map((a) => [a, false]));
      for (const t of complete) {
        for (const e of eventsOf(t)) {
          const a = e.type === 'P' ? byValue.get(`${e.key}\u0000${e.value}`) : byDeleteKey.get(e.key);
          if (!a) {
            fail(`torn round ${n}: a write in the AOF tail that was not sent in phase two: ${e.type} ${e.key}`);
            continue;
          }
          predicted.set(a, t.end <= cut);
        }
      }
      truncateSync(file, cut);
      // A cut at a command boundary inside a transaction is the case Redis handles by itself
      // (it reverts the incomplete MULTI/EXEC): leave it to Redis, to see that it does.
      leaveToRedis = inside !== undefined && atBoundary;
      summary.torn.cut++;
      summary.torn.bytesCut += size - cut;
      what = `cut ${size - cut} of ${size - noted} unacknowledged bytes${inside ? ` inside a transaction (${atBoundary ? 'at a command boundary' : 'inside a command'})` : ''}`;
    }
    // Whatever the clients were told, phase two is unacknowledged: its bytes may have been cut.
    for (const [, attempts] of ledger.keys) for (const a of attempts) if (a.unawaited) a.outcome = 'unknown';
    for (const b of ledger.batches) if (b.items[0]!.unawaited) b.outcome = 'unknown';
    const reverted = summary.torn.redisRevertedTransactions;
    const restartMs = await restartRedis(leaveToRedis);
    if (leaveToRedis && summary.torn.redisRevertedTransactions === reverted) {
      fail(`torn round ${n}: cut at a command boundary inside a transaction, but Redis did not log that it reverted it`);
    }
    await waitForReady(api!.base, 30_000);
    await afterRound(ledger, from, 'torn', n, `${what}${leaveToRedis ? ' (left to Redis)' : ''}; restarted in ${restartMs.toFixed(0)} ms`);
    if (predicted) {
      for (const [a, applied] of predicted) {
        if (applied) summary.torn.writesPredictedApplied++;
        else summary.torn.writesPredictedCut++;
        if (a.applied !== applied) {
          summary.torn.predictionMismatches++;
          fail(`torn round ${n}: ${a.op} ${a.key} was predicted ${applied ? 'applied' : 'cut'}, but is ${a.applied ? 'applied' : 'not applied'}`);
        }
      }
    }
    ledgers.push(ledger);
  };

  try {
    log(`crash experiment: seed ${seed}, ${partitions} partitions of ${buckets} buckets, rounds ${JSON.stringify(planned)}, torn-tail repair ${repair ? 'on' : 'OFF'}; work dir ${work}`);
    redis = await startTestRedis(['--logfile', redisLog]);
    if (!redis.dir) throw new Error('the crash experiment needs a local redis-server binary');
    admin = new Redis(redis.url, { maxRetriesPerRequest: 1, retryStrategy: (n) => Math.min(50 * n, 500) });
    admin.on('error', () => {});
    await startApi();

    const order: CrashKind[] = [];
    for (let i = 0; i < Math.max(planned.redis, planned.api, planned.torn); i++) {
      for (const k of KINDS) if (i < planned[k]) order.push(k);
    }
    for (const kind of order) {
      if (Date.now() > deadline) {
        summary.aborted = `time limit reached after ${summary.crashes} crashes`;
        break;
      }
      if (opts.signal?.aborted) {
        summary.aborted = `interrupted after ${summary.crashes} crashes`;
        break;
      }
      if (!api!.running()) await startApi();
      const n = ++summary.rounds[kind];
      if (kind === 'redis') await redisRound(n);
      else if (kind === 'api') await apiRound(n);
      else await tornRound(n);
    }

    // Everything again, across all rounds, from the start of the feed.
    const { figures, keys, events } = await check(admin, ks, ledgers, null, fail, seenProblems);
    summary.final = figures;
    const bad = BAD.reduce((s, k) => s + figures[k], 0);
    log(`[final] checked ${figures.ackedWritesChecked} acknowledged writes of ${figures.keysChecked} keys, ${figures.batchesChecked} batches, ${keys} keys and ${events} events in the store: ${bad === 0 ? 'ok' : `${bad} FAILURES`}`);
  } catch (err) {
    summary.aborted = err instanceof Error ? err.message : String(err);
    fail(`aborted: ${summary.aborted}`);
  } finally {
    await api?.stop().catch(() => {});
    admin?.disconnect();
    await redis?.stop().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
  summary.verifyProblemsDistinct = seenProblems.size;
  const allBad = BAD.reduce((s, k) => s + summary.perRound[k] + summary.final[k], 0);
  const complete = KINDS.every((k) => summary.rounds[k] === planned[k]);
  summary.ok =
    summary.aborted === null &&
    summary.failures.length === 0 &&
    complete &&
    allBad === 0 &&
    summary.torn.predictionMismatches === 0 &&
    summary.restartFailures === 0 &&
    summary.api.firstWriteAfterRestartOk === summary.api.restarts;
  summary.durationMs = performance.now() - t0;
  return summary;
}

/** The summary as printed by `npm run crash-test`. */
export function formatSummary(s: CrashSummary): string {
  const r = s.perRound;
  const f = s.final;
  const lines = [
    `crash experiment summary (seed ${s.seed}, ${s.partitions} partitions of ${s.buckets} buckets, torn-tail repair ${s.repairTornTail ? 'on' : 'OFF'}, ${(s.durationMs / 1000).toFixed(0)} s)`,
    `  rounds: redis kill -9 ${s.rounds.redis}, API kill -9 ${s.rounds.api}, torn AOF tail ${s.rounds.torn}; crashes ${s.crashes}`,
    `  key writes attempted: ${s.attempts.acknowledged} acknowledged, ${s.attempts.unknown} outcome unknown, ${s.attempts.refused} refused`,
    `  acknowledged writes checked:               ${r.ackedWritesChecked} after their crash, ${f.ackedWritesChecked} again at the end`,
    `  acknowledged writes lost:                  ${r.ackedWritesLost + f.ackedWritesLost}`,
    `  states no attempted writes explain:        ${r.unexplainedStates + f.unexplainedStates}`,
    `  batches checked / partly applied:          ${r.batchesChecked} / ${r.batchesPartial + f.batchesPartial}`,
    `  batches applied, outcome unknown to client: ${r.batchesAppliedUnacknowledged}`,
    `  applied writes without their event:        ${r.writesWithoutEvent + f.writesWithoutEvent}`,
    `  events without their write:                ${r.eventsWithoutWrite + f.eventsWithoutWrite}`,
    `  verify problems:                           ${s.verifyProblemsDistinct} (distinct, over ${s.crashes + 1} runs)`,
    `  API: killed with batches in flight ${s.api.killedWithBatchesInFlight} of ${s.rounds.api}; restarted ${s.api.restarts}, first write after restart ok ${s.api.firstWriteAfterRestartOk}` +
      (s.api.startRetries > 0 ? `; starts tried twice ${s.api.startRetries}` : ''),
    `  torn tails: cut ${s.torn.cut} (${s.torn.bytesCut} bytes), inside a transaction ${s.torn.insideTransactionAtBoundary + s.torn.insideTransactionInsideCommand} ` +
      `(inside a command ${s.torn.insideTransactionInsideCommand}); unacknowledged writes predicted kept ${s.torn.writesPredictedApplied}, cut ${s.torn.writesPredictedCut}; prediction mismatches ${s.torn.predictionMismatches}`,
    `  torn-tail repair cut ${s.torn.repairedBytes} bytes before restarts; Redis itself logged ${s.torn.redisTruncationWarnings} truncated loads, ${s.torn.redisRevertedTransactions} reverted transactions; restart failures ${s.restartFailures}`,
    `  client errors seen: ${Object.entries(s.errors).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`,
  ];
  lines.push(...summaryEnd(s));
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const buckets = arg('buckets');
  runExperimentCli(
    'crash experiment',
    (signal) =>
      runCrashExperiment({
        signal,
        ...commonOptions(),
        ...(buckets ? { buckets: Number(buckets) } : {}),
        repairTornTail: !flag('no-repair'),
      }),
    formatSummary,
  );
}
