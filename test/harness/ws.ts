// A graphql-ws test client: one WebSocket per client, any number of subscriptions multiplexed
// on it, each read through a Collector with timeouts.
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { Collector, DEFAULT_TIMEOUT_MS, type SubscriptionStream } from './stream.js';

export interface WsClient {
  /** The underlying graphql-ws client. */
  client: Client;
  subscribe(query: string, variables?: Record<string, unknown>): SubscriptionStream;
  /** Closes the socket, ending every subscription on it. */
  dispose(): Promise<void>;
  /** Resolves when the socket is open and acknowledged by the server; rejects after a timeout. */
  connected(timeoutMs?: number): Promise<void>;
}

/** `httpUrl` is the server's http://…/graphql URL; the client speaks ws://…/graphql. */
export function wsClient(httpUrl: string, connectionParams?: Record<string, unknown>): WsClient {
  let isConnected = false;
  const onConnected: (() => void)[] = [];
  const client = createClient({
    url: httpUrl.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    ...(connectionParams ? { connectionParams } : {}),
    // A test wants failures, not silent reconnects.
    retryAttempts: 0,
    shouldRetry: () => false,
    // Keep the socket while the test runs, even between subscriptions.
    lazy: false,
    onNonLazyError: () => {},
    connectionAckWaitTimeout: DEFAULT_TIMEOUT_MS,
    on: {
      connected: () => {
        isConnected = true;
        for (const f of onConnected.splice(0)) f();
      },
      closed: () => {
        isConnected = false;
      },
    },
  });
  return {
    client,
    subscribe(query, variables = {}) {
      const collector = new Collector(`WS ${JSON.stringify(variables)}`);
      const unsubscribe = client.subscribe(
        { query, variables },
        {
          next: (p) => collector.push(p as never),
          error: (error) => collector.end({ kind: 'error', error }),
          complete: () => collector.end({ kind: 'complete' }),
        },
      );
      return {
        next: (ms) => collector.next(ms),
        poll: (ms) => collector.poll(ms),
        ended: (ms) => collector.ended(ms),
        async close() {
          if (!collector.hasEnded) unsubscribe();
          collector.end({ kind: 'closed' });
        },
      };
    },
    async dispose() {
      await client.dispose();
    },
    connected(timeoutMs = DEFAULT_TIMEOUT_MS) {
      if (isConnected) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`WebSocket not connected within ${timeoutMs} ms`)), timeoutMs);
        onConnected.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
