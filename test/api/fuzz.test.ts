// Property-based fuzz (fast-check) of what a client can send (issue 8's adversarial suite): random
// GraphQL operations built from the schema's real fields and arguments with adversarial values,
// random raw HTTP requests, and random graphql-ws messages, all from a token limited to the
// prefix `tenantA:` (or a read-only one). Whatever arrives, the server must never answer 5xx
// (but the documented 503 OVERLOADED and 504 DEADLINE_EXCEEDED), crash, hang, log an unexpected
// error, answer an error without `extensions.code`, show the limited token anything outside its
// prefix, or change a byte outside it (a read-only token: anything at all).
//
// The seed is printed; replay a failure with KV_FUZZ_SEED=<seed> (fast-check also prints the seed
// and path of a counterexample). KV_FUZZ_RUNS scales the number of runs (default 1).
import { randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import fc from 'fast-check';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newToken } from '../../src/auth/tokens.js';
import { encodeCursor } from '../../src/graphql/range.js';
import { createTestApp, feedSequencesOf, keysOf, type TestApp } from '../harness/app.js';
import { parseSseFrames } from '../harness/sse.js';
import { streamEvents } from '../harness/feedStream.js';

const SEED = Number(process.env.KV_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SCALE = Number(process.env.KV_FUZZ_RUNS ?? '1');
/** A response (headers and whole body) slower than this is a hang. */
const HANG_MS = 10_000;

const made = {
  admin: newToken('fuzz-admin', ['admin'], []),
  rw: newToken('fuzz-rw', ['read', 'write'], ['tenantA:']),
  reader: newToken('fuzz-reader', ['read'], ['tenantA:']),
};
type Who = 'rw' | 'reader';
const bearer = (who: keyof typeof made) => `Bearer ${made[who].token}`;

/** A marker no generator can produce: every value seeded outside tenantA: holds it. */
const SECRET = `SECRET-${randomBytes(8).toString('hex')}`;
const PREFIX = 'tenantA:';
const PREFIX_BYTES = Buffer.from(PREFIX);
const INSIDE_SEED = ['tenantA:1', 'tenantA:2', 'tenantA:3', 'tenantA:\uffff', 'tenantA:😀', 'tenantA:\0nul', 'tenantA:-', 'tenantA:['];
const OUTSIDE_SEED = [
  'tenantA', 'tenantA9', 'tenantA;', 'tenantA;x', 'tenantAB:x', 'tenantB:y', 'tenant', 'tenanta:1', 'TENANTA:1', 'z',
  '\0', '-', '+', '[tenantA:1', '(tenantA:1', 'tenantA\0:', 'tenant\uffff', '😀', 'tenantA9:z', ' tenantA:1', 'tenantA\u0301:',
];
const insideKey = (k: string) => Buffer.from(k, 'utf8').subarray(0, PREFIX_BYTES.length).equals(PREFIX_BYTES);

let app: TestApp;
const serverErrors: unknown[] = [];
let base: string;

// ---------------------------------------------------------------------------------------------
// Arbitraries: adversarial values for each kind of argument.

/** A GraphQL enum value: a bare name in a literal, a string in variables. */
class Enum {
  constructor(readonly name: string) {}
  toJSON() {
    return this.name;
  }
}

/** A big argument (a value over the limit, a list of 10,001 keys): sent whole, printed short by fast-check. */
class Big {
  constructor(
    readonly label: string,
    readonly value: unknown,
  ) {}
  toJSON() {
    return this.value;
  }
  [fc.toStringMethod]() {
    return `Big(${this.label})`;
  }
}
const HUGE_VALUE = new Big('value of 1,048,577 bytes', 'v'.repeat(1_048_577)); // one byte over KV_MAX_VALUE_BYTES
const MAX_VALUE = new Big('value of 1,048,576 bytes', 'v'.repeat(1_048_576));
const SPECIAL_STRINGS = [
  '', ' ', 'tenantA', 'tenantA:', 'tenantA;', 'tenantA9', 'tenantAB:', 'tenantAB:x', 'tenantB:y', 'tenant', 'z', 'a',
  'tenantA:1', 'tenantA:2', 'tenantA:\uffff', 'tenantA:\u{10FFFF}', 'tenantA:😀', 'tenantA:\0', 'tenantA:\0nul', '\0', '\0tenantA:',
  'tenantA\0:', '\ud800', 'tenantA:\ud800', 'tenantA:\udc00x', '\udfff', 'tenantA:\ud83d', '-', '+', '[', '(', '[tenantA:', '(tenantA:',
  'tenantA:-', 'tenantA:+', 'tenantA:[', 'tenantA:*', 'tenantA:?', 'tenantA:\\', 'tenantA:"', 'tenantA:\n', 'tenantA:\r\n', 'tenantA:%00',
  'TENANTA:', 'tenanta:', ' tenantA:', 'tenantA: ', 'tenantA\u0301:', 'tenantÀ:', '\ufefftenantA:', 'tenantA:\u2028', '{tenantA:}', '}{',
  'tenantA:' + 'k'.repeat(1016), 'tenantA:' + 'k'.repeat(1017), 'tenantA:' + 'é'.repeat(508), 'tenantA:' + 'é'.repeat(509), 'x'.repeat(5000),
  '__proto__', 'constructor', 'toString', '$', '${x}', '%s%s%n', '<script>', "'; DROP", 'null', 'undefined', 'NaN', '0',
];
const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
// A lone surrogate now and then (one in a string of ten: most strings must stay encodable).
const anyChar = fc.oneof({ weight: 60, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) }, { weight: 1, arbitrary: loneSurrogate });
const anyString = (maxLength: number) => fc.string({ unit: anyChar, maxLength });

const keyish: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SPECIAL_STRINGS) },
  { weight: 3, arbitrary: fc.constantFrom(...INSIDE_SEED, ...OUTSIDE_SEED) },
  { weight: 3, arbitrary: fc.constantFrom(...INSIDE_SEED) },
  { weight: 6, arbitrary: anyString(10).map((s) => PREFIX + s) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('tenantA', 'tenant', 'tenantA;', 'tenantAB:', ''), anyString(6)).map(([a, b]) => a + b) },
  { weight: 2, arbitrary: anyString(12) },
);

const intish: fc.Arbitrary<number> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0, -1, 1, 2, 3, 5, 999, 1000, 1001, 10_000, 10_001, 20_000, 20_001, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 53, 2 ** 53 + 2, 1e21, 1e300, 1.5, -0.5, 1e-7, -0) },
  { weight: 3, arbitrary: fc.integer({ min: -3, max: 12 }) },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double({ noNaN: true }) },
);

/** Cursors: real ones of keys in and out of the prefix, base64 variants, garbage. */
const cursorish: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: keyish.map((k) => encodeCursor(k)) },
  { weight: 1, arbitrary: keyish.map((k) => Buffer.from(k, 'utf8').toString('base64')) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 16 }).map((b) => Buffer.from(b).toString('base64url')) },
  { weight: 1, arbitrary: fc.constantFrom('', '=', '====', 'A', 'AA', 'AAA', '_-_-', '/+/+', '\0', 'A'.repeat(1366), 'A'.repeat(1367), '8J-Y', '7aCA', '__', encodeCursor('tenantA:') + '=') },
  { weight: 1, arbitrary: anyString(8) },
);

const valueish: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: anyString(20) },
  { weight: 2, arbitrary: fc.constantFrom('', 'x', '\0', '\ud800', 'a\udc00b', '"}', '\\', '{"a":1}') },
  { weight: 1, arbitrary: fc.constantFrom(HUGE_VALUE, MAX_VALUE) },
);

const wrongType: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(keyish, { maxLength: 3 }),
  fc.dictionary(fc.constantFrom('key', 'value', 'expectedVersion', 'x', '__proto__', 'a b'), fc.oneof(keyish, intish, fc.constant(null)), { maxKeys: 3 }),
  fc.constantFrom(new Enum('STRONG'), new Enum('EVENTUAL'), new Enum('PUT'), new Enum('true'), new Enum('null')),
);

const putItem = fc.record(
  { key: fc.oneof({ weight: 5, arbitrary: keyish }, { weight: 1, arbitrary: wrongType }), value: fc.oneof({ weight: 5, arbitrary: valueish }, { weight: 1, arbitrary: wrongType }), expectedVersion: fc.oneof(intish, fc.constant(null)) },
  { requiredKeys: [] },
);
const BIG_KEYS = new Big('10,001 keys', Array.from({ length: 10_001 }, (_, i) => `tenantA:${i % 50}`));
const MAX_KEYS = new Big('10,000 keys', Array.from({ length: 10_000 }, (_, i) => `tenantA:${i % 50}`));
const BIG_ITEMS = new Big('10,001 items', Array.from({ length: 10_001 }, (_, i) => ({ key: `tenantA:big${i}`, value: 'x' })));

type Kind = 'key' | 'keys' | 'bound' | 'int' | 'version' | 'cursor' | 'value' | 'items' | 'consistency';
const KIND_ARB: Record<Kind, fc.Arbitrary<unknown>> = {
  key: keyish,
  bound: keyish,
  keys: fc.oneof({ weight: 8, arbitrary: fc.array(keyish, { maxLength: 8 }) }, { weight: 1, arbitrary: fc.constantFrom<unknown>(BIG_KEYS, MAX_KEYS, []) }),
  int: intish,
  version: fc.oneof(intish, fc.integer({ min: 0, max: 4 })),
  cursor: cursorish,
  value: valueish,
  items: fc.oneof({ weight: 8, arbitrary: fc.array(fc.oneof({ weight: 6, arbitrary: putItem }, { weight: 1, arbitrary: wrongType }), { maxLength: 5 }) }, { weight: 1, arbitrary: fc.constantFrom<unknown>(BIG_ITEMS, []) }),
  consistency: fc.constantFrom(new Enum('STRONG'), new Enum('EVENTUAL'), new Enum('strong'), new Enum('NOPE'), 'STRONG', 'EVENTUAL', 'eventual'),
};

type Root = 'query' | 'mutation' | 'subscription';
interface FieldDef {
  root: Root | 'any';
  args: Record<string, [Kind, string]>;
  selection: string;
}
const S = 'String';
const FIELDS: Record<string, FieldDef> = {
  get: { root: 'query', args: { key: ['key', 'String!'], consistency: ['consistency', 'Consistency!'] }, selection: '{ key value version createdAt updatedAt }' },
  getMany: { root: 'query', args: { keys: ['keys', '[String!]!'], consistency: ['consistency', 'Consistency!'] }, selection: '{ key value version }' },
  range: {
    root: 'query',
    args: { prefix: ['bound', S], start: ['bound', S], end: ['bound', S], first: ['int', 'Int'], last: ['int', 'Int'], after: ['cursor', S], before: ['cursor', S], consistency: ['consistency', 'Consistency!'] },
    selection: '{ totalCount edges { cursor node { key value version } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }',
  },
  put: { root: 'mutation', args: { key: ['key', 'String!'], value: ['value', 'String!'], expectedVersion: ['version', 'Int'] }, selection: '{ key value version createdAt }' },
  batchPut: { root: 'mutation', args: { items: ['items', '[PutInput!]!'] }, selection: '{ key value version }' },
  delete: { root: 'mutation', args: { key: ['key', 'String!'], expectedVersion: ['version', 'Int'] }, selection: '{ deleted previous { key value version } }' },
  deleteRange: { root: 'mutation', args: { prefix: ['bound', S], start: ['bound', S], end: ['bound', S], limit: ['int', 'Int'] }, selection: '{ deleted hasMore }' },
  changes: { root: 'subscription', args: { prefix: ['bound', S], start: ['bound', S], end: ['bound', S], after: ['cursor', S] }, selection: '{ type key version cursor entry { key value } }' },
  __typename: { root: 'any', args: {}, selection: '' },
};
const WRONG_TYPES = ['String', 'String!', 'Int', 'Int!', 'Float', 'Boolean', 'ID', '[String]', '[String!]!', '[[String]]', 'PutInput', '[PutInput!]!', 'Consistency', 'Entry', 'Nope'];

interface ArgChoice {
  name: string;
  mode: 'var' | 'lit' | 'null';
  value: unknown;
  varType: string;
  /** The variable is declared but its value is not sent. */
  unsent: boolean;
}
interface FieldCall {
  field: string;
  alias: string | null;
  args: ArgChoice[];
  selection: 'normal' | 'none' | 'bogus' | 'typename';
  directive: string | null;
}
type StringStyle = 'json' | 'block' | 'raw';
interface OpSpec {
  root: Root | 'shorthand';
  name: string | null;
  fields: FieldCall[];
  stringStyle: StringStyle;
  /** operationName sent with the request: the operation's, another, or none. */
  operationName: 'own' | 'other' | 'none';
  fragment: boolean;
}

/** Header text: mostly what Node sends (tab, printable ASCII, Latin-1), now and then anything (Node refuses it). */
const headerText = (maxLength: number) =>
  fc.oneof(
    { weight: 9, arbitrary: fc.string({ unit: fc.constantFrom(9, ...Array.from({ length: 0x5f }, (_, i) => 0x20 + i), 0x80, 0xa0, 0xe9, 0xff).map((c) => String.fromCharCode(c)), maxLength }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength }) },
  );

const nameArb = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,6}$/);

/** Well-typed values for each kind: adversarial, but of the argument's type. */
const int32ish = fc.oneof(fc.constantFrom(0, -1, 1, 2, 3, 5, 999, 1000, 1001, 10_000, 10_001, 20_000, 20_001, 2 ** 31 - 1, -(2 ** 31)), fc.integer({ min: -3, max: 12 }));
const STRICT_ARB: Record<Kind, fc.Arbitrary<unknown>> = {
  ...KIND_ARB,
  int: int32ish,
  version: fc.oneof(int32ish, fc.integer({ min: 0, max: 4 })),
  items: fc.oneof(
    { weight: 8, arbitrary: fc.array(fc.record({ key: keyish, value: valueish, expectedVersion: fc.oneof(int32ish, fc.integer({ min: 0, max: 3 })) }, { requiredKeys: ['key', 'value'] }), { maxLength: 5 }) },
    { weight: 1, arbitrary: fc.constantFrom<unknown>(BIG_ITEMS, []) },
  ),
  consistency: fc.constantFrom(new Enum('STRONG'), new Enum('EVENTUAL')),
};

/**
 * One field of an operation. `strict`: well-formed (the root's own fields, arguments of their
 * types, real selections), so that it reaches the resolvers with adversarial values; otherwise
 * anything goes (wrong types, unknown fields and arguments, bad selections and directives).
 */
function fieldCallArb(root: Root | 'shorthand', strict: boolean): fc.Arbitrary<FieldCall> {
  const own = Object.keys(FIELDS).filter((f) => FIELDS[f]!.root === (root === 'shorthand' ? 'query' : root) || (FIELDS[f]!.root === 'any' && root !== 'subscription'));
  const fieldName = strict
    ? fc.constantFrom(...own.filter((f) => f !== '__typename'))
    : fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...own) }, { weight: 1, arbitrary: fc.constantFrom(...Object.keys(FIELDS), 'nope', '__schema') });
  return fieldName.chain((field) => {
    const def = FIELDS[field] ?? { root: 'any', args: {}, selection: '{ __typename }' };
    const argNames = Object.keys(def.args);
    const argArb = (name: string): fc.Arbitrary<ArgChoice | null> => {
      const [kind, type] = def.args[name] ?? (['key', 'String'] as [Kind, string]);
      const required = type.endsWith('!') && !(kind === 'consistency');
      const modes: ArgChoice['mode'][] = strict ? (type.endsWith('!') ? ['var', 'lit'] : ['var', 'lit', 'null']) : ['var', 'var', 'lit', 'lit', 'null'];
      const choice = fc.record({
        name: fc.constant(name),
        mode: fc.constantFrom(...modes),
        value: strict ? STRICT_ARB[kind] : fc.oneof({ weight: 8, arbitrary: KIND_ARB[kind] }, { weight: 1, arbitrary: wrongType }),
        varType: strict ? fc.constant(type) : fc.oneof({ weight: 8, arbitrary: fc.constant(type) }, { weight: 1, arbitrary: fc.constantFrom(...WRONG_TYPES) }),
        unsent: fc.constant(false), // set below: at most one declared variable is left unsent
      });
      if (strict && required) return choice;
      return fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 7, arbitrary: choice });
    };
    const bogusArg = fc.record({ name: fc.constantFrom('bogus', 'key', 'keys', 'first'), mode: fc.constant<'lit'>('lit'), value: wrongType, varType: fc.constant('Int'), unsent: fc.constant(false) });
    return fc.record({
      field: fc.constant(field),
      alias: fc.option(nameArb, { freq: 3 }),
      args: fc.tuple(...argNames.map(argArb), strict ? fc.constant(null) : fc.option(bogusArg, { freq: 12 }), fc.nat(strict ? 0 : 20)).map((xs) => {
        const unsentPick = xs.pop() as number;
        const args = (xs as (ArgChoice | null)[]).filter((a): a is ArgChoice => a !== null);
        return args.map((a, i) => ({ ...a, unsent: !strict && a.mode === 'var' && i === unsentPick }));
      }),
      selection: strict ? fc.constant<FieldCall['selection']>('normal') : fc.constantFrom<FieldCall['selection']>('normal', 'normal', 'normal', 'normal', 'normal', 'normal', 'none', 'bogus', 'typename'),
      directive: strict
        ? fc.option(fc.constantFrom(...(root === 'subscription' ? ['@skip(if: false)'] : ['@skip(if: false)', '@include(if: true)', '@skip(if: true)'])), { freq: 6 })
        : fc.option(fc.constantFrom('@skip(if: true)', '@skip(if: false)', '@include(if: false)', '@include(if: true)', '@skip(if: $undeclared)', '@deprecated', '@bogus', '@include(if: "yes")'), { freq: 8 }),
    });
  });
}

/** An operation: half of them well-formed (see fieldCallArb), half anything. */
const opSpecArb = (roots: (Root | 'shorthand')[]): fc.Arbitrary<OpSpec> =>
  fc.tuple(fc.constantFrom(...roots), fc.boolean()).chain(([root, strict]) =>
    fc.record({
      root: fc.constant(root),
      name: fc.option(nameArb, { freq: 2 }),
      fields: fc.array(fieldCallArb(root, strict), { minLength: 1, maxLength: strict && root === 'subscription' ? 1 : 4 }).map((fields) =>
        // Distinct response names, so that well-formed operations pass validation.
        strict ? fields.map((f, i) => ({ ...f, alias: f.alias ? `${f.alias}${i}` : fields.length > 1 ? `f${i}` : null })) : fields,
      ),
      stringStyle: strict ? fc.constant<StringStyle>('json') : fc.constantFrom<StringStyle>('json', 'json', 'json', 'block', 'raw'),
      operationName: strict ? fc.constantFrom<OpSpec['operationName']>('own', 'none') : fc.constantFrom<OpSpec['operationName']>('own', 'own', 'none', 'none', 'other'),
      fragment: fc.boolean(),
    }),
  );

// ---------------------------------------------------------------------------------------------
// Rendering an operation as GraphQL text and variables.

function stringLiteral(s: string, style: StringStyle): string {
  if (style === 'block') return `"""${s.replace(/"""/g, '\\"""')}"""`;
  if (style === 'raw') return `"${s.replace(/["\\]/g, (c) => `\\${c}`).replace(/\n/g, '\\n').replace(/\r/g, '\\r')}"`;
  return JSON.stringify(s);
}

function literal(v: unknown, style: StringStyle): string {
  if (v === null || v === undefined) return 'null';
  if (v instanceof Enum) return v.name;
  if (v instanceof Big) return literal(v.value, style);
  if (typeof v === 'string') return stringLiteral(v, style);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'NaN';
  if (typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map((x) => literal(x, style)).join(', ')}]`;
  return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${k}: ${literal(x, style)}`).join(', ')}}`;
}

interface Rendered {
  query: string;
  variables: Record<string, unknown>;
  operationName?: string;
}

function render(spec: OpSpec): Rendered {
  const defs: string[] = [];
  const variables: Record<string, unknown> = {};
  let n = 0;
  const fields = spec.fields.map((f) => {
    const args = f.args.map((a) => {
      if (a.mode === 'null') return `${a.name}: null`;
      if (a.mode === 'lit') return `${a.name}: ${literal(a.value, spec.stringStyle)}`;
      const v = `v${n++}`;
      defs.push(`$${v}: ${a.varType}`);
      if (!a.unsent) variables[v] = a.value;
      return `${a.name}: $${v}`;
    });
    const def = FIELDS[f.field];
    const selection = { normal: def ? def.selection : '{ __typename }', none: '', bogus: '{ nope }', typename: '{ __typename }' }[f.selection];
    return `${f.alias ? `${f.alias}: ` : ''}${f.field}${args.length ? `(${args.join(', ')})` : ''}${f.directive ? ` ${f.directive}` : ''} ${selection}`;
  });
  const body = `{ ${fields.join(' ')} }`;
  const root = spec.root === 'shorthand' ? 'query' : spec.root;
  let query: string;
  if (spec.root === 'shorthand' && defs.length === 0 && !spec.fragment) query = body;
  else if (spec.fragment) {
    const type = root === 'query' ? 'Query' : root === 'mutation' ? 'Mutation' : 'Subscription';
    query = `${root} ${spec.name ?? ''}${defs.length ? `(${defs.join(', ')})` : ''} { ...F } fragment F on ${type} ${body}`;
  } else query = `${root} ${spec.name ?? ''}${defs.length ? `(${defs.join(', ')})` : ''} ${body}`;
  const operationName = spec.operationName === 'own' ? (spec.name ?? undefined) : spec.operationName === 'other' ? 'Other' : undefined;
  return { query, variables, ...(operationName ? { operationName } : {}) };
}

/** A short description of a value for failure messages (huge strings and arrays abbreviated). */
function brief(v: unknown): string {
  const s = JSON.stringify(v, (_, x: unknown) => {
    if (typeof x === 'string' && x.length > 200) return `${x.slice(0, 60)}…(${x.length} chars)`;
    if (Array.isArray(x) && x.length > 20) return [...x.slice(0, 5), `…(${x.length} items)`];
    return x;
  });
  return s === undefined ? String(v) : s;
}

// ---------------------------------------------------------------------------------------------
// What every response must satisfy.

interface Answer {
  status: number;
  headers: Record<string, string>;
  text: string;
}

/** The problems with one response; empty when it is acceptable. */
function problemsOf(a: Answer, limited: boolean): string[] {
  const problems: string[] = [];
  const type = a.headers['content-type'] ?? '';
  const results: unknown[] = [];
  if (/json/i.test(type) && a.text !== '') {
    try {
      results.push(JSON.parse(a.text));
    } catch {
      problems.push(`a ${type} body that is not JSON`);
    }
  } else if (/^text\/event-stream/i.test(type)) {
    for (const f of parseSseFrames(`${a.text}\n\n`).frames) {
      if (f.event !== 'next') continue;
      try {
        results.push(JSON.parse(f.data));
      } catch {
        problems.push(`an SSE frame that is not JSON: ${f.data.slice(0, 200)}`);
      }
    }
  }
  const codes: (string | undefined)[] = [];
  for (const r of results) problems.push(...resultProblems(r, limited, codes));
  if (a.status >= 500) {
    const documented =
      (a.status === 503 && codes.length > 0 && codes.every((c) => c === 'OVERLOADED') && a.headers['retry-after'] !== undefined) ||
      (a.status === 504 && codes.length > 0 && codes.every((c) => c === 'DEADLINE_EXCEEDED'));
    if (!documented) problems.push(`HTTP ${a.status} with codes ${JSON.stringify(codes)}`);
  }
  if (a.text.includes(SECRET)) problems.push('the body holds a value seeded outside tenantA:');
  return problems;
}

/** Problems with one GraphQL result (or whatever JSON the server sent). */
function resultProblems(r: unknown, limited: boolean, codes: (string | undefined)[] = []): string[] {
  const problems: string[] = [];
  if (Array.isArray(r)) {
    for (const x of r) problems.push(...resultProblems(x, limited, codes));
    return problems;
  }
  if (typeof r !== 'object' || r === null) return problems;
  const { errors, data } = r as { errors?: unknown; data?: unknown };
  if (errors !== undefined) {
    if (!Array.isArray(errors)) problems.push(`errors is not a list: ${brief(errors)}`);
    else
      for (const e of errors as { message?: unknown; extensions?: { code?: unknown } }[]) {
        const code = e?.extensions?.code;
        codes.push(typeof code === 'string' ? code : undefined);
        if (typeof code !== 'string') problems.push(`an error without extensions.code: ${brief(e)}`);
        else if (code === 'INTERNAL_SERVER_ERROR') problems.push(`INTERNAL_SERVER_ERROR: ${brief(e)}`);
      }
  }
  if (limited && data != null) problems.push(...dataProblems(data));
  return problems;
}

/** Keys and cursors in an answer to a tenantA: token: every one inside tenantA:. */
function dataProblems(data: unknown): string[] {
  const problems: string[] = [];
  const walk = (x: unknown) => {
    if (Array.isArray(x)) return x.forEach(walk);
    if (typeof x !== 'object' || x === null) return;
    for (const [k, v] of Object.entries(x)) {
      if (k === 'key' && typeof v === 'string' && !insideKey(v)) problems.push(`returned key ${JSON.stringify(v)}`);
      // Range cursors (an edge's, pageInfo's); a change event's cursor is a feed position.
      const rangeCursor = (k === 'cursor' && 'node' in x) || k === 'startCursor' || k === 'endCursor';
      if (rangeCursor && typeof v === 'string' && /^[A-Za-z0-9_-]+$/.test(v)) {
        const key = Buffer.from(v, 'base64url').toString('utf8');
        if (!insideKey(key)) problems.push(`returned a cursor of ${JSON.stringify(key)}`);
      }
      walk(v);
    }
  };
  walk(data);
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The data: a snapshot read straight from Redis, under the app's keyspace.

interface Snapshot {
  /** One line per index member outside tenantA: with its packed entry, byte for byte. */
  outside: string[];
  /** The same for every member. */
  all: string[];
  sequences: number[];
}

async function snapshot(): Promise<Snapshot> {
  const ks = app.store.keys;
  const outside: string[] = [];
  const all: string[] = [];
  for (let p = 0; p < ks.partitions; p++) {
    const members = await app.redis.zrangeBuffer(ks.index(p), 0, -1);
    // One pipeline per partition (its keys share one hash tag: one slot on a cluster).
    const pipe = app.redis.pipeline();
    for (const m of members) pipe.hgetBuffer(ks.bucket(m.toString('utf8')), m);
    const packed = ((await pipe.exec()) ?? []).map(([err, v]) => {
      if (err) throw err;
      return v as Buffer | null;
    });
    members.forEach((m, i) => {
      const line = `${p} ${m.toString('hex')} ${packed[i]?.toString('hex') ?? 'absent'}`;
      all.push(line);
      if (!m.subarray(0, PREFIX_BYTES.length).equals(PREFIX_BYTES)) outside.push(line);
    });
  }
  return { outside, all, sequences: await feedSequencesOf(app) };
}

/** The last feed event checked, per partition: every newer one must be of a tenantA: key. */
const feedSeen: string[] = [];
async function newOutsideEvents(): Promise<string[]> {
  const ks = app.store.keys;
  const found: string[] = [];
  for (let p = 0; p < ks.partitions; p++) {
    for (const e of await streamEvents(app.redis, ks.stream(p), feedSeen[p] ?? '-')) {
      feedSeen[p] = e.entryId;
      if (!Buffer.from(e.key).subarray(0, PREFIX_BYTES.length).equals(PREFIX_BYTES)) found.push(`event ${e.seq} of ${JSON.stringify(e.key)}`);
    }
  }
  return found;
}

/** Every bucket field of the whole keyspace (a SCAN) outside tenantA:, with its packed entry. */
async function outsideFields(): Promise<string[]> {
  const out: string[] = [];
  for (const k of await keysOf(app.redis, app.prefix)) {
    if (!/\}:b:\d+$/.test(k)) continue;
    const h = await app.redis.hgetallBuffer(k);
    for (const [field, v] of Object.entries(h)) if (!insideKey(field)) out.push(`${k} ${Buffer.from(field).toString('hex')} ${v.toString('hex')}`);
  }
  return out.sort();
}

let seeded: Snapshot;
let seedRound = 0;

async function admin(query: string, variables: Record<string, unknown> = {}) {
  const res = await fetch(app.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: bearer('admin') },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(HANG_MS),
  });
  return (await res.json()) as { data?: any; errors?: unknown[] };
}

/** Puts tenantA:'s seed keys back now and then (the fuzz deletes them). */
async function reseedInside(): Promise<void> {
  if (seedRound++ % 10 !== 0) return;
  const r = await admin('mutation($i:[PutInput!]!){ batchPut(items:$i){ key } }', { i: INSIDE_SEED.map((key) => ({ key, value: `v-${key}` })) });
  expect(r.errors).toBeUndefined();
}

/** After a case: data outside tenantA: untouched (for the reader: nothing at all), no new logged error. */
async function checkData(who: Who | 'ws', before: Snapshot): Promise<string[]> {
  const problems: string[] = [];
  const after = await snapshot();
  if (JSON.stringify(after.outside) !== JSON.stringify(seeded.outside)) problems.push(`data outside tenantA: changed: ${brief(diff(seeded.outside, after.outside))}`);
  if (who === 'reader' && (JSON.stringify(after.all) !== JSON.stringify(before.all) || JSON.stringify(after.sequences) !== JSON.stringify(before.sequences))) {
    problems.push(`a read-only token changed data: ${brief(diff(before.all, after.all))} sequences ${before.sequences} -> ${after.sequences}`);
  }
  problems.push(...(await newOutsideEvents()));
  if (serverErrors.length > 0) problems.push(`the server logged errors: ${serverErrors.splice(0).map((e) => (e instanceof Error ? (e.stack ?? e.message) : brief(e))).join('\n')}`);
  return problems;
}

function diff(a: string[], b: string[]) {
  const A = new Set(a);
  const B = new Set(b);
  return { gone: a.filter((x) => !B.has(x)), added: b.filter((x) => !A.has(x)) };
}

// ---------------------------------------------------------------------------------------------
// Sending.

/** Reads a fetch Response whole within the signal's bound; streams (SSE, multipart) for a moment only. */
async function readAnswer(res: Response): Promise<Answer> {
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    headers[k] = v;
  });
  const type = headers['content-type'] ?? '';
  let text: string;
  if (/^(text\/event-stream|multipart\/mixed)/i.test(type)) text = await readStreamBriefly(res.body, 1500);
  else text = await res.text();
  return { status: res.status, headers, text };
}

/** What a streamed body sends within `ms` (a subscription may go on for ever: that is no hang). */
async function readStreamBriefly(body: ReadableStream<Uint8Array> | null, ms: number): Promise<string> {
  if (!body) return '';
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const until = Date.now() + ms;
  try {
    for (;;) {
      const left = until - Date.now();
      if (left <= 0) break;
      let timer: NodeJS.Timeout | undefined;
      const next = await Promise.race([reader.read(), new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), left)))]);
      clearTimeout(timer);
      if (next === 'late' || next.done) break;
      text += decoder.decode(next.value, { stream: true });
      // A query or mutation over SSE ends with a complete frame.
      if (/event: complete/.test(text)) break;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return text;
}

type Lane = 'fast' | 'yoga' | 'get' | 'sse' | 'graphql-body';
interface GqlCase {
  who: Who;
  lane: Lane;
  accept: string | null;
  spec: OpSpec;
}

async function sendGql(c: GqlCase, r: Rendered): Promise<Answer | { refused: string }> {
  const headers: Record<string, string> = { authorization: bearer(c.who) };
  if (c.accept !== null) headers.accept = c.accept;
  // A GET needs a header only scripts send (CSRF prevention).
  if (c.lane === 'get') headers['x-graphql-yoga-csrf'] = '1';
  const signal = AbortSignal.timeout(HANG_MS);
  let res: Response;
  if (c.lane === 'get') {
    const qs = new URLSearchParams({ query: r.query, variables: JSON.stringify(r.variables), ...(r.operationName ? { operationName: r.operationName } : {}) });
    const url = `${app.url}?${qs}`;
    try {
      res = await fetch(url, { headers, signal });
    } catch (err) {
      // Node refuses a request head over 16 KiB (431, or the socket closed while sending).
      if (url.length > 16_000 && !(err instanceof Error && err.name === 'TimeoutError')) return { refused: String(err) };
      throw err;
    }
    return readAnswer(res);
  }
  // The fast lane hands a request with an Origin to yoga: its own origin (another is refused).
  if (c.lane === 'yoga') headers.origin = new URL(app.url).origin;
  if (c.lane === 'sse') headers.accept = 'text/event-stream';
  if (c.lane === 'graphql-body') {
    headers['content-type'] = 'application/graphql';
    res = await fetch(app.url, { method: 'POST', headers, body: r.query, signal });
  } else {
    headers['content-type'] = 'application/json';
    res = await fetch(app.url, { method: 'POST', headers, body: JSON.stringify(r), signal });
  }
  return readAnswer(res);
}

async function stillServes(): Promise<void> {
  const health = await fetch(`${base}/health`, { signal: AbortSignal.timeout(HANG_MS) });
  expect(health.status).toBe(200);
  const res = await fetch(app.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: bearer('rw') },
    body: JSON.stringify({ query: '{ range(prefix: "tenantA:", first: 1) { totalCount } }' }),
    signal: AbortSignal.timeout(HANG_MS),
  });
  const body = (await res.json()) as { errors?: unknown };
  expect(res.status).toBe(200);
  expect(body.errors).toBeUndefined();
}

const fcParams = (runs: number, timeLimitMs: number): fc.Parameters<unknown> => ({
  seed: SEED,
  numRuns: Math.max(1, Math.round(runs * SCALE)),
  plugins: [fc.interruptAfterTimeLimit(timeLimitMs * SCALE)],
});

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  app = await createTestApp('fuzz', {
    tokens: Object.values(made).map((m) => m.entry),
    websocket: true,
    errors: serverErrors,
    // Few slots, so that a slot a request never gives back shows within the run (requests here
    // are sent one at a time: none should ever be refused); a deadline below the hang bound.
    load: { maxInFlight: 4, requestTimeoutMs: 5000 },
  });
  base = app.url.replace(/\/graphql$/, '');
  const items = [
    ...INSIDE_SEED.map((key) => ({ key, value: `v-${key}` })),
    ...OUTSIDE_SEED.map((key, i) => ({ key, value: `${SECRET}-${i}` })),
  ];
  const r = await admin('mutation($i:[PutInput!]!){ batchPut(items:$i){ key } }', { i: items });
  expect(r.errors).toBeUndefined();
  seeded = await snapshot();
  expect(seeded.outside).toHaveLength(OUTSIDE_SEED.length);
  await newOutsideEvents(); // the seed's own events are the baseline
  console.log(`fuzz seed ${SEED} (replay: KV_FUZZ_SEED=${SEED})`);
});

afterAll(async () => {
  await app?.close();
});

describe('fuzz: nothing a tenantA: token sends gets a 5xx, hangs, leaks or writes outside tenantA:', () => {
  it('random GraphQL operations of the schema\'s fields, over the fast lane, yoga, GET, SSE and application/graphql', async () => {
    const caseArb = fc
      .record({
        who: fc.constantFrom<Who>('rw', 'rw', 'rw', 'reader'),
        lane: fc.constantFrom<Lane>('fast', 'fast', 'fast', 'yoga', 'yoga', 'get', 'sse', 'graphql-body'),
        accept: fc.constantFrom('application/graphql-response+json', 'application/json', null, 'application/json, text/plain;q=0.5', '*/*'),
      })
      .chain((c) => {
        // A subscription answered as a stream goes on for ever: only where the answer is JSON.
        const json = c.lane !== 'sse' && c.accept !== null && c.accept !== '*/*';
        const roots: (Root | 'shorthand')[] = ['query', 'query', 'mutation', 'mutation', 'shorthand', ...(json ? (['subscription'] as const) : [])];
        return opSpecArb(roots).map((spec) => ({ ...c, spec }));
      });
    await fc.assert(
      fc.asyncProperty(caseArb, async (c: GqlCase) => {
        await reseedInside();
        const before = await snapshot();
        const rendered = render(c.spec);
        const answer = await sendGql(c, rendered).catch((err: unknown) => ({ status: 599, headers: {}, text: `NO ANSWER (a hang or a dropped connection): ${String(err)}` }));
        const problems = 'refused' in answer ? [] : problemsOf(answer, true);
        problems.push(...(await checkData(c.who, before)));
        if (problems.length > 0) {
          const got = 'refused' in answer ? answer.refused : `HTTP ${answer.status} ${answer.text.slice(0, 1500)}`;
          throw new Error(`${problems.join('\n')}\n${c.who} over ${c.lane} (accept ${c.accept}): ${brief(rendered)}\n-> ${got}`);
        }
      }),
      fcParams(400, 10_000),
    );
    await stillServes();
  }, 90_000);

  it('random raw HTTP requests: methods, paths, headers, bodies of bytes, broken JSON and wrong shapes', async () => {
    const good = opSpecArb(['query', 'mutation', 'shorthand']).map(render);
    const jsonText = good.map((r) => JSON.stringify(r));
    const nested = (depth: number, open: string, close: string, inner = '1') => open.repeat(depth) + inner + close.repeat(depth);
    const bodyArb: fc.Arbitrary<Buffer | null> = fc.oneof(
      { weight: 1, arbitrary: fc.constant(null) },
      { weight: 2, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) },
      { weight: 3, arbitrary: fc.tuple(jsonText, fc.nat()).map(([t, n]) => Buffer.from(t.slice(0, n % (t.length + 1)))) },
      { weight: 3, arbitrary: jsonText.map((t) => Buffer.from(t)) },
      {
        weight: 3,
        arbitrary: fc
          .tuple(
            good,
            fc.constantFrom(
              (r: Rendered) => [r],
              (r: Rendered) => [r, r],
              (r: Rendered) => ({ ...r, query: 42 }),
              (r: Rendered) => ({ ...r, variables: 'x' }),
              (r: Rendered) => ({ ...r, variables: [r.variables] }),
              (r: Rendered) => ({ ...r, operationName: 7 }),
              (r: Rendered) => ({ ...r, extensions: 'x' }),
              (r: Rendered) => ({ ...r, extensions: { persistedQuery: { version: 1, sha256Hash: 'ab' } } }),
              (r: Rendered) => ({ ...r, extra: true }),
              (r: Rendered) => ({ variables: r.variables }),
              (r: Rendered) => ({ query: null }),
              (r: Rendered) => ({ query: [r.query] }),
              (r: Rendered) => ({ query: { toString: r.query } }),
              (r: Rendered) => ({ __proto__: { query: r.query }, query: r.query }),
              () => 'query',
              () => 12345678901234567890,
              () => null,
              () => true,
            ),
          )
          .map(([r, f]) => Buffer.from(JSON.stringify(f(r)) ?? 'undefined')),
      },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          '{"query":"{ __typename }","query":"mutation { deleteRange(prefix: \\"tenantB:\\") { deleted } }"}',
          '{"query":"mutation { deleteRange(prefix: \\"tenantB:\\") { deleted } }","query":"{ __typename }"}',
          '{"query":"query($f:Int){ range(prefix:\\"tenantA:\\", first:$f){ totalCount } }","variables":{"f":1e400}}',
          '{"query":"query($f:Int){ range(prefix:\\"tenantA:\\", first:$f){ totalCount } }","variables":{"f":-1e400}}',
          '{"query":"query($f:Int){ range(prefix:\\"tenantA:\\", first:$f){ totalCount } }","variables":{"f":123456789012345678901234567890}}',
          '{"query":"query($f:Int){ range(prefix:\\"tenantA:\\", first:$f){ totalCount } }","variables":{"f":-0}}',
          '{"query":"query($f:Int){ range(prefix:\\"tenantA:\\", first:$f){ totalCount } }","variables":{"f":1.0}}',
          '{"query":"query($k:String!){ get(key:$k){ value } }","variables":{"k":"tenantB:y","k":"tenantA:1"}}',
          '{"query":"query($k:String!){ get(key:$k){ value } }","variables":{"k":"tenantA:1","k":"tenantB:y"}}',
          '{"query":"query($k:String!){ get(key:$k){ value } }","variables":{"k":"\\ud800"}}',
          '{"query":"query($k:String!){ get(key:$k){ value } }","variables":{"k":"tenantA:\\u0000"}}',
          '{"query":"{ get(key:\\"tenantA:\\ud800\\"){ value } }"}',
          '{"query":"{ __typename }", "variables": null, "operationName": null, "extensions": null}',
          '{"query":"{ __typename }"} trailing',
          '{"query":"{ __typename }"}\u0000',
          '\ufeff{"query":"{ __typename }"}',
          '{"query":"{ __typename }",}',
          "{'query':'{ __typename }'}",
          '{"query":"mutation { put(key: \\"tenantA:x\\", value: \\"1\\") { version } }"}{"query":"{ __typename }"}',
          '[]',
          '{}',
          '""',
          'null',
          '',
          ' ',
          'NaN',
          '{"query":"' + '{'.repeat(5000) + '"}',
          '{"query":"{ ' + 'a: __typename '.repeat(3000) + '}"}',
          '{"query":"' + '#'.repeat(20000) + '\\n{ __typename }"}',
          '{"query":"query(' + Array.from({ length: 600 }, (_, i) => `$v${i}:Int`).join(',') + '){ __typename }"}',
          '{"query":"{ __typename @skip(if: false) ' + '@include(if: true) '.repeat(200) + '}"}',
          '{"query":"query { ...F } fragment F on Query { ...G } fragment G on Query { ...F }"}',
          '{"query":"{ range(prefix:\\"tenantA:\\"){ edges { node { key } } edges { node { key } } } }"}',
          'query=%7B__typename%7D',
          'query={ __typename }&variables=%ZZ',
          'query=%7B__typename%7D&variables=x',
        ).map((s) => Buffer.from(s)),
      },
      {
        weight: 1,
        arbitrary: fc.constantFrom(20, 1000, 100_000).chain((d) =>
          fc.constantFrom(
            nested(d, '[', ']'),
            nested(d, '{"a":', '}'),
            `{"query":"query($k:[String!]!){ getMany(keys:$k){ key } }","variables":{"k":${nested(d, '[', ']', '"tenantA:1"')}}}`,
            `{"query":"mutation($i:[PutInput!]!){ batchPut(items:$i){ key } }","variables":{"i":[{"key":"tenantA:n","value":"x","expectedVersion":null,"x":${nested(d, '{"a":', '}')}}]}}`,
            `{"query":"{ __typename }","extensions":${nested(d, '{"a":', '}')}}`,
          ).map((s) => Buffer.from(s)),
        ),
      },
    );
    const header = <T>(a: fc.Arbitrary<T>, freq = 4) => fc.option(a, { freq });
    const rawArb = fc.record({
      // Not CONNECT: Node's server itself closes those connections (no 'connect' listener).
      method: fc.constantFrom('POST', 'POST', 'POST', 'GET', 'PUT', 'OPTIONS', 'DELETE', 'PATCH', 'HEAD', 'PROPFIND'),
      path: fc.oneof(
        { weight: 8, arbitrary: fc.constant('/graphql') },
        {
          weight: 3,
          // URLSearchParams, not encodeURIComponent: that throws on a lone surrogate.
          arbitrary: good.map((r) => `/graphql?${new URLSearchParams({ query: r.query, variables: JSON.stringify(r.variables) })}`),
        },
        {
          weight: 2,
          arbitrary: fc.constantFrom(
            '/graphql?', '/graphql?query=', '/graphql?query=%ZZ', '/graphql?query=%E0%A4%A', '/graphql?query=%ED%A0%80', '/graphql?query=%00',
            '/graphql?query={__typename}&query={__typename}', '/graphql?variables={}', '/graphql?query=%7B__typename%7D&variables=%5B%5D',
            '/graphql?query=%7B__typename%7D&extensions=x', '/graphql?query=%7B__typename%7D&variables=x', '/graphql/', '/GRAPHQL', '/graphql;x', '/graphql/..', '//graphql', '/graphql%00',
            '/', '/health', '/ready', '/metrics', '/favicon.ico', '/graphql#frag', '/graphql?query=' + 'a'.repeat(20_000), '*',
          ),
        },
        { weight: 1, arbitrary: fc.webPath().map((p) => `/graphql${p}`) },
        { weight: 1, arbitrary: fc.webQueryParameters().map((q) => `/graphql?${q}`) },
      ),
      contentType: header(
        fc.oneof(
          fc.constantFrom(
            'application/json', 'application/json', 'application/json; charset=utf-8', 'application/json;charset=UTF-8', 'application/json; charset=latin1',
            'application/json; charset=utf-16', 'APPLICATION/JSON', 'application/json;;;', 'application/graphql', 'application/graphql-response+json',
            'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'multipart/form-data', 'text/plain', 'text/plain;charset=utf-8', '',
            'application/json, text/plain', '*/*', 'application/jsonx', 'json',
          ),
          headerText(30),
        ),
        8,
      ),
      accept: header(
        fc.oneof(
          fc.constantFrom(
            'application/json', 'application/graphql-response+json', 'text/event-stream', 'multipart/mixed', '*/*', 'text/html', 'application/json; charset=latin1',
            'application/json;q=0', 'application/*', 'text/*', '', 'application/graphql-response+json, application/json;q=0.9', 'image/png', ',,,', ';',
          ),
          headerText(30),
        ),
      ),
      authorization: fc.oneof(
        { weight: 8, arbitrary: fc.constant<string | string[] | null>(bearer('rw')) },
        { weight: 2, arbitrary: fc.constant<string | string[] | null>(bearer('reader')) },
        { weight: 1, arbitrary: fc.constant<string | string[] | null>(null) },
        {
          weight: 2,
          arbitrary: fc.constantFrom<string | string[]>(
            'Bearer', 'Bearer ', `Bearer  ${made.rw.token}`, `Bearer ${made.rw.token} `, `bearer ${made.rw.token}`, `Bearer ${made.rw.token},`,
            `Bearer ${made.rw.token}, Bearer ${made.rw.token}`, [bearer('rw'), bearer('rw')], [bearer('reader'), bearer('rw')], `Bearer ${made.rw.entry.sha256}`,
            `Bearer ${made.rw.token.slice(1)}`, `Basic ${Buffer.from('a:b').toString('base64')}`, `Bearer ${'A'.repeat(10_000)}`, 'Bearer \u00ff\u00fe', `Bearer\t${made.rw.token}`,
          ),
        },
        { weight: 1, arbitrary: headerText(60) },
      ),
      origin: header(fc.constantFrom(new URL(app.url).origin, new URL(app.url).origin, 'http://client.test', 'null', '', 'http://127.0.0.1', 'x', 'http://[', 'HTTP://127.0.0.1:' + new URL(app.url).port), 3),
      // Now and then one or two headers more, of the kinds that change how a request is parsed.
      extra: fc
        .array(
          fc.oneof(
            fc.tuple(fc.constant('x-request-id'), fc.oneof(fc.constantFrom('', 'x'.repeat(5000), 'a\tb'), headerText(20))),
            fc.tuple(fc.constant('content-encoding'), fc.constantFrom('gzip', 'deflate', 'br', 'identity', 'gzip, gzip', 'x', '')),
            fc.tuple(fc.constant('transfer-encoding'), fc.constantFrom('chunked', 'gzip', 'x', 'chunked, chunked')),
            fc.tuple(fc.constant('expect'), fc.constantFrom('100-continue', 'x')),
            fc.tuple(fc.constant('x-forwarded-for'), headerText(20)),
            fc.tuple(
              fc.constant('host'),
              fc.oneof(fc.constantFrom('', 'a b', '[', '[::1', 'x:99999', 'localhost:0', '%', 'a/b', 'a?b', 'a#b', '@', 'u@h', 'xn--', '..', '<'), headerText(12)),
            ),
            fc.tuple(fc.constant('cookie'), headerText(20)),
            fc.tuple(fc.constant('x-graphql-yoga-csrf'), fc.constantFrom('1', '')),
            fc.tuple(fc.constant('apollo-require-preflight'), fc.constantFrom('true', 'x')),
          ),
          { maxLength: 2 },
        )
        .map((pairs) => (pairs.length ? Object.fromEntries(pairs) : null)),
      chunked: fc.boolean(),
      body: bodyArb,
    });
    await fc.assert(
      fc.asyncProperty(rawArb, async (c) => {
        await reseedInside();
        const before = await snapshot();
        const answer = await sendRaw(c);
        const who: Who = c.authorization === bearer('reader') ? 'reader' : 'rw';
        const problems = 'refused' in answer ? [] : problemsOf(answer, true);
        problems.push(...(await checkData(who === 'reader' && c.method !== 'OPTIONS' ? 'reader' : 'rw', before)));
        if (problems.length > 0) {
          const got = 'refused' in answer ? answer.refused : `HTTP ${answer.status} ${brief(answer.headers)} ${answer.text.slice(0, 1500)}`;
          throw new Error(`${problems.join('\n')}\nrequest: ${brief({ ...c, body: c.body?.toString('utf8') })}\n-> ${got}`);
        }
      }),
      fcParams(400, 10_000),
    );
    await stillServes();
  }, 90_000);

  it('random graphql-ws sessions: connection_init payloads, subscribe messages and garbage', async () => {
    const init = fc.oneof(
      { weight: 6, arbitrary: fc.constant<unknown>({ type: 'connection_init', payload: { authorization: bearer('rw') } }) },
      { weight: 1, arbitrary: fc.constant<unknown>({ type: 'connection_init', payload: { Authorization: bearer('reader') } }) },
      {
        weight: 3,
        arbitrary: fc
          .constantFrom<unknown>(
            undefined, null, 42, 'Bearer x', [bearer('rw')], {}, { authorization: null }, { authorization: 42 }, { authorization: [bearer('rw')] },
            { authorization: { toString: bearer('rw') } }, { authorization: `Bearer ${made.rw.token} ` }, { authorization: 'Bearer' }, { authorization: bearer('rw'), Authorization: bearer('reader') },
            { authorization: `Basic ${made.rw.token}` }, { __proto__: { authorization: bearer('rw') } },
          )
          .map((payload) => ({ type: 'connection_init', payload })),
      },
      { weight: 1, arbitrary: fc.constantFrom<unknown>('garbage', { type: 'subscribe', id: '1', payload: { query: '{ __typename }' } }, { type: 'ping' }, { type: 'connection_init', payload: 'x' }, [], null) },
    );
    const subscribe = fc
      .tuple(opSpecArb(['query', 'mutation', 'subscription', 'subscription', 'shorthand']).map(render), fc.constantFrom('1', '2', 'a', '', 'x'.repeat(300)))
      .map(([r, id]) => ({ id, type: 'subscribe', payload: r }));
    const message = fc.oneof(
      { weight: 6, arbitrary: subscribe.map((m) => JSON.stringify(m)) },
      {
        weight: 2,
        arbitrary: fc
          .constantFrom<unknown>(
            { type: 'ping' }, { type: 'pong' }, { type: 'complete', id: '1' }, { type: 'complete', id: 'nope' }, { type: 'complete' }, { type: 'connection_init', payload: { authorization: bearer('rw') } },
            { type: 'subscribe', id: '1' }, { type: 'subscribe', id: 7, payload: { query: '{ __typename }' } }, { type: 'subscribe', id: 'q', payload: { query: 7 } },
            { type: 'subscribe', id: 'q', payload: { query: '{ __typename }', variables: 'x' } }, { type: 'subscribe', id: 'q', payload: { query: '{ __typename }', extensions: [] } },
            { type: 'next', id: '1', payload: {} }, { type: 'error', id: '1', payload: [] }, { type: 'connection_ack' }, { type: 'nope' }, { id: '1' }, [], null, 42, 'x',
          )
          .map((m) => JSON.stringify(m)),
      },
      { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)) },
    );
    const wsArb = fc.record({
      protocol: fc.constantFrom<string | null>('graphql-transport-ws', 'graphql-transport-ws', 'graphql-transport-ws', 'graphql-transport-ws', 'graphql-ws', null),
      init,
      messages: fc.array(message, { maxLength: 6 }),
    });
    await fc.assert(
      fc.asyncProperty(wsArb, async (c) => {
        await reseedInside();
        const before = await snapshot();
        const session = await wsSession(c.protocol, c.init, c.messages);
        const problems = [...session.problems, ...(await checkData('rw', before))];
        if (problems.length > 0) throw new Error(`${problems.join('\n')}\nsession: ${brief(c)}\n-> ${brief(session.received.slice(0, 20))} closed ${session.closeCode}`);
      }),
      fcParams(60, 6_000),
    );
    await stillServes();
  }, 90_000);

  it('afterwards: the server answers, and no field outside tenantA: appeared or changed anywhere in the keyspace', async () => {
    await stillServes();
    const fields = await outsideFields();
    expect(fields).toHaveLength(OUTSIDE_SEED.length);
    const s = await snapshot();
    expect(s.outside).toEqual(seeded.outside);
    for (const line of s.outside) expect(fields.some((f) => f.endsWith(line.split(' ').slice(1).join(' ')))).toBe(true);
    expect(serverErrors).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Raw HTTP with node:http (which sends what fetch would refuse to), and graphql-ws by hand.

interface RawRequest {
  method: string;
  path: string;
  contentType: string | null;
  accept: string | null;
  authorization: string | string[] | null;
  origin: string | null;
  extra: Record<string, string> | null;
  chunked: boolean;
  body: Buffer | null;
}

function sendRaw(c: RawRequest): Promise<Answer | { refused: string }> {
  const u = new URL(app.url);
  return new Promise<Answer | { refused: string }>((resolve) => {
    let settled = false;
    const done = (v: Answer | { refused: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(v);
    };
    const timer = setTimeout(() => {
      req?.destroy();
      done({ status: 0, headers: {}, text: `HANG: no whole answer within ${HANG_MS} ms` } as Answer);
    }, HANG_MS);
    let req: ReturnType<typeof httpRequest> | undefined;
    try {
      // A fresh connection per request (`agent: false`, no keep-alive). Node's keep-alive client
      // leaves a socket without an 'error' listener between the end of a response and handing
      // the socket back to its agent (a TODO in Node's _http_client.js, responseKeepAlive): a
      // request whose body the server answered without reading (a GET with a body, say) can
      // get its write reset in that gap, and the ECONNRESET is thrown uncaught. Seen on a
      // loaded machine. A fresh connection also keeps each case independent of the last.
      req = httpRequest({ host: u.hostname, port: u.port, path: c.path, method: c.method, agent: false }, (res) => {
        const type = String(res.headers['content-type'] ?? '');
        const streaming = /^(text\/event-stream|multipart\/mixed)/i.test(type);
        const chunks: Buffer[] = [];
        let streamTimer: NodeJS.Timeout | undefined;
        const finish = () => {
          clearTimeout(streamTimer);
          done({ status: res.statusCode ?? 0, headers: flatten(res.headers), text: Buffer.concat(chunks).toString('utf8') });
        };
        if (streaming) streamTimer = setTimeout(() => {
          finish();
          res.destroy();
        }, 1500);
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', finish);
        res.on('error', (err) => done({ status: 0, headers: {}, text: `RESPONSE ERROR: ${err.message}` } as Answer));
      });
      req.on('error', (err) => {
        // A connection the server cut without answering is a failure (counted as a 5xx below).
        done({ status: 0, headers: {}, text: `CONNECTION ERROR: ${err.message}` } as Answer);
      });
      const set = (name: string, value: string | string[] | null) => {
        if (value !== null) req!.setHeader(name, value);
      };
      set('content-type', c.contentType);
      set('accept', c.accept);
      set('authorization', c.authorization);
      set('origin', c.origin);
      for (const [k, v] of Object.entries(c.extra ?? {})) set(k, v);
    } catch (err) {
      // The client itself refuses (a character Node does not send in a header, a bad method).
      req?.destroy();
      done({ refused: String(err) });
      return;
    }
    try {
      if (c.body && c.chunked) {
        req.write(c.body.subarray(0, c.body.length >> 1));
        req.end(c.body.subarray(c.body.length >> 1));
      } else req.end(c.body ?? undefined);
    } catch (err) {
      req.destroy();
      done({ refused: String(err) });
    }
  }).then((a): Answer | { refused: string } => {
    if ('status' in a && a.status === 0) return { ...a, status: 599 }; // no answer: counted as a 5xx
    return a;
  });
}

function flatten(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

interface Session {
  problems: string[];
  received: unknown[];
  closeCode: number | null;
}

/** Close codes a client may cause (graphql-ws's CloseCode, ws's own): anything else is a failure. */
const FINE_CLOSE = new Set([1000, 1002, 1005, 1007, 1009, 4400, 4401, 4403, 4406, 4408, 4409, 4429]);

async function wsSession(protocol: string | null, init: unknown, messages: (string | Buffer)[]): Promise<Session> {
  const problems: string[] = [];
  const received: unknown[] = [];
  const socket = new WebSocket(app.url.replace(/^http/, 'ws'), protocol ? [protocol] : []);
  let closeCode: number | null = null;
  const closed = new Promise<void>((resolve) =>
    socket.on('close', (code) => {
      closeCode = code;
      resolve();
    }),
  );
  socket.on('error', () => {});
  // The server refused the upgrade with an HTTP answer: no 5xx either.
  socket.on('unexpected-response', (_req, res) => {
    if ((res.statusCode ?? 0) >= 500) problems.push(`the upgrade got HTTP ${res.statusCode}`);
    res.resume();
    socket.terminate();
  });
  let acked!: () => void;
  const ackedP = new Promise<void>((r) => (acked = r));
  let probeDone!: () => void;
  const probeP = new Promise<void>((r) => (probeDone = r));
  socket.on('message', (data) => {
    let m: { type?: string; id?: string; payload?: unknown };
    try {
      m = JSON.parse(String(data));
    } catch {
      problems.push(`a message that is not JSON: ${String(data).slice(0, 200)}`);
      return;
    }
    received.push(m);
    if (String(data).includes(SECRET)) problems.push('a message holds a value seeded outside tenantA:');
    if (m.type === 'connection_ack') acked();
    if (m.type === 'next') problems.push(...resultProblems(m.payload, true));
    if (m.type === 'error') problems.push(...resultProblems({ errors: m.payload }, true));
    if ((m.type === 'complete' || m.type === 'error') && m.id === 'probe') probeDone();
  });
  const bounded = (p: Promise<unknown>, ms: number) => Promise.race([p, closed, new Promise((r) => setTimeout(r, ms))]);
  const opened = await Promise.race([new Promise<boolean>((r) => socket.once('open', () => r(true))), closed.then(() => false)]);
  if (opened) {
    socket.send(init === undefined ? '' : typeof init === 'string' ? init : JSON.stringify(init));
    await bounded(ackedP, 2000);
    if (closeCode === null) {
      for (const m of messages) if (socket.readyState === WebSocket.OPEN) socket.send(m);
      // A probe: once it completes, every message before it has been handled.
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ id: 'probe', type: 'subscribe', payload: { query: '{ __typename }' } }));
      const t0 = Date.now();
      await bounded(probeP, HANG_MS);
      if (closeCode === null && Date.now() - t0 >= HANG_MS && received.some((m) => (m as { type?: string }).type === 'connection_ack')) {
        problems.push(`HANG: the probe got no answer within ${HANG_MS} ms`);
      }
    }
  }
  // Before the socket opened, the close code is the client's (one that asked for another
  // subprotocol refuses the server's answer, 1006).
  if (opened && closeCode !== null && !FINE_CLOSE.has(closeCode)) problems.push(`the server closed the socket with ${closeCode}`);
  if (closeCode === null) socket.close(1000);
  await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
  if (socket.readyState !== WebSocket.CLOSED) socket.terminate();
  return { problems, received, closeCode };
}
