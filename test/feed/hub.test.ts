// The hub's reading loop runs only while someone subscribes: a process nobody listens to must
// not be woken by every write, and a subscription that comes later (fresh, or resuming from a
// cursor taken before the loop stopped) must still get exactly its events. And what a slow
// subscription may hold is bounded in bytes as well as in events.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeedHub, ReadSizer, SlowConsumerError, type Delivery } from '../../src/feed/hub.js';
import { partitionOf } from '../../src/store/keys.js';
import { prefixRange } from '../../src/store/order.js';
import type { FeedEvent, FeedReader } from '../../src/store/feed.js';
import { FEED_ENTRY_BYTES } from '../../src/store/feedFormat.js';
import { createTestApp, type TestApp } from '../harness/app.js';

const BLOCK_MS = 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let app: TestApp;
let reader: FeedReader;
let hub: FeedHub;
/** How many times the loop has asked Redis for new events. */
let reads = 0;
let heads: HeadsCounter;

beforeAll(async () => {
  app = await createTestApp('feed-hub');
  reader = app.store.feedReader(BLOCK_MS);
  const wait = reader.wait.bind(reader);
  reader.wait = (...args) => {
    reads++;
    return wait(...args);
  };
  heads = countHeads(reader);
  hub = new FeedHub(reader, { bufferSize: 100, bufferBytes: 1_000_000, blockMs: BLOCK_MS, batchSize: 100 });
});

afterAll(async () => {
  hub?.close();
  await app?.close();
});

const put = (key: string) => app.store.put({ key, value: `v-${key}` });

/**
 * Waits until the loop has stopped asking: no read for three blocks in a row (its last read
 * may end up to a block after the last subscription left, later on a busy machine). A loop
 * that never stops (it reads at least once a block, even with no writes) fails here.
 */
async function readsSettle(): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (let last = reads; ; last = reads) {
    await sleep(BLOCK_MS * 3);
    if (reads === last) return reads;
    if (Date.now() > deadline) throw new Error(`the hub still reads (${reads} reads) 10 s after its last subscription ended`);
  }
}

interface HeadsCounter {
  /** Reads of the feed's heads asked for so far (a loop's start, each fresh subscription's). */
  readonly asked: number;
  /**
   * Waits until `subscriptions` fresh subscriptions, made after `before` reads were asked for,
   * have read the heads they start from: a write after that reaches them. (A fixed 50 ms sleep
   * was not enough on a loaded machine, where a cluster's heads took longer.)
   */
  subscribed(before: number, subscriptions: number): Promise<void>;
}

/** Counts `reader`'s reads of the feed's heads, asked for and answered. */
function countHeads(reader: FeedReader): HeadsCounter {
  let asked = 0;
  let answered = 0;
  const read = reader.heads.bind(reader);
  reader.heads = async () => {
    asked++;
    try {
      return await read();
    } finally {
      answered++;
    }
  };
  return {
    get asked() {
      return asked;
    },
    async subscribed(before, subscriptions) {
      const deadline = Date.now() + 10_000;
      while (asked - before < subscriptions || answered < asked) {
        if (Date.now() > deadline) throw new Error('the subscriptions did not read the feed heads within 10 s');
        await sleep(5);
      }
    },
  };
}

/** The next `n` deliveries of a subscription, in order. */
async function take(sub: AsyncGenerator<Delivery>, n: number): Promise<Delivery[]> {
  const out: Delivery[] = [];
  while (out.length < n) {
    const r = await sub.next();
    if (r.done) throw new Error(`the subscription ended after ${out.length} of ${n} events`);
    out.push(r.value);
  }
  return out;
}

describe('the feed hub', () => {
  it('stops reading once its last subscription ends, and a later one (fresh or resuming) gets exactly its events', async () => {
    const asked = heads.asked;
    const first = hub.subscribe({ range: prefixRange('') });
    const pending = first.next();
    await heads.subscribed(asked, 1); // subscribed (from the heads) before the write
    await put('a');
    const a = await pending;
    expect(a.done).toBe(false);
    expect((a.value as Delivery).event.key).toBe('a');
    const cursor = (a.value as Delivery).position;
    await first.return(undefined);
    expect(hub.subscriberCount).toBe(0);

    // The loop's read in flight ends within a block; after that, writes wake nothing.
    const stoppedAt = await readsSettle();
    const whileStopped = Array.from({ length: 20 }, (_, i) => `b${String(i).padStart(2, '0')}`);
    for (const key of whileStopped) await put(key);
    await sleep(BLOCK_MS * 4);
    expect(reads).toBe(stoppedAt);

    // Resuming from the cursor: everything written while the loop was stopped, each once (in
    // order within a partition; across partitions the feed has no order), then live.
    const resumed = hub.subscribe({ range: prefixRange(''), after: cursor });
    const caughtUp = (await take(resumed, whileStopped.length)).map((d) => d.event);
    expect(caughtUp.map((e) => e.key).sort()).toEqual(whileStopped);
    for (let p = 0; p < hub.partitions; p++) {
      const keys = caughtUp.filter((e) => e.partition === p).map((e) => e.key);
      expect(keys).toEqual([...keys].sort());
    }
    const live = resumed.next();
    await put('c');
    expect(((await live).value as Delivery).event.key).toBe('c');
    expect(reads).toBeGreaterThan(stoppedAt);

    // A fresh subscription starts at the head: none of the earlier events.
    const askedFresh = heads.asked;
    const fresh = hub.subscribe({ range: prefixRange('') });
    const next = fresh.next();
    await heads.subscribed(askedFresh, 1);
    await put('d');
    expect(((await next).value as Delivery).event.key).toBe('d');
    expect(((await resumed.next()).value as Delivery).event.key).toBe('d');
    await fresh.return(undefined);
    await resumed.return(undefined);

    // And it stops again.
    const stoppedAgain = await readsSettle();
    for (let i = 0; i < 5; i++) await put(`e${i}`);
    await sleep(BLOCK_MS * 4);
    expect(reads).toBe(stoppedAgain);
  });
});

describe('the byte bound on what a subscription leaves unread (bufferBytes)', () => {
  it('ends a subscription that leaves more than bufferBytes unread from one read to the next, never one that keeps up', async () => {
    const BOUND = 10_000;
    const VALUE = 'x'.repeat(2000);
    // bufferSize alone (1000 events) would let the slow one hold every event of this test.
    const bytesReader = app.store.feedReader(BLOCK_MS);
    const bytesHeads = countHeads(bytesReader);
    const bytesHub = new FeedHub(bytesReader, { bufferSize: 1000, bufferBytes: BOUND, blockMs: BLOCK_MS, batchSize: 100 });
    try {
      const range = prefixRange('big:');
      const fast = bytesHub.subscribe({ range });
      const slow = bytesHub.subscribe({ range });
      const fastFirst = fast.next();
      const slowFirst = slow.next(); // its only read until the end
      await bytesHeads.subscribed(0, 2); // both subscribed (from the heads) before the writes
      const got: string[] = [];

      // One write of 40 KB (20 events, all in one partition: one script, one stream): one read
      // of the hub, four times the bound. The fast one takes it all; the slow one keeps 19
      // events queued, and is not ended for one read's size.
      const keys: string[] = [];
      for (let i = 0; keys.length < 20; i++) {
        const key = `big:a${String(i).padStart(3, '0')}`;
        if (partitionOf(key, bytesHub.partitions) === partitionOf('big:a000', bytesHub.partitions)) keys.push(key);
      }
      const batch = keys.map((key) => ({ key, value: VALUE }));
      await app.store.batchPut(batch);
      got.push(((await fastFirst).value as Delivery).event.key);
      got.push(...(await take(fast, 19)).map((d) => d.event.key));
      expect(got).toEqual(batch.map((b) => b.key));
      expect(bytesHub.subscriberCount).toBe(2);

      // The next read finds 38 KB left unread by the slow one: it is ended; the fast one is not.
      for (let i = 0; i < 5; i++) {
        await put(`big:b${i}`);
        got.push((await take(fast, 1))[0]!.event.key);
      }
      expect(bytesHub.subscriberCount).toBe(1);
      expect(((await slowFirst).value as Delivery).event.key).toBe(keys[0]);
      const end = await slow.next().then(
        () => null,
        (err: unknown) => err,
      );
      expect(end).toBeInstanceOf(SlowConsumerError);
      expect((end as SlowConsumerError).message).toMatch(/1000 events or 10000 bytes behind/);
      expect(got).toHaveLength(25);
      await fast.return(undefined);
    } finally {
      bytesHub.close();
    }
  });
});

describe('the size of the feed reads (ReadSizer)', () => {
  it('starts small, grows while reads are small and full, and shrinks in proportion past the target', () => {
    const r = new ReadSizer(500, 10_000);
    expect(r.count).toBe(50);
    r.update(50, 5_000); // full, half the target: may double
    expect(r.count).toBe(100);
    r.update(30, 100); // not full: the feed is drained, no reason to grow
    expect(r.count).toBe(100);
    r.update(100, 40_000); // four times the target
    expect(r.count).toBe(25);
    r.update(25, 10_000); // at the target: stays
    expect(r.count).toBe(25);
    r.update(1, 1_000_000); // one huge event: never below one
    expect(r.count).toBe(1);
    for (let i = 0; i < 20; i++) r.update(r.count, 10);
    expect(r.count, 'never above batchSize').toBe(500);
    expect(new ReadSizer(20, 10_000).count, 'never above batchSize').toBe(20);
  });

  it('makes the first read fit the target even if every event were as large as the limits allow', () => {
    const MiB = 1024 * 1024;
    const largest = 1024 + MiB; // KV_MAX_KEY_BYTES and KV_MAX_VALUE_BYTES at their defaults
    expect(new ReadSizer(500, 16 * MiB, largest).count).toBe(15);
    expect(new ReadSizer(500, 16 * MiB, largest, 4).count, 'a read over 4 partitions').toBe(3);
    expect(new ReadSizer(500, 16 * MiB, largest, 16).count, 'never below one').toBe(1);
    expect(new ReadSizer(500, 16 * MiB, 1124).count, 'small limits: FIRST_READ').toBe(50);
    expect(new ReadSizer(10, 16 * MiB, 1124).count, 'never above batchSize').toBe(10);
  });

  it('keeps each catch-up and live read near bufferBytes when values are large', async () => {
    // About two stream entries: an entry holds FEED_ENTRY_BYTES of events (32 of these), and a
    // read holds at least one entry.
    const BOUND = 150_000;
    const VALUE = 'y'.repeat(2000);
    const reads: { kind: 'after' | 'wait'; count: number; events: number; bytes: number }[] = [];
    const sized = app.store.feedReader(BLOCK_MS);
    const bytesOf = (events: FeedEvent[]) => events.reduce((n, e) => n + Buffer.byteLength(e.key) + Buffer.byteLength(e.entry?.value ?? ''), 0);
    const after = sized.after.bind(sized);
    sized.after = async (p, pos, count) => {
      const events = await after(p, pos, count);
      reads.push({ kind: 'after', count, events: events.length, bytes: bytesOf(events) });
      return events;
    };
    const wait = sized.wait.bind(sized);
    sized.wait = async (pos, count, blockMs) => {
      const events = await wait(pos, count, blockMs);
      if (events.length > 0) reads.push({ kind: 'wait', count, events: events.length, bytes: bytesOf(events) });
      return events;
    };
    // Keys of 9 bytes and values of 2,000: the largest event this hub is told of.
    const LARGEST = 9 + VALUE.length;
    const sizedHub = new FeedHub(sized, { bufferSize: 10_000, bufferBytes: BOUND, blockMs: BLOCK_MS, batchSize: 100, largestEventBytes: LARGEST });
    try {
      const range = prefixRange('size:');
      // Keys of one partition, so that a read's size is the count it asked for (XREAD and
      // XRANGE count per partition; over several partitions the sizer converges more slowly).
      const keys: string[] = [];
      for (let i = 0; keys.length < 300; i++) {
        const key = `size:${String(i).padStart(4, '0')}`;
        if (partitionOf(key, sizedHub.partitions) === partitionOf('size:0000', sizedHub.partitions)) keys.push(key);
      }
      // 200 events of 2 KB written before the subscription: it catches up from the stream.
      const from = await sized.heads();
      for (let i = 0; i < 200; i += 50) await app.store.batchPut(keys.slice(i, i + 50).map((key) => ({ key, value: VALUE })));
      const sub = sizedHub.subscribe({ range, after: from });
      expect((await take(sub, 200)).map((d) => d.event.key)).toEqual(keys.slice(0, 200));
      const catchUp = reads.filter((r) => r.kind === 'after' && r.events > 0);
      // Without the sizer, one read of batchSize (100 entries): all 400 KB. With it, the first read
      // asks for as many of the largest entries as fit (2), and every read stays in the bound.
      expect(catchUp[0]!.count).toBe(Math.floor(BOUND / Math.max(FEED_ENTRY_BYTES, LARGEST)));
      for (const r of catchUp) expect(r.bytes, JSON.stringify(r)).toBeLessThanOrEqual(BOUND);
      expect(catchUp.length, 'the 200 events in reads within the bound').toBeGreaterThanOrEqual(Math.ceil((200 * LARGEST) / BOUND));

      // Live: a write of 200 KB at once reaches the subscriber in reads within the bound, the
      // loop's first read included (it spans every partition, and asks for fewer per partition).
      reads.length = 0;
      const live = keys.slice(200);
      const next = take(sub, live.length);
      await app.store.batchPut(live.map((key) => ({ key, value: VALUE })));
      expect((await next).map((d) => d.event.key)).toEqual(live);
      const loopReads = reads.filter((r) => r.kind === 'wait');
      expect(loopReads.length).toBeGreaterThan(1);
      for (const r of loopReads) expect(r.bytes, JSON.stringify(r)).toBeLessThanOrEqual(BOUND);
      await sub.return(undefined);
    } finally {
      sizedHub.close();
    }
  });
});
