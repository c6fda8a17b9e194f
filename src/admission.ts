// Predictable behaviour under load: admission control and the per-request deadline.
//
// Admission: at most `maxInFlight` GraphQL operations run at once in this process. One more is
// refused at once, never queued: over HTTP with 503, a Retry-After header and a GraphQL-shaped
// body with code OVERLOADED; over graphql-ws with an OVERLOADED error payload for that operation
// (the socket and its other operations go on). HTTP requests to the GraphQL endpoint hold a slot
// from the moment their body has been read until their response starts, so a subscription over
// SSE holds it only while it is set up (an HTTP request cannot be told apart before it is
// parsed). A graphql-ws query or mutation holds one while it executes; a graphql-ws
// subscription takes none (its set-up is at most one Redis round trip, and a client that
// reconnects with hundreds of subscriptions on one socket must not see some of them refused).
// /health, /ready and anything else off the endpoint never count and are never refused.
//
// Deadline: a query or mutation still executing `requestTimeoutMs` after its request arrived
// ends with DEADLINE_EXCEEDED (HTTP 504, the whole request; for a mutation the message says
// that a write may or may not have been applied), its execution is cancelled (no root field
// starts after it: graphql/deadline.ts) and its slot is free at once. Subscriptions are exempt
// once they have started. As a backstop, an HTTP request whose handler has not answered a little
// after its deadline (a subscription that cannot be set up, or anything else that hangs) gets
// the same 504, so a slot is always given back.
import { getOperationAST, GraphQLError, type ExecutionArgs, type ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { Budget } from './budget.js';
import type { LoadConfig } from './config.js';
import { expireContext } from './graphql/deadline.js';

export const OVERLOADED = 'OVERLOADED';
export const DEADLINE_EXCEEDED = 'DEADLINE_EXCEEDED';
/** What a refused client is told to wait before it retries. */
export const RETRY_AFTER_SECONDS = 1;
/** How long past its deadline an HTTP request may go on before the backstop answers it. */
export const BACKSTOP_GRACE_MS = 1000;

/** The process's slots: one unit per request (budget.ts). */
export class Admission extends Budget {}

/** Set on the server context of an admitted HTTP request; graphql-ws contexts never have it. */
const ADMITTED = Symbol('kvql.admitted');

interface Admitted {
  /** Date.now() at which the request's deadline passes. */
  deadlineAt: number;
}

function overloadedMessage(max: number): string {
  return `the server is running its maximum of ${max} requests; retry in ${RETRY_AFTER_SECONDS} s`;
}

/** The body of an HTTP refusal (503 with Retry-After), on yoga's path and the fast lane's. */
export function overloadedBody(max: number): string {
  return JSON.stringify({ errors: [{ message: overloadedMessage(max), extensions: { code: OVERLOADED } }] });
}

/** The body of a refusal for want of room for the request's body (KV_MAX_BODY_BYTES_IN_FLIGHT). */
export function bodyBytesOverloadedBody(maxBytes: number): string {
  const message = `the server is holding its maximum of ${maxBytes} bytes of request bodies; retry in ${RETRY_AFTER_SECONDS} s`;
  return JSON.stringify({ errors: [{ message, extensions: { code: OVERLOADED } }] });
}

function overloadedResponse(fetchAPI: { Response: typeof Response }, max: number): Response {
  return new fetchAPI.Response(overloadedBody(max), {
    status: 503,
    headers: { 'content-type': 'application/json; charset=utf-8', 'retry-after': String(RETRY_AFTER_SECONDS) },
  });
}

function deadlineMessage(timeoutMs: number, mutation: boolean | undefined): string {
  const head = `the request did not finish within its deadline of ${timeoutMs} ms`;
  if (mutation === false) return `${head}; nothing was changed`;
  const writes = mutation ? 'a write it started' : 'a write (if it was a mutation)';
  return `${head}; ${writes} may or may not have been applied: read the keys to find out`;
}

function deadlineError(timeoutMs: number, mutation: boolean, http: boolean): GraphQLError {
  return new GraphQLError(deadlineMessage(timeoutMs, mutation), {
    extensions: { code: DEADLINE_EXCEEDED, ...(http ? { http: { status: 504 } } : {}) },
  });
}

function backstopResponse(fetchAPI: { Response: typeof Response }, timeoutMs: number): Response {
  return fetchAPI.Response.json(
    { errors: [{ message: deadlineMessage(timeoutMs, undefined), extensions: { code: DEADLINE_EXCEEDED } }] },
    { status: 504 },
  );
}

const overloadedResult = (max: number): ExecutionResult => ({
  errors: [new GraphQLError(overloadedMessage(max), { extensions: { code: OVERLOADED } })],
});

/**
 * Executes with the deadline: at `deadlineAt` the execution is cancelled (no root field starts
 * after it) and answered with DEADLINE_EXCEEDED. `http`: the error carries HTTP status 504.
 */
export function executeWithDeadline(
  executeFn: (args: ExecutionArgs) => unknown,
  args: ExecutionArgs,
  deadlineAt: number,
  http: boolean,
  requestTimeoutMs: number,
): Promise<unknown> {
  // One promise settled by whichever comes first, not Promise.race over two: the race's extra
  // promises and reactions showed at about 1.4 µs per request in a profile of the fast lane.
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      // Built only when the deadline passes: most requests never need it.
      const mutation = getOperationAST(args.document, args.operationName)?.operation === 'mutation';
      const error = deadlineError(requestTimeoutMs, mutation, http);
      // No root field of this request starts from now on (graphql/deadline.ts).
      expireContext(args.contextValue, error);
      resolve({ errors: [error] } satisfies ExecutionResult);
    }, Math.max(0, deadlineAt - Date.now()));
    let running: Promise<unknown>;
    try {
      running = Promise.resolve(executeFn(args));
    } catch (err) {
      clearTimeout(timer);
      return reject(err);
    }
    // After the deadline, the execution's outcome is nobody's (resolving again does nothing).
    running.then(
      (result) => {
        clearTimeout(timer);
        resolve(result);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

export interface AdmissionPluginOptions extends LoadConfig {
  /** The GraphQL endpoint's path: only requests to it count. */
  endpoint: string;
  /** The slots, when someone else wants to see them (metrics); by default the plugin's own. */
  admission?: Admission;
}

export function admissionPlugin(opts: AdmissionPluginOptions): Plugin {
  const { endpoint, maxInFlight, requestTimeoutMs } = opts;
  const admission = opts.admission ?? new Admission(maxInFlight);

  const executeBefore = (executeFn: (args: ExecutionArgs) => unknown, args: ExecutionArgs, deadlineAt: number, http: boolean) =>
    executeWithDeadline(executeFn, args, deadlineAt, http, requestTimeoutMs);

  return {
    onRequest({ url, requestHandler, setRequestHandler, endResponse, fetchAPI }) {
      if (url.pathname !== endpoint) return;
      // Refuse before another plugin reads the body: a refusal costs nothing.
      if (admission.full) {
        endResponse(overloadedResponse(fetchAPI, maxInFlight));
        return;
      }
      // The slot is taken and given back in one function around the rest of the request, so no
      // path (an error, an aborted client, a hang) can keep it.
      setRequestHandler(async (request, serverContext) => {
        const release = admission.tryAcquire();
        if (!release) return overloadedResponse(fetchAPI, maxInFlight);
        const admitted: Admitted = { deadlineAt: Date.now() + requestTimeoutMs };
        (serverContext as Record<symbol, unknown>)[ADMITTED] = admitted;
        let timer: NodeJS.Timeout | undefined;
        const backstop = new Promise<Response>((resolve) => {
          timer = setTimeout(() => resolve(backstopResponse(fetchAPI, requestTimeoutMs)), requestTimeoutMs + BACKSTOP_GRACE_MS);
        });
        try {
          const handled = Promise.resolve(requestHandler(request, serverContext));
          handled.catch(() => {});
          return await Promise.race([handled, backstop]);
        } finally {
          clearTimeout(timer);
          release();
        }
      });
    },

    onExecute({ args, executeFn, setExecuteFn }) {
      const admitted = (args.contextValue as unknown as Record<symbol, Admitted | undefined>)[ADMITTED];
      setExecuteFn((async (execArgs: ExecutionArgs) => {
        if (admitted) return executeBefore(executeFn as never, execArgs, admitted.deadlineAt, true);
        // Not through HTTP: a graphql-ws operation takes its own slot while it executes.
        const release = admission.tryAcquire();
        if (!release) return overloadedResult(maxInFlight);
        try {
          return await executeBefore(executeFn as never, execArgs, Date.now() + requestTimeoutMs, false);
        } finally {
          release();
        }
      }) as never);
    },
  };
}
