// The GraphQL server object: schema, context, error masking and HTTP plugins. It does not
// listen; `yoga.fetch` serves tests and server.ts serves the network.
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import { bodyLimitPlugin } from './bodyLimit.js';
import type { Limits } from './config.js';
import type { FeedHub } from './feed/hub.js';
import type { Context } from './graphql/builder.js';
import { createContext } from './graphql/context.js';
import { maskError } from './graphql/errors.js';
import { buildSchema } from './graphql/schema.js';
import { readyPlugin } from './ready.js';
import type { KvStore } from './store/store.js';

export interface YogaOptions {
  store: KvStore;
  limits: Limits;
  /** The change-feed hub behind the `changes` subscription; its owner closes it. */
  feed: FeedHub;
  /** Where unexpected (masked) errors are logged in full; the console by default. */
  logger?: YogaLogger;
}

export type YogaLogger = Pick<Console, 'debug' | 'info' | 'warn' | 'error'>;

export type KvYoga = YogaServerInstance<Record<string, unknown>, Context>;

export function createKvYoga({ store, limits, feed, logger }: YogaOptions): KvYoga {
  return createYoga<Record<string, unknown>, Context>({
    schema: buildSchema(limits),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    graphiql: { title: 'kvql' },
    maskedErrors: { maskError },
    ...(logger ? { logging: logger } : {}),
    context: () => createContext(store, limits, feed),
    plugins: [bodyLimitPlugin(limits.maxBodyBytes), readyPlugin(store)],
  }) as unknown as KvYoga;
}
