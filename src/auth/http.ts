// Authentication of HTTP requests (POST, GET and SSE alike), done once per request by the Node
// listener (fastLane.ts) before it picks a path, and by a yoga plugin for requests that reach
// yoga without that listener (yoga.fetch). Both refuse with the same 401 answer.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Plugin } from 'graphql-yoga';
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

/** The one refusal of a request without a valid token: 401, WWW-Authenticate: Bearer, UNAUTHENTICATED. */
export function writeUnauthenticated(res: ServerResponse, extraHeaders: Record<string, string> = {}): void {
  res.writeHead(401, { ...UNAUTHENTICATED_HEADERS, 'content-length': Buffer.byteLength(unauthenticatedBody), ...extraHeaders });
  res.end(unauthenticatedBody);
}

export function unauthenticatedResponse(fetchAPI: { Response: typeof Response }): Response {
  return new fetchAPI.Response(unauthenticatedBody, { status: 401, headers: UNAUTHENTICATED_HEADERS });
}

/**
 * For yoga's own pipeline: takes the principal the listener found, or (a request that did not come
 * through the listener) authenticates it itself; refuses before anything reads the body.
 * CORS preflights (OPTIONS) carry no credentials and run nothing: they pass.
 */
export function authPlugin(opts: { endpoint: string; auth: Authenticator; principals: Principals }): Plugin {
  const { endpoint, auth, principals } = opts;
  return {
    onRequest({ request, serverContext, url, endResponse, fetchAPI }) {
      if (url.pathname !== endpoint || request.method === 'OPTIONS') return;
      const req = (serverContext as { req?: object } | undefined)?.req;
      const principal = (req && principals.get(req)) ?? auth.authenticate(request.headers.get('authorization'));
      if (!principal) return endResponse(unauthenticatedResponse(fetchAPI));
      (serverContext as Record<symbol, unknown>)[PRINCIPAL] = principal;
    },
  };
}
