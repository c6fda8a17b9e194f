// Reading the change feed: one Redis stream per partition, written by put.lua and delete.lua in
// the same script as the data. A position in the feed is, per partition, the stream ID of the
// last event seen and its sequence number (the partition's event count, which tells whether
// events after a position have been trimmed away).
import type { Redis } from 'ioredis';
import { redisRead } from './errors.js';
import type { Keyspace } from './keys.js';
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
  constructor(
    private readonly redis: Redis,
    /** A dedicated connection: XREAD BLOCK holds it for the whole wait. */
    private readonly blocking: Redis,
    private readonly keys: Keyspace,
  ) {}

  get partitions(): number {
    return this.keys.partitions;
  }

  /** The current end of every partition's feed: a subscription "from now" starts here. */
  async heads(): Promise<Position[]> {
    return redisRead(async () => {
      const pipe = this.redis.pipeline();
      for (let p = 0; p < this.keys.partitions; p++) pipe.xrevrange(this.keys.stream(p), '+', '-', 'COUNT', 1);
      const replies = (await pipe.exec())!;
      return replies.map(([err, entries], p) => {
        if (err) throw err;
        const last = (entries as StreamEntry[])[0];
        return last ? { id: last[0], seq: toEvent(p, last).seq } : START;
      });
    });
  }

  /** Whether the feed still holds every event after `positions`, and its oldest position. */
  async check(positions: readonly Position[]): Promise<FeedCheck> {
    return redisRead(async () => {
      const pipe = this.redis.pipeline();
      for (let p = 0; p < this.keys.partitions; p++) {
        pipe.xrange(this.keys.stream(p), '-', '+', 'COUNT', 1);
        pipe.get(this.keys.sequence(p));
      }
      const replies = (await pipe.exec())!;
      let expired = false;
      let foreign = false;
      const oldest = positions.map((pos, p) => {
        const [err1, entries] = replies[2 * p]!;
        const [err2, count] = replies[2 * p + 1]!;
        if (err1) throw err1;
        if (err2) throw err2;
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
    return redisRead(async () => {
      if (this.blocking.status === 'wait') await this.blocking.connect();
      const streams = positions.map((_, p) => this.keys.stream(p));
      const reply = (await this.blocking.xread(
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

  close(): void {
    this.blocking.disconnect();
  }
}
