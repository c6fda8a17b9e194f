// GraphQL over WebSocket (the graphql-ws protocol that Apollo Client's GraphQLWsLink and urql's
// subscriptionExchange speak), on the same path as HTTP and SSE, running every operation
// through the same yoga pipeline: schema, context, plugins and error masking.
import type { IncomingMessage, Server } from 'node:http';
import type { DocumentNode, ExecutionArgs, GraphQLError } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';
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

export function attachWebSocket(server: Server, yoga: KvYoga): WebSocketServer {
  const wss = new WebSocketServer({
    server,
    path: yoga.graphqlEndpoint,
    // Browsers open WebSockets to any site without CORS: the same Origin allow-list as HTTP, and
    // without tokens a loopback Host only (auth/browser.ts). Refused with 403 before the upgrade.
    verifyClient: ({ origin, req }: { origin?: string; req: IncomingMessage }) =>
      originAllowed(origin, req.headers.host, yoga.browser.corsOrigins) && (yoga.auth.enabled || loopbackHost(req)),
  });
  // A connection's principal, from its connection_init payload; every operation on it runs as that.
  const principals = new WeakMap<object, Principal>();
  useServer(
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
      execute: (args) => (args.rootValue as Enveloped).execute(args) as never,
      subscribe: (args) => (args.rootValue as Enveloped).subscribe(args) as never,
      onSubscribe: async (ctx, _id, params) => {
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...ctx,
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
    wss,
  );
  return wss;
}
