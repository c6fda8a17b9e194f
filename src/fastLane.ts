// The fast lane: the Node request listener in front of graphql-yoga. It answers the common case
// itself, a POST of a JSON body holding a query or mutation whose document yoga has already
// parsed and validated, and hands everything else to yoga unchanged.
//
// Why it exists: profiled on a 2-core machine, yoga's request pipeline (the fetch-API Request
// and Response objects of @whatwg-node, the envelop hooks run per request) costs most of a read.
// One get over HTTP at 16 concurrent clients served 2,499.81 requests/s through yoga and
// 14,271.75/s with a prototype of this path, over the same schema, resolvers and Redis (README,
// "How a request is served: the fast lane"). What the fast lane keeps, so that a client cannot tell the two paths apart:
//  - validation: a document is served here only after yoga's own parse and validate (with every
//    plugin's rules: Armor's limits, the token limit) accepted it; documents are cached by text;
//  - admission control and the deadline (admission.ts), the work budget (operationLimits.ts);
//  - execution by the executor yoga uses (@graphql-tools/executor, which honours the deadline's
//    cancellation signal), with a fresh per-request context;
//  - error masking and logging by yoga's own masking function, and the result's status, headers
//    and body by yoga's own result processor (content negotiation as yoga does it);
//  - the request id, metrics and debug log line (observe.ts).
// Before either path: authentication (auth/http.ts), once per request to the endpoint; a request
// without a valid token is refused here with 401 and reaches neither path.
// Handed to yoga: other paths and methods, other content types, browsers (an Origin header:
// CORS is yoga's), bodies without a Content-Length or over the limit, anything that does not
// parse or validate, subscriptions, and Accept headers that would not get JSON.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { execute } from '@graphql-tools/executor';
import { getOperationAST, type DocumentNode, type ExecutionArgs, type ExecutionResult, type GraphQLSchema } from 'graphql';
import { processRegularResult } from 'graphql-yoga';
import { bodyBytesOverloadedBody, executeWithDeadline, overloadedBody as refusalBody, OVERLOADED, RETRY_AFTER_SECONDS, type Admission } from './admission.js';
import type { Budget } from './budget.js';
import { HOST_REFUSAL, loopbackHost, writeRefusal } from './auth/browser.js';
import { authenticateNode, isGraphiQLPage, writeUnauthenticated, type Principals } from './auth/http.js';
import { rateLimitRefusal, type RateLimiter, type RateVerdict } from './auth/rateLimit.js';
import { UNAUTHENTICATED, type Authenticator, type Principal } from './auth/tokens.js';
import { resolveTrusted, type TrustedDocuments } from './auth/trustedDocuments.js';
import type { Limits, LoadConfig } from './config.js';
import type { Context } from './graphql/builder.js';
import { BoundedCache } from './graphql/documentCache.js';
import { tagError } from './log.js';
import { REQUEST_ID_HEADER, type RequestObserver } from './observe.js';
import { workBudgetRefusal } from './operationLimits.js';

/**
 * Headers that keep a browser from misusing a response: no content sniffing, no framing (no
 * clickjacking of GraphiQL), no referrer leaking keys in URLs, no cross-origin window access.
 */
export const SECURITY_HEADERS: readonly (readonly [string, string])[] = [
  ['x-content-type-options', 'nosniff'],
  ['x-frame-options', 'DENY'],
  ['referrer-policy', 'no-referrer'],
  ['cross-origin-opener-policy', 'same-origin'],
];

/** What the fast lane needs of the yoga server object. */
export interface YogaForFastLane {
  (req: IncomingMessage, res: ServerResponse): unknown;
  fetch(url: string, init: RequestInit, serverContext?: { req: IncomingMessage }): Response | Promise<Response>;
  getEnveloped(initialContext: Record<string, unknown>): {
    parse(source: string): DocumentNode;
    validate(schema: GraphQLSchema, document: DocumentNode): readonly unknown[];
    schema: GraphQLSchema;
  };
}

/** Bodies from this size on count against KV_MAX_BODY_BYTES_IN_FLIGHT (see holdBody). */
export const BODY_BYTES_COUNTED_FROM = 64 * 1024;

/** What a response holds of KV_MAX_BODY_BYTES_IN_FLIGHT, in bytes (see holdBody). */
const HELD = Symbol('kvql.bodyBytesHeld');
type Holding = ServerResponse & { [HELD]?: number };

export interface FastLaneOptions {
  yoga: YogaForFastLane;
  endpoint: string;
  admission: Admission;
  /**
   * Bytes of request bodies held at once (KV_MAX_BODY_BYTES_IN_FLIGHT): `admission`'s slots are
   * taken once a body has been read, so without this, many large bodies arriving together (or
   * slowly) would all be held in memory before any slot was asked for.
   */
  bodyBytes: Budget;
  load: LoadConfig;
  limits: Limits;
  observer: RequestObserver;
  /** Bearer tokens: every request to the endpoint is authenticated here, once, before either path. */
  auth: Authenticator;
  /**
   * Where the principal is left for yoga's path (auth/http.ts's plugin and yoga's context read
   * it): set only for a request handed to yoga (a WeakMap insertion per request cost about 1 µs
   * in a profile, and the fast lane passes the principal itself).
   */
  principals: Principals;
  /** A fresh per-request context for this principal, as yoga's context factory builds. */
  context: (principal: Principal) => Context;
  /** yoga's masking function: masks an unexpected error and logs the original in full. */
  maskError: (error: unknown) => unknown;
  /** Per-token rate limits, checked once per request before either path (tokens without limits cost nothing). */
  rateLimiter: RateLimiter;
  /** KV_GRAPHIQL: the GraphiQL page loads without a token (it runs nothing; auth/http.ts). */
  graphiql: boolean;
  /** KV_TRUSTED_DOCUMENTS: only requests naming one of these are served here; yoga refuses the rest. */
  trustedDocuments?: TrustedDocuments;
}

interface Params {
  query: string;
  variables?: Record<string, unknown> | null;
  operationName?: string | null;
  extensions?: Record<string, unknown> | null;
}

/** A document yoga has accepted, ready to execute; null when the fast lane must not serve it. */
interface Prepared {
  document: DocumentNode;
  schema: GraphQLSchema;
}

type NodeListener = (req: IncomingMessage, res: ServerResponse) => void;
type RateRefusal = Exclude<RateVerdict, { ok: true }>;

const JSON_TYPE = /^application\/json\s*(;\s*charset=utf-8\s*)?$/i;
const PARAM_KEYS = new Set(['query', 'variables', 'operationName', 'extensions']);
const isObjectOrNull = (v: unknown) => v === undefined || v === null || (typeof v === 'object' && !Array.isArray(v));

function asParams(body: unknown): Params | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const o = body as Record<string, unknown>;
  for (const k in o) if (!PARAM_KEYS.has(k)) return undefined;
  if (typeof o.query !== 'string') return undefined;
  if (!isObjectOrNull(o.variables) || !isObjectOrNull(o.extensions)) return undefined;
  if (o.operationName !== undefined && o.operationName !== null && typeof o.operationName !== 'string') return undefined;
  return o as unknown as Params;
}

const REGULAR_TYPES = ['application/graphql-response+json', 'application/json'] as const;
type RegularType = (typeof REGULAR_TYPES)[number];

const matches = (asked: string, offered: string) => {
  const [ap, as] = asked.split('/');
  const [op, os] = offered.split('/');
  return (op === '*' || op === ap) && (os === '*' || os === as);
};

/**
 * The JSON media type yoga would answer a query or mutation with for this Accept header, or
 * undefined when it would pick no JSON type (then yoga answers). graphql-yoga's own rule
 * (use-result-processor.js): the accepted types in reverse, utf-8 only, the last match wins.
 */
export function negotiateJson(accept: string | undefined): RegularType | undefined {
  const asked = (accept || '*/*').replace(/\s/g, '').toLowerCase().split(',');
  let chosen: RegularType | undefined;
  for (let i = asked.length - 1; i >= 0; i--) {
    const [type, ...params] = asked[i]!.split(';');
    if (type === undefined) continue;
    const charset = params.find((p) => p.includes('charset=')) ?? 'charset=utf-8';
    if (charset !== 'charset=utf-8') continue;
    for (const offered of REGULAR_TYPES) if (matches(offered, type)) chosen = offered;
  }
  return chosen;
}

// A client sends the same Accept header with every request: negotiate each once.
const negotiated = new Map<string, RegularType | undefined>();
const MAX_NEGOTIATED = 64;

function negotiateCached(accept: string | undefined): RegularType | undefined {
  const key = accept ?? '';
  if (negotiated.has(key)) return negotiated.get(key);
  const type = negotiateJson(accept);
  if (negotiated.size < MAX_NEGOTIATED) negotiated.set(key, type);
  return type;
}

/** Captures what yoga's result processor would send, without building a fetch Response. */
class CapturedResponse {
  constructor(
    readonly body: string,
    readonly init: { status?: number; headers?: Record<string, string> },
  ) {}
}
const capture = { Response: CapturedResponse } as unknown as typeof globalThis;

export function createRequestListener(opts: FastLaneOptions): NodeListener {
  const { yoga, endpoint, admission, bodyBytes, limits, observer, trustedDocuments: trusted } = opts;
  const { requestTimeoutMs, maxInFlight } = opts.load;
  const prepared = new BoundedCache<Prepared | null>();
  const overloadedBody = refusalBody(maxInFlight);
  const bodyBytesRefusal = bodyBytesOverloadedBody(opts.load.maxBodyBytesInFlight);
  // Bound once: labelled inc() would look the label set up on every request.
  const fastLane = observer.metrics.lanes.labels({ lane: 'fast' });
  const yogaLane = observer.metrics.lanes.labels({ lane: 'yoga' });

  /** Yoga's verdict on a document: parsed and valid, a query or mutation, else null. */
  const prepare = (params: Params): Prepared | null => {
    try {
      // With a request in the context, as yoga's own pipeline has: some of yoga's hooks (the one
      // that gives parse errors their HTTP status, and its parse cache keeps that error) look at it.
      const request = new Request(`http://localhost${endpoint}`, { method: 'POST' });
      const { parse, validate, schema } = yoga.getEnveloped({ request, params });
      const document = parse(params.query);
      if (validate(schema, document).length > 0) return null;
      const operation = getOperationAST(document, params.operationName ?? undefined);
      if (!operation || operation.operation === 'subscription') return null;
      return { document, schema };
    } catch {
      return null; // yoga answers it, with the error it raises
    }
  };

  /** Hands a request whose body was already read to yoga, with the principal authenticated here. */
  const delegate = async (req: IncomingMessage, res: ServerResponse, body: Buffer, principal: Principal) => {
    yogaLane.inc();
    opts.principals.set(req, principal);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
    }
    // With `req` as the server context, as yoga(req, res) has it: the plugin finds its principal.
    const response = await yoga.fetch(`http://${req.headers.host ?? 'localhost'}${req.url}`, { method: req.method, headers, body: body as unknown as BodyInit }, { req });
    const out: Record<string, string | string[]> = {};
    response.headers.forEach((value, name) => {
      out[name] = value;
    });
    res.writeHead(response.status, out);
    if (!response.body) return void res.end();
    // Streamed (a subscription answered over SSE goes on for as long as the client listens).
    const reader = response.body.getReader();
    res.on('close', () => void reader.cancel().catch(() => {}));
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      res.write(value);
    }
    res.end();
  };

  const refuse = (req: IncomingMessage, res: ServerResponse, start: number, body = overloadedBody) => {
    const st = observer.begin(header(req, REQUEST_ID_HEADER), true, start);
    st.outcome = OVERLOADED;
    st.status = 503;
    res.writeHead(503, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'retry-after': String(RETRY_AFTER_SECONDS),
      [REQUEST_ID_HEADER]: st.id,
    });
    res.end(body);
    observer.finish(st, 'POST', false);
  };

  /**
   * Takes room for the request's body before a byte of it is read, and gives it back once the
   * response is done, or the client gone (on this path the body and what is parsed from it live
   * that long); false when there is no room. A body without a Content-Length (chunked) may be as
   * large as the limit, so it takes that much; one over the limit takes nothing (it is refused
   * with 413 without being read), nor does a request without a body, nor a small one (under
   * BODY_BYTES_COUNTED_FROM): those arrive with their headers, and counting every request cost
   * more than the memory it bounds (README, "Limits under load").
   */
  const holdBody = (req: IncomingMessage, res: ServerResponse, length: string | undefined): boolean => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return true;
    const declared = length === undefined ? limits.maxBodyBytes : Number(length);
    if (!(declared <= limits.maxBodyBytes) || declared < BODY_BYTES_COUNTED_FROM) return true;
    if (!bodyBytes.take(declared)) return false;
    (res as Holding)[HELD] = declared;
    res.on('close', giveBack);
    return true;
  };
  /** A 'close' listener of a response that holds room (`this` is the response); once only. */
  function giveBack(this: Holding): void {
    bodyBytes.give(this[HELD]!);
    this[HELD] = 0;
  }
  /** On yoga's path the body is read first, and a subscription's response may last for hours. */
  const bodyRead = (req: IncomingMessage, res: ServerResponse) => {
    if ((res as Holding)[HELD]) req.once('end', () => giveBack.call(res as Holding));
  };

  const unauthenticated = (req: IncomingMessage, res: ServerResponse, start: number) => {
    const st = observer.begin(header(req, REQUEST_ID_HEADER), true, start);
    st.outcome = UNAUTHENTICATED;
    st.status = 401;
    writeUnauthenticated(res, { [REQUEST_ID_HEADER]: st.id });
    observer.finish(st, req.method ?? 'POST', false);
  };

  const serve = async (req: IncomingMessage, res: ServerResponse, body: Buffer, start: number, deadlineAt: number, accepted: RegularType, principal: Principal) => {
    let params: Params | undefined;
    try {
      params = asParams(trusted ? withTrustedText(trusted, JSON.parse(body.toString('utf8'))) : JSON.parse(body.toString('utf8')));
    } catch {
      params = undefined;
    }
    if (!params) return delegate(req, res, body, principal);
    const operationName = params.operationName ?? undefined;
    const cacheKey = operationName ? `${operationName}\n${params.query}` : params.query;
    let ready = prepared.get(cacheKey);
    if (ready === undefined) prepared.set(cacheKey, (ready = prepare(params)));
    if (!ready) return delegate(req, res, body, principal);

    // The slot is taken once the body has been read, as the admission plugin does.
    const release = admission.tryAcquire();
    if (!release) return refuse(req, res, start);
    const st = observer.begin(header(req, REQUEST_ID_HEADER), true, start);
    fastLane.inc();
    let threw = true;
    try {
      st.operation = observer.operationOf(ready.document, operationName);
      const variables = params.variables ?? {};
      const refusal = workBudgetRefusal(ready.document, operationName, variables, limits, true);
      let result: ExecutionResult;
      if (refusal) result = { errors: [refusal] };
      else {
        try {
          const args = { schema: ready.schema, document: ready.document, contextValue: opts.context(principal), variableValues: variables, operationName } as ExecutionArgs;
          result = (await executeWithDeadline(execute as never, args, deadlineAt, true, requestTimeoutMs)) as ExecutionResult;
        } catch (err) {
          tagError(err, st.id);
          result = { errors: [opts.maskError(err) as never] };
        }
      }
      if (result.errors?.length) {
        for (const e of result.errors) tagError(e, st.id);
        result = { ...result, errors: result.errors.map((e) => opts.maskError(e) as never) };
      }
      st.outcome = observer.outcomeOf(result as never);
      const answer = processRegularResult(result, capture as never, accepted) as unknown as CapturedResponse;
      st.status = answer.init.status ?? 200;
      // One by one, as writeHead would set them anyway: the security headers are already set
      // (setHeader), and a merged object would only be built to be taken apart again.
      const headers = answer.init.headers;
      if (headers) for (const name in headers) res.setHeader(name, headers[name]!);
      res.setHeader('content-length', Buffer.byteLength(answer.body));
      res.setHeader(REQUEST_ID_HEADER, st.id);
      res.writeHead(st.status);
      res.end(answer.body);
      threw = false;
    } finally {
      release();
      observer.finish(st, 'POST', threw);
    }
  };


  /** After authentication and rate limits: admission, then the fast lane or yoga. */
  const route = (req: IncomingMessage, res: ServerResponse, start: number, deadlineAt: number, principal: Principal | null) => {
    // A refusal here costs an HTTP parse and nothing else: no body read, no yoga.
    if (admission.full && req.method !== 'OPTIONS') return refuse(req, res, start);
    const length = req.headers['content-length'];
    if (!holdBody(req, res, length)) return refuse(req, res, start, bodyBytesRefusal);
    const accepted = negotiateCached(header(req, 'accept') ?? undefined);
    if (
      req.method !== 'POST' ||
      req.url !== endpoint ||
      !accepted ||
      req.headers.origin !== undefined ||
      !JSON_TYPE.test(req.headers['content-type'] ?? '') ||
      length === undefined ||
      !(Number(length) <= limits.maxBodyBytes)
    ) {
      if (req.method === 'POST') yogaLane.inc();
      if (principal) opts.principals.set(req, principal);
      bodyRead(req, res);
      return void yoga(req, res);
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      serve(req, res, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), start, deadlineAt, accepted, principal!).catch((err: unknown) => fail(res, err));
    });
  };

  /** Only a bug gets here (every expected error is answered): masked, logged, and never a hanging client. */
  const fail = (res: ServerResponse, err: unknown) => {
    opts.maskError(err);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ errors: [{ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] }));
  };

  const rateRefuse = (req: IncomingMessage, res: ServerResponse, start: number, verdict: RateRefusal) => {
    const st = observer.begin(header(req, REQUEST_ID_HEADER), true, start);
    const refusal = rateLimitRefusal(verdict);
    st.outcome = verdict.code;
    st.status = refusal.status;
    res.writeHead(refusal.status, { ...refusal.headers, 'content-length': Buffer.byteLength(refusal.body), [REQUEST_ID_HEADER]: st.id });
    res.end(refusal.body);
    observer.finish(st, req.method ?? 'POST', false);
  };

  const lengthRequired = (req: IncomingMessage, res: ServerResponse, start: number) => {
    const st = observer.begin(header(req, REQUEST_ID_HEADER), true, start);
    st.outcome = LENGTH_REQUIRED;
    st.status = 411;
    res.writeHead(411, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(lengthRequiredBody), [REQUEST_ID_HEADER]: st.id });
    res.end(lengthRequiredBody);
    observer.finish(st, req.method ?? 'POST', false);
  };

  return (req, res) => {
    // On every response, whichever path writes it (headers set here merge with writeHead's).
    for (const [name, value] of SECURITY_HEADERS) res.setHeader(name, value);
    // A target yoga could not make a URL of (a Host like "a b", a request target "*") would
    // become a 500 with a stack trace from deep inside yoga: refuse it here, plainly.
    if (req.url?.charCodeAt(0) !== 47 || !hostUsable(req.headers.host)) return writeBadTarget(res);
    // Without tokens (loopback only), only a loopback Host: no DNS rebinding (auth/browser.ts).
    if (!opts.auth.enabled && !loopbackHost(req)) return writeRefusal(res, HOST_REFUSAL);
    if (req.url !== endpoint && !req.url?.startsWith(`${endpoint}?`)) return void yoga(req, res);
    const start = performance.now();
    const deadlineAt = Date.now() + requestTimeoutMs;
    // The GraphiQL page runs nothing and holds no data: it loads without a token (auth/http.ts).
    if (opts.graphiql && isGraphiQLPage(req.method, req.headers.accept)) return void yoga(req, res);
    // Authentication, once, for whichever path serves the request: nothing past this line runs
    // for a request without a valid token. A CORS preflight carries no credentials and runs
    // nothing (yoga answers it).
    let principal: Principal | null = null;
    if (req.method !== 'OPTIONS') {
      principal = authenticateNode(opts.auth, req);
      if (!principal) return unauthenticated(req, res, start);
    }
    // Rate limits (auth/rateLimit.ts), for tokens that have them: one Redis check, then on.
    if (principal?.rateLimit) {
      const bytes = requestBytes(req, principal);
      if (bytes === null) return lengthRequired(req, res, start);
      opts.rateLimiter
        .check(principal, bytes)
        .then((verdict) => (verdict.ok ? route(req, res, start, deadlineAt, principal!) : rateRefuse(req, res, start, verdict)))
        .catch((err: unknown) => fail(res, err));
      return;
    }
    route(req, res, start, deadlineAt, principal);
  };
}

/**
 * A request body in trusted-documents mode, with the text of the document it names as its query;
 * undefined (so yoga answers, with its refusal) when it sends text of its own or names no
 * trusted document.
 */
function withTrustedText(docs: TrustedDocuments, body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const text = resolveTrusted(docs, body);
  if (typeof text !== 'string') return undefined;
  const { documentId: _, ...rest } = body as Record<string, unknown>;
  return { ...rest, query: text };
}

// Clients send the same Host with every request: judge each once (bounded, like negotiated).
const usableHosts = new Map<string, boolean>();

/** Whether yoga can build a URL from this Host header (absent: yoga uses localhost). */
function hostUsable(host: string | undefined): boolean {
  if (host === undefined) return true;
  let ok = usableHosts.get(host);
  if (ok === undefined) {
    ok = URL.canParse(`http://${host}/`);
    if (usableHosts.size < MAX_NEGOTIATED) usableHosts.set(host, ok);
  }
  return ok;
}

const badTargetBody = JSON.stringify({ errors: [{ message: 'the Host header or the request target is not a valid URL part', extensions: { code: 'BAD_REQUEST' } }] });

function writeBadTarget(res: ServerResponse): void {
  res.writeHead(400, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(badTargetBody) });
  res.end(badTargetBody);
}

export const LENGTH_REQUIRED = 'LENGTH_REQUIRED';
const lengthRequiredBody = JSON.stringify({
  errors: [{ message: 'this token has a byte rate limit: send the body with a Content-Length', extensions: { code: LENGTH_REQUIRED } }],
});

/**
 * What a request counts against its token's byte rate: its body (by Content-Length, before it is
 * read) and its URL (a GET carries its operation there). null: a body of unknown length
 * (chunked) from a token with a byte limit, which must not slip past it.
 */
function requestBytes(req: IncomingMessage, principal: Principal): number | null {
  const url = Buffer.byteLength(req.url ?? '');
  const length = req.headers['content-length'];
  if (length !== undefined) return /^\d{1,15}$/.test(length) ? url + Number(length) : null;
  if (req.headers['transfer-encoding'] !== undefined && principal.rateLimit?.bytesPerSecond !== undefined) return null;
  return url;
}

function header(req: IncomingMessage, name: string): string | null {
  const v = req.headers[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
}
