// Errors about the request itself that graphql-js and graphql-yoga raise without a stable
// `extensions.code` (README, "Errors": every error a client can act on has one): variables that
// do not fit their types, an operation name that names no operation, variables or extensions in
// a query string that are not JSON; and a rule of the GraphQL specification that graphql-js 16
// does not check yet.
import { GraphQLError, Kind, type SelectionSetNode, type ValidationRule } from 'graphql';
import { createGraphQLError, type Plugin } from 'graphql-yoga';

export const BAD_REQUEST = 'BAD_REQUEST';

const CODES: [RegExp, string][] = [
  // graphql-js's coercion of variable values (getVariableValues)
  [/^Variable "\$[^"]*" /, 'BAD_USER_INPUT'],
  // graphql-js's choice of the operation (buildExecutionContext); yoga says the same over HTTP
  [/^(Must provide operation name|Unknown operation named|Must provide an operation|Unable to identify operation)/, 'OPERATION_RESOLUTION_FAILURE'],
];

/** `error`, with the code its message calls for when it has none. */
export function withRequestErrorCode(error: unknown): unknown {
  const e = error as GraphQLError;
  // Duck-typed: instanceof fails across two graphql copies (as in errors.ts).
  if (!(error instanceof Error) || e.name !== 'GraphQLError' || typeof e.extensions?.code === 'string') return error;
  // Only graphql-js's own errors: a variable's carries the coercion's GraphQLError as its cause,
  // while anything thrown by kvql's code (a plain Error) stays for the masking to judge.
  if (e.originalError && e.originalError.name !== 'GraphQLError') return error;
  const code = CODES.find(([re]) => re.test(e.message))?.[1];
  if (!code) return error;
  // The same object, its extensions replaced (as yoga itself adds its codes): a new GraphQLError
  // could be of another graphql copy than yoga's, which would then mask it as unexpected.
  (e as { extensions: Record<string, unknown> }).extensions = { ...e.extensions, code };
  return e;
}

/**
 * The GraphQL specification's "Single root field" rule (October 2021) forbids @skip and @include
 * on a subscription's root fields: skipped, there would be no event stream at all, and
 * @graphql-tools/executor fails with a TypeError (an INTERNAL_SERVER_ERROR) instead.
 */
export const NoSkipOnSubscriptionRootRule: ValidationRule = (context) => ({
  OperationDefinition(node) {
    if (node.operation !== 'subscription') return;
    const seen = new Set<string>();
    const check = (set: SelectionSetNode) => {
      for (const selection of set.selections) {
        if (selection.directives?.some((d) => d.name.value === 'skip' || d.name.value === 'include')) {
          context.reportError(new GraphQLError('a subscription\'s root field cannot be conditional: remove @skip and @include from it', { nodes: selection }));
        } else if (selection.kind === Kind.INLINE_FRAGMENT) {
          check(selection.selectionSet);
        } else if (selection.kind === Kind.FRAGMENT_SPREAD && !seen.has(selection.name.value)) {
          seen.add(selection.name.value);
          const fragment = context.getFragment(selection.name.value);
          if (fragment) check(fragment.selectionSet);
        }
      }
    };
    check(node.selectionSet);
  },
});

/**
 * yoga's GET and form parsers JSON.parse `variables` and `extensions` unguarded: a SyntaxError
 * there became a 500. It becomes a 400 BAD_REQUEST, as yoga answers other malformed requests.
 */
export function requestParseErrorPlugin(): Plugin {
  return {
    onRequestParse({ requestParser, setRequestParser }) {
      if (!requestParser) return;
      const inner = requestParser;
      setRequestParser(async (request) => {
        try {
          return await inner(request);
        } catch (err) {
          if (!(err instanceof SyntaxError)) throw err;
          throw createGraphQLError(`the request's variables or extensions are not JSON: ${err.message}`, { extensions: { code: BAD_REQUEST, http: { status: 400 } } });
        }
      });
    },
  };
}

/**
 * graphql-js 16's SingleFieldSubscriptionsRule evaluates a subscription's @skip/@include while
 * validating, and throws (instead of reporting) when the argument is not a Boolean literal, such
 * as `@skip(if: "yes")`: a validation error thrown is reported as one here, on every path that
 * validates with yoga (yoga itself, the fast lane, graphql-ws).
 */
export function validationThrowPlugin(): Plugin {
  return {
    onValidate({ validateFn, setValidationFn }) {
      setValidationFn((schema, document, rules, typeInfo, options) => {
        try {
          return validateFn(schema, document, rules, typeInfo, options);
        } catch (err) {
          if (err instanceof Error && err.name === 'GraphQLError') return [err as GraphQLError];
          throw err;
        }
      });
    },
  };
}
