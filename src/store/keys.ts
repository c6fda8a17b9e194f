// Every Redis key kvql reads or writes is named here, and nowhere else.
//
// Layout (see README "Redis layout"):
//   <prefix>:meta             hash   { partitions, buckets, layout }   one per keyspace
//   {<prefix>:<p>}:i          zset   every key of partition p, score 0, ordered by bytes (BYLEX)
//   {<prefix>:<p>}:b:<b>      hash   bucket b of partition p: field <key> per entry, its value
//                                    the packed entry (ENTRY_HEADER_BYTES of header, then the value)
//   {<prefix>:<p>}:s          stream the partition's change feed, one entry per script call and
//                                    partition (format in feedFormat.ts)
//   {<prefix>:<p>}:q          string how many events partition p has ever had (the feed's sequence)
//   {<prefix>:<p>}:x:<id>     hash   on a Redis Cluster only: partition p's part of batch <id>, which
//                                    spans partitions (lua/batchPrepare.lua)
//   {<prefix>:<p>}:xq         zset   on a Redis Cluster only: the committed multi-partition batches
//                                    partition p coordinates, by commit time (ms)
//   {<prefix>:rl/<tokenId>}   hash   a token's rate-limit state { t, r, b } (lua/rateLimit.lua);
//                                    expires once the token is idle (see rateLimitKey)
//
// All keys of one partition share the hash tag {<prefix>:<p>}, so a script that touches one
// partition touches one Redis Cluster slot.
//
// A packed entry: version, createdAt ms and updatedAt ms as 6-byte unsigned little-endian
// integers (Lua: struct.pack('<I6I6I6', ...)), then the value's UTF-8 bytes.

// Layout 3 is layout 2 with the change feed's entries of feedFormat.ts; KvStore.open moves a
// layout-2 keyspace to it (lua/migrateFeed.lua).
export const LAYOUT_VERSION = '3';

/**
 * Buckets per partition for a keyspace created without a count (KV_BUCKETS unset). An existing
 * keyspace keeps the count it was created with (KvStore.open reads it from the meta key), so
 * this default may change between versions. It was 16,384 until 2026-11-28: at 1,000,000 keys,
 * about 31 keys per bucket measured the same memory per key as 61, and writes that scan shorter
 * buckets (docs/layout.md, "Bucket size").
 */
export const DEFAULT_BUCKETS = 32_768;
export const MAX_BUCKETS = 1_048_576;

/** Whether `n` can be a keyspace's bucket count: a whole number in 1..MAX_BUCKETS. */
export const isBucketCount = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= MAX_BUCKETS;

/** The packed entry's header: version, createdAt, updatedAt, 6 bytes each. */
export const ENTRY_HEADER_BYTES = 18;

/** Namespaces are restricted so that no prefix can forge another's hash tag. */
export const PREFIX_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

const utf8 = new TextEncoder();

/**
 * A key's partition: 32-bit FNV-1a over the key's UTF-8 bytes, mod the partition count.
 * Stable across processes, Node versions and machines, which is all it must be.
 */
export function partitionOf(key: string, partitions: number): number {
  if (partitions === 1) return 0;
  return (fnv1a(key, 0x811c9dc5) >>> 0) % partitions;
}

/** 32-bit FNV-1a over the key's UTF-8 bytes from the given offset basis (as a signed int). */
function fnv1a(key: string, basis: number): number {
  // Most keys are ASCII, whose UTF-8 bytes are their char codes: no encoding needed.
  let h = basis;
  let ascii = true;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c >= 0x80) {
      ascii = false;
      break;
    }
    h ^= c;
    h = Math.imul(h, 0x01000193);
  }
  if (ascii) return h;
  const bytes = utf8.encode(key);
  h = basis;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h;
}

/**
 * A key's bucket within its partition: 32-bit FNV-1a over the key's UTF-8 bytes from another
 * offset basis, then MurmurHash3's finalizer, mod the bucket count. Independent of the partition
 * hash: FNV-1a's low bits depend only on the low bits of its state, so without the finalizer the
 * keys of one partition (h mod P fixed) would use only some buckets when P and B share factors.
 */
export function bucketOf(key: string, buckets: number): number {
  if (buckets === 1) return 0;
  let h = fnv1a(key, 0x050c5d1f);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % buckets;
}

/** The keyspace's meta hash: partitions, buckets and layout, written once at creation. */
export const metaKey = (prefix: string): string => `${prefix}:meta`;

export class Keyspace {
  readonly meta: string;
  private readonly tags: string[];

  constructor(
    readonly prefix: string,
    readonly partitions: number,
    readonly buckets: number = DEFAULT_BUCKETS,
  ) {
    if (!PREFIX_PATTERN.test(prefix)) throw new Error(`invalid key prefix ${JSON.stringify(prefix)}`);
    if (!isBucketCount(buckets)) throw new Error(`invalid bucket count ${buckets}`);
    this.meta = metaKey(prefix);
    this.tags = Array.from({ length: partitions }, (_, p) => `{${prefix}:${p}}`);
  }

  partition(key: string): number {
    return partitionOf(key, this.partitions);
  }

  bucketOf(key: string): number {
    return bucketOf(key, this.buckets);
  }

  /** `items` grouped by the partition of their key, in first-seen order. */
  byPartition<T>(items: readonly T[], keyOf: (item: T) => string): Map<number, T[]> {
    const groups = new Map<number, T[]>();
    for (const item of items) {
      const p = this.partition(keyOf(item));
      const group = groups.get(p);
      if (group) group.push(item);
      else groups.set(p, [item]);
    }
    return groups;
  }

  index(partition: number): string {
    return `${this.tags[partition]}:i`;
  }

  /** The bucket hash of `key` (field `key` in it), or bucket number `bucket` of `partition`. */
  bucket(key: string, partition = this.partition(key), bucket = this.bucketOf(key)): string {
    return `${this.tags[partition]}:b:${bucket}`;
  }

  stream(partition: number): string {
    return `${this.tags[partition]}:s`;
  }

  sequence(partition: number): string {
    return `${this.tags[partition]}:q`;
  }

  /** Partition p's part of the multi-partition batch `id` (Redis Cluster only). */
  batchPart(partition: number, id: string): string {
    return `${this.tags[partition]}:x:${id}`;
  }

  /** The committed multi-partition batches partition p coordinates (Redis Cluster only). */
  pendingBatches(partition: number): string {
    return `${this.tags[partition]}:xq`;
  }
}

/** A packed entry as stored in its bucket: null if it is too short to hold the header. */
export function unpackEntry(packed: Buffer): { version: number; createdAt: number; updatedAt: number; value: string } | null {
  if (packed.length < ENTRY_HEADER_BYTES) return null;
  return {
    version: packed.readUIntLE(0, 6),
    createdAt: packed.readUIntLE(6, 6),
    updatedAt: packed.readUIntLE(12, 6),
    value: packed.toString('utf8', ENTRY_HEADER_BYTES),
  };
}

/** Packs an entry as the scripts do (for tests and tools that write the layout by hand). */
export function packEntry(version: number, createdAt: number, updatedAt: number, value: string | Buffer): Buffer {
  const header = Buffer.alloc(ENTRY_HEADER_BYTES);
  header.writeUIntLE(version, 0, 6);
  header.writeUIntLE(createdAt, 6, 6);
  header.writeUIntLE(updatedAt, 12, 6);
  return Buffer.concat([header, typeof value === 'string' ? Buffer.from(value, 'utf8') : value]);
}

/** A token id as the token configuration allows it (auth/tokens.ts TokenEntrySchema). */
export const TOKEN_ID_PATTERN = /^[A-Za-z0-9_.:@-]{1,64}$/;

/**
 * The rate-limit state of token `tokenId` in keyspace `prefix` (lua/rateLimit.lua):
 *   {<prefix>:rl/<tokenId>}   hash   { t, r, b }   expires once the token is idle
 * The whole name is its own hash tag, so each token's state sits in a slot of its own on a
 * Redis Cluster (no hot slot for all tokens) and one script reaches it. The "/" appears in
 * neither a prefix (PREFIX_PATTERN) nor a token id, and neither holds "{" or "}": so the tag can
 * never equal a partition's tag {<prefix>:<number>} of any keyspace (whose text has no "/"), and
 * (prefix, token id) pairs map to distinct keys (the first "/" splits them). verify.ts skips it
 * (it is not of the {<prefix>:<p>} form).
 */
export function rateLimitKey(prefix: string, tokenId: string): string {
  if (!PREFIX_PATTERN.test(prefix)) throw new Error(`invalid key prefix ${JSON.stringify(prefix)}`);
  if (!TOKEN_ID_PATTERN.test(tokenId)) throw new Error(`invalid token id ${JSON.stringify(tokenId)}`);
  return `{${prefix}:rl/${tokenId}}`;
}
