// The per-request context: the store, the limits, and a fresh DataLoader (it caches, so it must
// never outlive one request).
import DataLoader from 'dataloader';
import type { Limits } from '../config.js';
import type { FeedHub } from '../feed/hub.js';
import type { KvStore } from '../store/store.js';
import type { Context } from './builder.js';

export function createContext(store: KvStore, limits: Limits, feed: FeedHub): Context {
  return {
    store,
    limits,
    feed,
    entries: new DataLoader((keys: readonly string[]) => store.getMany(keys), {
      maxBatchSize: limits.maxBatchItems,
    }),
  };
}
