// Reading a partition's change-feed stream straight from Redis, for tests and experiments that
// check what the write scripts appended: every event, decoded as the feed reader decodes it
// (src/store/feedFormat.ts), with the ID of the stream entry that holds it.
import type { Cluster, Redis } from 'ioredis';
import { decodeEntry, type PackedEvent } from '../../src/store/feedFormat.js';

export interface StreamEvent extends PackedEvent {
  /** The ID of the stream entry holding the event (an entry holds one script call's events). */
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

/** A PUT event packed as put.lua packs it, for tests that write the feed by hand. */
export function packPut(version: number, createdAt: number, updatedAt: number, key: string, value: string): Buffer {
  const k = Buffer.from(key);
  const v = Buffer.from(value);
  const head = Buffer.alloc(27);
  head.write('P', 0);
  head.writeUIntLE(version, 1, 6);
  head.writeUIntLE(createdAt, 7, 6);
  head.writeUIntLE(updatedAt, 13, 6);
  head.writeUInt32LE(k.length, 19);
  head.writeUInt32LE(v.length, 23);
  return Buffer.concat([head, k, v]);
}

/** A DELETE event packed as delete.lua packs it. */
export function packDelete(version: number, key: string): Buffer {
  const k = Buffer.from(key);
  const head = Buffer.alloc(11);
  head.write('D', 0);
  head.writeUIntLE(version, 1, 6);
  head.writeUInt32LE(k.length, 7);
  return Buffer.concat([head, k]);
}
