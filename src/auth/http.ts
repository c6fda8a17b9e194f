// Authentication of HTTP requests (POST, GET and SSE alike), done once per request by the Node
// listener (fastLane.ts) before it picks a path, and by a yoga plugin for requests that reach
// yoga without that listener (yoga.fetch). Both refuse with the same 401 answer.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Plugin } from 'graphql-yoga';
import { rateLimitRefusal, type RateLimiter } from './rateLimit.js';
import { UNAUTHENTICATED_HEADERS, unauthenticatedBody, type Authenticator, type Principal } from './tokens.js';

/** Principals the listener authenticated, by their IncomingMessage, for yoga's path to pick up. */
export type Principals = WeakMap<object, Principal>;

/**
 * Where a request's principal lives in its server context, and so in its GraphQL context (yoga
 * merges the server context in; graphql-ws puts it in the initial context): not by Request, which
 * a plugin may replace (bodyLimit.ts does).
 */
export const PRINCIPAL = Symbol('kvql.principal');

/**
 * The principal of a Node request; null when it must be refused. Node keeps only the first of
 * several Authorization headers, so two are refused here rather than one silently chosen.
 */
export function authenticateNode(auth: Authenticator, req: IncomingMessage): Principal | null {
  if (!auth.enabled) return auth.authenticate(undefined);
  let seen = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 13 && raw[i]!.toLowerCase() === 'authorization') seen++;
  if (seen !== 1) return null;
  return auth.authenticate(req.headers.authorization);
}

/**
 * Whether yoga answers this request with the GraphiQL page (graphql-yoga's own test: a GET that
 * accepts text/html), which runs no operation and holds no data: it loads without a token, and
 * the token goes in GraphiQL's Headers tab ({"Authorization": "Bearer ..."}) for each operation.
 */
export function isGraphiQLPage(method: string | undefined, accept: string | null | undefined): boolean {
  return method === 'GET' && !!accept?.includes('text/html');
}

/** The one refusal of a request without a valid token: 401, WWW-Authenticate: Bearer, UNAUTHENTICATED. */
export function writeUnauthenticated(res: ServerResponse, extraHeaders: Record<string, string> = {}): void {
  res.writeHead(401, { ...UNAUTHENTICATED_HEADERS, 'content-length': Buffer.byteLength(unauthenticatedBody), ...extraHeaders });
  res.end(unauthenticatedBody);
}

export function unauthenticatedResponse(fetchAPI: { Response: typeof Response }): Response {
  return new fetchAPI.Response(unauthenticatedBody, { status: 401, headers: UNAUTHENTICATED_HEADERS });
}

/**
 * For yoga's own pipeline: takes the principal the listener found (and rate-checked), or (a
 * request that did not come through the listener) authenticates and rate-checks it itself;
 * refuses before anything reads the body. CORS preflights (OPTIONS) carry no credentials and run
 * nothing: they pass.
 */
export function authPlugin(opts: { endpoint: string; auth: Authenticator; principals: Principals; rateLimiter: RateLimiter; graphiql: boolean }): Plugin {
  const { endpoint, auth, principals, rateLimiter, graphiql } = opts;
  return {
    async onRequest({ request, serverContext, url, endResponse, fetchAPI }) {
      if (url.pathname !== endpoint || request.method === 'OPTIONS') return;
      if (graphiql && isGraphiQLPage(request.method, request.headers.get('accept'))) return;
      const req = (serverContext as { req?: object } | undefined)?.req;
      const fromListener = req && principals.get(req);
      const principal = fromListener ?? auth.authenticate(request.headers.get('authorization'));
      if (!principal) return endResponse(unauthenticatedResponse(fetchAPI));
      if (!fromListener && principal.rateLimit) {
        const length = Number(request.headers.get('content-length') ?? 0);
        const verdict = await rateLimiter.check(principal, Buffer.byteLength(request.url) + (Number.isSafeInteger(length) && length > 0 ? length : 0));
        if (!verdict.ok) {
          const refusal = rateLimitRefusal(verdict);
          return endResponse(new fetchAPI.Response(refusal.body, { status: refusal.status, headers: refusal.headers }));
        }
      }
      (serverContext as Record<symbol, unknown>)[PRINCIPAL] = principal;
    },
  };
}
