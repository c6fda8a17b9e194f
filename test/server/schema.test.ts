// The GraphQL contract: schema.graphql is current, and it holds every type and field the
// contract promises, with the promised types (checked on the parsed schema, not on its text).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import {
  buildSchema as buildSchemaFromSDL,
  isEnumType,
  isInputObjectType,
  isObjectType,
  isScalarType,
  isSpecifiedScalarType,
  type GraphQLArgument,
  type GraphQLEnumType,
  type GraphQLField,
  type GraphQLInputField,
  type GraphQLSchema,
} from 'graphql';
import { describe, expect, it } from 'vitest';
import { defaultLimits } from '../../src/config.js';
import { buildSchema, printSchemaSDL } from '../../src/graphql/schema.js';

const SDL_FILE = new URL('../../schema.graphql', import.meta.url);

describe('schema.graphql', () => {
  it('is what the code builds (run `npm run schema` after changing the schema)', () => {
    const committed = readFileSync(SDL_FILE, 'utf8');
    const built = printSchemaSDL();
    expect(
      committed === built,
      'schema.graphql is stale: it differs from the schema the code builds. Run `npm run schema` and commit the result.',
    ).toBe(true);
  });

  it('is what `npm run schema` prints', async () => {
    const { stdout } = await promisify(execFile)('node_modules/.bin/tsx', ['src/printSchema.ts'], { timeout: 20_000 });
    expect(stdout).toBe(printSchemaSDL());
    expect(stdout).toContain('type Query');
  });

  it('does not depend on the configured limits', () => {
    const other = buildSchema({ ...defaultLimits(), maxKeyBytes: 7, maxBatchItems: 2, pageMax: 3 });
    expect(printSchemaSDL(other)).toBe(printSchemaSDL());
  });
});

/** `name: Type` of every field (or argument / input field), in a map. */
function typesOf(fields: readonly (GraphQLField<unknown, unknown> | GraphQLArgument | GraphQLInputField)[]): Record<string, string> {
  return Object.fromEntries(fields.map((f) => [f.name, String(f.type)]));
}

function objectFields(schema: GraphQLSchema, name: string): Record<string, string> {
  const type = schema.getType(name);
  expect(type, `type ${name}`).toBeDefined();
  expect(isObjectType(type), `${name} is an object type`).toBe(true);
  return typesOf(Object.values((type as { getFields(): Record<string, GraphQLField<unknown, unknown>> }).getFields()));
}

function field(schema: GraphQLSchema, typeName: string, fieldName: string): GraphQLField<unknown, unknown> {
  const type = schema.getType(typeName);
  if (!isObjectType(type)) throw new Error(`${typeName} is not an object type`);
  const f = type.getFields()[fieldName];
  if (!f) throw new Error(`${typeName}.${fieldName} is missing`);
  return f;
}

// Both the file clients read and the schema the server runs must hold the contract.
const schemas: [string, () => GraphQLSchema][] = [
  ['schema.graphql', () => buildSchemaFromSDL(readFileSync(SDL_FILE, 'utf8'))],
  ['the served schema', () => buildSchema(defaultLimits())],
];

describe.each(schemas)('the contract in %s', (_, load) => {
  const schema = load();

  it('has the root types', () => {
    expect(schema.getQueryType()?.name).toBe('Query');
    expect(schema.getMutationType()?.name).toBe('Mutation');
    expect(schema.getSubscriptionType()?.name).toBe('Subscription');
  });

  it('Subscription.changes and ChangeEvent', () => {
    const changes = field(schema, 'Subscription', 'changes');
    expect(String(changes.type)).toBe('ChangeEvent!');
    expect(typesOf(changes.args)).toEqual({ prefix: 'String', start: 'String', end: 'String', after: 'String' });
    expect(objectFields(schema, 'ChangeEvent')).toEqual({
      type: 'ChangeType!',
      key: 'String!',
      version: 'Int!',
      entry: 'Entry',
      cursor: 'String!',
    });
    const changeType = schema.getType('ChangeType');
    expect(changeType && 'getValues' in changeType ? changeType.getValues().map((v) => v.name).sort() : null).toEqual(['DELETE', 'PUT']);
  });

  it('Entry', () => {
    expect(objectFields(schema, 'Entry')).toEqual({
      key: 'String!',
      value: 'String!',
      version: 'Int!',
      createdAt: 'DateTime!',
      updatedAt: 'DateTime!',
    });
    expect(isScalarType(schema.getType('DateTime'))).toBe(true);
  });

  it('Query.get, Query.getMany, Query.range', () => {
    expect(Object.keys(objectFields(schema, 'Query')).sort()).toEqual(['get', 'getMany', 'range']);
    const get = field(schema, 'Query', 'get');
    expect(String(get.type)).toBe('Entry');
    expect(typesOf(get.args)).toEqual({ key: 'String!', consistency: 'Consistency!' });
    expect(get.args.find((a) => a.name === 'consistency')?.defaultValue).toBeDefined();

    const getMany = field(schema, 'Query', 'getMany');
    expect(String(getMany.type)).toBe('[Entry]!');
    expect(typesOf(getMany.args)).toEqual({ keys: '[String!]!', consistency: 'Consistency!' });

    const range = field(schema, 'Query', 'range');
    expect(String(range.type)).toBe('EntryConnection!');
    expect(typesOf(range.args)).toEqual({
      start: 'String',
      end: 'String',
      prefix: 'String',
      first: 'Int',
      after: 'String',
      last: 'Int',
      before: 'String',
      consistency: 'Consistency!',
    });
  });

  it('Consistency: STRONG (the default) and EVENTUAL', () => {
    const type = schema.getType('Consistency') as GraphQLEnumType;
    expect(isEnumType(type)).toBe(true);
    expect(type.getValues().map((v) => v.name).sort()).toEqual(['EVENTUAL', 'STRONG']);
  });

  it('EntryConnection, EntryEdge, PageInfo', () => {
    expect(objectFields(schema, 'EntryConnection')).toEqual({
      edges: '[EntryEdge!]!',
      pageInfo: 'PageInfo!',
      totalCount: 'Int!',
    });
    expect(objectFields(schema, 'EntryEdge')).toEqual({ cursor: 'String!', node: 'Entry!' });
    expect(objectFields(schema, 'PageInfo')).toEqual({
      hasNextPage: 'Boolean!',
      hasPreviousPage: 'Boolean!',
      startCursor: 'String',
      endCursor: 'String',
    });
  });

  it('Mutation put, batchPut, delete, deleteRange', () => {
    expect(Object.keys(objectFields(schema, 'Mutation')).sort()).toEqual(['batchPut', 'delete', 'deleteRange', 'put']);

    const put = field(schema, 'Mutation', 'put');
    expect(String(put.type)).toBe('Entry!');
    expect(typesOf(put.args)).toEqual({ key: 'String!', value: 'String!', expectedVersion: 'Int' });

    const batchPut = field(schema, 'Mutation', 'batchPut');
    expect(String(batchPut.type)).toBe('[Entry!]!');
    expect(typesOf(batchPut.args)).toEqual({ items: '[PutInput!]!' });

    const del = field(schema, 'Mutation', 'delete');
    expect(String(del.type)).toBe('DeleteResult!');
    expect(typesOf(del.args)).toEqual({ key: 'String!', expectedVersion: 'Int' });

    const deleteRange = field(schema, 'Mutation', 'deleteRange');
    expect(String(deleteRange.type)).toBe('DeleteRangeResult!');
    expect(typesOf(deleteRange.args)).toEqual({ start: 'String', end: 'String', prefix: 'String', limit: 'Int' });
  });

  it('PutInput, DeleteResult, DeleteRangeResult', () => {
    const input = schema.getType('PutInput');
    expect(isInputObjectType(input)).toBe(true);
    if (!isInputObjectType(input)) return;
    expect(typesOf(Object.values(input.getFields()))).toEqual({ key: 'String!', value: 'String!', expectedVersion: 'Int' });

    expect(objectFields(schema, 'DeleteResult')).toEqual({ deleted: 'Boolean!', previous: 'Entry' });
    expect(objectFields(schema, 'DeleteRangeResult')).toEqual({ deleted: 'Int!', hasMore: 'Boolean!' });
  });

  it('has no types beyond the contract', () => {
    // Built-in scalars (Pothos registers ID and Float too; they are not printed) aside.
    const own = Object.values(schema.getTypeMap())
      .filter((t) => !t.name.startsWith('__') && !isSpecifiedScalarType(t))
      .map((t) => t.name)
      .sort();
    expect(own).toEqual(
      [
        'ChangeEvent',
        'ChangeType',
        'Consistency',
        'Subscription',
        'DateTime',
        'DeleteRangeResult',
        'DeleteResult',
        'Entry',
        'EntryConnection',
        'EntryEdge',
        'Mutation',
        'PageInfo',
        'PutInput',
        'Query',
      ].sort(),
    );
  });
});
