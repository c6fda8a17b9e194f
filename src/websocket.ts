// GraphQL over WebSocket (the graphql-ws protocol that Apollo Client's GraphQLWsLink and urql's
// subscriptionExchange speak), on the same path as HTTP and SSE, running every operation
// through the same yoga pipeline: schema, context, plugins and error masking.
import type { IncomingMessage, Server } from 'node:http';
import type { DocumentNode, ExecutionArgs, GraphQLError, GraphQLFormattedError } from 'graphql';
import { CloseCode, handleProtocols, makeServer, MessageType } from 'graphql-ws';
import { WebSocketServer, type WebSocket } from 'ws';
import { loopbackHost, originAllowed } from './auth/browser.js';
import { rateLimitError } from './auth/rateLimit.js';
import type { Principal } from './auth/tokens.js';
import { resolveTrusted } from './auth/trustedDocuments.js';
import { PRINCIPAL } from './auth/http.js';
import type { KvYoga } from './yoga.js';

/** graphql-ws's close code for a connection that is not authenticated (CloseCode.Unauthorized). */
export const WS_UNAUTHORIZED = 4401;

interface Enveloped {
  execute: (args: ExecutionArgs) => unknown;
  subscribe: (args: ExecutionArgs) => unknown;
}

type Extra = { socket: WebSocket; request: IncomingMessage };

/** `log`: where unexpected failures of a socket go (the server's logger). */
export function attachWebSocket(server: Server, yoga: KvYoga, log: (message: string) => void = (m) => console.error(m)): WebSocketServer {
  const wss = new WebSocketServer({
    server,
    path: yoga.graphqlEndpoint,
    // A message is held whole before it is parsed, as a request body is: the same bound
    // (KV_MAX_BODY_BYTES), where ws's own default (100 MiB) would ignore it. Over it, ws closes
    // the socket with 1009 (message too big).
    maxPayload: yoga.limits.maxBodyBytes,
    // Browsers open WebSockets to any site without CORS: the same Origin allow-list as HTTP, and
    // without tokens a loopback Host only (auth/browser.ts). Refused before the upgrade (ws answers 401).
    verifyClient: ({ origin, req }: { origin?: string; req: IncomingMessage }) =>
      originAllowed(origin, req.headers.host, yoga.browser.corsOrigins) && (yoga.auth.enabled || loopbackHost(req)),
  });
  // A connection's principal, from its connection_init payload; every operation on it runs as that.
  const principals = new WeakMap<object, Principal>();
  const gqlws = makeServer<Record<string, unknown> | undefined, Extra>(
    {
      // Browsers cannot set headers on a WebSocket, so the token travels in connection_init:
      // { "authorization": "Bearer <token>" }. Without a valid one the socket closes with 4401
      // before any operation is accepted.
      onConnect: (ctx) => {
        const params = ctx.connectionParams ?? {};
        const given = params.authorization ?? params.Authorization;
        const principal = yoga.auth.authenticate(typeof given === 'string' ? given : undefined);
        if (!principal) {
          ctx.extra.socket.close(WS_UNAUTHORIZED, 'Unauthorized');
          return false;
        }
        principals.set(ctx, principal);
        // Revoked (KV_TOKENS_FILE changed): the socket closes, ending every operation on it.
        const socket = ctx.extra.socket;
        const revoked = yoga.auth.signalFor(principal);
        const onRevoke = () => socket.close(WS_UNAUTHORIZED, 'Token revoked');
        revoked.addEventListener('abort', onRevoke, { once: true });
        socket.once('close', () => revoked.removeEventListener('abort', onRevoke));
        return true;
      },
      // yoga's hooks give errors an `http` extension (a status) meant for HTTP answers; a
      // WebSocket message has no status, so it is left out.
      onNext: (_ctx, _id, _payload, _args, result) => (result.errors ? { ...result, errors: result.errors.map(withoutHttp) } : undefined),
      onError: (_ctx, _id, _payload, errors) => errors.map(withoutHttp),
      execute: (args) => (args.rootValue as Enveloped).execute(args) as never,
      subscribe: (args) => (args.rootValue as Enveloped).subscribe(args) as never,
      onSubscribe: async (ctx, _id, params) => {
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...ctx,
          // A request, as yoga's HTTP pipeline has: yoga's parse hook gives a syntax error its
          // code there, and its parse cache keeps the error for the HTTP requests that follow.
          request: OPERATION_REQUEST,
          req: ctx.extra.request,
          socket: ctx.extra.socket,
          params,
          [PRINCIPAL]: principals.get(ctx),
        });
        // Each operation counts against its token's rate limits, its message's size as its bytes.
        const principal = principals.get(ctx);
        if (principal?.rateLimit) {
          const verdict = await yoga.rateLimiter.check(principal, Buffer.byteLength(JSON.stringify(params)));
          if (!verdict.ok) return [rateLimitError(verdict)];
        }
        // Trusted documents: send `query: ""` and name the document in extensions.
        let text = params.query;
        if (yoga.trustedDocuments) {
          const trusted = resolveTrusted(yoga.trustedDocuments, params);
          if (typeof trusted !== 'string') return [trusted];
          text = trusted;
        }
        // A document that does not parse (a syntax error, or over the token limit) fails this
        // operation with its error, as over HTTP; thrown, it would close the whole socket (4500).
        let document: DocumentNode;
        try {
          document = parse(text);
        } catch (err) {
          // Duck-typed, as in graphql/errors.ts: instanceof fails across two graphql copies.
          if (err instanceof Error && err.name === 'GraphQLError') return [err as GraphQLError];
          throw err;
        }
        const args = {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe },
        };
        const errors = validate(args.schema, args.document);
        if (errors.length) return errors;
        return args;
      },
    },
  );
  wss.options.handleProtocols = handleProtocols;
  // ws re-emits the HTTP server's errors (EADDRINUSE at listen) here: the server's owner handles
  // them (server.ts); unhandled, they would end the process before it stops what it started.
  wss.on('error', () => {});
  // graphql-ws's own ws wiring (graphql-ws/use/ws), with two changes: a message a client may not
  // send (connection_ack, next, an id too long for a close reason) closes the socket with 4400,
  // the protocol's code for a client's mistake, where graphql-ws would throw and close with 4500
  // (and ws would throw on a close reason over 123 bytes); and what does fail is logged by kvql.
  wss.on('connection', (socket, request) => {
    socket.once('error', (err) => {
      log(`graphql-ws socket error: ${err.message}`);
      socket.close(CloseCode.InternalServerError, 'Internal server error');
    });
    // Keep-alive: a client that answers no ping within KEEP_ALIVE_MS is gone.
    let pongWait: NodeJS.Timeout | undefined;
    const pinger = setInterval(() => {
      if (socket.readyState !== socket.OPEN) return;
      pongWait = setTimeout(() => socket.terminate(), KEEP_ALIVE_MS);
      socket.once('pong', () => clearTimeout(pongWait));
      socket.ping();
    }, KEEP_ALIVE_MS);
    const closed = gqlws.opened(
      {
        protocol: socket.protocol,
        send: (data) =>
          new Promise<void>((resolve, reject) => {
            if (socket.readyState !== socket.OPEN) return resolve();
            socket.send(data, (err) => (err ? reject(err) : resolve()));
          }),
        close: (code, reason) => socket.close(code, reason),
        onMessage: (cb) =>
          socket.on('message', async (data) => {
            const text = String(data);
            const mistake = clientMistake(text);
            if (mistake) return socket.close(CloseCode.BadRequest, mistake);
            try {
              await cb(text);
            } catch (err) {
              log(`graphql-ws message handling failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
              socket.close(CloseCode.InternalServerError, 'Internal server error');
            }
          }),
      },
      { socket, request },
    );
    socket.once('close', (code, reason) => {
      clearTimeout(pongWait);
      clearInterval(pinger);
      void closed(code, String(reason));
    });
  });
  return wss;
}

/** An error as graphql-ws sends it (its JSON form), without the `http` extension. */
function withoutHttp(error: GraphQLError): GraphQLFormattedError {
  const json = error.toJSON();
  if (!json.extensions || !('http' in json.extensions)) return json;
  const { http: _, ...extensions } = json.extensions;
  const { extensions: __, ...rest } = json;
  return Object.keys(extensions).length > 0 ? { ...rest, extensions } : rest;
}

/** How often a socket is pinged, and how long its pong may take (graphql-ws's default). */
const KEEP_ALIVE_MS = 12_000;

/** The request every graphql-ws operation is parsed and validated with (see onSubscribe). */
const OPERATION_REQUEST = new Request('http://localhost/graphql', { method: 'POST' });

/** Message types a client may send in graphql-transport-ws. */
const CLIENT_TYPES = new Set<string>([MessageType.ConnectionInit, MessageType.Ping, MessageType.Pong, MessageType.Subscribe, MessageType.Complete]);
/** Longer ids would not fit graphql-ws's close reason "Subscriber for <id> already exists" (123 bytes). */
const MAX_ID_LENGTH = 64;

/** Why a message is a client's protocol mistake (closed with 4400), or undefined to let graphql-ws judge it. */
function clientMistake(text: string): string | undefined {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return undefined; // graphql-ws closes with 4400 itself
  }
  if (typeof message !== 'object' || message === null) return undefined;
  const { type, id } = message as { type?: unknown; id?: unknown };
  if (typeof type === 'string' && !CLIENT_TYPES.has(type)) return `Invalid message: a client does not send ${type.slice(0, 32)}`;
  if (typeof id === 'string' && id.length > MAX_ID_LENGTH) return `Invalid message: id longer than ${MAX_ID_LENGTH} characters`;
  return undefined;
}
