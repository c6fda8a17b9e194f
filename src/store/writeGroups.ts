// Grouped writes: while calls of one kind (puts, or deletes) are in flight to Redis
// (GROUP_FROM_IN_FLIGHT of them), the unconditional writes of that kind to one partition that
// arrive in the same turn of the event loop are written by one script call (put.lua, or
// delete.lua) at the loop's check phase, instead of one call each. With fewer in flight a write
// is sent at once, so a lone client never waits for company.
//
// Why: a stream of random writes at 32 clients cost Redis about 56 µs of CPU per put, much of it
// per call rather than per item (the script's dispatch, its TIME, its XADD and counter reads,
// the MULTI/EXEC that wraps its effects in the AOF), and cost the API one command to encode and
// one reply to parse per put. Deletes pay the same per-call costs. The same idea as a database's
// group commit (Redis already fsyncs once per turn of its loop, so the writes of one turn shared
// an fsync before this too).
//
// Each write stays its own: it resolves with its own result (a put's entry and version, a
// delete's previous entry), fails with its own error, and is in the change feed as its own event
// (the group's events share one stream entry, as a batch's do). What is grouped:
// - only writes without an expected version: the scripts are all or nothing, so one
//   compare-and-set that fails would fail the writes grouped with it;
// - one partition per group, so a group is one Redis Cluster slot and, as every write within one
//   partition, either wholly written or not at all;
// - a key at most once per group: a second write of a key sends the group holding the first,
//   and starts the next one, which follows it on the same connection;
// - at most MAX_ITEMS writes and MAX_CHARS of keys and values (and never more writes than the
//   feed retains, or a group would trim its own events).
// A script error (for a stored entry it cannot read; a script raises having written nothing, or
// having put back what it wrote) sends each write of the group again on its own, so the error
// reaches only the write it is about. Any other failure reaches every write of the group: Redis
// refused or lost the one call they shared.
import { ReplyError } from 'ioredis';

/**
 * How many calls of a kind must be in flight before a write waits to join a group. From one on,
 * waiting for company cost puts at four clients (0.923-0.950 of the puts per second in three
 * runs of `npm run bench:ab`, against 1.000 from two on; docs/request-path.md, "Grouped
 * writes"): a put sent at once then still meets Redis's next turn. With two in flight, Redis has
 * a queue anyway.
 */
const GROUP_FROM_IN_FLIGHT = 2;
/** The most writes one call makes: some 6 ms of Redis's time (a batch of 1,000 puts took 23.9 ms). */
const MAX_ITEMS = 256;
/** The most characters of keys and values one call carries (at most 3 MiB of UTF-8). */
const MAX_CHARS = 1 << 20;

interface Group<Item, Result> {
  items: Item[];
  keys: Set<string>;
  chars: number;
  waiters: { resolve: (result: Result) => void; reject: (err: unknown) => void }[];
}

/** The writes of one kind (one script): each item names its key. */
export class WriteGroups<Item extends { readonly key: string }, Result> {
  /** Calls sent and not yet answered. */
  private inFlight = 0;
  /** The group being gathered in each partition, sent at the loop's check phase. */
  private readonly open = new Map<number, Group<Item, Result>>();
  private scheduled = false;
  private readonly maxItems: number;

  constructor(
    /** Writes the items in one script call (every one or none), in the order given. */
    private readonly write: (items: Item[]) => Promise<Result[]>,
    private readonly partitionOf: (key: string) => number,
    feedRetention: number,
    /** The characters an item carries (its key, and a put's value), for MAX_CHARS. */
    private readonly charsOf: (item: Item) => number,
  ) {
    this.maxItems = Math.max(1, Math.min(MAX_ITEMS, feedRetention));
  }

  /** Makes an unconditional write, alone or with others, and resolves with its own result. */
  add(item: Item): Promise<Result> {
    if (this.inFlight < GROUP_FROM_IN_FLIGHT && this.open.size === 0) return this.alone(item);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const partition = this.partitionOf(item.key);
      const chars = this.charsOf(item);
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

  private async alone(item: Item): Promise<Result> {
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

  private async send({ items, waiters }: Group<Item, Result>): Promise<void> {
    this.inFlight++;
    try {
      const entries = await this.write(items);
      waiters.forEach((w, i) => w.resolve(entries[i]!));
    } catch (err) {
      if (items.length > 1 && err instanceof ReplyError) {
        // Nothing was written (a script that raises leaves the store as it was): each on its own.
        items.forEach((item, i) => void this.alone(item).then(waiters[i]!.resolve, waiters[i]!.reject));
      } else {
        for (const w of waiters) w.reject(err);
      }
    } finally {
      this.inFlight--;
    }
  }
}
