// The Pothos schema builder: plugins, context, scalars, and how validation failures surface.
import SchemaBuilder from '@pothos/core';
import RelayPlugin from '@pothos/plugin-relay';
import ValidationPlugin from '@pothos/plugin-validation';
import type DataLoader from 'dataloader';
import { GraphQLError } from 'graphql';
import type { Limits } from '../config.js';
import type { Principal } from '../auth/tokens.js';
import type { FeedHub } from '../feed/hub.js';
import type { Entry, KvStore } from '../store/store.js';
import { isoTime } from './isoTime.js';

export interface Context {
  store: KvStore;
  limits: Limits;
  /** Per request: every get/getMany of one operation shares one read (store.ts getMany). */
  entries: DataLoader<string, Entry | null>;
  /** The same for reads asked with consistency EVENTUAL: built on first use (context.ts loaderFor). */
  eventualEntries: DataLoader<string, Entry | null> | undefined;
  /** The process's change-feed hub (shared by every request). */
  feed: FeedHub;
  /** Who the request acts for (authenticated before the request got here): checked by access.ts. */
  principal: Principal;
  /** Aborts when the principal's token is revoked: an open subscription ends on it (changes.ts). */
  revoked?: AbortSignal;
}

export interface Types {
  Context: Context;
  Scalars: { DateTime: { Input: Date; Output: number } };
  Objects: { Entry: Entry };
  DefaultFieldNullability: false;
  DefaultEdgesNullability: { list: false; items: false };
  DefaultNodeNullability: false;
}

export function createBuilder() {
  const builder = new SchemaBuilder<Types>({
    plugins: [RelayPlugin, ValidationPlugin],
    // Fields are non-null unless they say otherwise: clients should not null-check what
    // cannot be null.
    defaultFieldNullability: false,
    relay: {
      nodeQueryOptions: false,
      nodesQueryOptions: false,
      edgesFieldOptions: { nullable: { list: false, items: false } },
      nodeFieldOptions: { nullable: false },
    },
    validation: {
      // An issue may name its own code (PAYLOAD_TOO_LARGE); every other is bad input.
      validationError: (result) => {
        const issues = result.issues;
        const code =
          issues.map((i) => (i as { params?: { code?: string } }).params?.code).find(Boolean) ?? 'BAD_USER_INPUT';
        const message = issues
          .map((i) => {
            const path = (i.path ?? []).map((p) => (typeof p === 'object' ? p.key : p)).join('.');
            return path ? `${path}: ${i.message}` : i.message;
          })
          .join('; ');
        return new GraphQLError(message, { extensions: { code } });
      },
    },
  });

  let lastMs = Number.NaN;
  let lastIso = '';
  builder.scalarType('DateTime', {
    description: 'An instant as an ISO-8601 UTC string with milliseconds, e.g. 2026-11-26T13:07:41.123Z.',
    // A page's entries often share their timestamps (written by one batch): format each once.
    serialize: (ms) => {
      if (ms !== lastMs) {
        lastMs = ms;
        lastIso = isoTime(ms);
      }
      return lastIso;
    },
    parseValue: (v) => {
      const d = new Date(String(v));
      if (Number.isNaN(d.getTime())) throw new GraphQLError('DateTime must be an ISO-8601 string', { extensions: { code: 'BAD_USER_INPUT' } });
      return d;
    },
  });

  builder.queryType({});
  builder.mutationType({});
  builder.subscriptionType({});
  return builder;
}

export type Builder = ReturnType<typeof createBuilder>;
