// The failover experiment (`npm run failover-test [-- --rounds N --seed S --down-after MS --no-pause --no-replica-pause]`):
// kvql on a replicated Redis with automatic failover (a primary, two replicas, three Sentinels:
// test/harness/sentinel.ts), the API as its own process connecting through Sentinel
// (REDIS_SENTINELS, KV_MIN_REPLICAS=1: every write waits for one replica), writers in this process
// speaking GraphQL over HTTP, every answer recorded. Everything runs on 127.0.0.1.
//
//   kill rounds   kill -9 of the current primary while writers run (puts of unique values,
//                 compare-and-set puts, batchPuts of fresh keys). Measured: the time until a
//                 sentinel names a new primary, and until a write sent after the kill is
//                 acknowledged through the API. Then the old node is restarted from its own
//                 config (it comes back as a primary) and must be turned into a replica of the
//                 new primary by the sentinels, in the new replication history, holding writes
//                 acknowledged while it was dead.
//   pause round   SIGSTOP of the primary past down-after: the sentinels fail over while it hangs.
//                 The API's answers meanwhile (codes, latency) are recorded; resumed, the old
//                 primary must be demoted (role:slave) and refuse a direct write (READONLY).
//   replica pause both replicas SIGSTOPped: the primary, isolated, must refuse a direct write
//                 (NOREPLICAS) once min-replicas-max-lag has passed; the API's answers meanwhile
//                 are recorded (REPLICATION_TIMEOUT, then STORE_UNAVAILABLE).
//
// At the end every write acknowledged without an error must be there, through the API, at
// least at its acknowledged version (a later write of the key may have superseded it). Writes
// answered REPLICATION_TIMEOUT (durable on the primary, not confirmed replicated),
// STORE_UNAVAILABLE or anything else promise nothing: for each, the change feed (read from the
// final primary) says whether it survived.
//
// Bounded: every wait, each writer's operations, and the whole run (--minutes, default 4).
// Every process it starts is stopped and every directory removed, also on failure.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Keyspace, unpackEntry } from '../../src/store/keys.js';
import { startApiProcess, type ApiProcess } from '../harness/apiProcess.js';
import { sseSubscribe } from '../harness/sse.js';
import type { Ending, SubscriptionStream } from '../harness/stream.js';
import { freePort } from '../harness/redisServer.js';
import { streamEvents } from '../harness/feedStream.js';
import { startSentinelDeployment, type DeploymentNode, type SentinelDeployment } from '../harness/sentinel.js';
import { arg, commonOptions, flag, runExperimentCli, summaryEnd } from './cli.js';
import { codeOf, post, random, sleep } from './tools.js';

export interface FailoverOptions {
  /** kill -9 rounds (default 3). */
  rounds?: number;
  /** The SIGSTOP-the-primary round (default true). */
  pauseRound?: boolean;
  /** The SIGSTOP-both-replicas demonstration of min-replicas-to-write (default true). */
  replicaPause?: boolean;
  /** Sentinel down-after-milliseconds (default: sentinel.conf's, 5000). */
  downAfterMs?: number;
  /**
   * Sentinel failover-timeout (default 20000 instead of sentinel.conf's 60000: a failed leader
   * election is retried after twice this, which would outlast the run's bound).
   */
  failoverTimeoutMs?: number;
  /** Writers of each kind (put, compare-and-set put, batchPut); default 2. */
  writersPerKind?: number;
  /** Stop starting phases after this long (default 4 minutes); the run then fails. */
  timeLimitMs?: number;
  seed?: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface KillRound {
  n: number;
  oldPrimary: number;
  newPrimary: number;
  /** kill -9 → a sentinel names the new primary (and it says role:master). */
  failoverMs: number;
  /** kill -9 → first write sent after the kill acknowledged through the API; null: never. */
  writesResumedMs: number | null;
  /** Restart of the old primary → it is a linked replica of the new one, in the new history. */
  rejoinMs: number | null;
  /** Writes acknowledged while it was dead, found on it after it rejoined / looked for. */
  newHistoryFound: number;
  newHistoryChecked: number;
  /** Codes of the writes answered between the kill and the first acknowledged one. */
  outageCodes: Record<string, number>;
}

export interface PauseRound {
  oldPrimary: number;
  newPrimary: number;
  failoverMs: number;
  /** SIGSTOP → a write sent after it acknowledged while the old primary is still paused; null: not within the wait. */
  writesResumedWhilePausedMs: number | null;
  pausedForMs: number;
  /** Codes of the API's answers to writes sent while paused, and their latency. */
  codesWhilePaused: Record<string, number>;
  errorLatencyMs: { count: number; median: number; max: number };
  /** SIGCONT → a write sent after it acknowledged; null: never. */
  writesResumedAfterResumeMs: number | null;
  /** SIGCONT → role:slave of the new primary, link up (the sentinels demoted it). */
  demotedMs: number | null;
  /** A direct SET to the demoted node: its error (READONLY expected). */
  directWriteError: string | null;
}

export interface ReplicaPause {
  /** Both replicas SIGSTOPped → a direct SET to the primary answered NOREPLICAS. */
  noReplicasAfterMs: number | null;
  directWriteError: string | null;
  /** Codes of the API's answers to writes sent while the replicas were paused: before the primary refused writes, and after. */
  codesBeforeRefusal: Record<string, number>;
  codesAfterRefusal: Record<string, number>;
  /** Replicas resumed → a direct SET accepted again. */
  writableAgainMs: number | null;
}

export interface Fate {
  present: number;
  absent: number;
}

export interface FailoverSummary {
  seed: number;
  downAfterMs: number;
  failoverTimeoutMs: number;
  durationMs: number;
  aborted: string | null;
  killRounds: KillRound[];
  pause: PauseRound | null;
  replicaPause: ReplicaPause | null;
  /** Key writes (a batch counts its items) by the answer. */
  writes: { attempted: number; acknowledged: number; replicationTimeout: number; storeUnavailable: number; other: number };
  /** Error codes (or transport failures) clients saw, by request. */
  errors: Record<string, number>;
  /** The first message seen for each code. */
  errorSamples: Record<string, string>;
  /** What became of the writes not acknowledged, by their answer: in the final data (change feed) or not. */
  fate: { replicationTimeout: Fate; storeUnavailable: Fate; other: Fate };
  ackedWritesChecked: number;
  /** Acknowledged writes missing (or older) in what the API reads at the end: must be 0. */
  ackedWritesLost: number;
  /** Acknowledged writes without their change-feed event on the final primary: must be 0. */
  ackedWithoutEvent: number;
  /**
   * One change-feed subscriber over SSE, open from the start to the end across every failover,
   * resuming from its last cursor if its stream ends; and one writer of its keys. Every write
   * to them that was acknowledged must reach it.
   */
  subscriber: { acknowledged: number; received: number; missing: number; resumed: string[] } | null;
  failures: string[];
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP
// ---------------------------------------------------------------------------------------------

const PUT = `mutation($key: String!, $value: String!, $expectedVersion: Int) {
  put(key: $key, value: $value, expectedVersion: $expectedVersion) { version }
}`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key version } }`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { key value version } }`;

interface Answer {
  /** null: acknowledged (data, no error). */
  code: string | null;
  data?: any;
  message?: string;
  actualVersion?: number;
}

async function send(url: string, query: string, variables: Record<string, unknown>, timeoutMs = 15_000): Promise<Answer> {
  const r = await post(url, query, variables, timeoutMs);
  const code = codeOf(r);
  if (code === null) return { code: null, data: r.body!.data };
  const e = r.body?.errors?.[0];
  if (!e) return { code };
  return { code, message: e.message, ...(code === 'VERSION_CONFLICT' ? { actualVersion: Number(e.extensions!.actualVersion) } : {}) };
}

// ---------------------------------------------------------------------------------------------
// The ledger: every key write attempted, with its answer
// ---------------------------------------------------------------------------------------------

interface Write {
  kind: 'put' | 'cas' | 'batch';
  key: string;
  /** Unique over the run: how its change-feed event is recognised. */
  value: string;
  expectedVersion: number | null;
  phase: string;
  sentAt: number;
  answeredAt: number;
  /** null while unanswered or when acknowledged; see `acked`. */
  code: string | null;
  acked: boolean;
  ackVersion?: number;
  message?: string;
}

class Ledger {
  readonly writes: Write[] = [];
  readonly errors: Record<string, number> = {};
  /** The first message seen for each error code. */
  readonly samples: Record<string, string> = {};
  phase = 'start';

  record(w: Write, r: Answer, ackVersion?: number): void {
    w.answeredAt = performance.now();
    w.code = r.code;
    w.acked = r.code === null;
    if (w.acked) w.ackVersion = ackVersion;
    else if (r.message) w.message = r.message;
  }

  countError(r: Answer): void {
    if (r.code === null) return;
    this.errors[r.code] = (this.errors[r.code] ?? 0) + 1;
    if (r.message && !(r.code in this.samples)) this.samples[r.code] = r.message;
  }

  /** The first write sent after `t` and acknowledged: when it was answered. */
  firstAckAfter(t: number): number | null {
    let best: number | null = null;
    for (const w of this.writes) if (w.acked && w.sentAt > t && (best === null || w.answeredAt < best)) best = w.answeredAt;
    return best;
  }

  /** Codes of the writes sent in [from, to), one per request (a batch once). */
  codesBetween(from: number, to: number): Record<string, number> {
    const out: Record<string, number> = {};
    const seen = new Set<number>();
    for (const w of this.writes) {
      if (w.sentAt < from || w.sentAt >= to || seen.has(w.sentAt)) continue;
      seen.add(w.sentAt);
      const c = w.acked ? 'ok' : (w.code ?? 'unanswered');
      out[c] = (out[c] ?? 0) + 1;
    }
    return out;
  }
}


/** Most requests one writer sends in one phase: a bound far above what a phase needs. */
const MAX_OPS = 4000;

interface WriterContext {
  url: () => string;
  ledger: Ledger;
  rand: () => number;
  running: () => boolean;
  next: () => number;
}

/** After a failure, a pause: a failing request may answer at once. */
const backoff = (ctx: WriterContext) => sleep(20 + ctx.rand() * 30);

/** Puts of unique values to one key; with `cas`, each expects the version the last one made. */
async function putWriter(ctx: WriterContext, key: string, cas: boolean, expected: { v: number }): Promise<void> {
  for (let i = 0; ctx.running() && i < MAX_OPS; i++) {
    const value = `${key}#${ctx.next()}`;
    const w: Write = { kind: cas ? 'cas' : 'put', key, value, expectedVersion: cas ? expected.v : null, phase: ctx.ledger.phase, sentAt: performance.now(), answeredAt: 0, code: null, acked: false };
    ctx.ledger.writes.push(w);
    const r = await send(ctx.url(), PUT, { key, value, expectedVersion: w.expectedVersion });
    ctx.ledger.countError(r);
    ctx.ledger.record(w, r, r.data?.put?.version);
    if (w.acked) expected.v = w.ackVersion!;
    else {
      if (r.actualVersion !== undefined) expected.v = r.actualVersion;
      await backoff(ctx);
    }
  }
}

/** batchPuts of fresh keys. */
async function batchWriter(ctx: WriterContext, prefix: string): Promise<void> {
  for (let i = 0; ctx.running() && i < MAX_OPS; i++) {
    const id = ctx.next();
    const size = 4 + Math.floor(ctx.rand() * 9);
    const sentAt = performance.now();
    const items: Write[] = [];
    for (let j = 0; j < size; j++) {
      const key = `${prefix}:${id}:${j}`;
      items.push({ kind: 'batch', key, value: `B${id}:${j}`, expectedVersion: null, phase: ctx.ledger.phase, sentAt, answeredAt: 0, code: null, acked: false });
    }
    ctx.ledger.writes.push(...items);
    const r = await send(ctx.url(), BATCH, { items: items.map((w) => ({ key: w.key, value: w.value })) });
    ctx.ledger.countError(r);
    items.forEach((w, j) => ctx.ledger.record(w, r, r.data?.batchPut?.[j]?.version));
    if (r.code !== null) await backoff(ctx);
  }
}

// ---------------------------------------------------------------------------------------------
// The experiment
// ---------------------------------------------------------------------------------------------

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function directSet(dep: SentinelDeployment, port: number, key: string): Promise<string | null> {
  try {
    await dep.direct(port, (c) => c.set(key, String(Date.now())), 2000);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

const CHANGES = 'subscription($p: String!, $after: String) { changes(prefix: $p, after: $after) { key version cursor } }';

/**
 * A subscriber to the keys "sub:*" and a writer of them (one put every 50 ms), across whatever
 * happens meanwhile. The subscriber keeps its last cursor; if its stream ends (the API ends
 * subscriptions with CURSOR_EXPIRED or the connection drops), it subscribes again after it.
 */
async function watchFeed(url: string) {
  // Writing stops first; reading goes on until the last acknowledged write's event has come.
  let writingStopped = false;
  let stopped = false;
  const received = new Map<string, number>();
  const acknowledged: { key: string; version: number }[] = [];
  const resumed: string[] = [];
  let cursor: string | undefined;
  let stream: SubscriptionStream = await sseSubscribe(url, CHANGES, { p: 'sub:' });
  const reading = (async () => {
    while (!stopped) {
      const p = await stream.poll(200);
      if (p?.data?.changes) {
        const ev = p.data.changes as { key: string; version: number; cursor: string };
        cursor = ev.cursor;
        received.set(ev.key, Math.max(received.get(ev.key) ?? 0, ev.version));
        continue;
      }
      const ended = p?.errors ? `error ${String(p.errors[0]?.extensions?.code ?? p.errors[0]?.message)}` : await stream.ended(1).then((e: Ending) => e.kind, () => null);
      if (ended === null || stopped) continue;
      resumed.push(ended);
      await stream.close().catch(() => {});
      for (;;) {
        try {
          stream = await sseSubscribe(url, CHANGES, { p: 'sub:', ...(cursor ? { after: cursor } : {}) });
          break;
        } catch {
          if (stopped) return;
          await sleep(200);
        }
      }
    }
  })();
  // An SSE subscription starts "from now" when the server has read the feed's heads, which can
  // be after the response began: write a probe until its event arrives, so that every write
  // counted below is one the subscription was already open for.
  for (let i = 0; !received.has('sub:ready') && i < 100; i++) {
    if (i % 5 === 0) await send(url, PUT, { key: 'sub:ready', value: 's' }, 10_000);
    await sleep(100);
  }
  const writing = (async () => {
    for (let i = 0; !writingStopped; i++) {
      const key = `sub:${String(i).padStart(6, '0')}`;
      const r = await send(url, PUT, { key, value: 's' }, 10_000);
      if (r.code === null) acknowledged.push({ key, version: r.data.put.version });
      await sleep(50);
    }
  })();
  return {
    async stop() {
      writingStopped = true;
      await writing;
      // Let the last events arrive.
      for (let i = 0; i < 50 && acknowledged.some((w) => (received.get(w.key) ?? 0) < w.version); i++) await sleep(100);
      stopped = true;
      await reading;
      await stream.close().catch(() => {});
      const missing = acknowledged.filter((w) => (received.get(w.key) ?? 0) < w.version).length;
      return { acknowledged: acknowledged.length, received: received.size, missing, resumed };
    },
  };
}

export async function runFailoverExperiment(opts: FailoverOptions = {}): Promise<FailoverSummary> {
  const t0 = performance.now();
  const log = opts.log ?? ((line: string) => console.log(line));
  const seed = opts.seed ?? randomBytes(4).readUInt32LE();
  const rand = random(seed);
  const rounds = opts.rounds ?? 3;
  const perKind = opts.writersPerKind ?? 2;
  const deadline = Date.now() + (opts.timeLimitMs ?? 4 * 60_000);
  const ledger = new Ledger();
  const summary: FailoverSummary = {
    seed,
    downAfterMs: 0,
    failoverTimeoutMs: 0,
    durationMs: 0,
    aborted: null,
    killRounds: [],
    pause: null,
    replicaPause: null,
    writes: { attempted: 0, acknowledged: 0, replicationTimeout: 0, storeUnavailable: 0, other: 0 },
    errors: ledger.errors,
    errorSamples: ledger.samples,
    fate: { replicationTimeout: { present: 0, absent: 0 }, storeUnavailable: { present: 0, absent: 0 }, other: { present: 0, absent: 0 } },
    ackedWritesChecked: 0,
    ackedWritesLost: 0,
    ackedWithoutEvent: 0,
    subscriber: null,
    failures: [],
    ok: false,
  };
  const fail = (m: string) => {
    if (summary.failures.length < 50) summary.failures.push(m);
    if (summary.failures.length <= 10) log(`  FAILURE: ${m}`);
  };

  const work = mkdtempSync(join(tmpdir(), 'kvql-failover-'));
  const prefix = `fo-${randomBytes(3).toString('hex')}`;
  const buckets = 16;
  const ks = new Keyspace(prefix, 1, buckets);
  let seq = 0;
  const next = () => ++seq;
  let dep: SentinelDeployment | undefined;
  let api: ApiProcess | undefined;

  // Writer keys live for the whole run (one writer per key); batches write fresh keys.
  const casExpected = Array.from({ length: perKind }, () => ({ v: 0 }));
  const startWriters = () => {
    let running = true;
    const ctx: WriterContext = { url: () => api!.url, ledger, rand, running: () => running, next };
    const loops: Promise<void>[] = [];
    for (let i = 0; i < perKind; i++) {
      loops.push(putWriter(ctx, `put:${i}`, false, { v: 0 }));
      loops.push(putWriter(ctx, `cas:${i}`, true, casExpected[i]!));
      loops.push(batchWriter(ctx, `batch:${i}`));
    }
    return async () => {
      running = false;
      await Promise.all(loops);
    };
  };
  /** Waits (bounded) until some write sent after `t` is acknowledged; its answer time. */
  const waitAckAfter = async (t: number, ms: number): Promise<number | null> => {
    const end = performance.now() + ms;
    for (;;) {
      const a = ledger.firstAckAfter(t);
      if (a !== null || performance.now() > end) return a;
      await sleep(50);
    }
  };
  const checkTime = (what: string) => {
    if (Date.now() > deadline) throw new Error(`time limit reached before ${what}`);
    if (opts.signal?.aborted) throw new Error(`interrupted before ${what}`);
  };

  /** Acknowledged writes sent after `t`, found on `node` at least at their version (bounded wait for replication). */
  const newHistoryOn = async (node: DeploymentNode, t: number): Promise<{ found: number; checked: number }> => {
    const latest = new Map<string, Write>();
    for (const w of ledger.writes) if (w.acked && w.sentAt > t && (latest.get(w.key)?.ackVersion ?? 0) < w.ackVersion!) latest.set(w.key, w);
    const sample = [...latest.values()].slice(-30);
    let found = 0;
    for (let attempt = 0; attempt < 20; attempt++) {
      found = 0;
      const packed = await dep!.direct(node.port, (c) => Promise.all(sample.map((w) => c.hgetBuffer(ks.bucket(w.key), w.key))));
      packed.forEach((p, i) => {
        const e = p ? unpackEntry(p) : null;
        if (e && e.version >= sample[i]!.ackVersion!) found++;
      });
      if (found === sample.length) break;
      await sleep(250);
    }
    return { found, checked: sample.length };
  };

  const killRound = async (n: number) => {
    checkTime(`kill round ${n}`);
    ledger.phase = `kill-${n}`;
    const primary = await dep!.waitSettled(60_000);
    const node = dep!.node(primary.port);
    const stop = startWriters();
    try {
      await sleep(700 + Math.floor(rand() * 800));
      const tKill = performance.now();
      await node.kill9();
      const failover = await dep!.waitForFailover(primary.port, 60_000);
      const tNamed = performance.now();
      const ack = await waitAckAfter(tKill, 60_000);
      const resumed = ack === null ? null : ack - tKill;
      const round: KillRound = {
        n,
        oldPrimary: primary.port,
        newPrimary: failover.port,
        failoverMs: tNamed - tKill,
        writesResumedMs: resumed,
        rejoinMs: null,
        newHistoryFound: 0,
        newHistoryChecked: 0,
        outageCodes: {},
      };
      summary.killRounds.push(round);
      if (resumed === null) fail(`kill round ${n}: no write acknowledged through the API within 60 s of the kill`);
      await sleep(300);
      await stop();
      round.outageCodes = ledger.codesBetween(tKill, ack ?? performance.now());
      // The old primary again, from its own config: a primary until the sentinels demote it.
      const tRestart = performance.now();
      await node.restart();
      const roleAtStart = (await dep!.replication(node.port)).role;
      try {
        const rejoin = await dep!.waitForRejoin(node, 60_000);
        round.rejoinMs = performance.now() - tRestart;
        const h = await newHistoryOn(node, tKill);
        round.newHistoryFound = h.found;
        round.newHistoryChecked = h.checked;
        if (h.found !== h.checked) fail(`kill round ${n}: the rejoined ${node.name} lacks ${h.checked - h.found} of ${h.checked} writes acknowledged while it was down`);
        log(
          `[kill ${n}/${rounds}] kill -9 primary ${primary.port}: sentinels named ${failover.port} after ${round.failoverMs.toFixed(0)} ms; ` +
            `writes through the API resumed after ${resumed === null ? 'NEVER' : `${resumed.toFixed(0)} ms`} (meanwhile ${fmtCodes(round.outageCodes)}); ` +
            `restarted as ${roleAtStart}, rejoined as replica of ${rejoin.primaryPort} (link up, new replid) after ${round.rejoinMs.toFixed(0)} ms, ` +
            `holding ${h.found}/${h.checked} writes acknowledged while it was down`,
        );
      } catch (err) {
        fail(`kill round ${n}: ${(err as Error).message}`);
      }
    } finally {
      await stop();
    }
  };

  const pauseRound = async () => {
    checkTime('the pause round');
    ledger.phase = 'pause';
    const primary = await dep!.waitSettled(60_000);
    const node = dep!.node(primary.port);
    const stop = startWriters();
    let paused = false;
    try {
      await sleep(700);
      const tPause = performance.now();
      node.pause();
      paused = true;
      const failover = await dep!.waitForFailover(primary.port, 60_000);
      const failoverAt = performance.now();
      // Still paused: do writes reach the new primary?
      const whilePaused = await waitAckAfter(tPause, 5000);
      const tResume = performance.now();
      node.resume();
      paused = false;
      const ack = await waitAckAfter(tResume, 60_000);
      await stop();
      const errs = ledger.writes.filter((w) => w.sentAt >= tPause && w.sentAt < tResume && !w.acked && w.answeredAt > 0);
      const lat = [...new Map(errs.map((w) => [w.sentAt, w.answeredAt - w.sentAt])).values()];
      const p: PauseRound = {
        oldPrimary: primary.port,
        newPrimary: failover.port,
        failoverMs: failoverAt - tPause,
        writesResumedWhilePausedMs: whilePaused === null ? null : whilePaused - tPause,
        pausedForMs: tResume - tPause,
        codesWhilePaused: ledger.codesBetween(tPause, tResume),
        errorLatencyMs: { count: lat.length, median: median(lat), max: lat.length ? Math.max(...lat) : 0 },
        writesResumedAfterResumeMs: null,
        demotedMs: null,
        directWriteError: null,
      };
      summary.pause = p;
      p.writesResumedAfterResumeMs = ack === null ? null : ack - tResume;
      if (whilePaused === null && ack === null) fail('pause round: no write acknowledged through the API within 60 s of resuming the old primary');
      try {
        await dep!.waitForRejoin(node, 60_000);
        p.demotedMs = performance.now() - tResume;
      } catch (err) {
        fail(`pause round: ${(err as Error).message}`);
      }
      p.directWriteError = await directSet(dep!, node.port, 'failover-experiment:direct-write');
      if (!/^READONLY/.test(p.directWriteError ?? '')) fail(`pause round: a direct write to the demoted ${node.name} was answered ${p.directWriteError ?? 'OK'}, not READONLY`);
      log(
        `[pause] SIGSTOP primary ${primary.port}: sentinels named ${failover.port} after ${p.failoverMs.toFixed(0)} ms; while paused (${p.pausedForMs.toFixed(0)} ms) ` +
          `the API answered ${fmtCodes(p.codesWhilePaused)}, errors after median ${p.errorLatencyMs.median.toFixed(0)} ms (max ${p.errorLatencyMs.max.toFixed(0)} ms); ` +
          `writes resumed ${p.writesResumedWhilePausedMs !== null ? `while still paused, ${p.writesResumedWhilePausedMs.toFixed(0)} ms after SIGSTOP` : `${p.writesResumedAfterResumeMs === null ? 'NEVER' : `${p.writesResumedAfterResumeMs.toFixed(0)} ms`} after SIGCONT`}; ` +
          `demoted (role:slave, link up) ${p.demotedMs === null ? 'NEVER' : `${p.demotedMs.toFixed(0)} ms after SIGCONT`}; direct SET: ${p.directWriteError ?? 'OK'}`,
      );
    } finally {
      if (paused) node.resume();
      await stop();
    }
  };

  const replicaPause = async () => {
    checkTime('the replica pause');
    ledger.phase = 'replica-pause';
    const primary = await dep!.waitSettled(60_000);
    const replicas = dep!.nodes.filter((x) => x.port !== primary.port);
    const stop = startWriters();
    let paused = false;
    try {
      await sleep(500);
      const t = performance.now();
      for (const r of replicas) r.pause();
      paused = true;
      const r: ReplicaPause = { noReplicasAfterMs: null, directWriteError: null, codesBeforeRefusal: {}, codesAfterRefusal: {}, writableAgainMs: null };
      summary.replicaPause = r;
      // min-replicas-max-lag is 10 s: poll with direct writes for up to 20 s.
      while (performance.now() - t < 20_000) {
        const err = await directSet(dep!, primary.port, 'failover-experiment:isolated-write');
        if (err !== null && /^NOREPLICAS/.test(err)) {
          r.noReplicasAfterMs = performance.now() - t;
          r.directWriteError = err;
          break;
        }
        if (err !== null) r.directWriteError = err;
        await sleep(250);
      }
      await sleep(1000); // a second of the API's answers to an isolated primary
      const tResume = performance.now();
      for (const x of replicas) x.resume();
      paused = false;
      while (performance.now() - tResume < 20_000) {
        if ((await directSet(dep!, primary.port, 'failover-experiment:isolated-write')) === null) {
          r.writableAgainMs = performance.now() - tResume;
          break;
        }
        await sleep(100);
      }
      await stop();
      const refusedAt = t + (r.noReplicasAfterMs ?? tResume - t);
      r.codesBeforeRefusal = ledger.codesBetween(t, refusedAt);
      r.codesAfterRefusal = ledger.codesBetween(refusedAt, tResume);
      if (r.noReplicasAfterMs === null) fail(`replica pause: the isolated primary did not refuse a direct write with NOREPLICAS within 20 s (last: ${r.directWriteError ?? 'OK'})`);
      if (r.writableAgainMs === null) fail('replica pause: the primary did not take writes again within 20 s of resuming its replicas');
      log(
        `[replica pause] SIGSTOP both replicas of ${primary.port}: a direct SET was refused after ${r.noReplicasAfterMs?.toFixed(0) ?? 'NEVER'} ms (${r.directWriteError ?? 'OK'}); ` +
          `the API answered ${fmtCodes(r.codesBeforeRefusal)} before, ${fmtCodes(r.codesAfterRefusal)} after; writable again ${r.writableAgainMs?.toFixed(0) ?? 'NEVER'} ms after SIGCONT`,
      );
    } finally {
      if (paused) for (const x of replicas) x.resume();
      await stop();
    }
  };

  /** Every acknowledged write through the API; the fate of the others from the final primary's change feed. */
  const finalCheck = async () => {
    ledger.phase = 'check';
    // The primary the sentinels name (all of them need not have caught up with a rejoined replica).
    const primary = await dep!.currentPrimary();
    if ((await dep!.replication(primary.port)).role !== 'master') throw new Error(`the primary the sentinels name (${primary.port}) is not a master`);
    const keys = [...new Set(ledger.writes.map((w) => w.key))];
    const stored = new Map<string, { value: string; version: number } | null>();
    for (let i = 0; i < keys.length; i += 500) {
      const chunk = keys.slice(i, i + 500);
      // Under load the promoted replica can itself be failed over (down-after is short here);
      // the API must come back by itself, so a read-back in that window waits for it (bounded).
      let r = await send(api!.url, GET_MANY, { keys: chunk }, 30_000);
      for (const until = Date.now() + 30_000; r.code === 'STORE_UNAVAILABLE' && Date.now() < until; ) {
        await sleep(200);
        r = await send(api!.url, GET_MANY, { keys: chunk }, 30_000);
      }
      if (r.code !== null) throw new Error(`reading back through the API failed: ${r.code} ${r.message ?? ''}`);
      chunk.forEach((k, j) => stored.set(k, r.data.getMany[j] ?? null));
    }
    // The change feed of the (single) partition, straight from the primary.
    const events = new Set<string>();
    await dep!.direct(primary.port, async (c) => {
      for (const e of await streamEvents(c, ks.stream(0))) if (e.type === 'P') events.add(`${e.key}\u0000${e.value}`);
    }, 30_000);
    for (const w of ledger.writes) {
      summary.writes.attempted++;
      const present = events.has(`${w.key}\u0000${w.value}`);
      if (w.acked) {
        summary.writes.acknowledged++;
        summary.ackedWritesChecked++;
        const s = stored.get(w.key);
        const ok = s != null && (s.version > w.ackVersion! || (s.version === w.ackVersion && s.value === w.value));
        if (!ok) {
          summary.ackedWritesLost++;
          fail(`acknowledged write lost: ${w.kind} ${w.key}=${w.value} v${w.ackVersion} (${w.phase}); stored ${s ? `v${s.version} ${s.value}` : 'absent'}`);
        }
        if (!present) {
          summary.ackedWithoutEvent++;
          fail(`acknowledged write without its event: ${w.kind} ${w.key}=${w.value} v${w.ackVersion} (${w.phase})`);
        }
        continue;
      }
      const group = w.code === 'REPLICATION_TIMEOUT' ? 'replicationTimeout' : w.code === 'STORE_UNAVAILABLE' ? 'storeUnavailable' : 'other';
      summary.writes[group]++;
      summary.fate[group][present ? 'present' : 'absent']++;
    }
    log(`[final] checked ${summary.ackedWritesChecked} acknowledged writes of ${keys.length} keys through the API, ${events.size} put events on primary ${primary.port}: ${summary.ackedWritesLost === 0 ? 'none lost' : `${summary.ackedWritesLost} LOST`}`);
  };

  try {
    dep = await startSentinelDeployment({
      downAfterMs: opts.downAfterMs,
      failoverTimeoutMs: opts.failoverTimeoutMs ?? 20_000,
      log,
    });
    summary.downAfterMs = dep.downAfterMs;
    summary.failoverTimeoutMs = dep.failoverTimeoutMs;
    log(`failover experiment: seed ${seed}, ${rounds} kill rounds, pause round ${opts.pauseRound !== false ? 'on' : 'off'}, replica pause ${opts.replicaPause !== false ? 'on' : 'off'}, ${perKind * 3} writers; prefix ${prefix}`);
    // Through Sentinel only: no REDIS_URL (empty counts as unset). Should the API not know
    // REDIS_SENTINELS, it would start a managed Redis: give that one a temp dir and free port.
    api = await startApiProcess({
      redisUrl: '',
      prefix,
      partitions: 1,
      env: {
        REDIS_URL: '',
        REDIS_SENTINELS: dep.sentinels,
        REDIS_MASTER_NAME: dep.masterName,
        KV_MIN_REPLICAS: '1',
        KV_REPLICATION_TIMEOUT_MS: '1000',
        KV_BUCKETS: String(buckets),
        KV_FEED_RETENTION: '100000000',
        KV_DATA_DIR: join(work, 'managed'),
        KV_MANAGED_REDIS_PORT: String(await freePort()),
        LOG_LEVEL: 'warn',
      },
    });
    // The API must write to this deployment's primary.
    const probeKey = 'probe:start';
    const probe = await send(api.url, PUT, { key: probeKey, value: 'probe' });
    if (probe.code !== null) throw new Error(`the first write through the API failed: ${probe.code} ${probe.message ?? ''}`);
    const primary = await dep.currentPrimary();
    const there = await dep.direct(primary.port, (c) => c.hexists(ks.bucket(probeKey), probeKey));
    if (!there) throw new Error('the API does not write to the Sentinel deployment (does src/ support REDIS_SENTINELS yet?)');

    const watcher = await watchFeed(api.url);
    try {
      for (let n = 1; n <= rounds; n++) await killRound(n);
      if (opts.pauseRound !== false) await pauseRound();
      if (opts.replicaPause !== false) await replicaPause();
    } finally {
      summary.subscriber = await watcher.stop();
    }
    if (summary.subscriber.missing > 0) fail(`the subscriber missed ${summary.subscriber.missing} acknowledged writes of its keys`);
    await finalCheck();
  } catch (err) {
    summary.aborted = err instanceof Error ? err.message : String(err);
    fail(`aborted: ${summary.aborted}`);
    if (api) log(`API output (end):\n${api.output().slice(-3000)}`);
  } finally {
    await api?.stop().catch(() => {});
    await dep?.stop().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
  summary.durationMs = performance.now() - t0;
  summary.ok =
    summary.aborted === null &&
    summary.failures.length === 0 &&
    summary.killRounds.length === rounds &&
    summary.ackedWritesLost === 0 &&
    summary.ackedWithoutEvent === 0 &&
    (summary.subscriber?.missing ?? 0) === 0 &&
    summary.ackedWritesChecked > 0;
  return summary;
}

function fmtCodes(c: Record<string, number>): string {
  return Object.entries(c).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') || 'nothing';
}

const ms = (x: number | null) => (x === null ? 'never' : `${(x / 1000).toFixed(1)} s`);

/** The summary as printed by `npm run failover-test`. */
export function formatSummary(s: FailoverSummary): string {
  const w = s.writes;
  const f = s.fate;
  const lines = [
    `failover experiment summary (seed ${s.seed}, down-after ${s.downAfterMs} ms, failover-timeout ${s.failoverTimeoutMs} ms, ${(s.durationMs / 1000).toFixed(0)} s)`,
    `  kill -9 rounds: ${s.killRounds.length}`,
    ...s.killRounds.map(
      (r) =>
        `    round ${r.n}: primary ${r.oldPrimary} -> ${r.newPrimary}; new primary named after ${ms(r.failoverMs)}, writes resumed after ${ms(r.writesResumedMs)}, ` +
        `old primary rejoined as replica after ${ms(r.rejoinMs)} (${r.newHistoryFound}/${r.newHistoryChecked} newer writes on it)`,
    ),
  ];
  if (s.pause) {
    const p = s.pause;
    lines.push(
      `  SIGSTOP round: primary ${p.oldPrimary} -> ${p.newPrimary}; new primary named after ${ms(p.failoverMs)}; while paused (${ms(p.pausedForMs)}) the API answered ${fmtCodes(p.codesWhilePaused)}` +
        ` (errors after median ${p.errorLatencyMs.median.toFixed(0)} ms, max ${p.errorLatencyMs.max.toFixed(0)} ms)`,
      `    writes resumed: ${p.writesResumedWhilePausedMs !== null ? `while still paused, ${ms(p.writesResumedWhilePausedMs)} after SIGSTOP` : `${ms(p.writesResumedAfterResumeMs)} after SIGCONT`}; ` +
        `demoted to replica ${ms(p.demotedMs)} after SIGCONT; direct write to it: ${p.directWriteError ?? 'accepted (!)'}`,
    );
  }
  if (s.replicaPause) {
    const r = s.replicaPause;
    lines.push(
      `  isolated primary (both replicas SIGSTOPped): direct write refused after ${ms(r.noReplicasAfterMs)}: ${r.directWriteError ?? 'never refused (!)'}; ` +
        `writable again ${ms(r.writableAgainMs)} after SIGCONT`,
      `    API writes sent while replicas paused: before the refusal ${fmtCodes(r.codesBeforeRefusal)}; after ${fmtCodes(r.codesAfterRefusal)}`,
    );
  }
  lines.push(
    `  key writes attempted: ${w.attempted}: ${w.acknowledged} acknowledged, ${w.replicationTimeout} REPLICATION_TIMEOUT, ${w.storeUnavailable} STORE_UNAVAILABLE, ${w.other} other`,
    `  acknowledged writes checked:      ${s.ackedWritesChecked} (through the API, after ${s.killRounds.length + (s.pause ? 1 : 0)} failovers)`,
    `  acknowledged writes lost:         ${s.ackedWritesLost}`,
    `  acknowledged writes without event: ${s.ackedWithoutEvent}`,
    ...(s.subscriber
      ? [
          `  subscriber over SSE across every failover: ${s.subscriber.acknowledged} acknowledged writes of its keys, ${s.subscriber.missing} missing; ` +
            `resubscribed from its cursor ${s.subscriber.resumed.length} times${s.subscriber.resumed.length ? ` (${fmtCodes(Object.fromEntries([...new Set(s.subscriber.resumed)].map((r) => [r, s.subscriber!.resumed.filter((x) => x === r).length])))})` : ''}`,
        ]
      : []),
    `  REPLICATION_TIMEOUT writes:       ${f.replicationTimeout.present} present, ${f.replicationTimeout.absent} absent (durable on the old primary, not confirmed replicated)`,
    `  STORE_UNAVAILABLE writes:         ${f.storeUnavailable.present} present, ${f.storeUnavailable.absent} absent`,
    `  other unacknowledged writes:      ${f.other.present} present, ${f.other.absent} absent`,
    `  client errors seen (requests): ${fmtCodes(s.errors)}`,
    ...Object.entries(s.errorSamples).map(([code, m]) => `    e.g. ${code}: ${m.slice(0, 220)}`),
  );
  lines.push(...summaryEnd(s));
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const downAfter = arg('down-after');
  runExperimentCli(
    'failover experiment',
    (signal) =>
      runFailoverExperiment({
        signal,
        ...commonOptions(),
        ...(downAfter ? { downAfterMs: Number(downAfter) } : {}),
        pauseRound: !flag('no-pause'),
        replicaPause: !flag('no-replica-pause'),
      }),
    formatSummary,
  );
}
