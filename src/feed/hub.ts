// The change-feed hub: one reading loop per API process, on one blocking Redis connection, that
// fans every event out to the in-process subscriptions. However many clients subscribe, Redis
// sees one XREAD at a time from this process (plus short catch-up reads when a subscription
// starts or resumes). The loop runs only while someone subscribes: with no subscription left it
// stops after its current read (at most blockMs), so a process nobody listens to is not woken
// by every write; the next subscription starts it again from the feed's heads.
import { Budget } from '../budget.js';
import { inRange, type KeyRange } from '../store/order.js';
import { positionAt, type FeedEvent, type FeedReader, type Position } from '../store/feed.js';
import { FEED_ENTRY_BYTES } from '../store/feedFormat.js';
import { StoreError } from '../store/errors.js';

export interface HubOptions {
  /**
   * Events a subscription may leave unread from one of the loop's reads to the next before it is
   * ended as a slow consumer (counted between reads, as bufferBytes is: one read may hold a whole
   * batch's events).
   */
  bufferSize: number;
  /**
   * Bytes of keys and values (UTF-8) a subscription may leave unread from one of the loop's
   * reads to the next before it is ended as a slow consumer: with large values, bufferSize
   * events alone could hold a gigabyte. Counted between reads, not within one, so that a
   * consumer that keeps up is never ended by the size of a single read (at most batchSize
   * events per partition), however large its values.
   */
  bufferBytes: number;
  /** Longest XREAD BLOCK wait; the loop re-checks for shutdown this often. */
  blockMs: number;
  /**
   * At most this many stream entries per read, per partition (an entry holds one script call's
   * events in a partition, up to 64 KiB of them: one for a put written alone). Fewer while
   * events are large: a read (the loop's, or a subscription's catch-up) is sized to hold about
   * bufferBytes (ReadSizer).
   */
  batchSize: number;
  /**
   * The most bytes one event can hold (a key and a value at their limits). The first read, made
   * before any event size is known, asks for no more entries than would fit in bufferBytes if
   * every entry were as large as one can be (FEED_ENTRY_BYTES, or this if larger). Without it
   * the first read asks for FIRST_READ.
   */
  largestEventBytes?: number;
  /** Subscriptions this process serves at once (admit); unlimited when absent. */
  maxSubscriptions?: number;
  log?: (message: string) => void;
}

/** One delivered event, with the feed position right after it (what its cursor encodes). */
export interface Delivery {
  event: FeedEvent;
  position: Position[];
}

export interface SubscribeOptions {
  range: KeyRange;
  /** Resume right after this position; absent: start now. */
  after?: Position[];
  /**
   * Aborted when the consumer leaves. An async generator's return() waits for the pending
   * next(), which for an idle subscription may never come: this ends that wait.
   */
  signal?: AbortSignal;
}

export class SlowConsumerError extends StoreError {
  constructor(
    message: string,
    /** The position after the last event the consumer received: resume from there. */
    readonly position: Position[],
  ) {
    super('SLOW_CONSUMER', message);
  }
}

/** A subscription refused because the process already serves maxSubscriptions. */
export class TooManySubscriptionsError extends StoreError {
  constructor(max: number) {
    super('OVERLOADED', `this server already serves its maximum of ${max} subscriptions; try again later (or on another instance)`);
  }
}

/**
 * Events a subscriber had not read yet were trimmed from the feed (it caught up too slowly, or
 * one write added more than the feed retains before the hub read them): it cannot go on exactly.
 */
export class CursorExpiredError extends StoreError {
  constructor(
    message: string,
    /** The oldest position the feed still holds everything after. */
    readonly oldest: Position[],
  ) {
    super('CURSOR_EXPIRED', message);
  }
}

/** Within the hub: an event's sequence number jumped, so the ones between were trimmed. */
class FeedGap extends Error {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What an event holds in memory while it waits, as bufferBytes counts it. */
function eventBytes(e: FeedEvent): number {
  return Buffer.byteLength(e.key) + (e.entry ? Buffer.byteLength(e.entry.value) : 0);
}

/** The first read's size, in entries per partition, before anything is known of their sizes. */
const FIRST_READ = 50;

/**
 * How many stream entries per partition the next read asks for, so that one read holds about
 * `targetBytes` however large the values are (up to 1,000 of 1 MiB would be a gigabyte), and
 * never less than one entry: it starts at FIRST_READ, or fewer when `largestEntry`-sized entries
 * from each of the `perRead` partitions one read spans would not fit in the target; then it
 * doubles while reads come back with at least `count` events and under half the target, and
 * shrinks in proportion when a read comes back over it.
 */
export class ReadSizer {
  count: number;

  constructor(
    private readonly max: number,
    private readonly targetBytes: number,
    largestEntry = 0,
    perRead = 1,
  ) {
    const fits = largestEntry > 0 ? Math.max(1, Math.floor(targetBytes / (largestEntry * perRead))) : FIRST_READ;
    this.count = Math.min(max, FIRST_READ, fits);
  }

  /** After a read that asked for `count` per partition and returned `events` of `bytes` in all. */
  update(events: number, bytes: number): void {
    if (bytes > this.targetBytes) this.count = Math.max(1, Math.floor((this.count * this.targetBytes) / bytes));
    else if (events >= this.count && bytes * 2 <= this.targetBytes) this.count = Math.min(this.max, this.count * 2);
  }
}

/** eventBytes of a read's events, in all. */
function readBytes(events: readonly FeedEvent[]): number {
  let n = 0;
  for (const e of events) n += eventBytes(e);
  return n;
}

class Subscriber {
  /** Deliveries waiting for the consumer, each with its eventBytes. */
  private readonly queue: { d: Delivery; bytes: number }[] = [];
  /** The sum of the queue's bytes. */
  private queuedBytes = 0;
  /** The part of queuedBytes that came from the loop's current read. */
  private bytesThisRead = 0;
  /**
   * The queue's deliveries that came from the loop's current read: like bytes, bufferSize counts
   * what was left unread from one read to the next, since one read may bring a whole batch's
   * events (one entry), however many.
   */
  private eventsThisRead = 0;
  failure: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(
    readonly position: Position[],
    private readonly range: KeyRange,
    private readonly bufferSize: number,
    private readonly bufferBytes: number,
    private readonly onOverflow: (s: Subscriber, gap?: FeedGap) => void,
  ) {}

  /**
   * Takes an event in (from the catch-up read or the hub) unless it was seen already; returns the
   * delivery if the subscriber wants it. Skipped events still move the position on.
   */
  advance(event: FeedEvent): Delivery | null {
    const at = this.position[event.partition]!;
    if (event.seq <= at.seq) return null;
    // Sequence numbers are consecutive: never skip trimmed events silently.
    if (event.seq !== at.seq + 1) {
      throw new FeedGap(
        `events ${at.seq + 1}..${event.seq - 1} of partition ${event.partition} were trimmed before this subscription read them; resume from oldestCursor (and re-read what you need)`,
      );
    }
    this.position[event.partition] = { id: event.id, seq: event.seq };
    if (!inRange(event.key, this.range)) return null;
    return { event, position: this.position.slice() };
  }

  /** From the hub: queue it, or end the subscription if the queue is full. */
  offer(event: FeedEvent, bytes: number): void {
    if (this.failure) return;
    let d: Delivery | null;
    try {
      d = this.advance(event);
    } catch (err) {
      if (!(err instanceof FeedGap)) throw err;
      this.onOverflow(this, err); // ends it, after what it has queued
      return;
    }
    if (!d) return;
    if (this.queue.length - this.eventsThisRead >= this.bufferSize || this.queuedBytes - this.bytesThisRead > this.bufferBytes) {
      this.queue.length = 0; // free the memory now: the subscription is over
      this.queuedBytes = 0;
      this.onOverflow(this);
    } else {
      this.queue.push({ d, bytes });
      this.queuedBytes += bytes;
      this.bytesThisRead += bytes;
      this.eventsThisRead++;
    }
    this.notify();
  }

  /** From the hub, before it offers the events of a new read: what is queued now was left unread. */
  newRead(): void {
    this.bytesThisRead = 0;
    this.eventsThisRead = 0;
  }

  /** The next queued delivery, for the consumer. */
  take(): Delivery | undefined {
    const item = this.queue.shift();
    if (!item) return undefined;
    this.queuedBytes -= item.bytes;
    return item.d;
  }

  fail(err: Error): void {
    this.failure = err;
    this.notify();
  }

  notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  next(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }
}

export class FeedHub {
  private readonly subscribers = new Set<Subscriber>();
  /** How far the loop has read and fanned out; null until it has started. */
  private position: Position[] | null = null;
  /** Set while the loop runs (or is starting); null when it is stopped. */
  private started: Promise<void> | null = null;
  /** Subscriptions in progress, catching up or live: the loop runs while there is one. */
  private active = 0;
  /** Places of subscriptions admitted and not yet given back (admit). */
  private readonly places: Budget;
  /** The size of the loop's reads. */
  private readonly loopReads: ReadSizer;
  private closed = false;
  private readonly log: (m: string) => void;

  constructor(
    private readonly reader: FeedReader,
    private readonly opts: HubOptions,
  ) {
    this.log = opts.log ?? (() => {});
    this.places = new Budget(opts.maxSubscriptions ?? Infinity);
    // The loop's reads span every partition; a catch-up read, one.
    this.loopReads = new ReadSizer(opts.batchSize, opts.bufferBytes, this.largestEntryBytes, reader.partitions);
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /**
   * The most bytes (as eventBytes counts them) one stream entry can hold: FEED_ENTRY_BYTES of
   * events, or one event past that. Reads are sized in entries.
   */
  private get largestEntryBytes(): number | undefined {
    const largest = this.opts.largestEventBytes;
    return largest === undefined ? undefined : Math.max(FEED_ENTRY_BYTES, largest);
  }

  /**
   * Takes a place for a subscription about to start, or throws TooManySubscriptionsError when
   * maxSubscriptions are taken: every subscription costs memory and a share of each event's
   * fan-out, so past a bound a new one is refused rather than slowing every other. Synchronous,
   * so subscriptions starting together cannot overshoot. The returned function gives the place
   * back (once, however often it is called).
   */
  admit(): () => void {
    const release = this.places.tryAcquire();
    if (!release) throw new TooManySubscriptionsError(this.places.max);
    return release;
  }

  /** Subscriptions admitted and not yet ended. */
  get admittedCount(): number {
    return this.places.inFlight;
  }

  /**
   * A subscription: its events in order per partition, each exactly once, from `after` (or
   * now) on. Iterating ends when the consumer returns, or throws SlowConsumerError.
   */
  async *subscribe(opts: SubscribeOptions): AsyncGenerator<Delivery> {
    // Counted before the loop is started, so the loop cannot stop under a starting subscription.
    this.active++;
    const onAbort = () => sub?.notify();
    let sub: Subscriber | undefined;
    try {
      await this.ensureStarted();
      const from = opts.after ?? (await this.retrying(() => this.reader.heads()));
      sub = new Subscriber(
        // By sequence number alone (a cursor's ID part is as layout 2 wrote it, or 0-<seq>).
        from.map((p) => positionAt(p.seq)),
        opts.range,
        this.opts.bufferSize,
        this.opts.bufferBytes,
        (s, gap) => {
          this.subscribers.delete(s);
          const limits = `${this.opts.bufferSize} events or ${this.opts.bufferBytes} bytes`;
          s.fail(gap ?? new Error(`the subscriber fell more than ${limits} behind; resume from the last cursor received`));
        },
      );
      // The position after the last event handed to the consumer: where it can resume.
      let delivered = from;
      opts.signal?.addEventListener('abort', onAbort);
      try {
        // Catch up from the stream itself until this subscriber has reached the hub's position,
        // then join the hub in the same tick, so that no event falls between the two.
        const catchUp = new ReadSizer(this.opts.batchSize, this.opts.bufferBytes, this.largestEntryBytes);
        for (;;) {
          let behind = false;
          for (let p = 0; p < sub.position.length; p++) {
            while (sub.position[p]!.seq < this.position![p]!.seq) {
              const events = await this.retrying(() => this.reader.after(p, sub!.position[p]!, catchUp.count));
              catchUp.update(events.length, readBytes(events));
              if (events.length === 0) break;
              for (const e of events) {
                const d = sub.advance(e);
                if (d) {
                  yield d;
                  delivered = d.position;
                }
              }
              behind = true;
            }
          }
          if (!behind && sub.position.every((pos, p) => pos.seq >= this.position![p]!.seq)) break;
          if (!behind) await sleep(5); // the hub is ahead but the stream read returned nothing yet
        }
        this.subscribers.add(sub);
        for (;;) {
          for (let d = sub.take(); d; d = sub.take()) {
            yield d;
            delivered = d.position;
          }
          if (sub.failure) throw sub.failure instanceof FeedGap ? sub.failure : new SlowConsumerError(sub.failure.message, delivered);
          if (this.closed || opts.signal?.aborted) return;
          await sub.next();
        }
      } catch (err) {
        if (!(err instanceof FeedGap)) throw err;
        const position = sub.position;
        const { oldest } = await this.retrying(() => this.reader.check(position));
        throw new CursorExpiredError(err.message, oldest);
      }
    } finally {
      if (sub) this.subscribers.delete(sub);
      opts.signal?.removeEventListener('abort', onAbort);
      this.active--;
    }
  }

  /** Retries a read while Redis is unavailable: a subscription waits, it does not fail. */
  /** Whether events after `positions` are all still retained (see FeedReader.check). */
  check(positions: readonly Position[]) {
    return this.reader.check(positions);
  }

  get partitions(): number {
    return this.reader.partitions;
  }

  private async retrying<T>(read: () => Promise<T>): Promise<T> {
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      try {
        return await read();
      } catch (err) {
        if (this.closed) throw err;
        if (!(err instanceof StoreError && err.code === 'STORE_UNAVAILABLE')) throw err;
        await sleep(delay);
      }
    }
  }

  /** Starts the loop unless it runs, from the feed's heads (what it read before may be stale). */
  private ensureStarted(): Promise<void> {
    this.started ??= (async () => {
      this.position = await this.retrying(() => this.reader.heads());
      void this.loop();
    })();
    return this.started;
  }

  private async loop(): Promise<void> {
    let failing = false;
    for (;;) {
      if (this.closed) return;
      if (this.active === 0) {
        // Nobody listens: stop (in the same tick as the check, so a subscription that comes
        // later finds `started` unset and starts a new loop).
        this.started = null;
        this.reader.pause();
        return;
      }
      let events: FeedEvent[];
      try {
        events = await this.reader.wait(this.position!, this.loopReads.count, this.opts.blockMs);
        if (failing) this.log('change feed: reading again');
        failing = false;
      } catch (err) {
        if (this.closed) return;
        if (!failing) this.log(`change feed: cannot read (${(err as Error).message}); retrying`);
        failing = true;
        await sleep(200);
        continue;
      }
      for (const s of this.subscribers) s.newRead();
      let bytesRead = 0;
      for (const e of events) {
        this.position![e.partition] = { id: e.id, seq: e.seq };
        const bytes = eventBytes(e);
        bytesRead += bytes;
        for (const s of this.subscribers) s.offer(e, bytes);
      }
      this.loopReads.update(events.length, bytesRead);
    }
  }

  close(): void {
    this.closed = true;
    for (const s of this.subscribers) s.notify();
    this.reader.close();
  }
}
