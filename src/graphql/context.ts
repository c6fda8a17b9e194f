// The per-request context: the store, the limits, and a fresh DataLoader (it caches, so it must
// never outlive one request).
import DataLoader from 'dataloader';
import type { Limits } from '../config.js';
import type { Principal } from '../auth/tokens.js';
import type { FeedHub } from '../feed/hub.js';
import type { Consistency, Entry, KvStore } from '../store/store.js';
import type { Context } from './builder.js';

export function createContext(store: KvStore, limits: Limits, feed: FeedHub, principal: Principal, revoked?: AbortSignal): Context {
  const loader = (consistency: Consistency) =>
    new DataLoader((keys: readonly string[]) => store.getMany(keys, consistency), { maxBatchSize: limits.maxBatchItems });
  let eventual: DataLoader<string, Entry | null> | undefined;
  return {
    store,
    limits,
    feed,
    principal,
    ...(revoked ? { revoked } : {}),
    entries: loader('strong'),
    // Most requests never read with EVENTUAL: build its loader only when one does.
    get eventualEntries() {
      return (eventual ??= loader('eventual'));
    },
  };
}
