// The GraphQL server object: schema, context, error masking and HTTP plugins. It does not
// listen; `yoga.fetch` serves tests and server.ts serves the network.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GraphQLError, NoSchemaIntrospectionCustomRule, type ValidationRule } from 'graphql';
import { createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { Admission, admissionPlugin } from './admission.js';
import { Budget } from './budget.js';
import { browserPlugins, corsOptions, type BrowserPolicy } from './auth/browser.js';
import { authPlugin, PRINCIPAL, type Principals } from './auth/http.js';
import { RateLimiter } from './auth/rateLimit.js';
import { Authenticator, UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE, type Principal, type TokenEntry } from './auth/tokens.js';
import { resolveTrusted, type TrustedDocuments } from './auth/trustedDocuments.js';
import { bodyLimitPlugin } from './bodyLimit.js';
import { defaultLoad, type Limits, type LoadConfig } from './config.js';
import { createRequestListener, type YogaForFastLane } from './fastLane.js';
import type { FeedHub } from './feed/hub.js';
import type { Context } from './graphql/builder.js';
import { createContext } from './graphql/context.js';
import { BoundedCache } from './graphql/documentCache.js';
import { maskError } from './graphql/errors.js';
import { NoSkipOnSubscriptionRootRule, requestParseErrorPlugin, validationThrowPlugin } from './graphql/requestErrors.js';
import { buildSchema } from './graphql/schema.js';
import { yogaLogger, type Logger } from './log.js';
import { Metrics, metricsPlugin } from './metrics.js';
import { observePlugin, RequestObserver } from './observe.js';
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
  /** Bearer tokens (KV_TOKENS, KV_TOKENS_FILE); none: auth is off (config.ts allows that on loopback only). */
  tokens?: readonly TokenEntry[];
  /** KV_GRAPHIQL: GraphiQL for browsers (default on). */
  graphiql?: boolean;
  /** KV_INTROSPECTION: __schema and __type answered (default on). */
  introspection?: boolean;
  /** KV_CORS_ORIGINS and KV_CSRF_PREVENTION (auth/browser.ts): no other origin, CSRF prevention on, when absent. */
  browser?: BrowserPolicy;
  /** KV_TRUSTED_DOCUMENTS: when set, only these operations run. */
  trustedDocuments?: TrustedDocuments;
}

const ENDPOINT = '/graphql';

export type YogaLogger = Pick<Console, 'debug' | 'info' | 'warn' | 'error'>;

export type KvYoga = YogaServerInstance<Record<string, unknown>, Context> & {
  /**
   * The Node request listener to serve: the fast lane (fastLane.ts) in front of yoga. `yoga.fetch`
   * and `yoga` itself as a listener remain yoga's full pipeline.
   */
  listener: (req: IncomingMessage, res: ServerResponse) => void;
  /** The token check, shared by HTTP (both paths) and graphql-ws. */
  auth: Authenticator;
  /** Per-token rate limits, shared by HTTP (both paths) and graphql-ws. */
  rateLimiter: RateLimiter;
  /** KV_TRUSTED_DOCUMENTS and the browser policy, for graphql-ws. */
  trustedDocuments?: TrustedDocuments;
  browser: BrowserPolicy;
  /** The request limits, for graphql-ws (a message is bounded as a request body is). */
  limits: Limits;
};

/** yoga's masking of errors (with the logging of what it masks), which it keeps private. */
interface YogaMasking {
  maskedErrorsOpts?: { maskError(error: unknown, message: string): unknown; errorMessage: string } | null;
}

export function createKvYoga({
  store,
  limits,
  feed,
  logger,
  load = defaultLoad(),
  log,
  metrics = new Metrics(),
  tokens = [],
  graphiql = true,
  introspection = true,
  browser = { corsOrigins: [], csrfPrevention: true },
  trustedDocuments,
}: YogaOptions): KvYoga {
  metrics.observeStore(store);
  metrics.observeFeed(feed);
  const schema = buildSchema(limits);
  const admission = new Admission(load.maxInFlight);
  const bodyBytes = new Budget(load.maxBodyBytesInFlight);
  metrics.observeBodyBytes(bodyBytes);
  const observer = new RequestObserver(metrics, log);
  const auth = new Authenticator(tokens);
  const rateLimiter = new RateLimiter(store, log ? { logger: log } : {});
  const principals: Principals = new WeakMap();
  // Every context carries the principal its request was authenticated as; none is a bug in a
  // path, and fails closed.
  const context = (initial: Record<string, unknown>) => {
    const principal = (initial as Record<symbol, unknown>)[PRINCIPAL] as Principal | undefined;
    if (!principal) throw new GraphQLError(UNAUTHENTICATED_MESSAGE, { extensions: { code: UNAUTHENTICATED, http: { status: 401 } } });
    return createContext(store, limits, feed, principal, auth.signalFor(principal));
  };
  const yoga = createYoga<Record<string, unknown>, Context>({
    schema,
    graphqlEndpoint: ENDPOINT,
    landingPage: false,
    graphiql: graphiql ? { title: 'kvql' } : false,
    cors: corsOptions(browser),
    maskedErrors: { maskError },
    // kvql's own body limit (bodyLimit.ts) answers with its documented code; yoga's built-in
    // one (25 MB) would refuse batches that kvql's limits allow.
    maxRequestBodySize: false,
    parserAndValidationCache: { documentCache: new BoundedCache(), errorCache: new BoundedCache() },
    ...(logger ? { logging: logger } : log ? { logging: yogaLogger(log) } : {}),
    context,
    // Admission first: it refuses before the body limit reads a body.
    // Observation first of all: it times and counts whatever the others do, refusals included.
    plugins: [
      observePlugin({ metrics, log, observer }),
      metricsPlugin(metrics),
      // A request from a site that may not call is refused before anything else looks at it.
      ...browserPlugins(ENDPOINT, browser),
      // Before admission: a request without a valid token takes no slot and reads no body.
      authPlugin({ endpoint: ENDPOINT, auth, principals, rateLimiter, graphiql }),
      ...(trustedDocuments ? [trustedDocumentsPlugin(trustedDocuments)] : []),
      admissionPlugin({ endpoint: ENDPOINT, ...load, admission }),
      bodyLimitPlugin(limits.maxBodyBytes),
      readyPlugin(store),
      ...operationLimitPlugins(limits),
      requestParseErrorPlugin(),
      validationThrowPlugin(),
      // Validation rules, so the fast lane and graphql-ws (which validate with yoga's getEnveloped) have them too.
      validationRules([NoSkipOnSubscriptionRootRule, ...(introspection ? [] : [NoSchemaIntrospectionCustomRule])]),
    ],
  });
  const masking = (yoga as unknown as YogaMasking).maskedErrorsOpts;
  if (!masking) throw new Error('graphql-yoga no longer exposes its error masking: the fast lane needs it');
  const listener = createRequestListener({
    yoga: yoga as unknown as YogaForFastLane,
    endpoint: ENDPOINT,
    admission,
    bodyBytes,
    load,
    limits,
    observer,
    auth,
    principals,
    rateLimiter,
    graphiql,
    trustedDocuments,
    context: (principal) => createContext(store, limits, feed, principal),
    maskError: (error) => masking.maskError(error, masking.errorMessage),
  });
  return Object.assign(yoga, { listener, auth, rateLimiter, trustedDocuments, browser, limits }) as unknown as KvYoga;
}

function validationRules(rules: ValidationRule[]): Plugin {
  return {
    onValidate({ addValidationRule }) {
      for (const rule of rules) addValidationRule(rule);
    },
  };
}

/** Trusted documents on yoga's path: the named document's text replaces the request's (none). */
function trustedDocumentsPlugin(docs: TrustedDocuments): Plugin {
  return {
    onParams({ params, setParams, request }) {
      // yoga's GET parser keeps only the four standard parameters: documentId is read here.
      const documentId = (params as { documentId?: unknown }).documentId ?? (request.method === 'GET' ? new URL(request.url).searchParams.get('documentId') ?? undefined : undefined);
      const text = resolveTrusted(docs, { ...params, documentId });
      if (typeof text !== 'string') throw text;
      setParams({ query: text, variables: params.variables, operationName: params.operationName, extensions: params.extensions });
    },
  };
}
