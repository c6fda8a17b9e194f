// The deadline, seen from the resolvers: once a request's deadline has passed, no root field of
// it starts (admission.ts answers the client with DEADLINE_EXCEEDED at that moment; this keeps a
// mutation's later fields, and a query's, from running after it).
//
// Why not the executor's AbortSignal: it costs an AbortController, a listener and a deferred
// promise per request, a few percent of a get's CPU in a profile of the fast lane
// (docs/request-path.md). Only root fields reach Redis, so stopping them is what cancellation
// has to do; nested fields only read what their root field returned.
import type { GraphQLFieldResolver, GraphQLSchema } from 'graphql';

/** Set on a request's context when its deadline passes, to the error its client was given. */
const DEADLINE_PASSED = Symbol('kvql.deadlinePassed');

type Expirable = { [DEADLINE_PASSED]?: Error };

/** Marks a context's deadline as passed: its root fields that have not started never will. */
export function expireContext(context: unknown, error: Error): void {
  if (typeof context === 'object' && context !== null) (context as Expirable)[DEADLINE_PASSED] = error;
}

/** Wraps every query and mutation root field so that it refuses to start past its deadline. */
export function stopRootFieldsAtDeadline(schema: GraphQLSchema): GraphQLSchema {
  for (const type of [schema.getQueryType(), schema.getMutationType()]) {
    if (!type) continue;
    for (const field of Object.values(type.getFields())) {
      const resolve: GraphQLFieldResolver<unknown, unknown> | undefined = field.resolve;
      if (!resolve) continue;
      field.resolve = (source, args, context, info) => {
        const passed = (context as Expirable | undefined)?.[DEADLINE_PASSED];
        if (passed) throw passed;
        return resolve(source, args, context, info);
      };
    }
  }
  return schema;
}
