// Which errors reach clients as they are: errors we raise on purpose carry `extensions.code`
// (bad input from validation and resolvers, and every StoreError), and graphql-js copies it to
// the located error. Anything else is masked as INTERNAL_SERVER_ERROR, and graphql-yoga logs
// every error it masks, in full.
import { maskError as yogaMaskError } from 'graphql-yoga';
import { withRequestErrorCode } from './requestErrors.js';

function hasCode(err: unknown): boolean {
  const ext = (err as { extensions?: { code?: unknown } } | null)?.extensions;
  return typeof ext?.code === 'string';
}

export function maskError(raw: unknown, message: string, isDev?: boolean): Error {
  const error = withRequestErrorCode(raw);
  // Duck-typed on purpose: an instanceof test breaks when graphql is loaded twice (ESM + CJS).
  const original = (error as { originalError?: unknown }).originalError;
  if (original !== undefined && hasCode(original) && hasCode(error)) return error as Error;
  return yogaMaskError(error, message, isDev);
}
