// What the SSE and WebSocket test clients share: a subscription's payloads, collected as they
// arrive, read with a timeout so that a missing event fails the test instead of hanging it.
import type { ExecutionResult } from 'graphql';

export type Payload = ExecutionResult<Record<string, any>, Record<string, any>>;

/** How a stream ended: the server completed it, the transport closed, or it failed. */
export type Ending = { kind: 'complete' } | { kind: 'closed' } | { kind: 'error'; error: unknown };

export interface SubscriptionStream {
  /** The next payload; rejects when none arrives within `timeoutMs` or the stream has ended. */
  next(timeoutMs?: number): Promise<Payload>;
  /** The next payload, or undefined when none arrives within `ms` (or the stream has ended). */
  poll(ms: number): Promise<Payload | undefined>;
  /** How the stream ended; rejects when it has not ended within `timeoutMs`. */
  ended(timeoutMs?: number): Promise<Ending>;
  /** Leaves: the client stops the subscription (idempotent). */
  close(): Promise<void>;
}

export const DEFAULT_TIMEOUT_MS = 5000;

/** A queue of payloads with timed reads; transports push into it and end it. */
export class Collector {
  private readonly items: Payload[] = [];
  private ending: Ending | null = null;
  private waiters: (() => void)[] = [];

  constructor(private readonly label: string) {}

  push(p: Payload): void {
    if (this.ending) return;
    this.items.push(p);
    this.wakeAll();
  }

  end(e: Ending): void {
    if (this.ending) return;
    this.ending = e;
    this.wakeAll();
  }

  get hasEnded(): boolean {
    return this.ending !== null;
  }

  async poll(ms: number): Promise<Payload | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.items.length > 0) return this.items.shift()!;
      if (this.ending) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await this.wait(left);
    }
  }

  async next(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Payload> {
    const p = await this.poll(timeoutMs);
    if (p) return p;
    if (this.ending) throw new Error(`${this.label}: the stream ended (${describe(this.ending)}) before the next payload`);
    throw new Error(`${this.label}: no payload within ${timeoutMs} ms`);
  }

  async ended(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Ending> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ending) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: the stream did not end within ${timeoutMs} ms`);
      await this.wait(left);
    }
    return this.ending;
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.push(done);
    });
  }

  private wakeAll(): void {
    for (const w of this.waiters.slice()) w();
  }
}

function describe(e: Ending): string {
  if (e.kind !== 'error') return e.kind;
  return `error: ${e.error instanceof Error ? e.error.message : (JSON.stringify(e.error) ?? String(e.error))}`;
}
