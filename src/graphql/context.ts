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

// An object of own properties, not a class: yoga merges the context into its own with
// Object.assign, which copies own properties only.
export function createContext(store: KvStore, limits: Limits, feed: FeedHub, principal: Principal, revoked?: AbortSignal): Context {
  const loads = loadsFor(store, limits);
  let eventual: DataLoader<string, Entry | null> | undefined;
  return {
    store,
    limits,
    feed,
    principal,
    ...(revoked ? { revoked } : {}),
    entries: new DataLoader(loads.strong.batch, loads.strong.options),
    // Most requests never read with EVENTUAL: build its loader only when one does.
    get eventualEntries() {
      return (eventual ??= new DataLoader(loads.eventual.batch, loads.eventual.options));
    },
  };
}
