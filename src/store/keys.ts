// Every Redis key kvql reads or writes is named here, and nowhere else.
//
// Layout (see README "Redis layout"):
//   <prefix>:meta             hash   { partitions, layout }   one per keyspace
//   {<prefix>:<p>}:i          zset   every key of partition p, score 0, ordered by bytes (BYLEX)
//   {<prefix>:<p>}:v:<key>    hash   { v: value, n: version, c: createdAt ms, u: updatedAt ms }
//   {<prefix>:<p>}:s          stream the partition's change feed, one entry per written key
//   {<prefix>:<p>}:q          string how many events partition p has ever had (the feed's sequence)
//
// All keys of one partition share the hash tag {<prefix>:<p>}, so a script that touches one
// partition touches one Redis Cluster slot.

export const LAYOUT_VERSION = '1';

/** Namespaces are restricted so that no prefix can forge another's hash tag. */
export const PREFIX_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

const utf8 = new TextEncoder();

/**
 * A key's partition: 32-bit FNV-1a over the key's UTF-8 bytes, mod the partition count.
 * Stable across processes, Node versions and machines, which is all it must be.
 */
export function partitionOf(key: string, partitions: number): number {
  if (partitions === 1) return 0;
  const bytes = utf8.encode(key);
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

export class Keyspace {
  readonly meta: string;
  private readonly tags: string[];

  constructor(
    readonly prefix: string,
    readonly partitions: number,
  ) {
    if (!PREFIX_PATTERN.test(prefix)) throw new Error(`invalid key prefix ${JSON.stringify(prefix)}`);
    this.meta = `${prefix}:meta`;
    this.tags = Array.from({ length: partitions }, (_, p) => `{${prefix}:${p}}`);
  }

  partition(key: string): number {
    return partitionOf(key, this.partitions);
  }

  index(partition: number): string {
    return `${this.tags[partition]}:i`;
  }

  value(key: string, partition = this.partition(key)): string {
    return `${this.tags[partition]}:v:${key}`;
  }

  stream(partition: number): string {
    return `${this.tags[partition]}:s`;
  }

  sequence(partition: number): string {
    return `${this.tags[partition]}:q`;
  }
}
