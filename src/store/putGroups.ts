// Grouped puts: while puts are in flight to Redis (GROUP_FROM_IN_FLIGHT of them), the
// unconditional puts of one partition that arrive in the same turn of the event loop are written
// by one put.lua call at the loop's check phase, instead of one call each. With fewer in flight
// a put is sent at once, so a lone client never waits for company.
//
// Why: a stream of random writes at 32 clients cost Redis about 56 µs of CPU per put, much of it
// per call rather than per item (the script's dispatch, its TIME, its XADD and counter reads,
// the MULTI/EXEC that wraps its effects in the AOF), and cost the API one command to encode and
// one reply to parse per put. The same idea as a database's group commit (Redis already fsyncs
// once per turn of its loop, so the puts of one turn shared an fsync before this too).
//
// Each put stays its own: it resolves with its own entry (its own version), fails with its own
// error, and is in the change feed as its own event (the group's events share one stream entry,
// as a batch's do). What is grouped:
// - only puts without an expected version: put.lua is all or nothing, so one compare-and-set
//   that fails would fail the puts grouped with it;
// - one partition per group, so a group is one Redis Cluster slot and, as every write within one
//   partition, either wholly written or not at all;
// - a key at most once per group: a second put of a key sends the group holding the first, and
//   starts the next one, which follows it on the same connection;
// - at most MAX_ITEMS puts and MAX_CHARS of keys and values (and never more puts than the feed
//   retains, or a group would trim its own events).
// A script error (put.lua raises before its first write, for a stored entry it cannot read)
// sends each put of the group again on its own, so the error reaches only the put it is about.
// Any other failure reaches every put of the group: Redis refused or lost the one call they shared.
import { ReplyError } from 'ioredis';
import type { Entry, PutItem } from './store.js';

/**
 * How many calls must be in flight before a put waits to join a group. From one on, waiting
 * for company cost puts at four clients (0.923-0.950 of the puts per second in three runs of
 * `npm run bench:ab`, against 1.000 from two on; README, "Grouped puts"): a put sent at once
 * then still meets Redis's next turn. With two in flight, Redis has a queue anyway.
 */
const GROUP_FROM_IN_FLIGHT = 2;
/** The most puts one call writes: some 6 ms of Redis's time (a batch of 1,000 took 23.9 ms). */
const MAX_ITEMS = 256;
/** The most characters of keys and values one call carries (at most 3 MiB of UTF-8). */
const MAX_CHARS = 1 << 20;

interface Group {
  items: PutItem[];
  keys: Set<string>;
  chars: number;
  waiters: { resolve: (entry: Entry) => void; reject: (err: unknown) => void }[];
}

export class PutGroups {
  /** Calls sent and not yet answered. */
  private inFlight = 0;
  /** The group being gathered in each partition, sent at the loop's check phase. */
  private readonly open = new Map<number, Group>();
  private scheduled = false;
  private readonly maxItems: number;

  constructor(
    /** Writes the items in one script call (every one or none), in the order given. */
    private readonly write: (items: PutItem[]) => Promise<Entry[]>,
    private readonly partitionOf: (key: string) => number,
    feedRetention: number,
  ) {
    this.maxItems = Math.max(1, Math.min(MAX_ITEMS, feedRetention));
  }

  /** Writes an unconditional put, alone or with others, and resolves with its own entry. */
  put(item: PutItem): Promise<Entry> {
    if (this.inFlight < GROUP_FROM_IN_FLIGHT && this.open.size === 0) return this.alone(item);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const partition = this.partitionOf(item.key);
      const chars = item.key.length + item.value.length;
      let group = this.open.get(partition);
      if (group && (group.keys.has(item.key) || group.items.length >= this.maxItems || group.chars + chars > MAX_CHARS)) {
        this.open.delete(partition);
        void this.send(group);
        group = undefined;
      }
      if (!group) {
        group = { items: [], keys: new Set(), chars: 0, waiters: [] };
        this.open.set(partition, group);
      }
      group.items.push(item);
      group.keys.add(item.key);
      group.chars += chars;
      group.waiters.push(waiter);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    });
  }

  private async alone(item: PutItem): Promise<Entry> {
    this.inFlight++;
    try {
      return (await this.write([item]))[0]!;
    } finally {
      this.inFlight--;
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const groups = [...this.open.values()];
    this.open.clear();
    for (const group of groups) void this.send(group);
  };

  private async send({ items, waiters }: Group): Promise<void> {
    this.inFlight++;
    try {
      const entries = await this.write(items);
      waiters.forEach((w, i) => w.resolve(entries[i]!));
    } catch (err) {
      if (items.length > 1 && err instanceof ReplyError) {
        // Nothing was written (put.lua raises before its first write): each on its own.
        items.forEach((item, i) => void this.alone(item).then(waiters[i]!.resolve, waiters[i]!.reject));
      } else {
        for (const w of waiters) w.reject(err);
      }
    } finally {
      this.inFlight--;
    }
  }
}
