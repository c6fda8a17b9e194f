// The per-request context: the store, the limits, and a fresh DataLoader (it caches, so it must
// never outlive one request).
import DataLoader from 'dataloader';
import type { Limits } from '../config.js';
import type { Principal } from '../auth/tokens.js';
import type { FeedHub } from '../feed/hub.js';
import type { Consistency, Entry, KvStore } from '../store/store.js';
import type { Context } from './builder.js';

type Loads = { batch: (keys: readonly string[]) => Promise<(Entry | null)[]>; options: { maxBatchSize: number } };

// A context is built for every request: what does not change between requests (the loaders'
// batch functions and options) is built once per store, consistency and limits.
const loadsByStore = new WeakMap<KvStore, WeakMap<Limits, Record<Consistency, Loads>>>();

function loadsFor(store: KvStore, limits: Limits): Record<Consistency, Loads> {
  let byLimits = loadsByStore.get(store);
  if (!byLimits) loadsByStore.set(store, (byLimits = new WeakMap()));
  let loads = byLimits.get(limits);
  if (!loads) {
    const options = { maxBatchSize: limits.maxBatchItems };
    loads = {
      strong: { batch: (keys) => store.getMany(keys, 'strong'), options },
      eventual: { batch: (keys) => store.getMany(keys, 'eventual'), options },
    };
    byLimits.set(limits, loads);
  }
  return loads;
}

// A plain object of data properties, not a class: yoga merges the context into its own with
// Object.assign, which copies own properties only. No getter either: an object literal with an
// accessor cost about 2.4 µs per request in a profile of the fast lane.
export function createContext(store: KvStore, limits: Limits, feed: FeedHub, principal: Principal, revoked?: AbortSignal): Context {
  const { strong } = loadsFor(store, limits);
  return { store, limits, feed, principal, revoked, entries: new DataLoader(strong.batch, strong.options), eventualEntries: undefined };
}

/** The request's loader for reads at `consistency`; EVENTUAL's is built on first use (most requests never read with it). */
export function loaderFor(ctx: Context, consistency: Consistency | null | undefined): DataLoader<string, Entry | null> {
  if (consistency !== 'eventual') return ctx.entries;
  if (!ctx.eventualEntries) {
    const { eventual } = loadsFor(ctx.store, ctx.limits);
    ctx.eventualEntries = new DataLoader(eventual.batch, eventual.options);
  }
  return ctx.eventualEntries;
}
