// Batches over several partitions on a Redis Cluster. A script reaches one slot, so one
// partition, and such a batch cannot be one script as it is on one Redis. It is written in
// steps that make it durable and always complete (README, "Scaling out"):
//   1. prepare: every part but the coordinator's (the first item's partition) stores its items
//      (lua/batchPrepare.lua); a full node refuses here, before anything is applied;
//   2. commit: the coordinator's part is stored with the batch's id in its pending set, in one
//      script: from here on the batch completes;
//   3. apply: every part is applied once (lua/batchApply.lua), in parallel;
//   4. forget: the coordinator's part and pending entry, then the other parts (batchForget.lua).
// A writer that dies after step 2 leaves the batch pending; rollForward, run by every API
// process, applies what is missing and forgets it. What differs from one Redis: readers may see
// some parts before others while it is applied, and compare-and-set cannot span partitions.
import { randomBytes } from 'node:crypto';
import { StoreError } from './errors.js';
import type { Keyspace } from './keys.js';
import type { Client, Entry, PutItem, ScriptCall } from './store.js';

/**
 * A prepared part that was never forgotten (its writer died, or never committed) expires after
 * this long. Roll-forward completes a committed batch within seconds of the crash; a part whose
 * node is unreachable for longer than this is lost (README, "Scaling out").
 */
export const PART_EXPIRY_SECONDS = 7 * 24 * 3600;

/** Batches one roll-forward pass completes per coordinating partition, at most. */
const ROLL_FORWARD_BATCHES = 100;

type Write = (call: ScriptCall, check?: boolean) => Promise<unknown[]>;

export interface RollForwardReport {
  /** Committed batches completed (and forgotten). */
  completed: number;
  /** Parts of committed batches that no longer existed unapplied or applied: lost writes. */
  missingParts: string[];
}

export class ClusterBatches {
  constructor(
    private readonly keys: Keyspace,
    private readonly feedRetention: number,
    private readonly redis: Client,
    /** The store's write path: error mapping, and WAIT for replicas when configured. */
    private readonly write: Write,
    /** The store's reading of a put script's reply. */
    private readonly entries: (items: readonly PutItem[], reply: readonly unknown[]) => Entry[],
  ) {}

  /** Writes a batch whose items (grouped in `parts`, the first item's partition first) span partitions. */
  async put(items: readonly PutItem[], parts: Map<number, PutItem[]>): Promise<Entry[]> {
    const conditional = items.filter((i) => i.expectedVersion != null).map((i) => i.key);
    if (conditional.length > 0) {
      throw new StoreError(
        'CROSS_PARTITION_CAS',
        `on a Redis Cluster a batch that compares versions (expectedVersion) must keep its keys in one partition; this one spans ${parts.size} partitions. ` +
          'Send the conditional items one by one, or as batches of keys of one partition',
        { partitions: parts.size, conditionalKeys: conditional.slice(0, 10) },
      );
    }
    const id = randomBytes(8).toString('hex');
    const [coordinator, ...others] = [...parts.keys()] as [number, ...number[]];
    try {
      await Promise.all(others.map((p) => this.write(['kvBatchPrepare', [this.keys.batchPart(p, id)], [String(PART_EXPIRY_SECONDS), payload(parts.get(p)!)]])));
    } catch (err) {
      // Nothing is committed, so nothing will be applied: drop what was prepared (a part this
      // misses expires by itself).
      await this.forget(id, others).catch(() => {});
      throw err;
    }
    try {
      await this.write([
        'kvBatchPrepare',
        [this.keys.batchPart(coordinator, id), this.keys.pendingBatches(coordinator)],
        [String(PART_EXPIRY_SECONDS), payload(parts.get(coordinator)!), id, [...parts.keys()].join(','), String(Date.now())],
      ]);
    } catch (err) {
      // Refused for memory: certainly not committed. Any other failure may have committed it,
      // and then roll-forward needs the prepared parts.
      if (err instanceof StoreError && err.code === 'CAPACITY_EXCEEDED') await this.forget(id, others).catch(() => {});
      throw err;
    }
    const applied = await Promise.all([...parts].map(([p, group]) => this.apply(id, p, group)));
    await this.forget(id, [...parts.keys()]);
    const byKey = new Map(applied.flat().map((e) => [e.key, e]));
    return items.map((i) => byKey.get(i.key)!);
  }

  /** Applies one part (a no-op returning the first reply if it was applied before). */
  private async apply(id: string, p: number, group: readonly PutItem[]): Promise<Entry[]> {
    const keys = [this.keys.batchPart(p, id), ...scriptKeys(this.keys, group.map((i) => i.key))];
    const args = [String(group.length), String(this.feedRetention)];
    for (const item of group) args.push(item.key, item.value);
    const reply = await this.write(['kvBatchApply', keys, args], false);
    if (reply[0] === 'GONE') {
      throw new StoreError(
        'STORE_UNAVAILABLE',
        `the batch was committed, but its part in partition ${p} was completed and forgotten by another process's roll-forward meanwhile; it is applied: read the keys for their versions`,
      );
    }
    if (reply[0] !== 'OK') throw new Error(`unexpected batchApply reply ${JSON.stringify(reply[0])}`);
    return this.entries(group, reply);
  }

  /** Forgets a batch's parts: the coordinator's (the first partition) first, which ends it. */
  private async forget(id: string, partitions: readonly number[]): Promise<void> {
    const [first, ...rest] = partitions;
    if (first === undefined) return;
    await this.write(['kvBatchForget', [this.keys.batchPart(first, id), this.keys.pendingBatches(first)], [id]], false);
    await Promise.all(rest.map((p) => this.write(['kvBatchForget', [this.keys.batchPart(p, id)], [id]], false)));
  }

  /**
   * Completes the batches committed more than `olderThanMs` ago and still pending: their
   * writer died between commit and forget. At most ROLL_FORWARD_BATCHES per partition.
   */
  async rollForward(olderThanMs: number): Promise<RollForwardReport> {
    const report: RollForwardReport = { completed: 0, missingParts: [] };
    const cutoff = Date.now() - olderThanMs;
    const partitions = [...Array(this.keys.partitions).keys()];
    await Promise.all(
      partitions.map(async (c) => {
        const ids = await this.redis.zrangebyscore(this.keys.pendingBatches(c), '-inf', cutoff, 'LIMIT', 0, ROLL_FORWARD_BATCHES);
        for (const id of ids) {
          const list = await this.redis.hget(this.keys.batchPart(c, id), 'p');
          const parts = list ? list.split(',').map(Number) : [c];
          for (const p of parts) {
            const [state, data] = await this.redis.hmget(this.keys.batchPart(p, id), 's', 'd');
            if (state === 'prepared' && data != null) await this.apply(id, p, items(data));
            else if (state !== 'applied') report.missingParts.push(this.keys.batchPart(p, id));
          }
          await this.forget(id, parts);
          report.completed++;
        }
      }),
    );
    return report;
  }
}

/** The KEYS of put.lua, delete.lua and batchApply.lua: per key its bucket hash, index, stream and sequence. */
export function scriptKeys(keyspace: Keyspace, keys: readonly string[]): string[] {
  const n = keys.length;
  const out: string[] = new Array(4 * n);
  keys.forEach((key, i) => {
    const p = keyspace.partition(key);
    out[i] = keyspace.bucket(key, p);
    out[n + i] = keyspace.index(p);
    out[2 * n + i] = keyspace.stream(p);
    out[3 * n + i] = keyspace.sequence(p);
  });
  return out;
}

/** A part's items as batchPrepare.lua stores them: JSON [key, value, key, value, ...]. */
function payload(group: readonly PutItem[]): string {
  return JSON.stringify(group.flatMap((i) => [i.key, i.value]));
}

function items(data: string): PutItem[] {
  const flat = JSON.parse(data) as string[];
  const out: PutItem[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push({ key: flat[i]!, value: flat[i + 1]! });
  return out;
}
