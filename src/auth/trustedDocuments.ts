// Trusted documents (KV_TRUSTED_DOCUMENTS): a production frontend's operations, known ahead of
// time and referred to by the SHA-256 of their text. With a list configured, the server runs only
// those: a request carrying its own query text is refused, so a stolen token cannot be used to
// run arbitrary (expensive, or data-mining) operations through the endpoint.
//
// The file is what build tools emit: a JSON object { "<sha256>": "<document text>" } (GraphQL
// Code Generator's client preset, persisted-documents.json), or Apollo's persisted query manifest
// { "format": "apollo-persisted-query-manifest", "version": 1, "operations": [{ "id", "body" }] }.
// Every id must be the SHA-256 of its text: the list is checked when it is read.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createGraphQLError } from 'graphql-yoga';
import type { GraphQLError } from 'graphql';

export const TRUSTED_DOCUMENT_REQUIRED = 'TRUSTED_DOCUMENT_REQUIRED';
export const TRUSTED_DOCUMENT_NOT_FOUND = 'TRUSTED_DOCUMENT_NOT_FOUND';

export interface TrustedDocuments {
  /** Document text by the lowercase hex SHA-256 of that text. */
  readonly byHash: ReadonlyMap<string, string>;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Reads and checks a trusted documents file; throws an Error saying what is wrong. */
export function readTrustedDocuments(path: string): TrustedDocuments {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read ${JSON.stringify(path)} as JSON: ${(err as Error).message}`);
  }
  return trustedDocumentsOf(json);
}

export function trustedDocumentsOf(json: unknown): TrustedDocuments {
  const pairs: [string, unknown][] = [];
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('expected a JSON object: { "<sha256>": "<document>" } or an Apollo persisted query manifest');
  const o = json as Record<string, unknown>;
  if (o.format === 'apollo-persisted-query-manifest') {
    if (o.version !== 1 || !Array.isArray(o.operations)) throw new Error('an Apollo manifest needs "version": 1 and an "operations" array');
    for (const [i, op] of o.operations.entries()) {
      const { id, body } = (op ?? {}) as Record<string, unknown>;
      pairs.push([typeof id === 'string' ? id : `operations[${i}]`, body]);
    }
  } else {
    pairs.push(...Object.entries(o));
  }
  const byHash = new Map<string, string>();
  for (const [id, text] of pairs) {
    if (typeof text !== 'string') throw new Error(`document ${id}: its text must be a string`);
    const hash = id.toLowerCase();
    if (!HEX64.test(hash)) throw new Error(`document ${id}: the id must be the hex SHA-256 of the document text`);
    const actual = createHash('sha256').update(text, 'utf8').digest('hex');
    if (actual !== hash) throw new Error(`document ${id}: the SHA-256 of its text is ${actual}`);
    byHash.set(hash, text);
  }
  if (byHash.size === 0) throw new Error('holds no document');
  return { byHash };
}

/**
 * The id a request names its document by: Apollo's extensions.persistedQuery.sha256Hash
 * (version 1), or the GraphQL-over-HTTP proposal's documentId ("sha256:<hex>" or bare hex), at the
 * top level or in extensions (graphql-ws messages have no other place for it).
 */
export function documentIdOf(params: { extensions?: unknown; documentId?: unknown }): string | null {
  const ext = params.extensions;
  if (typeof ext === 'object' && ext !== null) {
    const pq = (ext as Record<string, unknown>).persistedQuery as Record<string, unknown> | undefined;
    if (typeof pq === 'object' && pq !== null && pq.version === 1 && typeof pq.sha256Hash === 'string') return pq.sha256Hash.toLowerCase();
    const inExt = (ext as Record<string, unknown>).documentId;
    if (typeof inExt === 'string') return inExt.replace(/^sha256:/, '').toLowerCase();
  }
  if (typeof params.documentId === 'string') return params.documentId.replace(/^sha256:/, '').toLowerCase();
  return null;
}

export const trustedOnlyError = (): GraphQLError =>
  createGraphQLError('only trusted documents run here: name one by its SHA-256 (extensions.persistedQuery.sha256Hash, or documentId) and send no query text', {
    extensions: { code: TRUSTED_DOCUMENT_REQUIRED, http: { status: 400 } },
  });

export const notTrustedError = (): GraphQLError =>
  createGraphQLError('no trusted document has this SHA-256', { extensions: { code: TRUSTED_DOCUMENT_NOT_FOUND, http: { status: 400 } } });

/**
 * The document text a request names, or an error. `query`: the text the request sent; empty
 * ("" or absent) is the only accepted form in trusted mode.
 */
export function resolveTrusted(docs: TrustedDocuments, params: { query?: unknown; extensions?: unknown; documentId?: unknown }): string | GraphQLError {
  if (params.query !== undefined && params.query !== null && params.query !== '') return trustedOnlyError();
  const id = documentIdOf(params);
  if (id === null) return trustedOnlyError();
  return docs.byHash.get(id) ?? notTrustedError();
}
