// Checks a keyspace's invariants against its Redis data, with bounded work per step: SCAN, ZSCAN
// and XRANGE with COUNT, and MULTI blocks of at most `batchSize` keys, so a large keyspace costs
// many small steps and never one long command. Used by `npm run verify` and the crash experiment.
//
// What it checks (see README "The Redis layout" and "Durability and failure"):
//   meta        <prefix>:meta exists and names this partition count, bucket count and layout;
//   keys        every Redis key under a partition tag {<prefix>:<p>} is one of the layout's, in a
//               partition below the partition count;
//   entries     every bucket is a hash; every bucket field has its index member and vice versa;
//               each field is in the bucket bucketOf() gives its key (so in no bucket at or above
//               the bucket count); a packed entry holds its whole header, its version is a
//               positive integer, createdAt <= updatedAt, and its key and value are UTF-8;
//               index scores are 0; every key is in the partition partitionOf() gives it;
//   feed        entries are well formed (feedFormat.ts: each one's ID names its last event's
//               sequence number); sequence numbers run 1, 2, 3... without gaps within each stream,
//               from one entry to the next; the sequence counter equals the last entry's (0 or
//               absent for an empty stream); events are in their key's partition; per key, a PUT raises the version by one
//               (1 after a DELETE) and a DELETE removes the version the last PUT wrote;
//   feed/data   the last retained event of a key says what the store holds (a PUT: that version,
//               createdAt, updatedAt and value length; a DELETE: nothing); and where a stream was
//               never trimmed (its first event is number 1), every stored key has an event.
//
// Buckets are read with HSCAN (COUNT), so a bucket that grew into a large hashtable is read in
// steps too. It may run while the API serves writes: the checks of one key (its bucket field with
// its index member, a stream's tail with its counter) are each one MULTI, so concurrent writes cannot make a
// consistent keyspace look broken. What cannot be settled because the keyspace moved under a
// check is counted as `unsettled`, never reported as a problem. Memory: the last event per key of
// one partition's retained stream at a time (bounded by the feed retention).
import type { Redis } from 'ioredis';
import { isCluster, type RedisClient } from './redis.js';
import { decodeEntry, idOfSeq, MalformedEntryError, seqOfId, type DecodedEntry, type PackedEvent } from './feedFormat.js';
import { bucketOf, DEFAULT_BUCKETS, ENTRY_HEADER_BYTES, isBucketCount, Keyspace, LAYOUT_VERSION, metaKey, partitionOf, unpackEntry } from './keys.js';

export type ProblemKind =
  /** The meta key is missing or disagrees with the partition count, bucket count or layout. */
  | 'meta'
  /** A key under a partition tag that is none of the layout's (index, stream, counter, bucket). */
  | 'unknown-key'
  /** A key under the tag of a partition at or above the partition count. */
  | 'stray-partition'
  /** An index member without its field in its bucket. */
  | 'missing-value'
  /** A bucket field without its index member. */
  | 'missing-index'
  /** A bucket of the wrong type; a packed entry that is too short, with a bad version or timestamps, or not UTF-8. */
  | 'bad-value'
  /** An index that is not a sorted set, or a member whose score is not 0. */
  | 'bad-index'
  /** A bucket field, index member or event in another partition than its key's. */
  | 'wrong-partition'
  /** A bucket field in another bucket than its key's (or in a bucket at or above the bucket count). */
  | 'wrong-bucket'
  /** Consecutive events whose sequence numbers are not consecutive. */
  | 'feed-sequence'
  /** The sequence counter disagrees with the last event's sequence number. */
  | 'feed-counter'
  /** A malformed event, or a stream or counter of the wrong type. */
  | 'feed-event'
  /** An event whose version does not follow from the key's previous event. */
  | 'feed-version'
  /** A key's last event disagrees with what the store holds for it. */
  | 'feed-mismatch'
  /** A stored key without any event in a stream that was never trimmed. */
  | 'feed-missing';

export interface VerifyProblem {
  kind: ProblemKind;
  partition?: number;
  /** The kvql key concerned, when there is one. */
  key?: string;
  /** The Redis key concerned. */
  redisKey?: string;
  message: string;
}

export interface PartitionCounts {
  partition: number;
  /** Keys in the partition's index (ZCARD). */
  keys: number;
  /** Bucket hashes found by SCAN (SCAN may return a key twice while Redis resizes its table). */
  buckets: number;
  /** Bucket fields (entries) found by HSCAN (which may also return one twice). */
  bucketFields: number;
  /** Retained events (from the first retained entry's first to the last entry's last). */
  events: number;
  /** The sequence counter: events the partition ever had. */
  sequence: number;
  /** The sequence number of the oldest retained event; null for an empty stream. */
  firstSeq: number | null;
}

export interface VerifyReport {
  prefix: string;
  partitions: number;
  buckets: number;
  ok: boolean;
  /** At most `maxProblems`, each (kind, partition, key) once. */
  problems: VerifyProblem[];
  /** All problems found, also those past `maxProblems`. */
  problemCount: number;
  truncated: boolean;
  perPartition: PartitionCounts[];
  keys: number;
  events: number;
  /** Redis keys under this keyspace's partition tags that SCAN returned. */
  redisKeysScanned: number;
  /** Checks skipped because concurrent writes changed what they looked at. */
  unsettled: number;
  durationMs: number;
}

export interface VerifyOptions {
  prefix: string;
  partitions: number;
  /** Buckets per partition (KV_BUCKETS); when absent, the meta key's (DEFAULT_BUCKETS without one). */
  buckets?: number;
  /** COUNT of each SCAN, HSCAN and ZSCAN step. */
  scanCount?: number;
  /** Keys per MULTI block. */
  batchSize?: number;
  /** Stream entries per XRANGE step. */
  streamPage?: number;
  /** Problems kept in the report (all are counted). */
  maxProblems?: number;
}

type Reply = [Error | null, unknown];
type StreamEntry = [id: Buffer, fields: Buffer[]];

interface LastEvent {
  type: 'P' | 'D';
  version: number;
  createdAt: string;
  updatedAt: string;
  valueBytes: number;
}

const NATURAL = /^(0|[1-9][0-9]*)$/;
const BUCKET = /^b:(0|[1-9][0-9]*)$/;
/** A part of a multi-partition batch on a cluster (store/clusterBatch.ts): kept while it completes. */
const BATCH_PART = /^x:[0-9a-f]{16}$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The bytes as a string if they are UTF-8, else null. */
function utf8(bytes: Buffer): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}

/** A safety bound on the steps of one scan: far above any real keyspace, below forever. */
const MAX_STEPS = 100_000_000;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** A stream entry decoded (feedFormat.ts), or what is wrong with it. */
function decoded([id, fields]: StreamEntry): DecodedEntry | string {
  try {
    return decodeEntry(id.toString(), fields);
  } catch (err) {
    if (err instanceof MalformedEntryError) return err.message;
    throw err;
  }
}

/** Compares stream IDs "ms-seq" numerically. */
function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

async function exec(multi: ReturnType<Redis['multi']>): Promise<Reply[]> {
  const replies = await multi.exec();
  if (!replies) throw new Error('a MULTI block was aborted');
  return replies as Reply[];
}

/** The first error of a MULTI block's replies, thrown: a failed read is no verdict. */
function ok(reply: Reply | undefined): unknown {
  if (!reply) throw new Error('missing reply');
  if (reply[0]) throw reply[0];
  return reply[1];
}

export async function verifyKeyspace(redis: RedisClient, opts: VerifyOptions): Promise<VerifyReport> {
  const t0 = performance.now();
  const P = opts.partitions;
  // The meta key is read first: with no bucket count given, the keyspace is checked against its
  // own, as KvStore.open serves it.
  const meta = metaKey(opts.prefix);
  const [type, len, fields] = await exec(redis.multi().type(meta).hlen(meta).hmget(meta, 'partitions', 'buckets', 'layout'));
  const stored = ok(type) === 'hash' ? Number((ok(fields) as (string | null)[])[1] ?? NaN) : NaN;
  const B = opts.buckets ?? (isBucketCount(stored) ? stored : DEFAULT_BUCKETS);
  const keys = new Keyspace(opts.prefix, P, B);
  const scanCount = opts.scanCount ?? 1000;
  const batchSize = opts.batchSize ?? 500;
  const streamPage = opts.streamPage ?? 500;
  const maxProblems = opts.maxProblems ?? 1000;

  const problems: VerifyProblem[] = [];
  const seen = new Set<string>();
  let problemCount = 0;
  let unsettled = 0;
  let redisKeysScanned = 0;
  const add = (p: VerifyProblem) => {
    const id = `${p.kind}\0${p.partition ?? ''}\0${p.key ?? p.redisKey ?? ''}`;
    if (seen.has(id)) return;
    seen.add(id);
    problemCount++;
    if (problems.length < maxProblems) problems.push(p);
  };
  const perPartition: PartitionCounts[] = Array.from({ length: P }, (_, p) => ({
    partition: p,
    keys: 0,
    buckets: 0,
    bucketFields: 0,
    events: 0,
    sequence: 0,
    firstSeq: null,
  }));

  // 1. The meta key (read above).
  {
    const t = ok(type) as string;
    if (t === 'none') {
      add({ kind: 'meta', redisKey: keys.meta, message: `${keys.meta} is missing: no keyspace "${opts.prefix}" here (or its meta key was lost)` });
    } else if (t !== 'hash') {
      add({ kind: 'meta', redisKey: keys.meta, message: `${keys.meta} is a ${t}, not a hash` });
    } else {
      const [partitions, buckets, layout] = ok(fields) as [string | null, string | null, string | null];
      if (partitions !== String(P)) {
        add({ kind: 'meta', redisKey: keys.meta, message: `${keys.meta} says ${partitions ?? 'nothing about'} partitions; verifying with ${P}` });
      }
      if (buckets !== String(B)) {
        add({ kind: 'meta', redisKey: keys.meta, message: `${keys.meta} says ${buckets ?? 'nothing about'} buckets per partition; verifying with ${B}` });
      }
      if (layout !== LAYOUT_VERSION) {
        add({ kind: 'meta', redisKey: keys.meta, message: `${keys.meta} says layout ${layout ?? '(none)'}; this kvql reads layout ${LAYOUT_VERSION}` });
      }
      const n = ok(len) as number;
      if (n !== 3) add({ kind: 'meta', redisKey: keys.meta, message: `${keys.meta} has ${n} fields, expected partitions, buckets and layout only` });
    }
  }

  // 2. Every Redis key under one of this keyspace's partition tags, by SCAN: stray keys, and
  //    every bucket, field by field with HSCAN, each field with its index member in MULTI blocks.
  const tag = new RegExp(`^\\{${escapeRegExp(opts.prefix)}:(0|[1-9][0-9]*)\\}:([\\s\\S]*)$`);
  const checkFields = async (p: number, b: number, redisKey: string, fields: Buffer[]) => {
    const m = redis.multi();
    for (const field of fields) m.hgetBuffer(redisKey, field).zscore(keys.index(p), field);
    const replies = await exec(m);
    fields.forEach((field, i) => {
      const [packedErr, packed] = replies[2 * i]!;
      if (packedErr) return; // no longer a hash: reported when its type is asked for
      if (packed == null) {
        unsettled++; // deleted since HSCAN returned it
        return;
      }
      perPartition[p]!.bucketFields++;
      const key = utf8(field);
      if (key === null) {
        const shown = field.toString('utf8');
        add({ kind: 'bad-value', partition: p, key: shown, redisKey, message: `${redisKey} has field ${JSON.stringify(shown)}, whose bytes are not UTF-8 (no key can have them)` });
        return;
      }
      const home = partitionOf(key, P);
      if (home !== p) {
        add({ kind: 'wrong-partition', partition: p, key, redisKey, message: `entry of ${JSON.stringify(key)} is in bucket ${redisKey} of partition ${p}; its partition is ${home}` });
      }
      const homeBucket = bucketOf(key, B);
      if (homeBucket !== b) {
        add({ kind: 'wrong-bucket', partition: p, key, redisKey, message: `entry of ${JSON.stringify(key)} is in bucket ${b} (${redisKey}); its bucket is ${homeBucket} of ${B}` });
      }
      const e = unpackEntry(packed as Buffer);
      if (e === null) {
        add({ kind: 'bad-value', partition: p, key, redisKey, message: `entry of ${JSON.stringify(key)} in ${redisKey} is ${(packed as Buffer).length} bytes, shorter than its ${ENTRY_HEADER_BYTES}-byte header` });
      } else {
        if (e.version < 1) {
          add({ kind: 'bad-value', partition: p, key, redisKey, message: `entry of ${JSON.stringify(key)} in ${redisKey} has version ${JSON.stringify(String(e.version))}, not a positive integer` });
        }
        if (e.createdAt > e.updatedAt) {
          add({ kind: 'bad-value', partition: p, key, redisKey, message: `entry of ${JSON.stringify(key)} in ${redisKey} was created (${e.createdAt}) after it was updated (${e.updatedAt})` });
        }
        if (utf8((packed as Buffer).subarray(ENTRY_HEADER_BYTES)) === null) {
          add({ kind: 'bad-value', partition: p, key, redisKey, message: `entry of ${JSON.stringify(key)} in ${redisKey} has a value that is not UTF-8` });
        }
      }
      const [scoreErr, scoreValue] = replies[2 * i + 1]!;
      if (scoreErr) return; // the index is no sorted set: reported by the index pass
      if (scoreValue == null) {
        add({ kind: 'missing-index', partition: p, key, redisKey, message: `entry of ${JSON.stringify(key)} in ${redisKey} has no member in ${keys.index(p)}` });
      }
    });
  };
  const checkBucket = async (p: number, b: number, redisKey: string) => {
    perPartition[p]!.buckets++;
    let cursor = '0';
    let steps = 0;
    do {
      let found: Buffer[];
      try {
        const [next, flat] = await redis.hscanBuffer(redisKey, cursor, 'COUNT', scanCount);
        cursor = next.toString();
        found = flat.filter((_, i) => i % 2 === 0);
      } catch (err) {
        if (!(err instanceof Error) || !/^WRONGTYPE/.test(err.message)) throw err;
        const t = await redis.type(redisKey);
        if (t !== 'none' && t !== 'hash') add({ kind: 'bad-value', partition: p, redisKey, message: `${redisKey} is a ${t}, not a hash` });
        else unsettled++; // replaced since
        return;
      }
      for (const batch of chunks(found, batchSize)) await checkFields(p, b, redisKey, batch);
    } while (cursor !== '0' && ++steps < MAX_STEPS);
  };

  // On a cluster, SCAN sees one node's keys: scan every master.
  for (const node of isCluster(redis) ? redis.nodes('master') : [redis]) {
    let cursor = '0';
    let steps = 0;
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', `{${opts.prefix}:*`, 'COUNT', scanCount);
      cursor = next;
      const buckets: [p: number, b: number, redisKey: string][] = [];
      for (const redisKey of found) {
        const m = tag.exec(redisKey);
        if (!m) continue; // another keyspace whose prefix starts like ours
        redisKeysScanned++;
        const p = Number(m[1]);
        const rest = m[2]!;
        const bucket = BUCKET.exec(rest);
        if (p >= P) {
          add({ kind: 'stray-partition', partition: p, redisKey, message: `${redisKey} is in partition ${p}, but the keyspace has ${P} partitions` });
        } else if (bucket) {
          // A bucket at or above the bucket count is checked too: each of its fields is in the
          // wrong bucket.
          buckets.push([p, Number(bucket[1]), redisKey]);
        } else if (rest !== 'i' && rest !== 's' && rest !== 'q' && rest !== 'xq' && !BATCH_PART.test(rest)) {
          add({ kind: 'unknown-key', partition: p, redisKey, message: `${redisKey} is not a key of kvql's layout` });
        }
      }
      for (const [p, b, redisKey] of buckets) await checkBucket(p, b, redisKey);
    } while (cursor !== '0' && ++steps < MAX_STEPS);
  }

  // 3. Per partition: the change feed, then the index, then the feed against the data.
  for (let p = 0; p < P; p++) {
    const counts = perPartition[p]!;
    const index = keys.index(p);
    const stream = keys.stream(p);
    const sequence = keys.sequence(p);
    const last = new Map<string, LastEvent>();

    // 3a. A snapshot of the stream's ends and the counter, in one step.
    const snap = await exec(
      redis
        .multi()
        .type(stream)
        .type(sequence)
        .type(index)
        .get(sequence)
        .xrangeBuffer(stream, '-', '+', 'COUNT', 1)
        .xrevrangeBuffer(stream, '+', '-', 'COUNT', 1)
        .zcard(index),
    );
    const streamType = ok(snap[0]) as string;
    const sequenceType = ok(snap[1]) as string;
    const indexType = ok(snap[2]) as string;
    const streamOk = streamType === 'stream' || streamType === 'none';
    if (!streamOk) add({ kind: 'feed-event', partition: p, redisKey: stream, message: `${stream} is a ${streamType}, not a stream` });
    if (sequenceType !== 'string' && sequenceType !== 'none') {
      add({ kind: 'feed-counter', partition: p, redisKey: sequence, message: `${sequence} is a ${sequenceType}, not a string` });
    }
    const indexOk = indexType === 'zset' || indexType === 'none';
    if (!indexOk) add({ kind: 'bad-index', partition: p, redisKey: index, message: `${index} is a ${indexType}, not a sorted set` });
    counts.keys = indexOk ? (ok(snap[6]) as number) : 0;

    const counterRaw = sequenceType === 'string' ? (ok(snap[3]) as string | null) : null;
    let counter: number | null = 0;
    if (counterRaw != null) {
      if (NATURAL.test(counterRaw)) counter = Number(counterRaw);
      else {
        counter = null;
        add({ kind: 'feed-counter', partition: p, redisKey: sequence, message: `${sequence} is ${JSON.stringify(counterRaw)}, not a count` });
      }
    }
    counts.sequence = counter ?? 0;
    let endId: string | null = null;
    let untrimmed = false;
    if (streamOk) {
      const first = (ok(snap[4]) as StreamEntry[])[0];
      const lastEntry = (ok(snap[5]) as StreamEntry[])[0];
      if (!lastEntry) {
        untrimmed = true;
        if (counter != null && counter !== 0) {
          add({ kind: 'feed-counter', partition: p, redisKey: sequence, message: `${sequence} is ${counter}, but ${stream} is empty (expected 0 or absent)` });
        }
      } else {
        endId = lastEntry[0].toString();
        // An entry's ID names its last event's sequence number (feedFormat.ts).
        const lastSeq = endId.startsWith('0-') ? seqOfId(endId) : null;
        if (counter != null && lastSeq !== counter) {
          add({ kind: 'feed-counter', partition: p, redisKey: sequence, message: `${sequence} is ${counterRaw ?? 'absent'}, but the last entry of ${stream} is ${endId}` });
        }
        const head = decoded(first!);
        counts.firstSeq = typeof head === 'string' ? null : head.first;
        counts.events = typeof head === 'string' || lastSeq === null ? 0 : lastSeq - head.first + 1;
        untrimmed = counts.firstSeq === 1;
      }
    }

    // 3b. Every entry from the first to the snapshot's last, page by page, and each one's events.
    if (endId !== null) {
      let from = '-';
      let prev: { id: string; last: number } | null = null;
      for (let steps = 0; steps < MAX_STEPS; steps++) {
        const [page, head] = await exec(redis.multi().xrangeBuffer(stream, from, endId, 'COUNT', streamPage).xrangeBuffer(stream, '-', '+', 'COUNT', 1));
        const entries = ok(page) as StreamEntry[];
        const headId = (ok(head) as StreamEntry[])[0]?.[0].toString();
        for (const entry of entries) {
          const id = entry[0].toString();
          const d = decoded(entry);
          if (typeof d === 'string') {
            add({ kind: 'feed-event', partition: p, redisKey: `${stream} ${id}`, message: `${stream}: ${d}` });
            // Its ID still says where its events ended: the next entry is checked against that.
            if (id.startsWith('0-')) prev = { id, last: seqOfId(id) };
            continue;
          }
          if (prev !== null && d.first !== prev.last + 1) {
            // Trimming may have overtaken this read (live writes past the retention): then the
            // oldest entry now lies beyond the previous one read, and the gap is no fault.
            if (headId !== undefined && compareIds(headId, prev.id) > 0 && entry === entries[0]) unsettled++;
            else {
              add({ kind: 'feed-sequence', partition: p, redisKey: `${stream} ${id}`, message: `${stream}: entry ${id} starts at event ${d.first} after event ${prev.last} (expected ${prev.last + 1})` });
            }
          }
          prev = { id, last: d.last };
          for (const e of d.events) checkEvent(p, e);
        }
        if (entries.length < streamPage || entries[entries.length - 1]![0].toString() === endId) break;
        from = `(${entries[entries.length - 1]![0].toString()}`;
      }
    }

    function checkEvent(partition: number, e: PackedEvent): void {
      const id = idOfSeq(e.seq);
      const where = `${stream} ${id}`;
      const bad = (why: string) => add({ kind: 'feed-event', partition, redisKey: where, message: `event ${id} of ${stream} ${why}` });
      const key = e.key;
      if (e.version < 1) return bad(`has version ${e.version}, not a positive integer`);
      const home = partitionOf(key, P);
      if (home !== partition) {
        add({ kind: 'wrong-partition', partition, key, redisKey: where, message: `event ${id} of ${JSON.stringify(key)} is in partition ${partition}'s stream; its partition is ${home}` });
      }
      const version = e.version;
      const prev = last.get(key);
      if (e.type === 'P') {
        if (e.createdAt! > e.updatedAt!) return bad(`was created (${e.createdAt}) after it was updated (${e.updatedAt})`);
        const expected = prev === undefined ? null : prev.type === 'P' ? prev.version + 1 : 1;
        if (expected !== null && version !== expected) {
          add({ kind: 'feed-version', partition, key, redisKey: where, message: `event ${id}: PUT of ${JSON.stringify(key)} at version ${version} follows ${prev!.type === 'P' ? 'PUT' : 'DELETE'} at ${prev!.version} (expected ${expected})` });
        }
        last.set(key, { type: 'P', version, createdAt: String(e.createdAt), updatedAt: String(e.updatedAt), valueBytes: Buffer.byteLength(e.value!, 'utf8') });
      } else {
        if (prev !== undefined && (prev.type !== 'P' || prev.version !== version)) {
          add({ kind: 'feed-version', partition, key, redisKey: where, message: `event ${id}: DELETE of ${JSON.stringify(key)} at version ${version} follows ${prev.type === 'P' ? 'PUT' : 'DELETE'} at ${prev.version}` });
        }
        last.set(key, { type: 'D', version, createdAt: '', updatedAt: '', valueBytes: 0 });
      }
    }

    // Whether events came after the snapshot: then what a check finds amiss may be a write that
    // happened since, which the snapshot does not show.
    const movedOn = (reply: Reply | undefined): boolean => {
      return (ok(reply) as StreamEntry[]).length > 0;
    };
    const afterEnd = endId === null ? '-' : `(${endId}`;

    // 3c. The index: each member has its field in its bucket, a score of 0, the right partition,
    //     and (in a never-trimmed stream) an event.
    if (indexOk && indexType === 'zset') {
      let cursor = '0';
      let steps = 0;
      do {
        const [next, flat] = await redis.zscan(index, cursor, 'COUNT', scanCount);
        cursor = next;
        const members: { key: string; score: string }[] = [];
        for (let i = 0; i + 1 < flat.length; i += 2) members.push({ key: flat[i]!, score: flat[i + 1]! });
        for (const batch of chunks(members, batchSize)) {
          const m = redis.multi();
          if (streamOk) m.xrange(stream, afterEnd, '+', 'COUNT', 1);
          else m.ping();
          for (const { key } of batch) m.hexists(keys.bucket(key, p), key);
          const replies = await exec(m);
          const moved = streamOk && movedOn(replies[0]);
          // HEXISTS fails on a bucket that is no hash (reported by the bucket pass): count as present.
          const present = (reply: Reply | undefined): number => (reply![0] ? 1 : (reply![1] as number));
          // A member without its field may have been deleted since ZSCAN returned it: ask the
          // index again, together with the bucket, for those only.
          const missing = batch.filter((_, i) => present(replies[1 + i]) === 0);
          const again = new Map<string, { exists: number; score: string | null }>();
          if (missing.length > 0) {
            const r = redis.multi();
            for (const { key } of missing) r.hexists(keys.bucket(key, p), key).zscore(index, key);
            const rr = await exec(r);
            missing.forEach(({ key }, i) => again.set(key, { exists: present(rr[2 * i]), score: ok(rr[2 * i + 1]) as string | null }));
          }
          batch.forEach(({ key, score }) => {
            const recheck = again.get(key);
            const exists = recheck ? recheck.exists : 1;
            const now = recheck ? recheck.score : score;
            if (now === null) {
              unsettled++; // removed since ZSCAN returned it
              return;
            }
            const home = partitionOf(key, P);
            if (home !== p) {
              add({ kind: 'wrong-partition', partition: p, key, redisKey: index, message: `${JSON.stringify(key)} is a member of ${index}; its partition is ${home}` });
            }
            if (score !== '0' || now !== '0') {
              add({ kind: 'bad-index', partition: p, key, redisKey: index, message: `${JSON.stringify(key)} has score ${now} in ${index}, expected 0` });
            }
            if (exists === 0) {
              add({ kind: 'missing-value', partition: p, key, redisKey: keys.bucket(key, p), message: `${JSON.stringify(key)} is in ${index} without its field in its bucket ${keys.bucket(key, p)}` });
            } else if (untrimmed && streamOk && !last.has(key)) {
              if (moved) unsettled++;
              else {
                add({ kind: 'feed-missing', partition: p, key, message: `${JSON.stringify(key)} is stored, but ${stream}, which holds the partition's whole history, has no event for it` });
              }
            }
          });
        }
      } while (cursor !== '0' && ++steps < MAX_STEPS);
    }

    // 3d. Each key's last retained event against the store.
    if (streamOk && last.size > 0) {
      for (const batch of chunks([...last], batchSize)) {
        const m = redis.multi().xrange(stream, afterEnd, '+', 'COUNT', 1);
        for (const [key] of batch) m.hgetBuffer(keys.bucket(key, p), key);
        const replies = await exec(m);
        const moved = movedOn(replies[0]);
        batch.forEach(([key, e], i) => {
          const [err, packed] = replies[1 + i]!;
          if (err) return; // the bucket is no hash: reported by the bucket pass
          const stored = packed == null ? null : unpackEntry(packed as Buffer);
          if (packed != null && stored === null) return; // too short: reported by the bucket pass
          let why: string | null = null;
          if (e.type === 'D' && stored !== null) why = `was deleted at version ${e.version} by its last event, but is stored at version ${stored.version}`;
          if (e.type === 'P') {
            if (stored === null) why = `was put at version ${e.version} by its last event, but is not stored`;
            else {
              const len = (packed as Buffer).length - ENTRY_HEADER_BYTES;
              const [n, c, u] = [stored.version, stored.createdAt, stored.updatedAt].map(String);
              if (n !== String(e.version) || c !== e.createdAt || u !== e.updatedAt || len !== e.valueBytes) {
                why = `was put at version ${e.version} (created ${e.createdAt}, updated ${e.updatedAt}, ${e.valueBytes} value bytes) by its last event, but is stored at version ${n} (created ${c}, updated ${u}, ${len} value bytes)`;
              }
            }
          }
          if (why === null) return;
          if (moved) unsettled++;
          else add({ kind: 'feed-mismatch', partition: p, key, redisKey: keys.bucket(key, p), message: `${JSON.stringify(key)} ${why}` });
        });
      }
    }
  }

  const keyCount = perPartition.reduce((s, c) => s + c.keys, 0);
  const eventCount = perPartition.reduce((s, c) => s + c.events, 0);
  return {
    prefix: opts.prefix,
    partitions: P,
    buckets: B,
    ok: problemCount === 0,
    problems,
    problemCount,
    truncated: problemCount > problems.length,
    perPartition,
    keys: keyCount,
    events: eventCount,
    redisKeysScanned,
    unsettled,
    durationMs: performance.now() - t0,
  };
}

/** The report as text: counts per partition, then every problem kept, one per line. */
export function formatReport(r: VerifyReport): string {
  const lines = [`keyspace "${r.prefix}", ${r.partitions} partition${r.partitions === 1 ? '' : 's'} of ${r.buckets} bucket${r.buckets === 1 ? '' : 's'}`];
  for (const c of r.perPartition) {
    const trimmed = c.firstSeq !== null && c.firstSeq > 1 ? `, oldest retained ${c.firstSeq}` : '';
    lines.push(`  partition ${c.partition}: ${c.keys} keys in ${c.buckets} buckets, ${c.events} events (sequence ${c.sequence}${trimmed})`);
  }
  lines.push(
    `  total: ${r.keys} keys, ${r.events} events; ${r.redisKeysScanned} Redis keys scanned in ${(r.durationMs / 1000).toFixed(2)} s` +
      (r.unsettled > 0 ? `; ${r.unsettled} checks unsettled by concurrent writes` : ''),
  );
  if (r.ok) lines.push('OK: no problems found');
  else {
    lines.push(`PROBLEMS: ${r.problemCount}${r.truncated ? ` (the first ${r.problems.length} shown)` : ''}`);
    for (const p of r.problems) lines.push(`  ${p.kind.padEnd(16)} ${p.message}`);
  }
  return lines.join('\n');
}
