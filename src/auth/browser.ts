// What keeps a web page in someone's browser from using kvql behind their back:
//  - CORS: only origins on the allow-list (KV_CORS_ORIGINS) may call from another site, and a
//    request from any other site is refused outright (403 ORIGIN_NOT_ALLOWED), not merely left
//    unreadable: a "simple" cross-site request would otherwise still run;
//  - CSRF prevention (graphql-yoga's plugin): a request a browser sends without a preflight
//    (GET, or a form's content type) must carry a header only scripts can set (403
//    CSRF_HEADER_REQUIRED);
//  - DNS rebinding: with authentication off (loopback only), a request must name a loopback host,
//    or a page on evil.example resolved to 127.0.0.1 would be "same-origin" (403 HOST_NOT_ALLOWED).
// A request with a bearer token is never "simple", so a browser preflights it anyway; these
// matter most for a loopback server without tokens, and they cost a header lookup each.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { createGraphQLError, type Plugin } from 'graphql-yoga';
import { isLoopback } from '../config.js';

export const ORIGIN_NOT_ALLOWED = 'ORIGIN_NOT_ALLOWED';
export const CSRF_HEADER_REQUIRED = 'CSRF_HEADER_REQUIRED';
export const HOST_NOT_ALLOWED = 'HOST_NOT_ALLOWED';

/** Any one of these marks a request as sent by a script (each forces a browser preflight). */
export const CSRF_HEADERS = ['x-graphql-yoga-csrf', 'graphql-require-preflight', 'apollo-require-preflight', 'x-apollo-operation-name'];

/** The headers a cross-site client may send, for the preflight answer. */
const ALLOWED_HEADERS = ['authorization', 'content-type', 'accept', 'x-request-id', ...CSRF_HEADERS];

export interface BrowserPolicy {
  /** KV_CORS_ORIGINS: origins allowed from other sites; "*" allows every origin. */
  corsOrigins: readonly string[];
  /** KV_CSRF_PREVENTION. */
  csrfPrevention: boolean;
}

/** Whether a request with this Origin header may run: no Origin (not a browser), same origin, or listed. */
export function originAllowed(origin: string | null | undefined, host: string | null | undefined, allowed: readonly string[]): boolean {
  if (origin === undefined || origin === null) return true;
  if (allowed.includes('*') || allowed.includes(origin)) return true;
  try {
    return host !== undefined && host !== null && new URL(origin).host === host.toLowerCase();
  } catch {
    return false; // "null" (a sandboxed frame, a file: page) and garbage
  }
}

/** The host part of a Host header ("127.0.0.1:4000" → "127.0.0.1", "[::1]:4000" → "::1"). */
function hostname(host: string): string {
  const m = /^\[([^\]]*)\]|^([^:]*)/.exec(host);
  return (m?.[1] ?? m?.[2] ?? '').toLowerCase();
}

// Clients send the same Host with every request: judge each once (bounded).
const loopbackHosts = new Map<string, boolean>();

/** For auth off: whether the request names a loopback host (see the top of this file). */
export function loopbackHost(req: IncomingMessage): boolean {
  const host = req.headers.host;
  if (host === undefined) return false;
  let loopback = loopbackHosts.get(host);
  if (loopback === undefined) {
    loopback = isLoopback(hostname(host));
    if (loopbackHosts.size < 64) loopbackHosts.set(host, loopback);
  }
  return loopback;
}

const refusalBody = (code: string, message: string) => JSON.stringify({ errors: [{ message, extensions: { code } }] });

export const HOST_REFUSAL = refusalBody(HOST_NOT_ALLOWED, 'this server (no tokens configured) answers only requests to a loopback host name such as 127.0.0.1 or localhost');

export function writeRefusal(res: ServerResponse, body: string): void {
  res.writeHead(403, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** graphql-yoga's `cors` option for the allow-list: none listed, no CORS headers at all. */
export function corsOptions(policy: BrowserPolicy) {
  if (policy.corsOrigins.length === 0) return false as const;
  return {
    origin: [...policy.corsOrigins],
    // Tokens travel in the Authorization header, never in cookies.
    credentials: false,
    methods: ['GET', 'POST', 'OPTIONS'],
    allowedHeaders: ALLOWED_HEADERS,
    exposedHeaders: ['x-request-id', 'retry-after'],
    maxAge: 600,
  };
}

/** The origin check and CSRF prevention, as yoga plugins (the fast lane hands every request with an Origin to yoga). */
export function browserPlugins(endpoint: string, policy: BrowserPolicy): Plugin[] {
  const plugins: Plugin[] = [
    {
      onRequest({ request, url, endResponse, fetchAPI }) {
        if (url.pathname !== endpoint) return;
        if (originAllowed(request.headers.get('origin'), request.headers.get('host') ?? url.host, policy.corsOrigins)) return;
        endResponse(
          new fetchAPI.Response(refusalBody(ORIGIN_NOT_ALLOWED, 'requests from this origin are not allowed (KV_CORS_ORIGINS)'), {
            status: 403,
            headers: { 'content-type': 'application/json; charset=utf-8' },
          }),
        );
      },
    },
  ];
  if (policy.csrfPrevention) {
    // graphql-yoga's own plugin decides; its refusal gains kvql's stable code.
    const csrf = useCSRFPrevention({ requestHeaders: CSRF_HEADERS }) as { onRequestParse(payload: unknown): void };
    plugins.push({
      onRequestParse(payload) {
        try {
          csrf.onRequestParse(payload);
        } catch (err) {
          throw createGraphQLError(`${(err as Error).message}: a GET (or a form-encoded POST) needs one of the headers ${CSRF_HEADERS.join(', ')}`, {
            extensions: { code: CSRF_HEADER_REQUIRED, http: { status: 403 } },
          });
        }
      },
    });
  }
  return plugins;
}
