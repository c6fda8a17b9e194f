// The change feed's stream entries (layout 3), as the write scripts append them: the events one
// script call makes in one partition go into entries of at most FEED_ENTRY_BYTES of packed events
// (an event larger than that gets an entry of its own), so that a batch of 1,000 small items
// costs Redis a few XADDs instead of 1,000, and a reader's memory per entry stays bounded.
//
//   ID   "0-<seq of the entry's last event>"  (so stream IDs count events, and a position in
//        the feed is its sequence number alone: the events after seq s are in the entries after
//        ID 0-s, the first of them perhaps also holding some at or before s)
//   q    the sequence number of the entry's first event (q = last + 1 for an entry of no events:
//        the mark the move from layout 2 leaves, see lua/migrateFeed.lua)
//   e    the events, packed back to back:
//          PUT     "P", version, createdAt ms, updatedAt ms (6-byte unsigned little-endian each),
//                  key bytes, value bytes (4 bytes each), the key, the value
//          DELETE  "D", version (6 bytes), key bytes (4), the key
//        (Lua: struct.pack('<I6I6I6I4I4', ...) and struct.pack('<I6I4', ...)); keys and values
//        are UTF-8, so the field is binary: read streams with the *Buffer commands.
// Retention trims by ID (XADD MINID ~ 0-<last - retention + 1>): by events, not entries.

/** One event of an entry, before it is given its partition. */
export interface PackedEvent {
  seq: number;
  type: 'P' | 'D';
  key: string;
  version: number;
  /** PUT only. */
  value?: string;
  createdAt?: number;
  updatedAt?: number;
}

export interface DecodedEntry {
  id: string;
  /** The sequence number of the entry's first event (its q). */
  first: number;
  /** The sequence number its ID names, its last event's (first - 1 for an entry of no events). */
  last: number;
  events: PackedEvent[];
}

/** The write scripts' FEED_ENTRY_BYTES (put.lua, delete.lua, batchApply.lua). */
export const FEED_ENTRY_BYTES = 65_536;

const PUT = 0x50; // "P"
const DELETE = 0x44; // "D"
const PUT_HEADER = 1 + 6 * 3 + 4 * 2;
const DELETE_HEADER = 1 + 6 + 4;

export class MalformedEntryError extends Error {}

/** The sequence number a stream ID names (its part after the dash). */
export function seqOfId(id: string): number {
  return Number(id.slice(id.indexOf('-') + 1));
}

/** The stream ID after which every event past `seq` lies. */
export function idOfSeq(seq: number): string {
  return `0-${seq}`;
}

/**
 * Decodes one stream entry (fields as Buffers, from XRANGE/XREAD's *Buffer forms). Throws
 * MalformedEntryError when it is not an entry of this format, or its ID disagrees with its
 * events.
 */
export function decodeEntry(id: string, fields: readonly Buffer[]): DecodedEntry {
  let q: number | undefined;
  let packed: Buffer | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i]!.toString();
    const value = fields[i + 1]!;
    if (name === 'q') q = Number(value.toString());
    else if (name === 'e') packed = value;
  }
  if (q === undefined || !Number.isSafeInteger(q) || q < 1) throw new MalformedEntryError(`entry ${id} has no positive sequence number (q)`);
  if (packed === undefined) throw new MalformedEntryError(`entry ${id} has no events field (e)`);
  if (!id.startsWith('0-')) throw new MalformedEntryError(`entry ${id} has a time-based ID, not 0-<sequence number>`);
  const events: PackedEvent[] = [];
  let at = 0;
  while (at < packed.length) {
    const seq = q + events.length;
    const type = packed[at];
    if (type === PUT && at + PUT_HEADER <= packed.length) {
      const version = packed.readUIntLE(at + 1, 6);
      const createdAt = packed.readUIntLE(at + 7, 6);
      const updatedAt = packed.readUIntLE(at + 13, 6);
      const keyBytes = packed.readUInt32LE(at + 19);
      const valueBytes = packed.readUInt32LE(at + 23);
      const keyAt = at + PUT_HEADER;
      const end = keyAt + keyBytes + valueBytes;
      if (end > packed.length) break;
      events.push({ seq, type: 'P', key: packed.toString('utf8', keyAt, keyAt + keyBytes), version, value: packed.toString('utf8', keyAt + keyBytes, end), createdAt, updatedAt });
      at = end;
    } else if (type === DELETE && at + DELETE_HEADER <= packed.length) {
      const version = packed.readUIntLE(at + 1, 6);
      const keyBytes = packed.readUInt32LE(at + 7);
      const keyAt = at + DELETE_HEADER;
      if (keyAt + keyBytes > packed.length) break;
      events.push({ seq, type: 'D', key: packed.toString('utf8', keyAt, keyAt + keyBytes), version });
      at = keyAt + keyBytes;
    } else break;
  }
  if (at !== packed.length) throw new MalformedEntryError(`entry ${id}: event ${events.length + 1} is cut short or of an unknown type`);
  const last = q + events.length - 1;
  if (seqOfId(id) !== last) throw new MalformedEntryError(`entry ${id} holds events ${q}..${last}; its ID should be ${idOfSeq(last)}`);
  return { id, first: q, last, events };
}
