// A bounded count of what one process holds, taken before the work and given back after it:
// requests running (KV_MAX_IN_FLIGHT, admission.ts), bytes of request bodies
// (KV_MAX_BODY_BYTES_IN_FLIGHT, fastLane.ts), subscriptions (KV_MAX_SUBSCRIPTIONS, feed/hub.ts).

export class Budget {
  private held = 0;

  constructor(readonly max: number) {}

  get inFlight(): number {
    return this.held;
  }

  get full(): boolean {
    return this.held >= this.max;
  }

  /** Takes `units`; false (taking nothing) when they would go over the bound. */
  take(units: number): boolean {
    if (this.held + units > this.max) return false;
    this.held += units;
    return true;
  }

  give(units: number): void {
    this.held -= units;
  }

  /** Takes one unit; undefined when none is free. The function gives it back once, however often it is called. */
  tryAcquire(): (() => void) | undefined {
    if (!this.take(1)) return undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.give(1);
    };
  }
}
