// The GraphQL server object: schema, context, error masking and HTTP plugins. It does not
// listen; `yoga.fetch` serves tests and server.ts serves the network.
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import { admissionPlugin } from './admission.js';
import { bodyLimitPlugin } from './bodyLimit.js';
import { defaultLoad, type Limits, type LoadConfig } from './config.js';
import type { FeedHub } from './feed/hub.js';
import type { Context } from './graphql/builder.js';
import { createContext } from './graphql/context.js';
import { BoundedCache } from './graphql/documentCache.js';
import { maskError } from './graphql/errors.js';
import { buildSchema } from './graphql/schema.js';
import { yogaLogger, type Logger } from './log.js';
import { Metrics, metricsPlugin } from './metrics.js';
import { observePlugin } from './observe.js';
import { operationLimitPlugins } from './operationLimits.js';
import { readyPlugin } from './ready.js';
import type { KvStore } from './store/store.js';

export interface YogaOptions {
  store: KvStore;
  limits: Limits;
  /** The change-feed hub behind the `changes` subscription; its owner closes it. */
  feed: FeedHub;
  /** Where unexpected (masked) errors are logged in full; the console by default. */
  logger?: YogaLogger;
  /** Admission control and the request deadline; the defaults when absent. */
  load?: LoadConfig;
  /** kvql's structured logger: masked errors with their request id (unless `logger` is given). */
  log?: Logger;
  /** Where the request, Redis and feed metrics go (served at /metrics); a new set when absent. */
  metrics?: Metrics;
}

export type YogaLogger = Pick<Console, 'debug' | 'info' | 'warn' | 'error'>;

export type KvYoga = YogaServerInstance<Record<string, unknown>, Context>;

export function createKvYoga({ store, limits, feed, logger, load = defaultLoad(), log, metrics = new Metrics() }: YogaOptions): KvYoga {
  metrics.observeStore(store);
  metrics.observeFeed(feed);
  return createYoga<Record<string, unknown>, Context>({
    schema: buildSchema(limits),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    graphiql: { title: 'kvql' },
    maskedErrors: { maskError },
    // kvql's own body limit (bodyLimit.ts) answers with its documented code; yoga's built-in
    // one (25 MB) would refuse batches that kvql's limits allow.
    maxRequestBodySize: false,
    parserAndValidationCache: { documentCache: new BoundedCache(), errorCache: new BoundedCache() },
    ...(logger ? { logging: logger } : log ? { logging: yogaLogger(log) } : {}),
    context: () => createContext(store, limits, feed),
    // Admission first: it refuses before the body limit reads a body.
    // Observation first of all: it times and counts whatever the others do, refusals included.
    plugins: [observePlugin({ metrics, log }), metricsPlugin(metrics), admissionPlugin({ endpoint: '/graphql', ...load }), bodyLimitPlugin(limits.maxBodyBytes), readyPlugin(store), ...operationLimitPlugins(limits)],
  }) as unknown as KvYoga;
}
