// The key/value store over Redis. The only module (with its neighbours in store/) that speaks
// Redis; it knows nothing of GraphQL.
import type { Cluster } from 'ioredis';
import { ClusterBatches, scriptKeys, type RollForwardReport } from './clusterBatch.js';
import { checkScriptReply, fromRedisError, redisRead, StoreError } from './errors.js';
import { FeedReader } from './feed.js';
import { DEFAULT_BUCKETS, isBucketCount, Keyspace, LAYOUT_VERSION, MAX_BUCKETS, metaKey, rateLimitKey, unpackEntry } from './keys.js';
import { compareKeys, lexArg, maxLower, minUpper, type Bound, type KeyRange } from './order.js';
import { commandTimeoutOf, duplicateClient, isCluster, type RedisClient } from './redis.js';
import { registerScripts, type ScriptCommands } from './scripts.js';
import { WriteGroups } from './writeGroups.js';

export interface Entry {
  key: string;
  value: string;
  version: number;
  /** Milliseconds since the epoch, from the Redis clock. */
  createdAt: number;
  updatedAt: number;
}

export interface PutItem {
  key: string;
  value: string;
  /** Compare-and-set: the version the key must have now; 0 means "must not exist". */
  expectedVersion?: number | null;
}

export interface DeleteOutcome {
  deleted: boolean;
  previous: Entry | null;
}

export interface PageQuery {
  range: KeyRange;
  /** Page forward from the start of the range (or from `after`). */
  first?: number;
  /** Page backward from the end of the range (or from `before`). Exclusive with `first`. */
  last?: number;
  /** Keys, not cursors: the page holds keys strictly after / before them. */
  after?: string;
  before?: string;
}

export interface Page {
  entries: Entry[];
  hasNextPage: boolean;
  hasPreviousPage: boolean;
  totalCount: number;
}

export interface StoreOptions {
  prefix: string;
  partitions: number;
  /**
   * Bucket hashes per partition (KV_BUCKETS), fixed when the keyspace is created like the
   * partition count. When absent: an existing keyspace's own count, or DEFAULT_BUCKETS for a new one.
   */
  buckets?: number;
  /** At least about how many change events each partition's stream keeps (XADD MINID ~). */
  feedRetention?: number;
  /** Acknowledge a write only once this many replicas have it (WAIT); none when absent. */
  replication?: ReplicationOptions;
  /**
   * A connection to a replica, for reads asked with `eventual` consistency; without it they
   * are served by the primary, like every other read.
   */
  replicaReader?: RedisClient;
  /** Told what open() changed in the keyspace (the move from layout 2); nothing when absent. */
  log?: (message: string) => void;
}

/** STRONG: read from the primary (every acknowledged write). EVENTUAL: a replica may answer. */
export type Consistency = 'strong' | 'eventual';

export interface ReplicationOptions {
  /** KV_MIN_REPLICAS: replicas that must confirm every write; 0 = do not wait. */
  minReplicas: number;
  /** KV_REPLICATION_TIMEOUT_MS: how long a write waits for them before REPLICATION_TIMEOUT. */
  timeoutMs: number;
}

export const DEFAULT_FEED_RETENTION = 100_000;

/**
 * A token's rate limits (structurally auth/tokens.ts RateLimit): sustained requests and bytes
 * per second, each allowed to run ahead by `burstSeconds`. An absent rate is not limited.
 */
export interface RateLimitSpec {
  requestsPerSecond?: number;
  bytesPerSecond?: number;
  burstSeconds: number;
}

/**
 * The answer of one rate-limit check (lua/rateLimit.lua): allowed (both dimensions consumed);
 * refused for now, nothing consumed, allowed again after `retryAfterMs`; or refused for good:
 * its byte cost alone exceeds the byte burst `maxBytes` (bytesPerSecond × burstSeconds).
 */
export type RateLimitOutcome =
  | { ok: true }
  | { ok: false; retryAfterMs: number }
  | { ok: false; tooLarge: true; maxBytes: number };

/**
 * How often a write that waits for replicas on a cluster follows a redirection, 100 ms apart
 * (as ioredis does for every other command: maxRedirections in redis.ts).
 */
const REDIRECT_ATTEMPTS = 50;

/** How often a page read starts again when writes keep changing the page under it. */
const PAGE_ATTEMPTS = 8;

export type Client = RedisClient & ScriptCommands;

/** A write script's command name (scripts.ts) and the KEYS and ARGV to call it with. */
export type ScriptCall = [command: 'kvPut' | 'kvDelete' | 'kvBatchPrepare' | 'kvBatchApply' | 'kvBatchForget', keys: string[], args: string[]];

export class KvStore {
  private constructor(
    private readonly redis: Client,
    readonly keys: Keyspace,
    private readonly feedRetention: number,
    /**
     * Where writes go: `redis` itself, or, when writes wait for replicas, a connection of their
     * own. WAIT blocks the connection it is sent on, and reads must not queue behind it.
     */
    private readonly writer: Client,
    private readonly replication: ReplicationOptions | undefined,
    private readonly replicaReader: Client | undefined,
  ) {
    this.cluster = isCluster(redis);
    this.batches = this.cluster ? new ClusterBatches(keys, feedRetention, redis, (call, check) => this.write(call, check), putEntries) : undefined;
    const partitionOf = (key: string) => keys.partition(key);
    this.puts = new WriteGroups((items) => this.batchPut(items), partitionOf, feedRetention, (i) => i.key.length + i.value.length);
    this.deletes = new WriteGroups((items) => this.deleteKeys(items.map((i) => i.key), null), partitionOf, feedRetention, (i) => i.key.length);
  }

  /** Unconditional puts and deletes, grouped into shared script calls while others are in flight (writeGroups.ts). */
  private readonly puts: WriteGroups<PutItem, Entry>;
  private readonly deletes: WriteGroups<{ key: string }, Entry | null>;

  /** Whether Redis is a cluster: then a script reaches one slot, so one partition, only. */
  readonly cluster: boolean;
  /** Multi-partition batches on a cluster (clusterBatch.ts). */
  private readonly batches: ClusterBatches | undefined;

  /** Writes whose reply has arrived, waiting for the next WAIT (see awaitReplicas). */
  private readonly waiting: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private waitRunning = false;

  /**
   * Opens the keyspace `prefix` on `redis`, creating its meta key on first use. Refuses a
   * keyspace that was created with another partition or bucket count (its keys would be looked
   * up in the wrong partitions or buckets), or with another storage layout.
   */
  static async open(redis: RedisClient, opts: StoreOptions): Promise<KvStore> {
    const client = registerScripts(redis);
    // An existing keyspace is only read: an API that restarts while the primary refuses writes
    // (fewer replicas than its min-replicas-to-write) still starts and serves reads. Another
    // layout is refused before anything is written to its meta.
    let [partitions, storedBuckets, layout] = (await client.hmget(metaKey(opts.prefix), 'partitions', 'buckets', 'layout')) as (string | null)[];
    // Without a count given, an existing keyspace keeps its own: one made with an older default
    // still opens after an upgrade that changed DEFAULT_BUCKETS.
    const buckets = opts.buckets ?? (storedBuckets != null ? Number(storedBuckets) : DEFAULT_BUCKETS);
    // (A count that was given is checked by the Keyspace, below.)
    if (opts.buckets === undefined && !isBucketCount(buckets)) throw new Error(`keyspace "${opts.prefix}": its meta key says ${JSON.stringify(storedBuckets)} buckets, not a bucket count (1-${MAX_BUCKETS})`);
    const keys = new Keyspace(opts.prefix, opts.partitions, buckets);
    if (layout === '2' && Number(partitions) === opts.partitions && Number(storedBuckets) === buckets) layout = await moveToLayout3(client, keys, opts.log);
    if (layout != null && layout !== LAYOUT_VERSION) throw layoutError(opts.prefix, layout);
    if (partitions == null || storedBuckets == null || layout == null) {
      const replies = await client
        .multi()
        .hsetnx(keys.meta, 'partitions', String(opts.partitions))
        .hsetnx(keys.meta, 'buckets', String(buckets))
        .hsetnx(keys.meta, 'layout', LAYOUT_VERSION)
        .hmget(keys.meta, 'partitions', 'buckets', 'layout')
        .exec();
      [partitions, storedBuckets, layout] = replies?.[3]?.[1] as [string, string, string];
    }
    if (layout !== LAYOUT_VERSION) throw layoutError(opts.prefix, layout);
    if (Number(partitions) !== opts.partitions) {
      throw new Error(
        `keyspace "${opts.prefix}" was created with ${partitions} partitions, but KV_PARTITIONS is ${opts.partitions}; ` +
          `start with KV_PARTITIONS=${partitions} (the partition count of a keyspace cannot change)`,
      );
    }
    if (Number(storedBuckets) !== buckets) {
      throw new Error(
        `keyspace "${opts.prefix}" was created with ${storedBuckets} buckets per partition, but ` +
          `${opts.buckets !== undefined ? `KV_BUCKETS is ${buckets}` : `this server would have created it with ${buckets}`}; ` +
          `start with KV_BUCKETS=${storedBuckets} or unset (the bucket count of a keyspace cannot change)`,
      );
    }
    const replication = opts.replication && opts.replication.minReplicas > 0 ? opts.replication : undefined;
    let writer = client;
    if (replication) {
      // WAIT's own bound is the replication timeout; the command may take that long.
      writer = registerScripts(duplicateClient(client, commandTimeoutOf(client) + replication.timeoutMs));
      writer.on('error', () => {}); // reported by the writes that fail
      // Connections are lazy and queue nothing offline: connect now (ioredis retries by itself).
      await writer.connect().catch(() => {});
    }
    const replicaReader = opts.replicaReader ? registerScripts(opts.replicaReader) : undefined;
    return new KvStore(client, keys, opts.feedRetention ?? DEFAULT_FEED_RETENTION, writer, replication, replicaReader);
  }

  /** Closes what the store opened itself (the writer connection); the caller closes `redis`. */
  close(): void {
    if (this.writer !== this.redis) this.writer.disconnect();
  }
  // (The replica reader was given by the caller, who closes it.)

  /**
   * A reader of this keyspace's change feed, with connections of its own for waiting (a
   * blocked connection cannot serve anything else): one for XREAD BLOCK on one Redis, one
   * subscriber per master on a cluster (feed.ts). `blockMs` is the longest wait.
   */
  feedReader(blockMs: number): FeedReader {
    return new FeedReader(this.redis, this.keys, blockMs + commandTimeoutOf(this.redis));
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  /**
   * Counts `requests` requests (1, or a lease) of `bytes` bytes against the limits of token `tokenId`, in one script on
   * the key rateLimitKey(prefix, tokenId) (one slot: the same on one Redis, Sentinel and a
   * cluster), on the Redis clock, so every API process sharing the Redis shares the limits.
   * Without any rate set it answers ok without asking Redis. Sent on the main connection, never
   * waiting for replicas (WAIT): the state is a few milliseconds of pacing, and a failover that
   * loses some of it only lets a token run ahead once. Redis failures throw as StoreErrors
   * (STORE_UNAVAILABLE); the caller decides what a failed check means (auth/rateLimit.ts).
   */
  async rateLimit(tokenId: string, limit: RateLimitSpec, bytes: number, requests = 1): Promise<RateLimitOutcome> {
    const rps = limit.requestsPerSecond ?? 0;
    const bps = limit.bytesPerSecond ?? 0;
    if (rps === 0 && bps === 0) return { ok: true };
    if (!(rps >= 0 && Number.isFinite(rps)) || !(bps >= 0 && Number.isFinite(bps))) throw new Error(`invalid rate limit ${JSON.stringify(limit)}`);
    if (!(limit.burstSeconds > 0 && Number.isFinite(limit.burstSeconds))) throw new Error(`invalid burstSeconds ${limit.burstSeconds}`);
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new Error(`invalid byte count ${bytes}`);
    if (!Number.isSafeInteger(requests) || requests < 1) throw new Error(`invalid request count ${requests}`);
    const key = rateLimitKey(this.keys.prefix, tokenId);
    let reply: number;
    try {
      reply = Number(await this.redis.kvRateLimit(1, key, String(rps), String(bps), String(limit.burstSeconds), String(bytes), String(requests)));
    } catch (err) {
      throw fromRedisError(err, true);
    }
    if (reply === 0) return { ok: true };
    if (reply === -1) return { ok: false, tooLarge: true, maxBytes: Math.floor(bps * limit.burstSeconds) };
    if (reply > 0) return { ok: false, retryAfterMs: reply };
    throw new Error(`unexpected rate-limit reply ${JSON.stringify(reply)}`);
  }

  async get(key: string, consistency: Consistency = 'strong'): Promise<Entry | null> {
    return (await this.getMany([key], consistency))[0]!;
  }

  /**
   * Runs a read on the connection `consistency` asks for: an eventual read goes to the replica
   * when there is one, and to the primary when the replica cannot answer (a primary's answer
   * satisfies an eventual read too; a failover's promoted replica is briefly unreachable).
   */
  private async read<T>(consistency: Consistency, run: (redis: Client) => Promise<T>): Promise<T> {
    if (consistency === 'eventual' && this.replicaReader) {
      try {
        return await run(this.replicaReader);
      } catch (err) {
        if (!(err instanceof StoreError && err.code === 'STORE_UNAVAILABLE')) throw err;
      }
    }
    return run(this.redis);
  }

  /**
   * Entries in the order asked, null where absent: one HMGET when the keys share a bucket (a
   * get), else one get.lua call over all of them, so that the read is one snapshot. On a
   * cluster a script reaches one slot: one such read per partition, all sent at once, each
   * following its own redirection.
   */
  async getMany(keys: readonly string[], consistency: Consistency = 'strong'): Promise<(Entry | null)[]> {
    return this.read(consistency, (redis) => this.getManyFrom(redis, keys));
  }

  private async getManyFrom(redis: Client, keys: readonly string[]): Promise<(Entry | null)[]> {
    // read (on a cluster its partition; on one Redis 0, the only one) -> the indexes of the keys
    // asked for in it, their buckets, and whether they share one
    const reads = new Map<number, { indexes: number[]; buckets: string[]; oneBucket: boolean }>();
    keys.forEach((key, i) => {
      const p = this.keys.partition(key);
      const bucket = this.keys.bucket(key, p);
      const read = this.cluster ? p : 0;
      const group = reads.get(read);
      if (!group) reads.set(read, { indexes: [i], buckets: [bucket], oneBucket: true });
      else {
        group.indexes.push(i);
        group.buckets.push(bucket);
        if (bucket !== group.buckets[0]) group.oneBucket = false;
      }
    });
    const result: (Entry | null)[] = new Array(keys.length).fill(null);
    const readGroup = async ({ indexes, buckets, oneBucket }: { indexes: number[]; buckets: string[]; oneBucket: boolean }) => {
      const asked = indexes.map((i) => keys[i]!);
      const packed = oneBucket ? await redis.hmgetBuffer(buckets[0]!, ...asked) : await redis.kvGetBuffer(asked.length, ...buckets, ...asked);
      indexes.forEach((i, f) => {
        result[i] = fromPacked(keys[i]!, packed[f] ?? null);
      });
    };
    try {
      // One read (every get, and every getMany on one Redis): no Promise.all to wait through.
      if (reads.size === 1) await readGroup(reads.values().next().value!);
      else await Promise.all([...reads.values()].map(readGroup));
    } catch (err) {
      throw fromRedisError(err, false);
    }
    return result;
  }

  /**
   * Writes one entry. An unconditional put may share its script call with others that arrive
   * with it (writeGroups.ts); a compare-and-set is written alone.
   */
  async put(item: PutItem): Promise<Entry> {
    if (item.expectedVersion == null) return this.puts.add(item);
    return (await this.batchPut([item]))[0]!;
  }

  /**
   * Writes every item or none, in one script (so one fsync) over all the partitions involved.
   * On one Redis that is atomic across partitions. On a cluster a batch over several
   * partitions is written in steps that always complete (clusterBatch.ts), and refused when
   * it compares versions.
   */
  async batchPut(items: readonly PutItem[]): Promise<Entry[]> {
    // Nothing to write: no reason to fail when Redis is full or down.
    if (items.length === 0) return [];
    assertDistinct(items.map((i) => i.key));
    if (this.batches) {
      const parts = this.keys.byPartition(items, (i) => i.key);
      if (parts.size > 1) return this.batches.put(items, parts);
    }
    const keys = this.scriptKeys(items.map((i) => i.key));
    const args = [String(items.length), String(this.feedRetention)];
    for (const item of items) {
      args.push(item.key, item.value, item.expectedVersion == null ? '' : String(item.expectedVersion));
    }
    return putEntries(items, await this.write(['kvPut', keys, args]));
  }

  /**
   * Completes the multi-partition batches that a crashed writer committed but did not finish
   * (a cluster only; nothing to do on one Redis, where a batch is one script). Any API
   * process may run it at any time: applying a part twice is a no-op. Returns how many.
   */
  async rollForward(olderThanMs: number): Promise<RollForwardReport> {
    if (!this.batches) return { completed: 0, missingParts: [] };
    try {
      return await this.batches.rollForward(olderThanMs);
    } catch (err) {
      throw fromRedisError(err, true);
    }
  }

  /**
   * Deletes one entry. An unconditional delete may share its script call with others that
   * arrive with it (writeGroups.ts); a compare-and-set is written alone.
   */
  async delete(key: string, expectedVersion?: number | null): Promise<DeleteOutcome> {
    const previous = expectedVersion == null ? await this.deletes.add({ key }) : (await this.deleteKeys([key], expectedVersion))[0];
    return { deleted: previous != null, previous: previous ?? null };
  }

  /**
   * Deletes at most `limit` keys of the range, the lowest first, atomically (one script over
   * every partition involved), and says whether any key of the range remains.
   */
  async deleteRange(range: KeyRange, limit: number): Promise<{ deleted: number; hasMore: boolean }> {
    const lo = lexArg(range.lo, 'lo');
    const hi = lexArg(range.hi, 'hi');
    const partitions = [...Array(this.keys.partitions).keys()];
    const candidates = await redisRead(() =>
      Promise.all(partitions.map((p) => this.redis.zrange(this.keys.index(p), lo, hi, 'BYLEX', 'LIMIT', 0, limit))),
    );
    const chosen = candidates.flat().sort(compareKeys).slice(0, limit);
    let deleted: (Entry | null)[] = [];
    if (chosen.length > 0 && !this.cluster) deleted = await this.deleteKeys(chosen, null);
    // On a cluster a script reaches one partition: each partition's share is deleted atomically.
    if (chosen.length > 0 && this.cluster) {
      const byPartition = this.keys.byPartition(chosen, (key) => key);
      deleted = (await Promise.all([...byPartition.values()].map((keys) => this.deleteKeys(keys, null)))).flat();
    }
    const remaining = await redisRead(() =>
      Promise.all(partitions.map((p) => this.redis.zlexcount(this.keys.index(p), lo, hi))),
    );
    return {
      deleted: deleted.filter((e) => e != null).length,
      hasMore: remaining.some((c) => c > 0),
    };
  }

  /** One page of a range, merged in byte order: one snapshot on one Redis, each partition's part atomically on a cluster. */
  async range(q: PageQuery, consistency: Consistency = 'strong'): Promise<Page> {
    return this.read(consistency, (redis) => this.rangeFrom(redis, q));
  }

  private async rangeFrom(redis: Client, q: PageQuery): Promise<Page> {
    const forward = q.last == null;
    const size = (forward ? q.first : q.last) ?? 100;
    const { range } = q;
    const window: KeyRange = {
      lo: q.after != null ? maxLower(range.lo, { key: q.after, inclusive: false }) : range.lo,
      hi: q.before != null ? minUpper(range.hi, { key: q.before, inclusive: false }) : range.hi,
    };
    // The part of the range on the far side of the cursor, which tells whether a page exists
    // in the direction we are not paging. Clipped to the range: a cursor may lie outside it.
    let beyond: [Buffer | string, Buffer | string] | ['', ''] = ['', ''];
    if (forward && q.after != null) {
      beyond = [lexArg(range.lo, 'lo'), lexArg(minUpper(range.hi, complement(window.lo)), 'hi')];
    }
    if (!forward && q.before != null) {
      beyond = [lexArg(maxLower(range.lo, complement(window.hi)), 'lo'), lexArg(range.hi, 'hi')];
    }
    const rest = [forward ? 'f' : 'r', lexArg(range.lo, 'lo'), lexArg(range.hi, 'hi'), ...beyond] as const;
    const windowArgs = [lexArg(window.lo, 'lo'), lexArg(window.hi, 'hi')] as const;
    // Round 1 asks each partition for its first `limit` members of the window (after `from`, in
    // its later steps) with a plain ZRANGE: a script call costs Redis about half as much again,
    // and round 2 checks everything that round 1 read.
    const membersOf = async (p: number, limit: number, from?: string): Promise<string[]> => {
      const after = from === undefined ? undefined : lexArg({ key: from, inclusive: false }, forward ? 'lo' : 'hi');
      const reply = forward
        ? await redis.zrangeBuffer(this.keys.index(p), after ?? windowArgs[0], windowArgs[1], 'BYLEX', 'LIMIT', 0, limit)
        : await redis.zrangeBuffer(this.keys.index(p), after ?? windowArgs[1], windowArgs[0], 'BYLEX', 'REV', 'LIMIT', 0, limit);
      return reply.map((b) => b.toString('utf8'));
    };
    // Round 2 asks the partitions `ps`, in one script, for the entries of their part of the
    // page and whether that part is still exactly `expected` (per partition, in page order;
    // `members`, all of them in that order): the window is cut at the page's last key (`end`)
    // and one member more is read, so a key that arrived anywhere inside the page, in a
    // partition with no key on it too, is seen. (A page of size 0 spans nothing: no more is read.)
    const check = (ps: number[], expected: string[][], members: string[], end: string | undefined) => {
      const cut = end === undefined ? undefined : lexArg({ key: end, inclusive: true }, forward ? 'hi' : 'lo');
      // Built in plain loops: V8's flat and flatMap copy at about 0.1 µs per element (see
      // scripts.ts), and a page of 100 has some 210 arguments.
      const keys = ps.map((p) => this.keys.index(p));
      ps.forEach((p, j) => {
        for (const m of expected[j]!) keys.push(this.keys.bucket(m, p));
      });
      const args: (string | Buffer | number)[] = [
        ps.length,
        forward ? windowArgs[0] : (cut ?? windowArgs[0]),
        forward ? (cut ?? windowArgs[1]) : windowArgs[1],
        size > 0 ? 1 : 0,
        ...rest,
      ];
      for (const e of expected) args.push(e.length);
      for (const m of members) args.push(m);
      return redis.kvRangeBuffer(keys.length, ...keys, ...args);
    };
    const order = forward ? compareKeys : (a: string, b: string) => compareKeys(b, a);
    const partitions = [...Array(this.keys.partitions).keys()];

    for (let attempt = 0; attempt < PAGE_ATTEMPTS; attempt++) {
      // Round 1: which keys make the page (pageMembers: a few per partition, then more from
      // the partitions that may still hold some).
      const first = await this.pageMembers(membersOf, partitions, size, order);
      this.overFetch.members += first.overFetched;
      this.overFetch.pages++;
      const merged = first.merged;
      const more = merged.length > size;
      const page = merged.slice(0, size);

      // Round 2: their values and the counts, if every partition's part of the page is still
      // the same keys. On one Redis one call reads every partition: the page is one snapshot.
      // On a cluster a script reaches one slot: one call per partition, sent together.
      const mine: string[][] = partitions.map(() => []);
      for (const e of page) mine[e.p]!.push(e.key);
      const end = page.at(-1)?.key;
      const calls = (this.cluster ? partitions.map((p) => [p]) : [partitions]).map((ps) => {
        const expected = ps.map((p) => mine[p]!);
        const members: string[] = [];
        for (const e of expected) for (const m of e) members.push(m);
        return { ps, expected, members };
      });
      const second = await redisRead(() => Promise.all(calls.map((c) => check(c.ps, c.expected, c.members, end))));
      const values = new Map<string, Entry>();
      let stable = true;
      let totalCount = 0;
      let beyondCount = 0;
      second.forEach((reply, c) => {
        const r = parseRange(reply);
        totalCount += r.total;
        beyondCount += r.beyond;
        if (!r.matched) stable = false;
        else calls[c]!.members.forEach((key, i) => values.set(key, fromPacked(key, r.values[i] ?? null)!));
      });
      if (!stable) continue;

      const entries = page.map((e) => values.get(e.key)!);
      if (!forward) entries.reverse();
      return {
        entries,
        totalCount,
        hasNextPage: forward ? more : beyondCount > 0,
        hasPreviousPage: forward ? beyondCount > 0 : more,
      };
    }
    throw new StoreError('STORE_UNAVAILABLE', 'the range kept changing under concurrent writes; try again');
  }

  /** Members read by round 1 of range pages, beyond the page (and its one look-ahead), for measuring. */
  readonly overFetch = { pages: 0, members: 0 };

  /**
   * Round 1 of a range page: the first size+1 members of the window over all partitions, in
   * page order, read with work bounded by the page rather than by size times partitions. Each
   * partition first gives about twice its fair share (2(size+1)/P, plus a few); a partition
   * that gave all it was asked for may hold more, so the merged list is certain only up to the
   * earliest last member among those; while fewer than size+1 members are certain, the
   * partitions that could hold more of them give twice as many again, from where they stopped.
   */
  private async pageMembers(
    membersOf: (p: number, limit: number, from?: string) => Promise<string[]>,
    partitions: number[],
    size: number,
    order: (a: string, b: string) => number,
  ): Promise<{ merged: { key: string; p: number }[]; overFetched: number }> {
    const want = size + 1;
    const P = partitions.length;
    const got: string[][] = partitions.map(() => []);
    const full = partitions.map(() => true); // may hold more than read so far
    let ask = P === 1 ? want : Math.min(want, Math.ceil((2 * want) / P) + 4);
    let asking = partitions;
    let read = 0;
    for (;;) {
      const limit = ask;
      const replies = await redisRead(() => Promise.all(asking.map((p) => membersOf(p, limit, got[p]!.at(-1)))));
      replies.forEach((members, i) => {
        const p = asking[i]!;
        got[p]!.push(...members);
        full[p] = members.length === limit;
        read += members.length;
      });
      const merged = got.flatMap((members, p) => members.map((key) => ({ key, p }))).sort((a, b) => order(a.key, b.key));
      // Certain: every member up to the earliest last member of a partition that may hold more.
      let horizon: string | undefined;
      for (const p of partitions) {
        if (!full[p]) continue;
        const last = got[p]!.at(-1)!;
        if (horizon === undefined || order(last, horizon) < 0) horizon = last;
      }
      const after = horizon === undefined ? -1 : merged.findIndex((m) => order(m.key, horizon!) > 0);
      const certain = after === -1 ? merged.length : after;
      if (horizon === undefined || certain >= want) {
        return { merged: merged.slice(0, want), overFetched: Math.max(0, read - Math.min(want, merged.length)) };
      }
      // Ask again the partitions that may hold members before the want-th merged one.
      const bound = merged[want - 1]?.key;
      asking = partitions.filter((p) => full[p] && (bound === undefined || order(got[p]!.at(-1)!, bound) < 0));
      ask = Math.min(want, ask * 2);
    }
  }

  private async deleteKeys(keys: readonly string[], expectedVersion: number | null | undefined): Promise<(Entry | null)[]> {
    const redisKeys = this.scriptKeys(keys);
    const args = [String(keys.length), String(this.feedRetention)];
    for (const key of keys) args.push(key, expectedVersion == null ? '' : String(expectedVersion));
    const reply = await this.write(['kvDelete', redisKeys, args]);
    return keys.map((key, i) => toEntry(key, reply as (string | null)[], 1 + 4 * i));
  }

  private scriptKeys(keys: readonly string[]): string[] {
    return scriptKeys(this.keys, keys);
  }

  /**
   * Runs one write script on the writer connection, checks its reply (unless `check` is
   * false: the caller reads statuses of its own) and, when writes wait for replicas, returns
   * once they have it.
   */
  private async write([command, keys, args]: ScriptCall, check = true): Promise<unknown[]> {
    let reply: unknown[];
    let acked: number | undefined;
    try {
      if (this.replication && this.cluster) {
        const [r, n, waitErr] = await this.writeAndWait(command, keys, args);
        reply = r;
        acked = waitErr ? undefined : n;
        if (check) checkScriptReply(reply);
        if (acked === undefined || acked < this.replication.minReplicas) throw replicationTimeout(this.replication, acked, waitErr ? ` (${waitErr.message})` : '');
        return reply;
      }
      reply = await this.writer[command](keys.length, ...keys, ...args) as unknown[];
    } catch (err) {
      throw fromRedisError(err, true);
    }
    if (check) checkScriptReply(reply);
    if (this.replication) await this.awaitReplicas();
    return reply;
  }

  /**
   * On a cluster, a write script and WAIT in one pipeline: each node replicates its own slots, so
   * WAIT must follow the write on that node's connection, and the pipeline goes where the
   * script's keys route it. ioredis does not follow a redirection inside a pipeline whose WAIT
   * succeeded, so this does: MOVED, ASK (a slot on the move), TRYAGAIN and CLUSTERDOWN say the
   * script did not run; the pipeline is sent again after a short pause, with the slot map
   * refreshed, for up to REDIRECT_ATTEMPTS times (then the error stands: STORE_UNAVAILABLE).
   */
  private async writeAndWait(command: ScriptCall[0], keys: string[], args: string[]): Promise<[unknown[], number, Error | null]> {
    const { minReplicas, timeoutMs } = this.replication!;
    for (let attempt = 1; ; attempt++) {
      const pipe = this.writer.pipeline() as unknown as Record<string, (...a: unknown[]) => unknown> & { exec(): Promise<[Error | null, unknown][]> };
      pipe[command]!(keys.length, ...keys, ...args);
      pipe.wait!(minReplicas, timeoutMs);
      const [[err, reply], [waitErr, acked]] = (await pipe.exec()) as [[Error | null, unknown[]], [Error | null, number]];
      if (!err) return [reply, Number(acked), waitErr];
      if (!/^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)\b/.test(err.message) || attempt >= REDIRECT_ATTEMPTS) throw err;
      if (/^MOVED\b/.test(err.message)) (this.writer as Cluster).refreshSlotsCache();
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Resolves once at least `minReplicas` replicas have this write, or fails with
   * REPLICATION_TIMEOUT. WAIT returns once the replicas have every write sent before it on its
   * connection, and it blocks that connection meanwhile (up to the timeout, when replicas lag):
   * so one WAIT at a time is in flight, and it covers every write whose reply arrived before it
   * was sent. Writes that finish meanwhile share the next one. Without that, each write's own
   * WAIT would hold up every write behind it for up to a timeout each.
   * Redis 7.0 cannot wait for a replica's fsync (WAITAOF is 7.2): a replica has it in memory.
   */
  private awaitReplicas(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.waitRunning) void this.runWaits();
    });
  }

  private async runWaits(): Promise<void> {
    const { minReplicas, timeoutMs } = this.replication!;
    this.waitRunning = true;
    try {
      while (this.waiting.length > 0) {
        const covered = this.waiting.splice(0);
        let acked: number | undefined;
        let why = '';
        try {
          acked = Number(await this.writer.wait(minReplicas, timeoutMs));
        } catch (err) {
          why = ` (${err instanceof Error ? err.message : String(err)})`;
        }
        if (acked !== undefined && acked >= minReplicas) {
          for (const w of covered) w.resolve();
          continue;
        }
        // One error per write: each reaches its own request (and its log line).
        for (const w of covered) w.reject(replicationTimeout(this.replication!, acked, why));
      }
    } finally {
      this.waitRunning = false;
    }
  }
}

/** REPLICATION_TIMEOUT for a write its primary applied but too few replicas confirmed. */
function replicationTimeout({ minReplicas, timeoutMs }: ReplicationOptions, acked: number | undefined, why: string): StoreError {
  return new StoreError(
    'REPLICATION_TIMEOUT',
    `the write was applied and fsynced on the primary, but ${acked === undefined ? 'whether replicas have it is unknown' : `only ${acked} of the ${minReplicas} replicas required confirmed it within ${timeoutMs} ms`}${why}; ` +
      'it is not lost unless the primary fails before they catch up: read the key to see it, and write it again if it must survive a failover',
    { replicasConfirmed: acked ?? null, replicasRequired: minReplicas },
  );
}

/** The entries a put script's reply {"OK", now, version_1, created_1, ...} says were written. */
export function putEntries(items: readonly PutItem[], reply: readonly unknown[]): Entry[] {
  const now = Number(reply[1]);
  return items.map((item, i) => ({
    key: item.key,
    value: item.value,
    version: Number(reply[2 + 2 * i]),
    createdAt: Number(reply[3 + 2 * i]),
    updatedAt: now,
  }));
}

function complement(b: Bound): Bound {
  return { key: b.key, inclusive: !b.inclusive, afterPrefix: b.afterPrefix };
}

interface RangeReply {
  total: number;
  beyond: number;
  matched: boolean;
  /** When matched: each expected member's packed entry as stored in its bucket (null if it has none). */
  values: (Buffer | null)[];
}

function parseRange(reply: unknown[]): RangeReply {
  return {
    total: Number(reply[0]),
    beyond: Number(reply[1]),
    matched: reply[2] === 1,
    values: reply.slice(3) as (Buffer | null)[],
  };
}

/** Reads the four fields value, version, createdAt, updatedAt starting at `at`; null if absent. */
function toEntry(key: string, fields: readonly (string | null | undefined)[], at: number): Entry | null {
  const version = fields[at + 1];
  if (version == null) return null;
  return {
    key,
    value: fields[at] ?? '',
    version: Number(version),
    createdAt: Number(fields[at + 2]),
    updatedAt: Number(fields[at + 3]),
  };
}

/** An entry as stored in its bucket (see keys.ts); null if absent. */
function fromPacked(key: string, packed: Buffer | null): Entry | null {
  if (packed == null) return null;
  const e = unpackEntry(packed);
  if (!e) throw new Error(`the stored entry of a key is ${packed.length} bytes, shorter than its header: run npm run verify`);
  return { key, ...e };
}

/**
 * Moves a layout-2 keyspace to layout 3: the same entries and index, and the change feed's new
 * entries (feedFormat.ts). Each partition's feed is moved in one step (lua/migrateFeed.lua),
 * its retained events dropped, its counter kept; then the meta key says layout 3. A move cut
 * short is finished by the next start: moving a partition twice changes nothing. Servers of
 * layout 2 must be stopped first: one still running would append entries of the old format,
 * and this server's writes to that partition would then fail (XADD refuses an ID below them).
 */
async function moveToLayout3(client: RedisClient & ScriptCommands, keys: Keyspace, log?: (message: string) => void): Promise<string> {
  let moved = 0;
  for (let p = 0; p < keys.partitions; p++) moved += await client.kvMigrateFeed(2, keys.stream(p), keys.sequence(p));
  await client.hset(keys.meta, 'layout', LAYOUT_VERSION);
  log?.(
    `keyspace "${keys.prefix}": moved from layout 2 to layout ${LAYOUT_VERSION} (one change-feed entry per write); ` +
      `the change feed's retained events of ${moved} partition(s) were dropped, so cursors from before now get CURSOR_EXPIRED`,
  );
  return LAYOUT_VERSION;
}

function layoutError(prefix: string, layout: string | null): Error {
  return new Error(
    `keyspace "${prefix}" has storage layout ${layout ?? '(none)'}; this server reads layout ${LAYOUT_VERSION} only. ` +
      `Layout 1 (one hash per key) is not converted in place: export its entries and import them into a new keyspace (another KV_PREFIX)`,
  );
}

function assertDistinct(keys: readonly string[]): void {
  const seen = new Set<string>();
  const repeated = new Set<string>();
  for (const k of keys) (seen.has(k) ? repeated : seen).add(k);
  if (repeated.size > 0) {
    throw new StoreError('BAD_USER_INPUT', `a batch names the same key more than once: ${[...repeated].map((k) => JSON.stringify(k)).join(', ')}`, {
      keys: [...repeated],
    });
  }
}
