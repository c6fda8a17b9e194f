// The whole GraphQL schema, built from the domain files for a given set of limits.
import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { defaultLimits, type Limits } from '../config.js';
import { createBuilder } from './builder.js';
import { stopRootFieldsAtDeadline } from './deadline.js';
import { addChanges } from './changes.js';
import { addConsistency } from './consistency.js';
import { addDelete } from './delete.js';
import { addEntry } from './entry.js';
import { addPut } from './put.js';
import { addRange } from './range.js';
import { validators } from './validators.js';

export function buildSchema(limits: Limits): GraphQLSchema {
  const builder = createBuilder();
  const v = validators(limits);
  const consistency = addConsistency(builder);
  addEntry(builder, v, consistency);
  addRange(builder, v, consistency);
  addPut(builder, v);
  addDelete(builder, v);
  addChanges(builder, v);
  return stopRootFieldsAtDeadline(builder.toSchema({ sortSchema: true }));
}

/** The text of schema.graphql: sorted, so that it only changes when the contract does. */
export function printSchemaSDL(schema: GraphQLSchema = buildSchema(defaultLimits())): string {
  return `${printSchema(lexicographicSortSchema(schema))}\n`;
}
