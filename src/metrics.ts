// Prometheus metrics: the registry, every kvql metric, the timing of the store's Redis work,
// and the /metrics endpoint (text exposition format). The request plugin (observe.ts) records
// the GraphQL requests. Labels take values from small fixed sets only: operation names of our
// schema, error codes, store operations. Never a key.
import type { Server } from 'node:http';
import type { Plugin } from 'graphql-yoga';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { AofArchiver } from './aofArchive.js';
import type { FeedHub } from './feed/hub.js';
import { LeanCounter, LeanHistogram } from './leanMetrics.js';
import type { KvStore } from './store/store.js';

/** Request latency buckets, in seconds: 0.5 ms (a cached read) to 10 s (past every timeout). */
const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Redis work of one store operation: 0.1 ms to the longest command timeout we would set. */
const REDIS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** The KvStore methods that talk to Redis, each timed as one store operation. */
export const STORE_OPERATIONS = ['getMany', 'batchPut', 'delete', 'deleteRange', 'range', 'ping'] as const;

// Process metrics (CPU, memory, event-loop lag, GC, handles) are per process: collected once,
// into their own registry, whatever the number of Metrics objects (tests build many).
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

const timedStores = new WeakSet<object>();

export class Metrics {
  readonly registry = new Registry();
  private feed: FeedHub | undefined;
  private bodyBytes: { inFlight: number } | undefined;
  private server: Server | undefined;

  // The metrics updated on every request or event are lean (leanMetrics.ts); the registry
  // renders them as it renders prom-client's own.
  readonly requests = new LeanCounter({
    name: 'kvql_graphql_requests_total',
    help: 'GraphQL requests over HTTP, by operation (its root field, "multiple" or "other") and outcome ("ok" or the first error\'s extensions.code)',
    labelNames: ['operation', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly requestDuration = new LeanHistogram({
    name: 'kvql_graphql_request_duration_seconds',
    help: 'Time from receiving a GraphQL request to its response (for a subscription over SSE: to the start of its stream)',
    labelNames: ['operation'] as const,
    buckets: REQUEST_BUCKETS,
    registers: [this.registry],
  });

  /** GraphQL requests over HTTP being handled now: a plain count, read by the gauge at each scrape. */
  requestsInFlight = 0;
  readonly inFlight: Gauge = new Gauge({
    name: 'kvql_graphql_requests_in_flight',
    help: 'GraphQL requests over HTTP being handled now',
    registers: [this.registry],
    collect: (): void => this.inFlight.set(this.requestsInFlight),
  });

  readonly bodyBytesInFlight: Gauge = new Gauge({
    name: 'kvql_request_body_bytes_in_flight',
    help: 'Bytes of request bodies held now, counted from before a body is read (KV_MAX_BODY_BYTES_IN_FLIGHT bounds it)',
    registers: [this.registry],
    collect: (): void => this.bodyBytesInFlight.set(this.bodyBytes?.inFlight ?? 0),
  });

  readonly lanes = new LeanCounter({
    name: 'kvql_http_requests_by_lane_total',
    help: 'POST requests to the GraphQL endpoint by the path that served them: "fast" (the fast lane) or "yoga" (handed to graphql-yoga)',
    labelNames: ['lane'] as const,
    registers: [this.registry],
  });

  readonly refusals = new LeanCounter({
    name: 'kvql_graphql_refusals_total',
    help: 'GraphQL requests refused without being served (overload, body too large, rate limit), by reason (the error code, or HTTP_<status>)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly redisDuration = new LeanHistogram({
    name: 'kvql_redis_operation_duration_seconds',
    help: 'Time one store operation spends on Redis (all its round trips), by operation and outcome (ok or error)',
    labelNames: ['operation', 'outcome'] as const,
    buckets: REDIS_BUCKETS,
    registers: [this.registry],
  });

  readonly feedSubscribers: Gauge = new Gauge({
    name: 'kvql_feed_subscribers',
    help: 'Change-feed subscriptions (SSE and WebSocket) following the live feed in this process',
    registers: [this.registry],
    collect: (): void => this.feedSubscribers.set(this.feed?.subscriberCount ?? 0),
  });

  readonly feedEvents = new LeanCounter({
    name: 'kvql_feed_events_delivered_total',
    help: 'Change events delivered to subscriptions (one per event per subscriber)',
    labelNames: [],
    registers: [this.registry],
  });

  readonly feedEnded = new Counter({
    name: 'kvql_feed_subscription_errors_total',
    help: 'Error payloads sent to subscriptions, by code (SLOW_CONSUMER and CURSOR_EXPIRED end the subscription)',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly connectionsDropped = new Counter({
    name: 'kvql_connections_dropped_total',
    help: 'Client connections closed as soon as they were accepted, because KV_MAX_CONNECTIONS were open',
    registers: [this.registry],
  });

  readonly connectionsOpen: Gauge = new Gauge({
    name: 'kvql_connections_open',
    help: 'Client connections (HTTP and WebSocket) open now; KV_MAX_CONNECTIONS bounds them',
    registers: [this.registry],
    collect: async (): Promise<void> => this.connectionsOpen.set(this.server ? await openConnections(this.server) : 0),
  });

  // The managed Redis's AOF archive (KV_AOF_ARCHIVE_HOURS); 0 without one.
  private archiver: AofArchiver | undefined;
  readonly archiveEntries: Gauge = new Gauge({
    name: 'kvql_aof_archive_entries',
    help: "Entries in the managed Redis's AOF archive (one per rewrite within KV_AOF_ARCHIVE_HOURS)",
    registers: [this.registry],
    collect: (): void => this.archiveEntries.set(this.archiver?.contents().entries ?? 0),
  });
  readonly archiveBytes: Gauge = new Gauge({
    name: 'kvql_aof_archive_bytes',
    help: "Bytes of disk the managed Redis's AOF archive holds",
    registers: [this.registry],
    collect: (): void => this.archiveBytes.set(this.archiver?.contents().bytes ?? 0),
  });
  readonly archiveLastLook: Gauge = new Gauge({
    name: 'kvql_aof_archive_last_look_timestamp_seconds',
    help: "When the AOF archive last looked at the managed Redis without an error (Unix seconds; 0: never): it makes the AOF rewrites",
    registers: [this.registry],
    collect: (): void => this.archiveLastLook.set((this.archiver?.lastLookAt()?.getTime() ?? 0) / 1000),
  });

  readonly contentType = this.registry.contentType;
  /** Whether render() includes the process metrics (prom-client's defaults). */
  private readonly includeProcess: boolean;

  constructor(opts: { processMetrics?: boolean } = {}) {
    this.includeProcess = opts.processMetrics !== false;
    if (this.includeProcess) processMetrics();
  }

  /** The body-bytes gauge reads this budget (fastLane.ts) at each scrape. */
  observeBodyBytes(budget: { inFlight: number }): void {
    this.bodyBytes = budget;
  }

  /** Counts `server`'s dropped connections, and reads its open ones at each scrape. */
  observeConnections(server: Server): void {
    this.server = server;
    server.on('drop', () => this.connectionsDropped.inc());
  }

  /** The archive gauges read this archiver at each scrape. */
  observeArchive(archiver: AofArchiver): void {
    this.archiver = archiver;
  }

  /** The subscriber gauge reads this hub's count at each scrape. */
  observeFeed(feed: FeedHub): void {
    this.feed = feed;
  }

  /**
   * Times every Redis-bound method of `store` (once per store; a second call does nothing).
   * Costs two clock reads and one histogram update per store call.
   */
  observeStore(store: KvStore): void {
    if (timedStores.has(store)) return;
    timedStores.add(store);
    const methods = store as unknown as Record<string, (a?: unknown, b?: unknown) => Promise<unknown>>;
    for (const op of STORE_OPERATIONS) {
      const call = methods[op]!;
      const ok = this.redisDuration.labels({ operation: op, outcome: 'ok' });
      const failed = this.redisDuration.labels({ operation: op, outcome: 'error' });
      methods[op] = async (a?: unknown, b?: unknown) => {
        const t0 = performance.now();
        try {
          const result = await call.call(store, a, b);
          ok.observe((performance.now() - t0) / 1000);
          return result;
        } catch (err) {
          failed.observe((performance.now() - t0) / 1000);
          throw err;
        }
      };
    }
  }

  /** The exposition text: process metrics, then kvql's. */
  async render(): Promise<string> {
    const own = await this.registry.metrics();
    return this.includeProcess ? `${await processMetrics().metrics()}\n${own}` : own;
  }
}

/** GET /metrics: the Prometheus text format. */
export function metricsPlugin(metrics: Metrics): Plugin {
  return {
    async onRequest({ url, endResponse, fetchAPI }) {
      if (url.pathname !== '/metrics') return;
      endResponse(new fetchAPI.Response(await metrics.render(), { headers: { 'content-type': metrics.contentType } }));
    },
  };
}

function openConnections(server: Server): Promise<number> {
  return new Promise((resolve) => server.getConnections((err, n) => resolve(err ? 0 : n)));
}
