// The hub's reading loop runs only while someone subscribes: a process nobody listens to must
// not be woken by every write, and a subscription that comes later (fresh, or resuming from a
// cursor taken before the loop stopped) must still get exactly its events.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeedHub, type Delivery } from '../../src/feed/hub.js';
import { prefixRange } from '../../src/store/order.js';
import type { FeedReader } from '../../src/store/feed.js';
import { createTestApp, type TestApp } from '../harness/app.js';

const BLOCK_MS = 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let app: TestApp;
let reader: FeedReader;
let hub: FeedHub;
/** How many times the loop has asked Redis for new events. */
let reads = 0;

beforeAll(async () => {
  app = await createTestApp('feed-hub');
  reader = app.store.feedReader(BLOCK_MS);
  const wait = reader.wait.bind(reader);
  reader.wait = (...args) => {
    reads++;
    return wait(...args);
  };
  hub = new FeedHub(reader, { bufferSize: 100, blockMs: BLOCK_MS, batchSize: 100 });
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
    const first = hub.subscribe({ range: prefixRange('') });
    const pending = first.next();
    await sleep(50); // subscribed (from the heads) before the write
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
    const fresh = hub.subscribe({ range: prefixRange('') });
    const next = fresh.next();
    await sleep(50);
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
