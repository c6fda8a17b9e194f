// Model-based test: random sequences of writes and range reads through GraphQL, each answer
// compared with an in-memory model of the store. The model orders keys by their UTF-8 bytes on
// its own (Buffer.compare), independent of src/store/order.ts.
//
// On a Redis Cluster (the cluster project) the model also knows that a batchPut with an
// expectedVersion whose keys span partitions is refused with CROSS_PARTITION_CAS and changes
// nothing, and that a batch over several partitions takes one clock reading per partition; batches
// of keys of one partition, compare-and-set included, are as on one Redis, and are generated on
// purpose (few random batches keep to one partition of 16).
import fc from 'fast-check';
import { expect, it } from 'vitest';
import type { Limits } from '../../src/config.js';
import { partitionOf } from '../../src/store/keys.js';
import { createTestApp, ON_CLUSTER, PARTITIONS, type GqlResult, type TestApp } from '../harness/app.js';

const LIMITS: Partial<Limits> = { pageDefault: 3, pageMax: 6, deleteRangeDefault: 2, deleteRangeMax: 4 };
const PAGE_MAX = 6;
const PAGE_DEFAULT = 3;
const DELETE_DEFAULT = 2;
const DELETE_MAX = 4;

// One-byte, two-byte, three-byte (the highest BMP code point) and four-byte characters: their
// UTF-8 order (a < é < U+FFFF < 😀) differs from UTF-16 order (U+FFFF above the surrogates).
const CHARS = ['a', 'é', '\uffff', '😀'];

// ---- the model ----------------------------------------------------------------------------

const utf8 = (s: string) => Buffer.from(s, 'utf8');
const cmp = (a: string, b: string) => Buffer.compare(utf8(a), utf8(b));
const hasPrefix = (key: string, prefix: string) => {
  const k = utf8(key);
  const p = utf8(prefix);
  return k.length >= p.length && k.subarray(0, p.length).equals(p);
};

interface Bounds {
  start?: string;
  end?: string;
  prefix?: string;
}

interface ModelEntry {
  value: string;
  version: number;
  /** As the server reported it when the key was created. */
  createdAt: string;
}

class Model {
  readonly entries = new Map<string, ModelEntry>();

  version(key: string): number {
    return this.entries.get(key)?.version ?? 0;
  }

  inRange(key: string, b: Bounds): boolean {
    if (b.prefix !== undefined) return hasPrefix(key, b.prefix);
    return (b.start === undefined || cmp(key, b.start) >= 0) && (b.end === undefined || cmp(key, b.end) < 0);
  }

  /** The keys of a range, ascending by bytes. */
  keys(b: Bounds): string[] {
    return [...this.entries.keys()].filter((k) => this.inRange(k, b)).sort(cmp);
  }
}

// ---- operations ---------------------------------------------------------------------------

/** How an operation picks its expectedVersion, resolved against the model when it runs. */
type Expect = 'none' | 'current' | 'zero' | 'wrong' | 'negative';

type Op =
  | { kind: 'put'; key: string; value: string; expect: Expect }
  | { kind: 'batch'; items: { key: string; value: string; expect: Expect }[]; dup: boolean }
  | { kind: 'delete'; key: string; expect: Expect }
  | { kind: 'deleteRange'; bounds: Bounds; limit: number | undefined }
  | {
      kind: 'range';
      bounds: Bounds;
      dir: 'f' | 'b';
      size: number | undefined;
      /** Also pass the other direction's size: refused. */
      both: boolean;
      /** A key whose cursor starts the walk (after when forward, before when backward). */
      from: string | undefined;
      /** A key whose cursor bounds the walk on the other side. */
      to: string | undefined;
      pages: number;
      /** After the walk, page back the other way from where it ended. */
      turn: boolean;
    };

/** Every key keyArb can make (one to three characters of CHARS), grouped by partition: the groups of two or more. */
function onePartitionGroups(): string[][] {
  const words: string[] = [''];
  const all: string[] = [];
  for (let len = 1; len <= 3; len++) {
    const longer = words.splice(0).flatMap((w) => CHARS.map((c) => w + c));
    words.push(...longer);
    all.push(...longer);
  }
  const groups = new Map<number, string[]>();
  for (const key of all) {
    const p = partitionOf(key, PARTITIONS);
    groups.set(p, [...(groups.get(p) ?? []), key]);
  }
  return [...groups.values()].filter((g) => g.length >= 2);
}

// Mostly one or two characters (20 keys), so that keys collide and ranges hold several pages.
const word = (chars: string[], min: number, max: number) =>
  fc.array(fc.constantFrom(...chars), { minLength: min, maxLength: max }).map((cs) => cs.join(''));
const keyArb = fc.oneof({ weight: 4, arbitrary: word(CHARS, 1, 2) }, { weight: 1, arbitrary: word(CHARS, 3, 3) });
// Bounds may also hold 'b', which no key does, and may be empty.
const boundArb = fc.oneof({ weight: 4, arbitrary: word([...CHARS, 'b'], 0, 2) }, { weight: 1, arbitrary: word(CHARS, 3, 3) });
const valueArb = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('', 'é😀\u0000\n', '\uffff'));
const expectArb = fc.constantFrom<Expect>('none', 'none', 'current', 'current', 'zero', 'wrong', 'negative');

const boundsArb: fc.Arbitrary<Bounds> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({}) },
  { weight: 3, arbitrary: boundArb.map((prefix) => ({ prefix })) },
  { weight: 2, arbitrary: boundArb.map((start) => ({ start })) },
  { weight: 2, arbitrary: boundArb.map((end) => ({ end })) },
  { weight: 4, arbitrary: fc.record({ start: boundArb, end: boundArb }) },
  // Refused: a prefix with start or end.
  { weight: 1, arbitrary: fc.record({ prefix: boundArb, start: boundArb }) },
);

const sizeArb = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 0, max: PAGE_MAX }) },
  { weight: 1, arbitrary: fc.constantFrom(-1, PAGE_MAX + 1) },
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('put' as const), key: keyArb, value: valueArb, expect: expectArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('batch' as const),
      items: fc.array(fc.record({ key: keyArb, value: valueArb, expect: expectArb }), { maxLength: 4 }),
      dup: fc.constantFrom(false, false, false, true),
    }),
  },
  // A plain batch of many keys, to fill the keyspace quickly.
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('batch' as const),
      items: fc.uniqueArray(fc.record({ key: keyArb, value: valueArb, expect: fc.constant<Expect>('none') }), {
        minLength: 3,
        maxLength: 12,
        selector: (i) => i.key,
      }),
      dup: fc.constant(false),
    }),
  },
  // On a cluster: a batch of keys of one partition, the only kind that may compare versions there.
  ...(ON_CLUSTER
    ? [
        {
          weight: 2,
          arbitrary: fc.constantFrom(...onePartitionGroups()).chain((group) =>
            fc.record({
              kind: fc.constant('batch' as const),
              items: fc.uniqueArray(fc.record({ key: fc.constantFrom(...group), value: valueArb, expect: expectArb }), {
                minLength: 2,
                maxLength: 4,
                selector: (i) => i.key,
              }),
              dup: fc.constantFrom(false, false, false, true),
            }),
          ),
        },
      ]
    : []),
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), key: keyArb, expect: expectArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('deleteRange' as const),
      bounds: boundsArb,
      limit: fc.option(fc.integer({ min: -1, max: DELETE_MAX + 1 }), { nil: undefined }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('range' as const),
      bounds: boundsArb,
      dir: fc.constantFrom<'f' | 'b'>('f', 'b'),
      size: fc.option(sizeArb, { nil: undefined, freq: 6 }),
      both: fc.constantFrom(false, false, false, false, false, false, false, true),
      from: fc.option(keyArb, { nil: undefined, freq: 2 }),
      to: fc.option(keyArb, { nil: undefined, freq: 5 }),
      pages: fc.integer({ min: 1, max: 4 }),
      turn: fc.boolean(),
    }),
  },
);

// ---- running an operation against the server and the model -------------------------------

const ENTRY = 'key value version createdAt updatedAt';
const PUT = `mutation($key: String!, $value: String!, $expectedVersion: Int) {
  put(key: $key, value: $value, expectedVersion: $expectedVersion) { ${ENTRY} }
}`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { ${ENTRY} } }`;
const DELETE = `mutation($key: String!, $expectedVersion: Int) {
  delete(key: $key, expectedVersion: $expectedVersion) { deleted previous { ${ENTRY} } }
}`;
const DELETE_RANGE = `mutation($start: String, $end: String, $prefix: String, $limit: Int) {
  deleteRange(start: $start, end: $end, prefix: $prefix, limit: $limit) { deleted hasMore }
}`;
const RANGE = `query($start: String, $end: String, $prefix: String, $first: Int, $after: String, $last: Int, $before: String) {
  range(start: $start, end: $end, prefix: $prefix, first: $first, after: $after, last: $last, before: $before) {
    totalCount
    edges { cursor node { ${ENTRY} } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}`;
const GET_MANY = `query($keys: [String!]!) { getMany(keys: $keys) { ${ENTRY} } }`;

interface ServerEntry {
  key: string;
  value: string;
  version: number;
  createdAt: string;
  updatedAt: string;
}
interface Connection {
  totalCount: number;
  edges: { cursor: string; node: ServerEntry }[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
}

// Cursors are opaque: the test only reuses cursors the server handed out. They must be stable
// per key across keyspaces, and distinct keys must have distinct cursors.
const cursorOfKey = new Map<string, string>();
const keyOfCursor = new Map<string, string>();
function learnCursor(key: string, cursor: string): void {
  const known = cursorOfKey.get(key);
  if (known !== undefined) expect(cursor, `cursor of ${JSON.stringify(key)}`).toBe(known);
  const other = keyOfCursor.get(cursor);
  if (other !== undefined) expect(other, `key of cursor ${cursor}`).toBe(key);
  cursorOfKey.set(key, cursor);
  keyOfCursor.set(cursor, key);
}

function resolveExpect(model: Model, key: string, e: Expect): number | undefined {
  switch (e) {
    case 'none':
      return undefined;
    case 'current':
      return model.version(key);
    case 'zero':
      return 0;
    case 'wrong':
      return model.version(key) + 1 + (key.length % 3);
    case 'negative':
      return -1;
  }
}

const codeOf = (r: GqlResult) => r.errors?.[0]?.extensions?.code;

function expectError(r: GqlResult, code: string, ctx: string): void {
  expect(r.errors, ctx).toBeDefined();
  expect(codeOf(r), ctx).toBe(code);
  expect(r.data ?? null, ctx).toBeNull();
}

function expectOk(r: GqlResult, ctx: string): void {
  expect(r.errors, ctx).toBeUndefined();
}

/** A server entry against the model's entry for the same key. */
function expectEntry(got: ServerEntry, key: string, model: Model, ctx: string): void {
  const m = model.entries.get(key)!;
  expect(m, ctx).toBeDefined();
  expect({ key: got.key, value: got.value, version: got.version, createdAt: got.createdAt }, ctx).toEqual({
    key,
    value: m.value,
    version: m.version,
    createdAt: m.createdAt,
  });
  expect(Date.parse(got.updatedAt), ctx).toBeGreaterThanOrEqual(Date.parse(got.createdAt));
}

/** Every key named reads back as the model says (after each write, so a failure points at it). */
async function checkKeys(app: TestApp, model: Model, keys: string[], ctx: string): Promise<void> {
  if (keys.length === 0) return;
  const r = await app.gql<{ getMany: (ServerEntry | null)[] }>(GET_MANY, { keys });
  expectOk(r, ctx);
  r.data!.getMany.forEach((got, i) => {
    const key = keys[i]!;
    if (!model.entries.has(key)) expect(got, `${ctx}: ${JSON.stringify(key)} should be absent`).toBeNull();
    else expectEntry(got!, key, model, `${ctx}: ${JSON.stringify(key)}`);
  });
}

/** Applies a successful put to the model, taking createdAt from the server on creation. */
function applyPut(model: Model, key: string, value: string, got: ServerEntry, ctx: string): void {
  const prev = model.entries.get(key);
  if (!prev) expect(got.updatedAt, `${ctx}: a new key is created and updated at once`).toBe(got.createdAt);
  model.entries.set(key, { value, version: (prev?.version ?? 0) + 1, createdAt: prev?.createdAt ?? got.createdAt });
}

async function runPut(app: TestApp, model: Model, op: Extract<Op, { kind: 'put' }>): Promise<void> {
  const expectedVersion = resolveExpect(model, op.key, op.expect);
  const ctx = `put ${JSON.stringify({ ...op, expectedVersion })}`;
  const r = await app.gql<{ put: ServerEntry }>(PUT, { key: op.key, value: op.value, expectedVersion });
  if (expectedVersion !== undefined && expectedVersion < 0) {
    expectError(r, 'BAD_USER_INPUT', ctx);
  } else if (expectedVersion !== undefined && expectedVersion !== model.version(op.key)) {
    expectError(r, 'VERSION_CONFLICT', ctx);
    const actualVersion = model.version(op.key);
    expect(r.errors![0]!.extensions, ctx).toMatchObject({ key: op.key, actualVersion, conflicts: [{ key: op.key, actualVersion }] });
  } else {
    expectOk(r, ctx);
    applyPut(model, op.key, op.value, r.data!.put, ctx);
    expectEntry(r.data!.put, op.key, model, ctx);
  }
  await checkKeys(app, model, [op.key], ctx);
}

async function runBatch(app: TestApp, model: Model, op: Extract<Op, { kind: 'batch' }>): Promise<void> {
  const items = op.items.map((i) => ({ key: i.key, value: i.value, expectedVersion: resolveExpect(model, i.key, i.expect) }));
  // A duplicate key with another value: the batch must be refused before any conflict check.
  if (op.dup && items.length > 0) items.push({ ...items[0]!, value: `${items[0]!.value}!` });
  const ctx = `batchPut ${JSON.stringify(items)}`;
  const r = await app.gql<{ batchPut: ServerEntry[] }>(BATCH, { items });
  const keys = items.map((i) => i.key);
  const partition = (key: string) => app.store.keys.partition(key);
  const conditional = items.filter((i) => i.expectedVersion !== undefined).map((i) => i.key);
  const conflicts = items
    .filter((i) => i.expectedVersion !== undefined && i.expectedVersion !== model.version(i.key))
    .map((i) => ({ key: i.key, actualVersion: model.version(i.key) }));
  if (items.some((i) => i.expectedVersion !== undefined && i.expectedVersion < 0)) {
    expectError(r, 'BAD_USER_INPUT', ctx);
  } else if (new Set(keys).size !== keys.length) {
    expectError(r, 'BAD_USER_INPUT', ctx);
  } else if (ON_CLUSTER && conditional.length > 0 && new Set(keys.map(partition)).size > 1) {
    // Refused before any version is compared: nothing changes.
    expectError(r, 'CROSS_PARTITION_CAS', ctx);
    expect(r.errors![0]!.extensions, ctx).toMatchObject({ partitions: new Set(keys.map(partition)).size, conditionalKeys: conditional });
  } else if (conflicts.length > 0) {
    expectError(r, 'VERSION_CONFLICT', ctx);
    expect(r.errors![0]!.extensions, ctx).toMatchObject({ key: conflicts[0]!.key, actualVersion: conflicts[0]!.actualVersion });
    expect(r.errors![0]!.extensions!.conflicts, ctx).toEqual(conflicts);
  } else {
    expectOk(r, ctx);
    expect(r.data!.batchPut.map((e) => e.key), ctx).toEqual(keys);
    // One script, one clock reading: on one Redis for the whole batch, on a cluster per
    // partition (each partition's part is its own script, on its own master).
    const clock = (key: string) => (ON_CLUSTER ? partition(key) : 0);
    const now = new Map<number, string>();
    r.data!.batchPut.forEach((got, i) => {
      applyPut(model, items[i]!.key, items[i]!.value, got, ctx);
      expectEntry(got, items[i]!.key, model, ctx);
      const c = clock(got.key);
      if (!now.has(c)) now.set(c, got.updatedAt);
      expect(got.updatedAt, ctx).toBe(now.get(c));
    });
  }
  await checkKeys(app, model, [...new Set(keys)], ctx);
}

async function runDelete(app: TestApp, model: Model, op: Extract<Op, { kind: 'delete' }>): Promise<void> {
  const expectedVersion = resolveExpect(model, op.key, op.expect);
  const ctx = `delete ${JSON.stringify({ ...op, expectedVersion })}`;
  const r = await app.gql<{ delete: { deleted: boolean; previous: ServerEntry | null } }>(DELETE, { key: op.key, expectedVersion });
  const actualVersion = model.version(op.key);
  if (expectedVersion !== undefined && expectedVersion < 0) {
    expectError(r, 'BAD_USER_INPUT', ctx);
  } else if (expectedVersion !== undefined && expectedVersion !== actualVersion) {
    expectError(r, 'VERSION_CONFLICT', ctx);
    expect(r.errors![0]!.extensions, ctx).toMatchObject({ key: op.key, actualVersion, conflicts: [{ key: op.key, actualVersion }] });
  } else {
    expectOk(r, ctx);
    const existed = model.entries.has(op.key);
    expect(r.data!.delete.deleted, ctx).toBe(existed);
    if (existed) expectEntry(r.data!.delete.previous!, op.key, model, ctx);
    else expect(r.data!.delete.previous, ctx).toBeNull();
    model.entries.delete(op.key);
  }
  await checkKeys(app, model, [op.key], ctx);
}

const badBounds = (b: Bounds) => b.prefix !== undefined && (b.start !== undefined || b.end !== undefined);

async function runDeleteRange(app: TestApp, model: Model, op: Extract<Op, { kind: 'deleteRange' }>): Promise<void> {
  const ctx = `deleteRange ${JSON.stringify(op)}`;
  const r = await app.gql<{ deleteRange: { deleted: number; hasMore: boolean } }>(DELETE_RANGE, { ...op.bounds, limit: op.limit });
  const limit = op.limit ?? DELETE_DEFAULT;
  const inRange = model.keys(op.bounds);
  if (limit < 1 || limit > DELETE_MAX || badBounds(op.bounds)) {
    expectError(r, 'BAD_USER_INPUT', ctx);
  } else {
    expectOk(r, ctx);
    const gone = inRange.slice(0, limit);
    for (const k of gone) model.entries.delete(k);
    expect(r.data!.deleteRange, ctx).toEqual({ deleted: gone.length, hasMore: inRange.length > gone.length });
  }
  await checkKeys(app, model, inRange, ctx);
}

/** The model's answer to one page request. */
function modelPage(
  model: Model,
  bounds: Bounds,
  q: { first?: number; last?: number; after?: string; before?: string },
): { keys: string[]; hasNextPage: boolean; hasPreviousPage: boolean; totalCount: number } {
  const all = model.keys(bounds);
  const window = all.filter((k) => (q.after === undefined || cmp(k, q.after) > 0) && (q.before === undefined || cmp(k, q.before) < 0));
  if (q.last === undefined) {
    const n = q.first ?? PAGE_DEFAULT;
    return {
      keys: window.slice(0, n),
      hasNextPage: window.length > n,
      // Relay: with first/after, whether any key of the range lies at or before the cursor.
      hasPreviousPage: q.after !== undefined && all.some((k) => cmp(k, q.after!) <= 0),
      totalCount: all.length,
    };
  }
  const n = q.last;
  return {
    keys: window.slice(Math.max(0, window.length - n)),
    hasPreviousPage: window.length > n,
    hasNextPage: q.before !== undefined && all.some((k) => cmp(k, q.before!) >= 0),
    totalCount: all.length,
  };
}

async function runRange(app: TestApp, model: Model, op: Extract<Op, { kind: 'range' }>): Promise<void> {
  const size = op.size;
  const refused = badBounds(op.bounds) || op.both || (size !== undefined && (size < 0 || size > PAGE_MAX));
  // Cursors only for keys the server has handed one out for.
  let from = op.from !== undefined ? cursorOfKey.get(op.from) : undefined;
  const to = op.to !== undefined ? cursorOfKey.get(op.to) : undefined;

  const page = async (dir: 'f' | 'b', cursor: string | undefined, ctx: string) => {
    // Backward has no default size; `both` passes first and last, which is refused.
    const q = op.both
      ? { first: size ?? 1, last: size ?? 1, after: cursor, before: to }
      : dir === 'f'
        ? { first: size, after: cursor, before: to }
        : { last: size ?? PAGE_DEFAULT, before: cursor, after: to };
    const c = `${ctx} ${JSON.stringify({ bounds: op.bounds, ...q })}`;
    const r = await app.gql<{ range: Connection }>(RANGE, { ...op.bounds, ...q });
    return { r, q, c };
  };

  if (refused) {
    const { r, c } = await page(op.dir, from, 'range (refused)');
    expectError(r, 'BAD_USER_INPUT', c);
    return;
  }

  let dir = op.dir;
  const check = async (cursor: string | undefined, step: string) => {
    const { r, q, c } = await page(dir, cursor, step);
    expectOk(r, c);
    const got = r.data!.range;
    const key = (cur: string | undefined) => (cur === undefined ? undefined : keyOfCursor.get(cur)!);
    const want = modelPage(model, op.bounds, { first: q.first, last: q.last, after: key(q.after), before: key(q.before) });
    expect(
      { keys: got.edges.map((e) => e.node.key), ...got.pageInfo, startCursor: undefined, endCursor: undefined, totalCount: got.totalCount },
      c,
    ).toEqual({ ...want, startCursor: undefined, endCursor: undefined });
    for (const e of got.edges) {
      learnCursor(e.node.key, e.cursor);
      expectEntry(e.node, e.node.key, model, c);
    }
    expect(got.pageInfo.startCursor, c).toBe(got.edges[0]?.cursor ?? null);
    expect(got.pageInfo.endCursor, c).toBe(got.edges.at(-1)?.cursor ?? null);
    return got;
  };

  let last: Connection | undefined;
  for (let i = 0; i < op.pages; i++) {
    last = await check(from, `range page ${i}`);
    const more = dir === 'f' ? last.pageInfo.hasNextPage : last.pageInfo.hasPreviousPage;
    const next = dir === 'f' ? last.pageInfo.endCursor : last.pageInfo.startCursor;
    if (!more || next === null) break;
    from = next;
  }
  if (!op.turn || !last || last.edges.length === 0) return;
  // Back the other way from the first key of the last page (in its direction of travel).
  dir = dir === 'f' ? 'b' : 'f';
  from = dir === 'b' ? last.pageInfo.startCursor! : last.pageInfo.endCursor!;
  for (let i = 0; i < op.pages; i++) {
    const back = await check(from, `range turned page ${i}`);
    const more = dir === 'f' ? back.pageInfo.hasNextPage : back.pageInfo.hasPreviousPage;
    const next = dir === 'f' ? back.pageInfo.endCursor : back.pageInfo.startCursor;
    if (!more || next === null) break;
    from = next;
  }
}

/** The whole keyspace, walked forward at the largest page size, equals the model. */
async function checkAll(app: TestApp, model: Model): Promise<void> {
  const seen: string[] = [];
  let after: string | null = null;
  for (;;) {
    const r: GqlResult<{ range: Connection }> = await app.gql(RANGE, { first: PAGE_MAX, after });
    expectOk(r, 'final walk');
    const got = r.data!.range;
    expect(got.totalCount, 'final walk').toBe(model.entries.size);
    for (const e of got.edges) {
      learnCursor(e.node.key, e.cursor);
      expectEntry(e.node, e.node.key, model, 'final walk');
      seen.push(e.node.key);
    }
    if (!got.pageInfo.hasNextPage) break;
    after = got.pageInfo.endCursor;
  }
  expect(seen, 'final walk').toEqual([...model.entries.keys()].sort(cmp));
}

it('agrees with an in-memory model over random operation sequences', async () => {
  // Sanity: the alphabet does make byte order and UTF-16 order disagree.
  expect('\uffff' > '😀').toBe(true);
  expect(cmp('\uffff', '😀')).toBeLessThan(0);

  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40, size: 'max' }), async (ops) => {
      const app = await createTestApp('model', { limits: LIMITS });
      const model = new Model();
      try {
        for (const op of ops) {
          if (op.kind === 'put') await runPut(app, model, op);
          else if (op.kind === 'batch') await runBatch(app, model, op);
          else if (op.kind === 'delete') await runDelete(app, model, op);
          else if (op.kind === 'deleteRange') await runDeleteRange(app, model, op);
          else await runRange(app, model, op);
        }
        await checkAll(app, model);
      } finally {
        await app.close();
      }
    }),
    { numRuns: 100 },
  );
}, 120_000);
