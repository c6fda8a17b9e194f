// Operation limits, checked before anything executes:
//  - GraphQL Armor's depth, alias, token, cost and directive limits: static measures of the
//    document's shape, refused with QUERY_TOO_COMPLEX (tokens while parsing, the others as
//    validation errors, so graphql-yoga's validation cache keeps them);
//  - the work budget: the keys, items and page sizes an operation asks Redis for, summed over
//    its fields with its variables, refused with PAYLOAD_TOO_LARGE. Aliases multiply per-field
//    limits (fifteen aliased getMany of 10,000 keys each pass every field's own check), so the
//    sum is bounded too. It depends on the variables, so it cannot be a validation rule (the
//    validation cache is keyed by the document alone): it runs as the operation starts to
//    execute, before any resolver.
import { costLimitPlugin } from '@escape.tech/graphql-armor-cost-limit';
import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesPlugin } from '@escape.tech/graphql-armor-max-directives';
import { maxTokensPlugin } from '@escape.tech/graphql-armor-max-tokens';
import {
  getOperationAST,
  GraphQLError,
  Kind,
  type DirectiveNode,
  type DocumentNode,
  type FragmentDefinitionNode,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
  type ValueNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { PAYLOAD_TOO_LARGE } from './bodyLimit.js';
import type { Limits } from './config.js';

export const QUERY_TOO_COMPLEX = 'QUERY_TOO_COMPLEX';

/** Armor's error, with its message cleaned ("Syntax Error: " is not what happened) and our code. */
function tooComplex(armorError: GraphQLError): GraphQLError {
  const detail = armorError.message.replace(/^Syntax Error: /, '');
  return new GraphQLError(`the operation is too complex: ${detail}`, { extensions: { code: QUERY_TOO_COMPLEX } });
}

/** A validation rule's rejection: reported as a validation error (HTTP 400), not thrown. */
const report = (ctx: ValidationContext | null, err: GraphQLError): void => {
  ctx?.reportError(tooComplex(err));
};
const asValidationError = { propagateOnRejection: false, onReject: [report] };

export function operationLimitPlugins(limits: Limits): Plugin[] {
  return [
    // The token count stops the parser itself, so the error is thrown from parse; graphql-yoga
    // answers it as a parse error (HTTP 400) with the code it already carries.
    maxTokensPlugin({
      n: limits.maxTokens,
      onReject: [
        (_ctx, err) => {
          throw tooComplex(err);
        },
      ],
    }) as Plugin,
    // Introspection (__schema) is exempt from depth and cost, as Armor does by default: GraphiQL's
    // schema query is deep by nature and harmless.
    maxDepthPlugin({ n: limits.maxDepth, ...asValidationError }) as Plugin,
    maxAliasesPlugin({ n: limits.maxAliases, ...asValidationError }) as Plugin,
    costLimitPlugin({ maxCost: limits.maxCost, ...asValidationError }) as Plugin,
    maxDirectivesPlugin({ n: limits.maxDirectives, ...asValidationError }) as Plugin,
    workBudgetPlugin(limits),
  ];
}

/** The refusal of an operation that asks for more than `maxRequestItems`; undefined if it does not. */
export function workBudgetRefusal(document: DocumentNode, operationName: string | undefined, variables: Variables, limits: Limits, http: boolean): GraphQLError | undefined {
  if (withinBudgetWhateverVariables(document, operationName, limits)) return undefined;
  const requested = requestedItems(document, operationName, variables, limits);
  if (requested <= limits.maxRequestItems) return undefined;
  return new GraphQLError(
    `the operation asks for ${requested} keys, items or page entries in all; at most ${limits.maxRequestItems} per request: split it`,
    {
      extensions: {
        code: PAYLOAD_TOO_LARGE,
        requested,
        limit: limits.maxRequestItems,
        // Over HTTP, the status of a request error (as for validation errors); graphql-ws
        // operations have no request, and no use for it.
        ...(http ? { http: { status: 400, spec: true } } : {}),
      },
    },
  );
}

export function workBudgetPlugin(limits: Limits): Plugin {
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const http = Boolean((args.contextValue as { request?: unknown } | undefined)?.request);
      const refusal = workBudgetRefusal(args.document, args.operationName ?? undefined, (args.variableValues ?? {}) as Variables, limits, http);
      if (refusal) setResultAndStopExecution({ errors: [refusal] });
    },
  };
}

type Variables = Record<string, unknown>;

// Per limits and document: whether the operation fits the budget whatever its variables are.
// Most do (one get, one put, a getMany: each field is capped at its own limit, which the budget
// exceeds), so they skip the walk of their document on every request.
const fitsAlways = new WeakMap<Limits, WeakMap<DocumentNode, Map<string, boolean>>>();

function withinBudgetWhateverVariables(document: DocumentNode, operationName: string | undefined, limits: Limits): boolean {
  let byDocument = fitsAlways.get(limits);
  if (!byDocument) fitsAlways.set(limits, (byDocument = new WeakMap()));
  let byName = byDocument.get(document);
  if (!byName) byDocument.set(document, (byName = new Map()));
  const name = operationName ?? '';
  let fits = byName.get(name);
  if (fits === undefined) {
    fits = requestedItems(document, operationName, WORST_CASE, limits) <= limits.maxRequestItems;
    // The names a client sends are bounded by the operations the document holds, except for
    // names it does not hold (refused at execution): do not keep those.
    if (byName.size < document.definitions.length) byName.set(name, fits);
  }
  return fits;
}

/**
 * The work an operation asks of Redis, in keys, items and page entries: keys in get (1) and
 * getMany, items in put (1) and batchPut, the page of range (first, last or the default page
 * size), the limit of deleteRange (or its default), delete 1. Each field counts at most its own
 * limit (beyond it the field is refused on its own, without touching Redis). Fields under
 * @skip/@include that will not run do not count; a field reached twice (the same fragment spread
 * twice) counts twice, which can only over-count. Subscriptions cost nothing here.
 */
export function requestedItems(document: DocumentNode, operationName: string | undefined, variables: Variables | typeof WORST_CASE, limits: Limits): number {
  const operation = getOperationAST(document, operationName);
  if (!operation || operation.operation === 'subscription') return 0;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
  const values: Reader = variables === WORST_CASE ? worstCase : new ValueReader(operation, variables);

  const fieldCost = (name: string, arg: (n: string) => ValueNode | undefined): number => {
    const capped = (n: number, max: number) => Math.min(Math.max(0, n), max);
    if (operation.operation === 'query') {
      switch (name) {
        case 'get':
          return 1;
        case 'getMany':
          return capped(values.listLength(arg('keys')), limits.maxBatchItems);
        case 'range': {
          const page = values.int(arg('first')) ?? values.int(arg('last')) ?? limits.pageDefault;
          return capped(page, limits.pageMax);
        }
        default:
          return 0;
      }
    }
    switch (name) {
      case 'put':
      case 'delete':
        return 1;
      case 'batchPut':
        return capped(values.listLength(arg('items')), limits.maxBatchItems);
      case 'deleteRange':
        return capped(values.int(arg('limit')) ?? limits.deleteRangeDefault, limits.deleteRangeMax);
      default:
        return 0;
    }
  };

  // Only root fields reach Redis; nested fields read what their root field returned.
  const visiting = new Set<string>();
  const sum = (set: SelectionSetNode): number => {
    let total = 0;
    for (const sel of set.selections) {
      if (!values.included(sel.directives)) continue;
      if (sel.kind === Kind.FIELD) {
        total += fieldCost(sel.name.value, (n) => sel.arguments?.find((a) => a.name.value === n)?.value);
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        total += sum(sel.selectionSet);
      } else {
        const fragment = fragments.get(sel.name.value);
        // A cycle is a validation error already; do not loop on it.
        if (!fragment || visiting.has(fragment.name.value)) continue;
        visiting.add(fragment.name.value);
        total += sum(fragment.selectionSet);
        visiting.delete(fragment.name.value);
      }
    }
    return total;
  };
  return sum(operation.selectionSet);
}

interface Reader {
  listLength(node: ValueNode | undefined): number;
  int(node: ValueNode | undefined): number | undefined;
  included(directives: readonly DirectiveNode[] | undefined): boolean;
}

/** Stands for variables that ask for as much as they can: every field at its own limit. */
const WORST_CASE = Symbol('worst case');
const worstCase: Reader = {
  listLength: () => Number.MAX_SAFE_INTEGER,
  int: () => Number.MAX_SAFE_INTEGER,
  included: () => true,
};

/** Reads argument values as they will be at execution: literals, variables, variable defaults. */
class ValueReader implements Reader {
  private readonly defaults = new Map<string, ValueNode>();

  constructor(
    operation: OperationDefinitionNode,
    private readonly variables: Variables,
  ) {
    for (const def of operation.variableDefinitions ?? []) {
      if (def.defaultValue) this.defaults.set(def.variable.name.value, def.defaultValue);
    }
  }

  /** A variable's raw value; a literal default stands in for an absent variable. */
  private variable(name: string): { raw: unknown } | { node: ValueNode } | undefined {
    if (Object.hasOwn(this.variables, name) && this.variables[name] !== undefined) return { raw: this.variables[name] };
    const node = this.defaults.get(name);
    return node ? { node } : undefined;
  }

  /** Items of a list argument; a single value stands for a list of one, as GraphQL coerces it. */
  listLength(node: ValueNode | undefined): number {
    if (!node || node.kind === Kind.NULL) return 0;
    if (node.kind === Kind.LIST) return node.values.length;
    if (node.kind === Kind.VARIABLE) {
      const v = this.variable(node.name.value);
      if (!v) return 0;
      if ('node' in v) return this.listLength(v.node);
      if (v.raw === null) return 0;
      return Array.isArray(v.raw) ? v.raw.length : 1;
    }
    return 1;
  }

  /** An Int argument; undefined when absent, null or not a whole number (execution refuses those). */
  int(node: ValueNode | undefined): number | undefined {
    if (!node) return undefined;
    if (node.kind === Kind.INT) return Number(node.value);
    if (node.kind === Kind.VARIABLE) {
      const v = this.variable(node.name.value);
      if (!v) return undefined;
      if ('node' in v) return this.int(v.node);
      return typeof v.raw === 'number' && Number.isInteger(v.raw) ? v.raw : undefined;
    }
    return undefined;
  }

  private bool(node: ValueNode | undefined): boolean | undefined {
    if (!node) return undefined;
    if (node.kind === Kind.BOOLEAN) return node.value;
    if (node.kind === Kind.VARIABLE) {
      const v = this.variable(node.name.value);
      if (!v) return undefined;
      if ('node' in v) return this.bool(v.node);
      return typeof v.raw === 'boolean' ? v.raw : undefined;
    }
    return undefined;
  }

  /** False only when @skip(if: true) or @include(if: false) certainly leaves the selection out. */
  included(directives: readonly DirectiveNode[] | undefined): boolean {
    for (const d of directives ?? []) {
      const cond = this.bool(d.arguments?.find((a) => a.name.value === 'if')?.value);
      if (d.name.value === 'skip' && cond === true) return false;
      if (d.name.value === 'include' && cond === false) return false;
    }
    return true;
  }
}
