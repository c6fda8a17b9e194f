// /ready: Redis answers, so requests can be served (503 otherwise). /health (process alive) is
// graphql-yoga's own health check.
import type { Plugin } from 'graphql-yoga';
import type { KvStore } from './store/store.js';

export function readyPlugin(store: KvStore): Plugin {
  return {
    async onRequest({ url, endResponse, fetchAPI }) {
      if (url.pathname !== '/ready') return;
      try {
        await store.ping();
        endResponse(fetchAPI.Response.json({ status: 'ready' }));
      } catch (err) {
        endResponse(fetchAPI.Response.json({ status: 'unavailable', reason: (err as Error).message }, { status: 503 }));
      }
    },
  };
}
