// Reading the change feed: one Redis stream per partition, written by put.lua and delete.lua in
// the same script as the data, one entry per script call (feedFormat.ts). A position in the feed is,
// per partition, the sequence number of the last event seen (the partition's event count, which
// also tells whether events after a position have been trimmed away); an entry's ID names its
// last event's, so the events after a position are in the entries after ID 0-<seq>.
import type { Redis } from 'ioredis';
import { ClusterNotifier } from './clusterFeed.js';
import { redisRead } from './errors.js';
import { decodeEntry, idOfSeq } from './feedFormat.js';
import type { Keyspace } from './keys.js';
import { duplicateClient, isCluster, type RedisClient } from './redis.js';
import type { Entry } from './store.js';

export interface Position {
  /**
   * "0-<seq>", what cursors carry beside the sequence number (before layout 3, the stream ID of
   * the event); reads go by `seq` alone.
   */
  id: string;
  /** The sequence number of that event: 1 for a partition's first event, 0 before it. */
  seq: number;
}

export interface FeedEvent {
  partition: number;
  /** "0-<seq>" (idOfSeq). */
  id: string;
  seq: number;
  type: 'PUT' | 'DELETE';
  key: string;
  /** The version written by a PUT, or the version a DELETE removed. */
  version: number;
  /** The entry as the PUT wrote it; null for a DELETE. */
  entry: Entry | null;
}

/** The position right after event `seq`. */
export function positionAt(seq: number): Position {
  return { id: idOfSeq(seq), seq };
}

/** A stream entry as the *Buffer commands return it. */
type StreamEntry = [id: Buffer, fields: Buffer[]];

/** The events of `entries` after sequence number `after`, in order. */
function toEvents(partition: number, entries: readonly StreamEntry[], after: number): FeedEvent[] {
  const out: FeedEvent[] = [];
  for (const [id, fields] of entries) {
    for (const e of decodeEntry(id.toString(), fields).events) {
      if (e.seq <= after) continue;
      const put = e.type === 'P';
      out.push({
        partition,
        id: idOfSeq(e.seq),
        seq: e.seq,
        type: put ? 'PUT' : 'DELETE',
        key: e.key,
        version: e.version,
        entry: put ? { key: e.key, value: e.value!, version: e.version, createdAt: e.createdAt!, updatedAt: e.updatedAt! } : null,
      });
    }
  }
  return out;
}

export interface FeedCheck {
  /** Events after the position were trimmed away: it cannot be resumed exactly. */
  expired: boolean;
  /** The position from which everything still retained would be delivered. */
  oldest: Position[];
  /** A position claims more events than a partition has had: not from this keyspace. */
  foreign: boolean;
}

export class FeedReader {
  /** One Redis: a dedicated connection, since XREAD BLOCK holds it for the whole wait. */
  private readonly blocking: Redis | undefined;
  /** A cluster: one subscriber per master, told which partitions got events. */
  private readonly notifier: ClusterNotifier | undefined;

  /** `blockingTimeoutMs` bounds a blocking read: the longest block plus the command timeout. */
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keyspace,
    blockingTimeoutMs: number,
  ) {
    if (isCluster(redis)) {
      this.notifier = new ClusterNotifier(redis, keys);
    } else {
      this.blocking = duplicateClient(redis, blockingTimeoutMs);
      this.blocking.on('error', () => {}); // reported by the reads that fail
    }
  }

  get partitions(): number {
    return this.keys.partitions;
  }

  /** The current end of every partition's feed: a subscription "from now" starts here. */
  async heads(): Promise<Position[]> {
    // The sequence counter moves in the same script as the stream, so it names the last event:
    // one GET per partition (each its own slot on a cluster), all sent at once, rather than
    // reading the last entry (up to 64 KiB of events) only for its ID.
    return redisRead(async () => {
      const counts = await Promise.all(this.partitionList().map((p) => this.redis.get(this.keys.sequence(p))));
      return counts.map((count, p) => {
        const seq = Number(count ?? 0);
        if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`${this.keys.sequence(p)} is ${JSON.stringify(count)}, not a count: run npm run verify`);
        return positionAt(seq);
      });
    });
  }

  /** Whether the feed still holds every event after `positions`, and its oldest position. */
  async check(positions: readonly Position[]): Promise<FeedCheck> {
    return redisRead(async () => {
      const replies = await Promise.all(
        this.partitionList().map((p) => Promise.all([this.redis.xrangeBuffer(this.keys.stream(p), '-', '+', 'COUNT', 1), this.redis.get(this.keys.sequence(p))])),
      );
      let expired = false;
      let foreign = false;
      const oldest = positions.map((pos, p) => {
        const [entries, count] = replies[p]!;
        const total = Number(count ?? 0);
        const first = (entries as unknown as StreamEntry[])[0];
        // Sequence numbers are consecutive: events 1..firstSeq-1 are gone.
        const firstSeq = first ? decodeEntry(first[0].toString(), first[1]).first : total + 1;
        if (pos.seq > total) foreign = true;
        if (pos.seq < firstSeq - 1) expired = true;
        return positionAt(firstSeq - 1);
      });
      return { expired, oldest, foreign };
    });
  }

  /** The events of up to `count` entries of one partition after `after`, in order. */
  async after(partition: number, after: Position, count: number): Promise<FeedEvent[]> {
    return redisRead(async () => {
      const entries = (await this.redis.xrangeBuffer(this.keys.stream(partition), `(${idOfSeq(after.seq)}`, '+', 'COUNT', count)) as unknown as StreamEntry[];
      return toEvents(partition, entries, after.seq);
    });
  }

  /**
   * Waits up to `blockMs` for events after `positions` on any partition, on the dedicated
   * connection; the events of at most `count` entries per partition. Empty when none came.
   */
  async wait(positions: readonly Position[], count: number, blockMs: number): Promise<FeedEvent[]> {
    if (this.notifier) return this.waitCluster(this.notifier, positions, count, blockMs);
    const blocking = this.blocking!;
    return redisRead(async () => {
      if (blocking.status === 'wait') await blocking.connect();
      const streams = positions.map((_, p) => this.keys.stream(p));
      const reply = (await blocking.xreadBuffer(
        'COUNT',
        count,
        'BLOCK',
        blockMs,
        'STREAMS',
        ...streams,
        ...positions.map((pos) => idOfSeq(pos.seq)),
      )) as unknown as [Buffer, StreamEntry[]][] | null;
      if (!reply) return [];
      const partitionOf = new Map(streams.map((s, p) => [s, p]));
      return reply.flatMap(([stream, entries]) => {
        const p = partitionOf.get(stream.toString())!;
        return toEvents(p, entries, positions[p]!.seq);
      });
    });
  }

  /** wait() on a cluster: read the partitions the notifier says changed, each on its own. */
  private async waitCluster(notifier: ClusterNotifier, positions: readonly Position[], count: number, blockMs: number): Promise<FeedEvent[]> {
    const changed = await notifier.next(blockMs);
    const partitions = changed === 'all' ? this.partitionList() : [...changed];
    let batches: FeedEvent[][];
    try {
      batches = await Promise.all(partitions.map((p) => this.after(p, positions[p]!, count)));
    } catch (err) {
      notifier.mark(partitions); // read them again next time
      throw err;
    }
    // A partition that filled its count may have more: read it again at once.
    notifier.mark(partitions.filter((_, i) => batches[i]!.length >= count));
    return batches.flat();
  }

  private partitionList(): number[] {
    return [...Array(this.keys.partitions).keys()];
  }

  /**
   * Nobody reads for now (the hub stopped): on a cluster, stop hearing every XADD. The next
   * wait() subscribes again and reads every partition once. On one Redis an idle blocking
   * connection costs nothing, and it stays open.
   */
  pause(): void {
    this.notifier?.pause();
  }

  close(): void {
    this.blocking?.disconnect();
    this.notifier?.close();
  }
}
