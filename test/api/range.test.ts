// The range query and the deleteRange mutation through GraphQL: bounds, prefixes, Relay
// pagination, UTF-8 byte order, and the argument checks.
import { afterAll, describe, expect, it } from 'vitest';
import type { Limits } from '../../src/config.js';
import { partitionOf } from '../../src/store/keys.js';
import { createTestApp, dataKeysOf, type GqlResult, type TestApp } from '../harness/app.js';

const RANGE = `query($start: String, $end: String, $prefix: String, $first: Int, $after: String, $last: Int, $before: String) {
  range(start: $start, end: $end, prefix: $prefix, first: $first, after: $after, last: $last, before: $before) {
    totalCount
    edges { cursor node { key value version } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}`;
const DELETE_RANGE = `mutation($start: String, $end: String, $prefix: String, $limit: Int) {
  deleteRange(start: $start, end: $end, prefix: $prefix, limit: $limit) { deleted hasMore }
}`;
const BATCH = `mutation($items: [PutInput!]!) { batchPut(items: $items) { key } }`;

interface Edge {
  cursor: string;
  node: { key: string; value: string; version: number };
}
interface Connection {
  totalCount: number;
  edges: Edge[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
}
type Vars = Record<string, unknown>;

const apps: TestApp[] = [];
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
});

/** A test app with its own, empty keyspace, holding `keys` (value = "v:" + key). */
async function appWith(name: string, keys: readonly string[], limits?: Partial<Limits>): Promise<TestApp> {
  const app = await createTestApp(name, limits ? { limits } : {});
  apps.push(app);
  await putAll(app, keys);
  return app;
}

async function putAll(app: TestApp, keys: readonly string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 500) {
    const items = keys.slice(i, i + 500).map((key) => ({ key, value: `v:${key}` }));
    const r = await app.gql(BATCH, { items });
    expect(r.errors).toBeUndefined();
  }
}

const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
const sorted = (keys: readonly string[]) => [...keys].sort(byBytes);

async function range(app: TestApp, vars: Vars): Promise<Connection> {
  const r = await app.gql<{ range: Connection }>(RANGE, vars);
  expect(r.errors, JSON.stringify(vars)).toBeUndefined();
  return r.data!.range;
}

/** Every key of a range, by following the cursors forward. */
async function walk(app: TestApp, vars: Vars, first = 50): Promise<string[]> {
  const keys: string[] = [];
  let after: string | null = null;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await range(app, { ...vars, first, after });
    keys.push(...page.edges.map((e) => e.node.key));
    if (!page.pageInfo.hasNextPage) return keys;
    after = page.pageInfo.endCursor;
  }
  throw new Error('range walk did not end');
}

const codeOf = (r: GqlResult) => r.errors?.[0]?.extensions?.code;

async function expectBadInput(app: TestApp, query: string, vars: Vars): Promise<void> {
  const r = await app.gql(query, vars);
  expect(codeOf(r), JSON.stringify(vars)).toBe('BAD_USER_INPUT');
  expect(r.data ?? null).toBeNull();
}

describe('bounds', () => {
  const KEYS = ['`', 'a', 'a/b', 'a0', 'aa', 'ab', 'abc', 'a\u00ff', 'a\uffff', 'a😀', 'b', 'ba', 'c'];
  let app: TestApp;
  const setup = async () => (app ??= await appWith('range-bounds', KEYS));

  it('start is inclusive, end exclusive', async () => {
    await setup();
    expect(await walk(app, { start: 'ab', end: 'b' })).toEqual(['ab', 'abc', 'a\u00ff', 'a\uffff', 'a😀']);
    expect(await walk(app, { start: 'a0', end: 'ab' })).toEqual(['a0', 'aa']);
    expect(await walk(app, { start: 'aa', end: 'aa' })).toEqual([]);
  });

  it('start alone runs to the end of the keyspace, end alone from its start', async () => {
    await setup();
    expect(await walk(app, { start: 'b' })).toEqual(['b', 'ba', 'c']);
    expect(await walk(app, { start: 'a😀' })).toEqual(['a😀', 'b', 'ba', 'c']);
    expect(await walk(app, { end: 'a' })).toEqual(['`']);
    expect(await walk(app, { end: 'a/b' })).toEqual(['`', 'a']);
  });

  it('no bounds is the whole keyspace, in byte order', async () => {
    await setup();
    const page = await range(app, {});
    expect(page.edges.map((e) => e.node.key)).toEqual(sorted(KEYS));
    expect(page.totalCount).toBe(KEYS.length);
    expect(page.edges[0]!.node).toEqual({ key: '`', value: 'v:`', version: 1 });
  });

  it('a prefix matches exactly the keys that start with it', async () => {
    await setup();
    // Every key that extends "a", including those whose next byte is high (ÿ, U+FFFF, astral).
    expect(await walk(app, { prefix: 'a' })).toEqual(['a', 'a/b', 'a0', 'aa', 'ab', 'abc', 'a\u00ff', 'a\uffff', 'a😀']);
    expect(await walk(app, { prefix: 'ab' })).toEqual(['ab', 'abc']);
    expect(await walk(app, { prefix: 'abc' })).toEqual(['abc']);
    expect(await walk(app, { prefix: 'b' })).toEqual(['b', 'ba']);
    expect(await walk(app, { prefix: 'abcd' })).toEqual([]);
    expect(await walk(app, { prefix: 'd' })).toEqual([]);
    expect((await range(app, { prefix: 'a' })).totalCount).toBe(9);
  });

  it('an empty prefix or start is the whole keyspace; an empty end is nothing', async () => {
    await setup();
    expect(await walk(app, { prefix: '' })).toEqual(sorted(KEYS));
    expect(await walk(app, { start: '' })).toEqual(sorted(KEYS));
    const none = await range(app, { end: '' });
    expect(none.edges).toEqual([]);
    expect(none.totalCount).toBe(0);
  });

  it('refuses a prefix together with start or end', async () => {
    await setup();
    for (const vars of [{ prefix: 'a', start: 'a' }, { prefix: 'a', end: 'b' }, { prefix: '', start: 'a' }, { prefix: 'a', start: '', end: '' }]) {
      await expectBadInput(app, RANGE, vars);
      await expectBadInput(app, DELETE_RANGE, vars);
    }
    // Nothing was deleted by the refused deleteRange calls.
    expect((await range(app, {})).totalCount).toBe(KEYS.length);
  });

  it('an empty or inverted range answers an empty page', async () => {
    await setup();
    for (const vars of [{ start: 'b', end: 'a' }, { start: 'aa', end: 'aa' }, { start: 'bb', end: 'bc' }, { start: 'd' }, { prefix: 'zz' }]) {
      for (const paging of [{}, { first: 3 }, { last: 3 }]) {
        const page = await range(app, { ...vars, ...paging });
        expect(page).toEqual({
          totalCount: 0,
          edges: [],
          pageInfo: { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null },
        });
      }
    }
  });
});

describe('arguments', () => {
  let app: TestApp;
  const KEYS = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7'];
  const setup = async () => (app ??= await appWith('range-args', KEYS, { pageMax: 5, pageDefault: 3 }));

  it('first defaults to the configured page size', async () => {
    await setup();
    const page = await range(app, {});
    expect(page.edges.map((e) => e.node.key)).toEqual(['k1', 'k2', 'k3']);
    expect(page.pageInfo.hasNextPage).toBe(true);
    expect(page.totalCount).toBe(7);
  });

  it('first and last together are refused', async () => {
    await setup();
    await expectBadInput(app, RANGE, { first: 1, last: 1 });
    await expectBadInput(app, RANGE, { first: 0, last: 0 });
  });

  it('first and last must lie between 0 and the page max', async () => {
    await setup();
    for (const n of [-1, 6, 1_000_000]) {
      await expectBadInput(app, RANGE, { first: n });
      await expectBadInput(app, RANGE, { last: n });
    }
    expect((await range(app, { first: 5 })).edges).toHaveLength(5);
    expect((await range(app, { last: 5 })).edges.map((e) => e.node.key)).toEqual(['k3', 'k4', 'k5', 'k6', 'k7']);
  });

  it('first: 0 and last: 0 answer no edges but say whether there are any', async () => {
    await setup();
    const f = await range(app, { first: 0 });
    expect(f.edges).toEqual([]);
    expect(f.pageInfo).toMatchObject({ hasNextPage: true, hasPreviousPage: false, startCursor: null, endCursor: null });
    expect(f.totalCount).toBe(7);
    const l = await range(app, { last: 0 });
    expect(l.edges).toEqual([]);
    expect(l.pageInfo).toMatchObject({ hasNextPage: false, hasPreviousPage: true });
  });

  it('refuses malformed cursors', async () => {
    await setup();
    const valid = (await range(app, { first: 1 })).pageInfo.endCursor!;
    const bad = [
      'garbage!!',
      '',
      ' ',
      `${valid}=`,
      Buffer.from([0xff, 0xfe]).toString('base64url'), // not UTF-8
      Buffer.from([0xed, 0xa0, 0x80]).toString('base64url'), // an encoded surrogate
      Buffer.from([0x61, 0xc3]).toString('base64url'), // truncated sequence
      'YR', // decodes to "a", but is not how "a" is encoded
      'YQ==', // padded
      Buffer.from('k'.repeat(1025)).toString('base64url'), // a key longer than maxKeyBytes
      'A'.repeat(1_000_000), // huge: refused before decoding
    ];
    for (const cursor of bad) {
      await expectBadInput(app, RANGE, { after: cursor });
      await expectBadInput(app, RANGE, { last: 2, before: cursor });
    }
    // The valid cursor works for both directions.
    expect((await range(app, { first: 1, after: valid })).edges.map((e) => e.node.key)).toEqual(['k2']);
    expect((await range(app, { last: 1, before: (await range(app, { first: 2 })).pageInfo.endCursor })).edges[0]!.node.key).toBe('k1');
  });

  it('refuses a range bound that is not well-formed Unicode', async () => {
    await setup();
    await expectBadInput(app, RANGE, { start: '\ud800' });
    await expectBadInput(app, RANGE, { prefix: 'a\udc00' });
    await expectBadInput(app, DELETE_RANGE, { end: '\ud83d' });
  });
});

describe('pagination over a few hundred keys', () => {
  // All strings of length 1..3 over an alphabet whose byte order differs from its UTF-16 order,
  // plus some of length 4: 300 keys.
  const ALPHABET = ['\u0000', 'a', 'é', '\uffff', '😀'];
  const all: string[] = [''];
  for (let len = 1; len <= 4; len++) {
    for (const s of all.filter((x) => [...x].length === len - 1)) for (const c of ALPHABET) all.push(s + c);
  }
  const KEYS = all.filter((k) => k !== '').slice(0, 300);
  const EXPECTED = sorted(KEYS);
  let app: TestApp;
  const setup = async () => (app ??= await appWith('range-pages', KEYS));

  it('the alphabet makes byte order and JavaScript order disagree', () => {
    expect(KEYS).toHaveLength(300);
    expect(new Set(KEYS).size).toBe(300);
    expect([...KEYS].sort()).not.toEqual(EXPECTED);
  });

  it('walks forward through every page', async () => {
    await setup();
    for (const size of [1, 7, 64, 300, 301]) {
      const seen: string[] = [];
      const cursors = new Map<string, string>();
      let after: string | null = null;
      let pages = 0;
      for (;;) {
        const page: Connection = await range(app, { first: size, after });
        const expected = EXPECTED.slice(seen.length, seen.length + size);
        expect(page.edges.map((e) => e.node.key)).toEqual(expected);
        for (const e of page.edges) {
          expect(e.node.value).toBe(`v:${e.node.key}`);
          cursors.set(e.node.key, e.cursor);
        }
        expect(page.totalCount).toBe(300);
        expect(page.pageInfo).toEqual({
          hasNextPage: seen.length + expected.length < 300,
          hasPreviousPage: seen.length > 0,
          startCursor: page.edges[0]?.cursor ?? null,
          endCursor: page.edges.at(-1)?.cursor ?? null,
        });
        seen.push(...expected);
        pages++;
        if (!page.pageInfo.hasNextPage) break;
        after = page.pageInfo.endCursor;
      }
      expect(seen).toEqual(EXPECTED);
      expect(pages).toBe(Math.ceil(300 / size));
      expect(new Set(cursors.values()).size).toBe(300);
    }
  });

  it('walks backward through every page', async () => {
    await setup();
    for (const size of [1, 7, 64, 300, 301]) {
      const seen: string[] = [];
      let before: string | null = null;
      for (;;) {
        const page: Connection = await range(app, { last: size, before });
        const end = 300 - seen.length;
        const expected = EXPECTED.slice(Math.max(0, end - size), end);
        expect(page.edges.map((e) => e.node.key)).toEqual(expected);
        expect(page.totalCount).toBe(300);
        expect(page.pageInfo).toEqual({
          hasNextPage: seen.length > 0,
          hasPreviousPage: end - expected.length > 0,
          startCursor: page.edges[0]?.cursor ?? null,
          endCursor: page.edges.at(-1)?.cursor ?? null,
        });
        seen.unshift(...expected);
        if (!page.pageInfo.hasPreviousPage) break;
        before = page.pageInfo.startCursor;
      }
      expect(seen).toEqual(EXPECTED);
    }
  });

  it('a key has the same cursor whichever way it was reached', async () => {
    await setup();
    const fwd = await range(app, { first: 300 });
    const back = await range(app, { last: 300 });
    expect(back.edges).toEqual(fwd.edges);
    // A cursor from the middle continues in both directions from that key.
    const mid = fwd.edges[150]!.cursor;
    expect((await range(app, { first: 2, after: mid })).edges.map((e) => e.node.key)).toEqual(EXPECTED.slice(151, 153));
    expect((await range(app, { last: 2, before: mid })).edges.map((e) => e.node.key)).toEqual(EXPECTED.slice(148, 150));
  });

  it('pages a prefix in both directions, totalCount counting the prefix', async () => {
    await setup();
    for (const prefix of ['a', '😀', '\uffff', '\u0000', 'é😀']) {
      const expected = EXPECTED.filter((k) => k.startsWith(prefix));
      expect(expected.length).toBeGreaterThan(0);
      expect(await walk(app, { prefix }, 4)).toEqual(expected);
      const back: string[] = [];
      let before: string | null = null;
      for (;;) {
        const page: Connection = await range(app, { prefix, last: 4, before });
        expect(page.totalCount).toBe(expected.length);
        back.unshift(...page.edges.map((e) => e.node.key));
        if (!page.pageInfo.hasPreviousPage) break;
        before = page.pageInfo.startCursor;
      }
      expect(back).toEqual(expected);
    }
  });

  it('first with before and last with after page inside both cursors', async () => {
    await setup();
    const fwd = await range(app, { first: 300 });
    const c = (i: number) => fwd.edges[i]!.cursor;
    const a = await range(app, { first: 3, after: c(10), before: c(20) });
    expect(a.edges.map((e) => e.node.key)).toEqual(EXPECTED.slice(11, 14));
    expect(a.pageInfo.hasNextPage).toBe(true);
    const b = await range(app, { first: 20, after: c(10), before: c(20) });
    expect(b.edges.map((e) => e.node.key)).toEqual(EXPECTED.slice(11, 20));
    expect(b.pageInfo.hasNextPage).toBe(false);
    const d = await range(app, { last: 3, after: c(10), before: c(20) });
    expect(d.edges.map((e) => e.node.key)).toEqual(EXPECTED.slice(17, 20));
    expect(d.pageInfo.hasPreviousPage).toBe(true);
    const e = await range(app, { last: 20, after: c(10), before: c(20) });
    expect(e.edges.map((x) => x.node.key)).toEqual(EXPECTED.slice(11, 20));
    expect(e.pageInfo.hasPreviousPage).toBe(false);
    expect(e.totalCount).toBe(300);
  });

  it('bounded ranges page from their bounds', async () => {
    await setup();
    const start = 'é';
    const end = '😀a';
    const expected = EXPECTED.filter((k) => byBytes(k, start) >= 0 && byBytes(k, end) < 0);
    expect(expected.length).toBeGreaterThan(50);
    expect(await walk(app, { start, end }, 9)).toEqual(expected);
    const last = await range(app, { start, end, last: 5 });
    expect(last.edges.map((e) => e.node.key)).toEqual(expected.slice(-5));
    expect(last.totalCount).toBe(expected.length);
    expect(last.pageInfo).toMatchObject({ hasPreviousPage: true, hasNextPage: false });
  });
});

describe('many partitions, most keys in one', () => {
  // A page reads a few keys per partition first, and more only from partitions that may hold
  // more of the page (store.ts pageMembers): here most of every page is in one partition.
  const P = 32;
  const candidates = Array.from({ length: 20_000 }, (_, i) => `m:${String(i).padStart(5, '0')}`);
  const crowded = candidates.filter((k) => partitionOf(k, P) === 3).slice(0, 150);
  const spread = candidates.filter((k) => partitionOf(k, P) !== 3).filter((_, i) => i % 9 === 0).slice(0, 2000);
  const KEYS = sorted([...crowded, ...spread]);

  it('pages match the sorted keys both ways, and read far fewer keys than a page per partition', async () => {
    const app = await createTestApp('range-crowded', { partitions: P });
    apps.push(app);
    await putAll(app, KEYS);
    for (const size of [5, 20, 100]) {
      const before = { ...app.store.overFetch };
      const forward: string[] = [];
      let after: string | null = null;
      let pages = 0;
      for (;;) {
        const page: Connection = await range(app, { first: size, after });
        expect(page.edges.map((e) => e.node.key)).toEqual(KEYS.slice(forward.length, forward.length + size));
        expect(page.totalCount).toBe(KEYS.length);
        forward.push(...page.edges.map((e) => e.node.key));
        pages++;
        if (!page.pageInfo.hasNextPage) break;
        after = page.pageInfo.endCursor;
      }
      expect(forward).toEqual(KEYS);
      const backward: string[] = [];
      let beforeCursor: string | null = null;
      for (;;) {
        const page: Connection = await range(app, { last: size, before: beforeCursor });
        const end = KEYS.length - backward.length;
        expect(page.edges.map((e) => e.node.key)).toEqual(KEYS.slice(Math.max(0, end - size), end));
        backward.unshift(...page.edges.map((e) => e.node.key));
        pages++;
        if (!page.pageInfo.hasPreviousPage) break;
        beforeCursor = page.pageInfo.startCursor;
      }
      expect(backward).toEqual(KEYS);
      // Every partition giving size+1 keys (the simple way) reads about (P-1)(size+1) keys
      // beyond each page here. Small pages are dominated by the few keys asked of each partition.
      const extra = (app.store.overFetch.members - before.members) / (app.store.overFetch.pages - before.pages);
      expect(app.store.overFetch.pages - before.pages).toBeGreaterThanOrEqual(pages);
      if (size >= 20) expect(extra).toBeLessThan(((P - 1) * (size + 1)) / 2);
    }
  });
});

describe('cursors outside the range', () => {
  let app: TestApp;
  const KEYS = ['a', 'b', 'm', 'n', 'o', 'q', 'z'];
  const setup = async () => (app ??= await appWith('range-outside', KEYS));
  const cursorOf = async (key: string) => (await range(app, { start: key, first: 1 })).edges[0]!.cursor;

  it('after a key below the range pages from the range start', async () => {
    await setup();
    const page = await range(app, { start: 'm', end: 'p', first: 2, after: await cursorOf('a') });
    expect(page.edges.map((e) => e.node.key)).toEqual(['m', 'n']);
    expect(page.pageInfo).toMatchObject({ hasNextPage: true, hasPreviousPage: false });
    expect(page.totalCount).toBe(3);
  });

  it('after a key above the range answers nothing, and that earlier keys exist', async () => {
    await setup();
    const page = await range(app, { start: 'm', end: 'p', first: 2, after: await cursorOf('z') });
    expect(page.edges).toEqual([]);
    expect(page.pageInfo).toMatchObject({ hasNextPage: false, hasPreviousPage: true });
    expect(page.totalCount).toBe(3);
  });

  it('before a key above the range pages from the range end', async () => {
    await setup();
    const page = await range(app, { start: 'm', end: 'p', last: 2, before: await cursorOf('z') });
    expect(page.edges.map((e) => e.node.key)).toEqual(['n', 'o']);
    expect(page.pageInfo).toMatchObject({ hasNextPage: false, hasPreviousPage: true });
  });

  it('before a key below the range answers nothing, and that later keys exist', async () => {
    await setup();
    const page = await range(app, { start: 'm', end: 'p', last: 2, before: await cursorOf('a') });
    expect(page.edges).toEqual([]);
    expect(page.pageInfo).toMatchObject({ hasNextPage: true, hasPreviousPage: false });
  });

  it('an empty range has no pages on either side of a cursor outside it', async () => {
    await setup();
    // Keys exist on both sides of the range, but none in it.
    for (const vars of [{ start: 'c', end: 'l' }, { prefix: 'p' }, { start: 'r', end: 'y' }]) {
      for (const cursor of ['a', 'z', 'q']) {
        const c = await cursorOf(cursor);
        for (const paging of [{ first: 2, after: c }, { last: 2, before: c }, { first: 2, before: c }, { last: 2, after: c }]) {
          const page = await range(app, { ...vars, ...paging });
          expect(page, JSON.stringify({ vars, cursor, paging })).toEqual({
            totalCount: 0,
            edges: [],
            pageInfo: { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null },
          });
        }
      }
    }
  });

  it('the cursor of a deleted key still pages from its position', async () => {
    const local = await appWith('range-gone', ['a', 'c', 'e']);
    const c = (await range(local, { start: 'c', first: 1 })).edges[0]!.cursor;
    await local.gql(`mutation { delete(key: "c") { deleted } }`);
    const fwd = await range(local, { first: 5, after: c });
    expect(fwd.edges.map((e) => e.node.key)).toEqual(['e']);
    expect(fwd.pageInfo).toMatchObject({ hasNextPage: false, hasPreviousPage: true });
    const back = await range(local, { last: 5, before: c });
    expect(back.edges.map((e) => e.node.key)).toEqual(['a']);
    expect(back.pageInfo).toMatchObject({ hasNextPage: true, hasPreviousPage: false });
  });
});

describe('a page whose keys change between its two reads', () => {
  type Call = (...args: unknown[]) => Promise<unknown[]>;
  interface Reads {
    kvRangeBuffer: Call;
    zrangeBuffer: Call;
  }

  /**
   * Reads the page with `vars` while `change` runs just before its first second-round read
   * (range.lua: one call on one Redis, one per partition on a cluster, issued together; each
   * waits for the change, so each sees it). Returns the page and how many first-round reads
   * (ZRANGE) followed the change.
   */
  async function readAcross(app: TestApp, vars: Vars, change: () => Promise<void>): Promise<{ page: Connection; firstReadsAfter: number }> {
    const client = app.redis as unknown as Reads;
    const { kvRangeBuffer, zrangeBuffer } = client;
    let changed: Promise<void> | undefined;
    let firstReadsAfter = 0;
    client.kvRangeBuffer = async function (this: unknown, ...args: unknown[]) {
      await (changed ??= change());
      return kvRangeBuffer.apply(this, args);
    };
    client.zrangeBuffer = function (this: unknown, ...args: unknown[]) {
      if (changed) firstReadsAfter++;
      return zrangeBuffer.apply(this, args);
    };
    try {
      return { page: await range(app, vars), firstReadsAfter };
    } finally {
      client.kvRangeBuffer = kvRangeBuffer;
      client.zrangeBuffer = zrangeBuffer;
    }
  }

  const write = async (app: TestApp, mutation: string) => expect((await app.gql(mutation)).errors).toBeUndefined();

  it('is read again, and answers the keys as they are after the change', async () => {
    const keys = Array.from({ length: 12 }, (_, i) => `k${String(i).padStart(2, '0')}`);
    const local = await appWith('range-changing', keys);
    // One key of the page is deleted and another written inside it.
    const { page, firstReadsAfter } = await readAcross(local, { first: 6 }, async () => {
      await write(local, `mutation { delete(key: "k03") { deleted } }`);
      await write(local, `mutation { put(key: "k05a", value: "new") { version } }`);
    });
    expect(page.edges.map((e) => [e.node.key, e.node.value])).toEqual([
      ['k00', 'v:k00'],
      ['k01', 'v:k01'],
      ['k02', 'v:k02'],
      ['k04', 'v:k04'],
      ['k05', 'v:k05'],
      ['k05a', 'new'],
    ]);
    expect(page.totalCount).toBe(12);
    expect(page.pageInfo.hasNextPage).toBe(true);
    expect(firstReadsAfter).toBeGreaterThan(0); // the page's keys were read again
  });

  it('sees a key written inside the page to a partition that had none of it, both ways', async () => {
    const P = 4;
    const all = Array.from({ length: 400 }, (_, i) => `c${String(i).padStart(3, '0')}`);
    // The page's keys all lie outside partition 2; the new key, inside the page, lies in it.
    const keys = all.filter((k) => partitionOf(k, P) !== 2).slice(0, 12);
    const late = all.find((k) => partitionOf(k, P) === 2 && byBytes(k, keys[2]!) > 0 && byBytes(k, keys[9]!) < 0);
    expect(late).toBeDefined();
    for (const [i, vars] of [{ first: 10 }, { last: 10 }].entries()) {
      const app = await createTestApp(`range-absent-${i}`, { partitions: P });
      apps.push(app);
      await putAll(app, keys);
      const { page, firstReadsAfter } = await readAcross(app, vars, () => write(app, `mutation { put(key: "${late}", value: "late") { version } }`));
      const expected = sorted([...keys, late!]);
      expect(page.edges.map((e) => e.node.key)).toEqual('first' in vars ? expected.slice(0, 10) : expected.slice(-10));
      expect(page.edges.find((e) => e.node.key === late)?.node.value).toBe('late');
      expect(page.totalCount).toBe(13);
      expect(firstReadsAfter).toBeGreaterThan(0);
    }
  });
});

describe('byte order and awkward keys', () => {
  const KEYS = [
    '\u0000',
    '\u0000\u0000',
    'a',
    'a\u0000',
    'a\u0000b',
    'a\nb',
    'line\nbreak',
    'line\r\n',
    '[',
    '[a',
    '(',
    '(a',
    '-',
    '+',
    '+a',
    '\u007f',
    'é',
    '\ud7ff',
    '\ue000',
    '\uffff',
    '\uffffx',
    '😀',
    '😀a',
    '😀😀',
    '😁',
    '𐀀',
    '\u{10ffff}',
  ];
  let app: TestApp;
  const setup = async () => (app ??= await appWith('range-bytes', KEYS));

  it('orders the whole keyspace by UTF-8 bytes, not UTF-16', async () => {
    await setup();
    const keys = await walk(app, {}, 5);
    expect(keys).toEqual(sorted(KEYS));
    // U+FFFF sorts below every astral character, although its UTF-16 unit sorts above theirs.
    expect(keys.indexOf('\uffff')).toBeLessThan(keys.indexOf('𐀀'));
    expect('\uffff' > '𐀀').toBe(true);
    expect(keys.indexOf('\ue000')).toBeLessThan(keys.indexOf('😀'));
    const back = await range(app, { last: 100 });
    expect(back.edges.map((e) => e.node.key)).toEqual(sorted(KEYS));
  });

  it('uses astral and high-BMP keys as bounds', async () => {
    await setup();
    expect(await walk(app, { start: '\uffff' })).toEqual(['\uffff', '\uffffx', '𐀀', '😀', '😀a', '😀😀', '😁', '\u{10ffff}']);
    expect(await walk(app, { start: '\uffff', end: '😀' })).toEqual(['\uffff', '\uffffx', '𐀀']);
    expect(await walk(app, { start: '😀', end: '😁' })).toEqual(['😀', '😀a', '😀😀']);
    expect(await walk(app, { start: '\ue000', end: '\uffff' })).toEqual(['\ue000']);
    expect(await walk(app, { start: '\ud7ff', end: '\ue000' })).toEqual(['\ud7ff']);
    expect(await walk(app, { end: 'é' })).toEqual(sorted(KEYS).slice(0, sorted(KEYS).indexOf('é')));
  });

  it('bounds a prefix exactly whether it ends in ASCII, in DEL or above', async () => {
    // A prefix ending in ASCII below DEL is bounded by the prefix with its last character moved
    // up by one (order.ts lexArg); the keys that start with that bound must stay outside.
    const keys = ['ab', 'ab\u007f', 'ab\u0080', 'abz', 'ac', 'ac0', 'a~', 'a~x', 'a\u007f', 'a\u007fz', 'a\u0080', 'b'];
    const app = await appWith('range-prefix-bound', keys);
    const starting = (prefix: string) => sorted(keys.filter((k) => k.startsWith(prefix)));
    for (const prefix of ['ab', 'a~', 'a\u007f', 'ac', 'a']) {
      expect(await walk(app, { prefix }, 2), prefix).toEqual(starting(prefix));
      expect((await range(app, { prefix, last: 2 })).edges.map((e) => e.node.key), prefix).toEqual(starting(prefix).slice(-2));
      expect((await range(app, { prefix })).totalCount, prefix).toBe(starting(prefix).length);
    }
    const r = await app.gql<{ deleteRange: { deleted: number; hasMore: boolean } }>(DELETE_RANGE, { prefix: 'ab' });
    expect(r.data?.deleteRange).toEqual({ deleted: 4, hasMore: false });
    expect(await walk(app, {})).toEqual(sorted(keys.filter((k) => !k.startsWith('ab'))));
  });

  it('uses astral and high-BMP characters as prefixes', async () => {
    await setup();
    expect(await walk(app, { prefix: '😀' })).toEqual(['😀', '😀a', '😀😀']);
    expect(await walk(app, { prefix: '😀😀' })).toEqual(['😀😀']);
    expect(await walk(app, { prefix: '\uffff' })).toEqual(['\uffff', '\uffffx']);
    expect(await walk(app, { prefix: '😁' })).toEqual(['😁']);
    expect(await walk(app, { prefix: '\u{10ffff}' })).toEqual(['\u{10ffff}']);
    expect(await walk(app, { prefix: 'é' })).toEqual(['é']);
  });

  it('treats Redis range syntax characters as ordinary key bytes', async () => {
    await setup();
    expect(await walk(app, { prefix: '[' })).toEqual(['[', '[a']);
    expect(await walk(app, { prefix: '(' })).toEqual(['(', '(a']);
    expect(await walk(app, { prefix: '-' })).toEqual(['-']);
    expect(await walk(app, { prefix: '+' })).toEqual(['+', '+a']);
    expect(await walk(app, { start: '(', end: '[' })).toEqual(['(', '(a', '+', '+a', '-']);
    expect(await walk(app, { start: '-', end: '+' })).toEqual([]);
    expect(await walk(app, { start: '+', end: '-' })).toEqual(['+', '+a']);
    expect(await walk(app, { start: '[', end: '[a' })).toEqual(['[']);
    expect(await walk(app, { start: '-' })).toEqual(sorted(KEYS).filter((k) => byBytes(k, '-') >= 0));
    expect(await walk(app, { end: '+' })).toEqual(sorted(KEYS).filter((k) => byBytes(k, '+') < 0));
  });

  it('handles NUL and newlines in keys, bounds and prefixes', async () => {
    await setup();
    expect(await walk(app, { prefix: '\u0000' })).toEqual(['\u0000', '\u0000\u0000']);
    expect(await walk(app, { prefix: 'a\u0000' })).toEqual(['a\u0000', 'a\u0000b']);
    expect(await walk(app, { start: 'a\u0000', end: 'a\u0000b' })).toEqual(['a\u0000']);
    expect(await walk(app, { start: '\u0000', end: '\u0000\u0000' })).toEqual(['\u0000']);
    expect(await walk(app, { end: '\u0000' })).toEqual([]);
    expect(await walk(app, { prefix: 'line\n' })).toEqual(['line\nbreak']);
    expect(await walk(app, { prefix: 'line' })).toEqual(['line\nbreak', 'line\r\n']);
    expect(await walk(app, { prefix: 'a\n' })).toEqual(['a\nb']);
    const nul = await range(app, { prefix: 'a\u0000', first: 1 });
    expect(nul.edges[0]!.node).toEqual({ key: 'a\u0000', value: 'v:a\u0000', version: 1 });
    // Cursors of such keys round-trip.
    const next = await range(app, { prefix: 'a\u0000', first: 1, after: nul.pageInfo.endCursor });
    expect(next.edges.map((e) => e.node.key)).toEqual(['a\u0000b']);
  });
});

describe('deleteRange', () => {
  const del = async (app: TestApp, vars: Vars) => {
    const r = await app.gql<{ deleteRange: { deleted: number; hasMore: boolean } }>(DELETE_RANGE, vars);
    expect(r.errors, JSON.stringify(vars)).toBeUndefined();
    return r.data!.deleteRange;
  };

  it('deletes at most the default limit, lowest keys first, until the range is empty', async () => {
    const keys = Array.from({ length: 12 }, (_, i) => `d:${String(i).padStart(2, '0')}`);
    const app = await appWith('delrange-default', ['c', ...keys, 'd;', 'e'], { deleteRangeDefault: 5, deleteRangeMax: 7 });
    expect(await del(app, { prefix: 'd:' })).toEqual({ deleted: 5, hasMore: true });
    expect(await walk(app, {})).toEqual(['c', ...keys.slice(5), 'd;', 'e']);
    expect(await del(app, { prefix: 'd:' })).toEqual({ deleted: 5, hasMore: true });
    expect(await walk(app, {})).toEqual(['c', ...keys.slice(10), 'd;', 'e']);
    expect(await del(app, { prefix: 'd:' })).toEqual({ deleted: 2, hasMore: false });
    expect(await del(app, { prefix: 'd:' })).toEqual({ deleted: 0, hasMore: false });
    expect(await walk(app, {})).toEqual(['c', 'd;', 'e']);
    const g = await app.gql(`{ getMany(keys: ["c", "d:00", "d:11", "d;", "e"]) { key value } }`);
    expect(g.data!.getMany).toEqual([{ key: 'c', value: 'v:c' }, null, null, { key: 'd;', value: 'v:d;' }, { key: 'e', value: 'v:e' }]);
  });

  it('refuses a limit outside 1..deleteRangeMax and deletes nothing', async () => {
    const app = await appWith('delrange-limit', ['x1', 'x2', 'x3'], { deleteRangeDefault: 2, deleteRangeMax: 2 });
    for (const limit of [0, -1, 3, 1_000_000]) await expectBadInput(app, DELETE_RANGE, { limit });
    expect((await range(app, {})).totalCount).toBe(3);
    expect(await del(app, { limit: 2 })).toEqual({ deleted: 2, hasMore: true });
    expect(await del(app, { limit: 1 })).toEqual({ deleted: 1, hasMore: false });
    expect(await walk(app, {})).toEqual([]);
    // Nothing but the keyspace's meta key (and its change feed) is left in Redis.
    expect(await dataKeysOf(app.redis, app.prefix)).toEqual([`${app.prefix}:meta`]);
  });

  it('start is inclusive, end exclusive, and keys outside stay', async () => {
    const app = await appWith('delrange-bounds', ['k:a', 'k:b', 'k:c', 'k:d', 'k:e']);
    expect(await del(app, { start: 'k:b', end: 'k:d' })).toEqual({ deleted: 2, hasMore: false });
    expect(await walk(app, {})).toEqual(['k:a', 'k:d', 'k:e']);
    expect(await del(app, { start: 'k:e' })).toEqual({ deleted: 1, hasMore: false });
    expect(await del(app, { end: 'k:a' })).toEqual({ deleted: 0, hasMore: false });
    expect(await del(app, { start: 'k:d', end: 'k:a' })).toEqual({ deleted: 0, hasMore: false });
    expect(await del(app, { start: 'k:d', end: 'k:d' })).toEqual({ deleted: 0, hasMore: false });
    expect(await walk(app, {})).toEqual(['k:a', 'k:d']);
    expect(await del(app, { end: 'k:d' })).toEqual({ deleted: 1, hasMore: false });
    expect(await walk(app, {})).toEqual(['k:d']);
  });

  it('deletes the lowest keys by bytes, and prefixes match as in range', async () => {
    const keys = ['a', 'a/b', 'ab', 'a\uffff', 'a😀', 'a😀x', 'b', '😀', '😀a', '\uffff', '😁', '['];
    const app = await appWith('delrange-bytes', keys);
    // One at a time: each call takes the lowest remaining key of the prefix.
    const order: string[] = [];
    for (;;) {
      const before = await walk(app, { prefix: 'a' });
      const r = await del(app, { prefix: 'a', limit: 1 });
      if (r.deleted === 0) break;
      const after = await walk(app, { prefix: 'a' });
      expect(after).toEqual(before.slice(1));
      expect(r.hasMore).toBe(after.length > 0);
      order.push(before[0]!);
    }
    expect(order).toEqual(['a', 'a/b', 'ab', 'a\uffff', 'a😀', 'a😀x']);
    expect(await del(app, { prefix: '😀', limit: 1 })).toEqual({ deleted: 1, hasMore: true });
    expect(await walk(app, {})).toEqual(['[', 'b', '\uffff', '😀a', '😁']);
    expect(await del(app, { start: '\uffff', limit: 1 })).toEqual({ deleted: 1, hasMore: true });
    expect(await walk(app, {})).toEqual(['[', 'b', '😀a', '😁']);
    expect(await del(app, { prefix: '[' })).toEqual({ deleted: 1, hasMore: false });
    expect(await walk(app, {})).toEqual(['b', '😀a', '😁']);
  });

  it('treats Redis range syntax characters and NUL as ordinary bytes', async () => {
    const app = await appWith('delrange-syntax', ['(', '+', '-', '[', 'a', '\u0000', '\u0000a']);
    expect(await del(app, { start: '-', end: '+' })).toEqual({ deleted: 0, hasMore: false });
    expect(await del(app, { start: '+', end: '[' })).toEqual({ deleted: 2, hasMore: false });
    expect(await walk(app, {})).toEqual(['\u0000', '\u0000a', '(', '[', 'a']);
    expect(await del(app, { prefix: '\u0000' })).toEqual({ deleted: 2, hasMore: false });
    expect(await del(app, { end: '(' })).toEqual({ deleted: 0, hasMore: false });
    expect(await del(app, { prefix: '(', limit: 1 })).toEqual({ deleted: 1, hasMore: false });
    expect(await walk(app, {})).toEqual(['[', 'a']);
  });

  it('an empty end deletes nothing; an empty prefix or start is the whole keyspace', async () => {
    const app = await appWith('delrange-empty', ['a', 'b', 'c']);
    expect(await del(app, { end: '' })).toEqual({ deleted: 0, hasMore: false });
    expect(await del(app, { prefix: '', limit: 1 })).toEqual({ deleted: 1, hasMore: true });
    expect(await del(app, { start: '', limit: 1 })).toEqual({ deleted: 1, hasMore: true });
    expect(await walk(app, {})).toEqual(['c']);
  });

  it('no bounds deletes from the whole keyspace', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `w${i}😀`);
    const app = await appWith('delrange-all', keys);
    expect(await del(app, { limit: 15 })).toEqual({ deleted: 15, hasMore: true });
    expect(await walk(app, {})).toEqual(sorted(keys).slice(15));
    expect(await del(app, {})).toEqual({ deleted: 25, hasMore: false });
    expect((await range(app, {})).totalCount).toBe(0);
    expect(await dataKeysOf(app.redis, app.prefix)).toEqual([`${app.prefix}:meta`]);
  });
});
