// The request plugin: a request id for every HTTP request (the client's `x-request-id` when it
// is a sane token, else a new one), echoed in the response; the GraphQL request metrics (count
// by operation and outcome, latency, in flight, refusals); change events delivered; and the
// request id on the errors of a request, so that the line logging a masked error names it.
//
// Per request it allocates one small state object; everything else is shared or precomputed.
// It reads a response body only for an error response that ended before GraphQL ran (a refusal),
// to learn its code.
import { randomUUID } from 'node:crypto';
import type { GraphQLSchema } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { tagError, type Logger } from './log.js';
import type { Metrics } from './metrics.js';

export const REQUEST_ID_HEADER = 'x-request-id';
/** A request id we accept from a client: short, and nothing a log line could be confused by. */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:@+=/-]{1,128}$/;
/** An error code usable as a label value. */
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/;
/** Outcomes that mean the request was turned away rather than served. */
const REFUSAL_CODES = new Set(['OVERLOADED', 'PAYLOAD_TOO_LARGE', 'REQUEST_ENTITY_TOO_LARGE', 'RATE_LIMITED']);
const REFUSAL_STATUSES = new Set([413, 429, 503]);
/** Distinct outcome labels we keep; past that, a new code is counted as "other". */
const MAX_OUTCOMES = 64;

const STATE = Symbol('kvql.request');

export interface RequestState {
  id: string;
  start: number;
  /** A request to the GraphQL endpoint (not /health, /ready, /metrics). */
  graphql: boolean;
  operation: string;
  /** "ok" or an error code once known; undefined for a response that was no GraphQL answer. */
  outcome: string | undefined;
  status: number;
}

interface ObserveOptions {
  metrics: Metrics;
  /** The request bookkeeping, when another path (the fast lane) shares it. */
  observer?: RequestObserver;
  /** For the debug-level line per request; none at info. */
  log?: Logger;
  graphqlEndpoint?: string;
}

type WithState = { [STATE]?: RequestState; params?: { operationName?: string | null } };

/** The client's request id if sane, else a new one. */
export function requestId(given: string | null): string {
  return given !== null && SANE_REQUEST_ID.test(given) ? given : randomUUID();
}

/** Whether the path of absolute URL `url` is `path` (without building a URL object). */
function hasPath(url: string, path: string): boolean {
  const scheme = url.indexOf('://');
  const at = url.indexOf('/', scheme < 0 ? 0 : scheme + 3);
  if (at < 0 || !url.startsWith(path, at)) return false;
  const next = url.charCodeAt(at + path.length);
  return Number.isNaN(next) || next === 63 /* ? */ || next === 35 /* # */ || (next === 47 /* / */ && at + path.length + 1 === url.length);
}

interface Selection {
  kind: string;
  name?: { value: string };
  selectionSet?: { selections: readonly Selection[] };
}
interface Definition extends Selection {
  name?: { value: string };
}

/**
 * The label of an operation: the one root field it selects (aliases and repeats aside), or
 * "multiple" when it selects several, or "other" when it is not one of our schema's root fields
 * (introspection, __typename, an unknown field, no such operation).
 */
export function operationLabel(
  document: { definitions: readonly Definition[] },
  operationName: string | null | undefined,
  rootFields: ReadonlySet<string>,
): string {
  let operation: Definition | undefined;
  for (const d of document.definitions) {
    if (d.kind !== 'OperationDefinition') continue;
    if (operationName ? d.name?.value === operationName : operation === undefined) operation = d;
    else if (!operationName) return 'other'; // several operations and no name: invalid
  }
  if (!operation?.selectionSet) return 'other';
  let found: string | undefined;
  let multiple = false;
  let known = true;
  const visit = (selections: readonly Selection[], depth: number) => {
    for (const s of selections) {
      if (s.kind === 'Field') {
        const name = s.name!.value;
        if (name === '__typename') continue;
        if (!rootFields.has(name)) known = false;
        else if (found === undefined) found = name;
        else if (found !== name) multiple = true;
      } else if (depth < 8 && s.kind === 'InlineFragment' && s.selectionSet) {
        visit(s.selectionSet.selections, depth + 1);
      } else if (depth < 8 && s.kind === 'FragmentSpread') {
        const fragment = document.definitions.find((d) => d.kind === 'FragmentDefinition' && d.name?.value === s.name?.value);
        if (fragment?.selectionSet) visit(fragment.selectionSet.selections, depth + 1);
      }
    }
  };
  visit(operation.selectionSet.selections, 0);
  if (!known || found === undefined) return 'other';
  return multiple ? 'multiple' : found;
}

function rootFieldsOf(schema: GraphQLSchema): Set<string> {
  const names = new Set<string>();
  for (const type of [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]) {
    for (const name of Object.keys(type?.getFields() ?? {})) names.add(name);
  }
  return names;
}

type ErrorLike = { extensions?: { code?: unknown } };
type ResultLike = { errors?: readonly ErrorLike[] } | readonly { errors?: readonly ErrorLike[] }[] | AsyncIterable<unknown>;

const isAsyncIterable = (v: unknown): v is AsyncIterable<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';

/**
 * The bookkeeping of GraphQL requests over HTTP, shared by the yoga plugin below and by the
 * fast lane (fastLane.ts), so both count, time and label requests the same way.
 */
export class RequestObserver {
  private rootFields: ReadonlySet<string> = new Set();
  private readonly outcomes = new Set<string>(['ok', 'error', 'other']);
  // graphql-yoga's parser cache hands out one document per query text: label each once.
  private labels = new WeakMap<object, string>();
  // The counter and histogram children of each label set, looked up once rather than a label
  // object built per update (prom-client still validates and hashes the labels inside each
  // update). Bounded: operations and outcomes are small sets.
  private readonly counted = new Map<string, { inc(): void }>();
  private readonly timed = new Map<string, { observe(v: number): void }>();
  private readonly refused = new Map<string, { inc(): void }>();

  constructor(
    readonly metrics: Metrics,
    readonly log?: Logger,
  ) {}

  setSchema(schema: GraphQLSchema): void {
    this.rootFields = rootFieldsOf(schema);
    this.labels = new WeakMap();
  }

  /** A request begins: its id (the client's if sane), its clock, and the in-flight gauge. */
  begin(givenId: string | null, graphql: boolean, start = performance.now()): RequestState {
    const st: RequestState = { id: requestId(givenId), start, graphql, operation: 'other', outcome: undefined, status: 0 };
    if (graphql) this.metrics.requestsInFlight++;
    return st;
  }

  /** An outcome label: "ok", an error code from a small set, "error" or "other". */
  label(code: unknown): string {
    if (typeof code !== 'string' || !CODE.test(code)) return 'error';
    if (this.outcomes.has(code)) return code;
    if (this.outcomes.size >= MAX_OUTCOMES) return 'other';
    this.outcomes.add(code);
    return code;
  }

  outcomeOf(result: ResultLike): string {
    if (isAsyncIterable(result)) return 'ok';
    const results = Array.isArray(result) ? result : [result as { errors?: readonly ErrorLike[] }];
    for (const r of results) {
      const first = r?.errors?.[0];
      if (first) return this.label(first.extensions?.code);
    }
    return 'ok';
  }

  /** The operation label of a parsed document (cached per document when no name is given). */
  operationOf(document: { definitions: readonly Definition[] }, name: string | null | undefined): string {
    if (name) return operationLabel(document, name, this.rootFields);
    let label = this.labels.get(document);
    if (label === undefined) this.labels.set(document, (label = operationLabel(document, undefined, this.rootFields)));
    return label;
  }

  /** A request ends: count it by operation and outcome, time it, and log it at debug. */
  finish(st: RequestState, method: string, threw: boolean): void {
    if (!st.graphql) return;
    const { metrics, log } = this;
    metrics.requestsInFlight--;
    if (threw && st.outcome === undefined) {
      st.outcome = 'INTERNAL_SERVER_ERROR';
      st.status = 500;
    }
    const seconds = (performance.now() - st.start) / 1000;
    const { outcome, operation } = st;
    // A response that answered no GraphQL request (GraphiQL's page, a CORS preflight).
    if (outcome === undefined) return;
    const countKey = `${operation}\n${outcome}`;
    let counter = this.counted.get(countKey);
    if (!counter) this.counted.set(countKey, (counter = metrics.requests.labels({ operation, outcome })));
    counter.inc();
    let timer = this.timed.get(operation);
    if (!timer) this.timed.set(operation, (timer = metrics.requestDuration.labels({ operation })));
    timer.observe(seconds);
    if (REFUSAL_CODES.has(outcome) || REFUSAL_STATUSES.has(st.status)) {
      let refusals = this.refused.get(outcome);
      if (!refusals) this.refused.set(outcome, (refusals = metrics.refusals.labels({ reason: outcome })));
      refusals.inc();
    }
    if (log?.isLevelEnabled('debug')) {
      log.debug({ reqId: st.id, method, status: st.status, operation, outcome, ms: Math.round(seconds * 1e4) / 10 }, 'graphql request');
    }
  }
}

export function observePlugin({ metrics, log, graphqlEndpoint = '/graphql', observer = new RequestObserver(metrics, log) }: ObserveOptions): Plugin {
  const states = new WeakMap<object, RequestState>();
  const label = (code: unknown) => observer.label(code);
  const finish = (st: RequestState, request: Request, threw: boolean) => observer.finish(st, request.method, threw);

  /** The code of a refusal that ended before GraphQL ran, from its (small, JSON) body. */
  const refusalCode = async (response: Response): Promise<string | undefined> => {
    if (!(response.headers.get('content-type') ?? '').includes('json')) return undefined;
    try {
      const body = (await response.clone().json()) as { errors?: ErrorLike[] };
      const code = body?.errors?.[0]?.extensions?.code;
      return code === undefined ? undefined : label(code);
    } catch {
      return undefined;
    }
  };

  const stateOf = (context: unknown): RequestState | undefined => (context as WithState | undefined)?.[STATE];
  const delivered = metrics.feedEvents.labels();

  // Hooks shared by every request (no closure per request).
  const executeHooks = {
    onExecuteDone({ args, result }: { args: { contextValue?: unknown }; result: unknown }) {
      const st = stateOf(args.contextValue);
      const errors = (result as { errors?: readonly unknown[] }).errors;
      if (st && errors) for (const e of errors) tagError(e, st.id);
    },
  };
  const nextHooks = {
    onNext({ args, result }: { args: { contextValue?: unknown }; result: { errors?: readonly ErrorLike[] } }) {
      if (!result.errors) {
        delivered.inc();
        return;
      }
      metrics.feedEnded.inc({ code: label(result.errors[0]?.extensions?.code) });
      const st = stateOf(args.contextValue);
      if (st) for (const e of result.errors) tagError(e, st.id);
    },
  };
  const subscribeHooks = {
    onSubscribeResult({ args, result }: { args: { contextValue?: unknown }; result: unknown }) {
      if (!isAsyncIterable(result)) executeHooks.onExecuteDone({ args, result });
      return nextHooks;
    },
  };
  const parseDone = ({ context, result }: { context: unknown; result: unknown }) => {
    const st = stateOf(context);
    if (!st || !result || result instanceof Error) return;
    st.operation = observer.operationOf(result as { definitions: readonly Definition[] }, (context as WithState).params?.operationName);
  };

  return {
    onSchemaChange({ schema }) {
      observer.setSchema(schema);
    },
    instrumentation: {
      request({ request }, wrapped) {
        const st = observer.begin(request.headers.get(REQUEST_ID_HEADER), hasPath(request.url, graphqlEndpoint));
        states.set(request, st);
        let done: void | Promise<void>;
        try {
          done = wrapped();
        } catch (err) {
          finish(st, request, true);
          throw err;
        }
        if (done === undefined) return finish(st, request, false);
        return done.then(
          () => finish(st, request, false),
          (err: unknown) => {
            finish(st, request, true);
            throw err;
          },
        );
      },
    },
    onRequest({ request, serverContext }) {
      const st = states.get(request);
      if (st) (serverContext as WithState)[STATE] = st;
    },
    onParse: () => parseDone,
    onExecute: () => executeHooks,
    onSubscribe: () => subscribeHooks,
    onResultProcess({ result, serverContext }) {
      const st = stateOf(serverContext);
      if (st) st.outcome = observer.outcomeOf(result as ResultLike);
    },
    onResponse({ request, response, serverContext }) {
      const st = stateOf(serverContext) ?? states.get(request);
      if (!st) return;
      st.status = response.status;
      try {
        response.headers.set(REQUEST_ID_HEADER, st.id);
      } catch {
        // immutable headers: the id is still in the logs
      }
      if (st.graphql && st.outcome === undefined && response.status >= 400) {
        return refusalCode(response).then((code) => {
          st.outcome = code ?? `HTTP_${response.status}`;
        });
      }
    },
  } as Plugin;
}
