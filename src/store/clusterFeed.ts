// The change feed's wake-up on a Redis Cluster. On one Redis the feed blocks in one XREAD over
// every partition's stream; on a cluster XREAD cannot span slots, so instead one connection per
// master listens for "a stream got an event" (keyevent notifications for XADD, enabled by
// cluster.conf's notify-keyspace-events Et) and the reader then reads just those partitions.
// A notification lost while a connection was down is covered twice over: every (re)subscribed
// connection marks every partition changed, and a wait that hears nothing reads them all.
import type { Cluster, Redis } from 'ioredis';
import type { Keyspace } from './keys.js';

const CHANNEL = '__keyevent@0__:xadd';

/** Partitions that may have new events, or every partition. */
export type Changed = Set<number> | 'all';

export class ClusterNotifier {
  /** One subscriber connection per master, by "host:port". */
  private readonly subscribers = new Map<string, Redis>();
  private changed: Changed = 'all';
  private wake: (() => void) | undefined;
  private readonly streams: Map<string, number>;

  constructor(
    private readonly cluster: Cluster,
    keys: Keyspace,
  ) {
    this.streams = new Map(Array.from({ length: keys.partitions }, (_, p) => [keys.stream(p), p]));
  }

  /**
   * The partitions changed since the last call; waits up to `blockMs` for one when none has.
   * A wait that hears nothing returns 'all' (a sweep, in case a notification was missed).
   */
  async next(blockMs: number): Promise<Changed> {
    this.follow();
    if (this.changed === 'all' || this.changed.size > 0) return this.take();
    const heard = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), blockMs);
      this.wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
    this.wake = undefined;
    return heard ? this.take() : 'all';
  }

  /** Marks partitions to read again at once (a read that hit its count limit). */
  mark(partitions: Iterable<number>): void {
    if (this.changed === 'all') return;
    for (const p of partitions) this.changed.add(p);
  }

  /** Drops the subscriber connections; the next next() subscribes again (and reads 'all'). */
  pause(): void {
    for (const s of this.subscribers.values()) s.disconnect();
    this.subscribers.clear();
  }

  close(): void {
    this.pause();
    this.wake?.();
  }

  private take(): Changed {
    const taken = this.changed;
    this.changed = new Set();
    return taken;
  }

  private changedAll(): void {
    this.changed = 'all';
    this.wake?.();
  }

  /** Keeps one subscriber per current master: a failover or a new master changes the set. */
  private follow(): void {
    const masters = new Map(this.cluster.nodes('master').map((n) => [`${n.options.host}:${n.options.port}`, n]));
    for (const [name, sub] of this.subscribers) {
      if (!masters.has(name)) {
        sub.disconnect();
        this.subscribers.delete(name);
      }
    }
    for (const [name, node] of masters) {
      if (this.subscribers.has(name)) continue;
      const sub = node.duplicate({ enableAutoPipelining: false, enableOfflineQueue: true, lazyConnect: false, commandTimeout: undefined });
      sub.on('error', () => {}); // the sweep covers whatever a broken connection missed
      // Each (re)connect subscribes again (ioredis's autoResubscribe); events in between are
      // found by reading every partition.
      sub.on('ready', () => this.changedAll());
      sub.on('message', (_channel: string, key: string) => {
        const p = this.streams.get(key);
        if (p === undefined || this.changed === 'all') return;
        this.changed.add(p);
        this.wake?.();
      });
      void sub.subscribe(CHANNEL).catch(() => {});
      this.subscribers.set(name, sub);
      this.changedAll();
    }
  }
}
