// Reading the change feed: one Redis stream per partition, written by put.lua and delete.lua in
// the same script as the data. A position in the feed is, per partition, the stream ID of the
// last event seen and its sequence number (the partition's event count, which tells whether
// events after a position have been trimmed away).
import type { Redis } from 'ioredis';
import { ClusterNotifier } from './clusterFeed.js';
import { redisRead } from './errors.js';
import type { Keyspace } from './keys.js';
import { duplicateClient, isCluster, type RedisClient } from './redis.js';
import type { Entry } from './store.js';

export interface Position {
  /** Stream ID "ms-seq" of the last event seen; "0-0" before the first. */
  id: string;
  /** The sequence number of that event: 1 for a partition's first event, 0 before it. */
  seq: number;
}

export interface FeedEvent {
  partition: number;
  id: string;
  seq: number;
  type: 'PUT' | 'DELETE';
  key: string;
  /** The version written by a PUT, or the version a DELETE removed. */
  version: number;
  /** The entry as the PUT wrote it; null for a DELETE. */
  entry: Entry | null;
}

export const START: Position = { id: '0-0', seq: 0 };

/** Orders stream IDs "ms-seq" numerically. */
export function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-');
  const [bm, bs] = b.split('-');
  return Number(am) - Number(bm) || Number(as) - Number(bs);
}

type StreamEntry = [id: string, fields: string[]];

function toEvent(partition: number, [id, fields]: StreamEntry): FeedEvent {
  const f: Record<string, string> = {};
  for (let i = 0; i < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
  const key = f.k!;
  const version = Number(f.n);
  const put = f.t === 'P';
  return {
    partition,
    id,
    seq: Number(f.q),
    type: put ? 'PUT' : 'DELETE',
    key,
    version,
    entry: put ? { key, value: f.v!, version, createdAt: Number(f.c), updatedAt: Number(f.u) } : null,
  };
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
    // One command per partition (each its own slot on a cluster), all sent at once.
    return redisRead(async () => {
      const replies = await Promise.all(this.partitionList().map((p) => this.redis.xrevrange(this.keys.stream(p), '+', '-', 'COUNT', 1)));
      return replies.map((entries, p) => {
        const last = (entries as StreamEntry[])[0];
        return last ? { id: last[0], seq: toEvent(p, last).seq } : START;
      });
    });
  }

  /** Whether the feed still holds every event after `positions`, and its oldest position. */
  async check(positions: readonly Position[]): Promise<FeedCheck> {
    return redisRead(async () => {
      const replies = await Promise.all(
        this.partitionList().map((p) => Promise.all([this.redis.xrange(this.keys.stream(p), '-', '+', 'COUNT', 1), this.redis.get(this.keys.sequence(p))])),
      );
      let expired = false;
      let foreign = false;
      const oldest = positions.map((pos, p) => {
        const [entries, count] = replies[p]!;
        const total = Number(count ?? 0);
        const first = (entries as StreamEntry[])[0];
        // Sequence numbers are consecutive: events 1..firstSeq-1 are gone.
        const firstSeq = first ? toEvent(p, first).seq : total + 1;
        if (pos.seq > total) foreign = true;
        if (pos.seq < firstSeq - 1) expired = true;
        return { id: '0-0', seq: firstSeq - 1 };
      });
      return { expired, oldest, foreign };
    });
  }

  /** Up to `count` events of one partition after `after`, in stream order. */
  async after(partition: number, after: Position, count: number): Promise<FeedEvent[]> {
    return redisRead(async () => {
      const entries = (await this.redis.xrange(this.keys.stream(partition), `(${after.id}`, '+', 'COUNT', count)) as StreamEntry[];
      return entries.map((e) => toEvent(partition, e));
    });
  }

  /**
   * Waits up to `blockMs` for events after `positions` on any partition, on the dedicated
   * connection; at most `count` per partition. Empty when none came.
   */
  async wait(positions: readonly Position[], count: number, blockMs: number): Promise<FeedEvent[]> {
    if (this.notifier) return this.waitCluster(this.notifier, positions, count, blockMs);
    const blocking = this.blocking!;
    return redisRead(async () => {
      if (blocking.status === 'wait') await blocking.connect();
      const streams = positions.map((_, p) => this.keys.stream(p));
      const reply = (await blocking.xread(
        'COUNT',
        count,
        'BLOCK',
        blockMs,
        'STREAMS',
        ...streams,
        ...positions.map((pos) => pos.id),
      )) as [string, StreamEntry[]][] | null;
      if (!reply) return [];
      const partitionOf = new Map(streams.map((s, p) => [s, p]));
      return reply.flatMap(([stream, entries]) => entries.map((e) => toEvent(partitionOf.get(stream)!, e)));
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
