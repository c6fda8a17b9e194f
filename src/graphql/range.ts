// Ranges of keys: the range query with cursor pagination, and the arguments every ranged
// operation shares (start/end or prefix).
import { GraphQLError } from 'graphql';
import { prefixRange, UNBOUNDED, type KeyRange } from '../store/order.js';
import type { Entry } from '../store/store.js';
import { requireRange } from './access.js';
import type { Builder } from './builder.js';
import type { ConsistencyRef } from './consistency.js';
import type { Validators } from './validators.js';

export interface RangeArgs {
  start?: string | null;
  end?: string | null;
  prefix?: string | null;
}

export function badInput(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT' } });
}

/** start inclusive, end exclusive, or a prefix; nothing means the whole keyspace. */
export function toKeyRange(args: RangeArgs): KeyRange {
  if (args.prefix != null) {
    if (args.start != null || args.end != null) throw badInput('give either prefix or start/end, not both');
    return prefixRange(args.prefix);
  }
  return {
    lo: args.start != null ? { key: args.start, inclusive: true } : UNBOUNDED,
    hi: args.end != null ? { key: args.end, inclusive: false } : UNBOUNDED,
  };
}

// A cursor is the key it points at, as base64url of its UTF-8 bytes: opaque to clients, exact
// for any key, and stable across servers and restarts.
export function encodeCursor(key: string): string {
  return Buffer.from(key, 'utf8').toString('base64url');
}

/**
 * A page's edge. Its cursor is encoded only when the query selects it: most clients page with
 * pageInfo's endCursor, and encoding every edge's took 21.5 µs of self time per page of 100 in
 * `npm run bench:profile -- --op range --concurrency 1` (2.5 after).
 */
class Edge {
  constructor(readonly node: Entry) {}
  get cursor(): string {
    return encodeCursor(this.node.key);
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The key a cursor points at; bad input unless it is a cursor this API could have returned. */
export function decodeCursor(cursor: string, arg: string, maxKeyBytes: number): string {
  // A cursor holds one key: base64 of at most maxKeyBytes bytes. Check the length first so a
  // huge argument is refused without decoding it.
  if (cursor.length > Math.ceil((maxKeyBytes * 4) / 3) || !/^[A-Za-z0-9_-]+$/.test(cursor)) {
    throw badInput(`${arg}: not a cursor returned by this API`);
  }
  try {
    const key = strictUtf8.decode(Buffer.from(cursor, 'base64url'));
    if (encodeCursor(key) === cursor) return key;
  } catch {
    // fall through
  }
  throw badInput(`${arg}: not a cursor returned by this API`);
}

type ArgBuilder = Parameters<Parameters<Builder['queryFields']>[0]>[0]['arg'];

/** The arguments that select a key range, shared by range, deleteRange and changes. */
export function rangeArgs(arg: ArgBuilder, v: Validators) {
  return {
    start: arg.string({ description: 'First key of the range (inclusive).', validate: v.bound }),
    end: arg.string({ description: 'End of the range (exclusive).', validate: v.bound }),
    prefix: arg.string({ description: 'Only keys that start with this; instead of start/end.', validate: v.bound }),
  };
}

export function addRange(builder: Builder, v: Validators, Consistency: ConsistencyRef): void {
  const Connection = builder.connectionObject(
    {
      type: 'Entry',
      name: 'EntryConnection',
      fields: (t) => ({
        totalCount: t.int({
          description: 'How many keys the whole range holds (not only this page).',
          resolve: (c) => (c as unknown as { totalCount: number }).totalCount,
        }),
      }),
    },
    { name: 'EntryEdge' },
  );

  builder.queryFields((t) => ({
    range: t.field({
      type: Connection,
      description:
        'Entries in key order (UTF-8 bytes). Relay pagination: first/after forward, last/before backward. ' +
        'first defaults to the server page size; a page costs O(log N + page).',
      args: {
        ...rangeArgs(t.arg, v),
        first: t.arg.int(),
        after: t.arg.string(),
        last: t.arg.int(),
        before: t.arg.string(),
        consistency: t.arg({ type: Consistency, required: true, defaultValue: 'strong' }),
      },
      resolve: async (_, args, ctx) => {
        const { pageDefault, pageMax } = ctx.limits;
        if (args.first != null && args.last != null) throw badInput('give first or last, not both');
        for (const [name, n] of [['first', args.first], ['last', args.last]] as const) {
          if (n != null && (n < 0 || n > pageMax)) throw badInput(`${name} must be between 0 and ${pageMax}`);
        }
        const range = toKeyRange(args);
        // The range as asked, before cursors: they only narrow it (store.ts: maxLower/minUpper).
        requireRange(ctx.principal, 'read', range);
        const page = await ctx.store.range({
          range,
          first: args.last == null ? (args.first ?? pageDefault) : undefined,
          last: args.last ?? undefined,
          after: args.after != null ? decodeCursor(args.after, 'after', ctx.limits.maxKeyBytes) : undefined,
          before: args.before != null ? decodeCursor(args.before, 'before', ctx.limits.maxKeyBytes) : undefined,
        }, args.consistency);
        const first = page.entries[0];
        const last = page.entries.at(-1);
        return {
          edges: page.entries.map((node) => new Edge(node)),
          totalCount: page.totalCount,
          pageInfo: {
            hasNextPage: page.hasNextPage,
            hasPreviousPage: page.hasPreviousPage,
            startCursor: first ? encodeCursor(first.key) : null,
            endCursor: last ? encodeCursor(last.key) : null,
          },
        };
      },
    }),
  }));

  const DeleteRangeResult = builder.objectRef<{ deleted: number; hasMore: boolean }>('DeleteRangeResult');
  builder.objectType(DeleteRangeResult, {
    fields: (t) => ({
      deleted: t.exposeInt('deleted', { description: 'Keys this call deleted.' }),
      hasMore: t.exposeBoolean('hasMore', { description: 'Whether keys of the range remain: call again to go on.' }),
    }),
  });

  builder.mutationFields((t) => ({
    deleteRange: t.field({
      type: DeleteRangeResult,
      description:
        'Deletes at most `limit` keys of the range, lowest first, atomically. Call again while hasMore is true.',
      args: { ...rangeArgs(t.arg as ArgBuilder, v), limit: t.arg.int() },
      resolve: async (_, args, ctx) => {
        const { deleteRangeDefault, deleteRangeMax } = ctx.limits;
        const limit = args.limit ?? deleteRangeDefault;
        if (limit < 1 || limit > deleteRangeMax) throw badInput(`limit must be between 1 and ${deleteRangeMax}`);
        const range = toKeyRange(args);
        requireRange(ctx.principal, 'write', range);
        return ctx.store.deleteRange(range, limit);
      },
    }),
  }));
}
