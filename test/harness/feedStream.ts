// Reading a partition's change-feed stream straight from Redis, for tests and experiments that
// check what the write scripts appended: every event, decoded as the feed reader decodes it
// (src/store/feedFormat.ts), with the ID of the stream entry that holds it.
import type { Cluster, Redis } from 'ioredis';
import { decodeEntry, type PackedEvent } from '../../src/store/feedFormat.js';

export interface StreamEvent extends PackedEvent {
  /** The ID of the stream entry holding the event (an entry holds one write's events). */
  entryId: string;
}

/** Every event of `stream` in the entries after entry ID `after` ('-': from the first), in order. */
export async function streamEvents(redis: Redis | Cluster, stream: string, after = '-'): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  let start = after === '-' ? '-' : `(${after}`;
  for (let page = 0; page < 1_000_000; page++) {
    const entries = (await redis.xrangeBuffer(stream, start, '+', 'COUNT', 1000)) as unknown as [Buffer, Buffer[]][];
    for (const [id, fields] of entries) {
      const entryId = id.toString();
      for (const e of decodeEntry(entryId, fields).events) out.push({ ...e, entryId });
    }
    if (entries.length < 1000) break;
    start = `(${entries[entries.length - 1]![0].toString()}`;
  }
  return out;
}
