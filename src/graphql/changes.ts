// The change feed as a GraphQL subscription: every put and delete, in commit order per key,
// resumable from any cursor it handed out while the feed still retains what follows it.
import { GraphQLError } from 'graphql';
import { REVOKED_MESSAGE, UNAUTHENTICATED } from '../auth/tokens.js';
import { OVERLOADED, RETRY_AFTER_SECONDS } from '../admission.js';
import { CursorExpiredError, SlowConsumerError, TooManySubscriptionsError, type Delivery, type FeedHub } from '../feed/hub.js';
import { StoreError } from '../store/errors.js';
import type { Position } from '../store/feed.js';
import type { Entry } from '../store/store.js';
import { requireRange } from './access.js';
import type { Builder } from './builder.js';
import { badInput, rangeArgs, toKeyRange } from './range.js';
import type { Validators } from './validators.js';

interface ChangeEventShape {
  type: 'PUT' | 'DELETE';
  key: string;
  version: number;
  entry: Entry | null;
  cursor: string;
}

// A feed cursor is a position per partition: "0-<seq>" and the sequence number seq of the last
// event seen. Cursors of layout 2 carried the event's stream ID in the first part; the feed reads
// by sequence number alone, so they stay valid (or expire, as any cursor whose events are gone).
const CURSOR_VERSION = 'f1';

export function encodeFeedCursor(positions: readonly Position[]): string {
  const body = positions.map((p) => `${p.id}~${p.seq}`).join(',');
  return Buffer.from(`${CURSOR_VERSION}|${body}`, 'utf8').toString('base64url');
}

export function decodeFeedCursor(cursor: string, partitions: number): Position[] {
  const bad = () => badInput('after: not a change-feed cursor of this keyspace');
  if (cursor.length > 64 * partitions + 16 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const [version, body] = text.split('|');
  if (version !== CURSOR_VERSION || body === undefined) throw bad();
  const positions = body.split(',').map((part) => {
    const m = /^(\d{1,15})-(\d{1,15})~(\d{1,15})$/.exec(part);
    if (!m) throw bad();
    return { id: `${m[1]}-${m[2]}`, seq: Number(m[3]) };
  });
  if (positions.length !== partitions) throw bad();
  return positions;
}

type Payload = ChangeEventShape | { error: GraphQLError };

/**
 * A place for a new subscription (FeedHub.admit), or a refusal as the process refuses requests
 * when it is full: OVERLOADED, and over SSE an HTTP 503 with Retry-After.
 */
function admit(feed: FeedHub): () => void {
  try {
    return feed.admit();
  } catch (err) {
    if (!(err instanceof TooManySubscriptionsError)) throw err;
    throw new GraphQLError(err.message, {
      extensions: { code: OVERLOADED, http: { status: 503, headers: { 'retry-after': String(RETRY_AFTER_SECONDS) } } },
    });
  }
}

function shape(d: Delivery): ChangeEventShape {
  return {
    type: d.event.type,
    key: d.event.key,
    version: d.event.version,
    entry: d.event.entry,
    cursor: encodeFeedCursor(d.position),
  };
}

/**
 * The hub's deliveries as GraphQL payloads; a slow consumer gets a last, error payload, and so
 * does a subscriber whose token was revoked (the hub ends its deliveries on `revoked`).
 */
async function* payloads(deliveries: AsyncGenerator<Delivery>, revoked: AbortSignal | undefined, done: () => void): AsyncGenerator<Payload> {
  try {
    for await (const d of deliveries) yield shape(d);
    if (revoked?.aborted) yield { error: new GraphQLError(REVOKED_MESSAGE, { extensions: { code: UNAUTHENTICATED } }) };
  } catch (err) {
    if (err instanceof CursorExpiredError) {
      yield { error: new GraphQLError(err.message, { extensions: { code: err.code, oldestCursor: encodeFeedCursor(err.oldest) } }) };
      return;
    }
    if (!(err instanceof SlowConsumerError)) throw err;
    yield {
      error: new GraphQLError(err.message, {
        extensions: { code: err.code, cursor: encodeFeedCursor(err.position) },
      }),
    };
  } finally {
    done();
  }
}

/**
 * Ends the subscription as soon as the client leaves (SSE request aborted, graphql-ws complete
 * or socket closed): return() aborts `leave`, which wakes the hub's wait, instead of queueing
 * behind a next() that no event may ever answer.
 */
function endingOnReturn<T>(inner: AsyncGenerator<T>, leave: AbortController): AsyncIterableIterator<T> {
  const it: AsyncIterableIterator<T> = {
    next: () => inner.next(),
    return: (value?: unknown) => {
      leave.abort();
      return inner.return(value as never);
    },
    throw: (err?: unknown) => {
      leave.abort();
      return inner.throw(err);
    },
    [Symbol.asyncIterator]: () => it,
  };
  return it;
}

export function addChanges(builder: Builder, v: Validators): void {
  const ChangeType = builder.enumType('ChangeType', { values: ['PUT', 'DELETE'] as const });

  const ChangeEvent = builder.objectRef<ChangeEventShape>('ChangeEvent');
  builder.objectType(ChangeEvent, {
    description: 'One write of one key, as committed.',
    fields: (t) => ({
      type: t.field({ type: ChangeType, resolve: (e) => e.type }),
      key: t.exposeString('key'),
      version: t.exposeInt('version', {
        description: "The key's version after a PUT; the deleted version for a DELETE.",
      }),
      entry: t.field({
        type: 'Entry',
        nullable: true,
        description: 'The entry as this event wrote it; null for a DELETE.',
        resolve: (e) => e.entry,
      }),
      cursor: t.exposeString('cursor', {
        description: 'Opaque. Pass it as `after` to resume right after this event.',
      }),
    }),
  });

  builder.subscriptionFields((t) => ({
      changes: t.field({
        type: ChangeEvent,
        description:
          'Every put and delete of keys in the range (prefix, or start/end; none: every key), in commit ' +
          'order per key. Without `after` it starts now; with `after`, right after that cursor, each ' +
          'event exactly once. A cursor older than the retained history fails with CURSOR_EXPIRED.',
        args: { ...rangeArgs(t.arg as never, v), after: t.arg.string() },
        // Not a generator: a bad or expired cursor must fail the subscription at once, before
        // any stream is opened.
        subscribe: async (_, args, ctx) => {
          // First, before any await: a place among KV_MAX_SUBSCRIPTIONS, or OVERLOADED.
          const release = admit(ctx.feed);
          try {
            const range = toKeyRange(args);
            requireRange(ctx.principal, 'read', range);
            let after: Position[] | undefined;
            if (args.after != null) {
              after = decodeFeedCursor(args.after, ctx.feed.partitions);
              const check = await ctx.feed.check(after);
              if (check.foreign) throw badInput('after: not a change-feed cursor of this keyspace');
              if (check.expired) {
                throw new StoreError('CURSOR_EXPIRED', 'events after this cursor are no longer retained; resume from oldestCursor (and re-read what you need)', {
                  oldestCursor: encodeFeedCursor(check.oldest),
                });
              }
            }
            const leave = new AbortController();
            // Revocation ends the subscription like a client leaving; the listener goes with it.
            const revoked = ctx.revoked;
            const onRevoke = () => leave.abort();
            revoked?.addEventListener('abort', onRevoke, { once: true });
            const stop = () => revoked?.removeEventListener('abort', onRevoke);
            leave.signal.addEventListener('abort', stop, { once: true });
            // The place is given back when the client leaves (leave aborts, also for a
            // subscription that never started) or the subscription ends by itself.
            leave.signal.addEventListener('abort', release, { once: true });
            const done = () => {
              stop();
              release();
            };
            return endingOnReturn(payloads(ctx.feed.subscribe({ range, after, signal: leave.signal }), revoked, done), leave);
          } catch (err) {
            release();
            throw err;
          }
        },
        resolve: (payload: Payload) => {
          if ('error' in payload) throw payload.error;
          return payload;
        },
      }),
  }));
}
