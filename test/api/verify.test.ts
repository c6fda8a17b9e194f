// verifyKeyspace (src/store/verify.ts) and its CLI (npm run verify): a clean keyspace passes with
// the right counts; each kind of corruption, made by hand with raw Redis commands on this file's
// own keys, is reported with its key. Runs with 1 and 4 partitions.
import { afterAll, describe, expect, inject, it } from 'vitest';
import { decodeEntry, type DecodedEntry } from '../../src/store/feedFormat.js';
import { bucketOf, Keyspace, packEntry, partitionOf, unpackEntry } from '../../src/store/keys.js';
import { verifyKeyspace, type VerifyOptions, type VerifyReport } from '../../src/store/verify.js';
import { createTestApp, BUCKETS, ON_CLUSTER, PARTITIONS, uniquePrefix, type TestApp } from '../harness/app.js';
import { packPut } from '../harness/feedStream.js';
import { runCommand } from '../harness/command.js';
import { freePort } from '../harness/redisServer.js';

/** Keys spread over every partition: for each partition, three keys that belong to it. */
function keysPerPartition(partitions: number): string[][] {
  const out: string[][] = Array.from({ length: partitions }, () => []);
  for (let i = 0; out.some((l) => l.length < 3); i++) {
    if (i > 10_000) throw new Error('could not spread keys over the partitions');
    const key = `k:${i}`;
    const list = out[partitionOf(key, partitions)]!;
    if (list.length < 3) list.push(key);
  }
  return out;
}

interface Seeded {
  app: TestApp;
  ks: Keyspace;
  /** by partition: [updated twice, deleted then put again, put once] */
  keys: string[][];
  batch: string[];
  gone: string;
  expectedKeys: number[];
  expectedEvents: number[];
}

const apps: TestApp[] = [];
afterAll(async () => {
  for (const app of apps) await app.close();
});

/** A keyspace with puts, updates, a batch over every partition and deletes. */
async function seeded(name: string): Promise<Seeded> {
  const app = await createTestApp(name);
  apps.push(app);
  const ks = new Keyspace(app.prefix, PARTITIONS, BUCKETS);
  const keys = keysPerPartition(PARTITIONS);
  const expectedKeys = new Array(PARTITIONS).fill(0);
  const expectedEvents = new Array(PARTITIONS).fill(0);
  const event = (key: string) => expectedEvents[partitionOf(key, PARTITIONS)]++;
  for (const [a, b, c] of keys as [string, string, string][]) {
    for (const v of ['1', '22', '333']) {
      await app.store.put({ key: a, value: v });
      event(a);
    }
    await app.store.put({ key: b, value: 'b' });
    await app.store.delete(b);
    await app.store.put({ key: b, value: 'b again', expectedVersion: 0 });
    for (let i = 0; i < 3; i++) event(b);
    await app.store.put({ key: c, value: '' }); // an empty value is a value
    event(c);
  }
  const batch = keys.map((l, p) => `batch:${p}:${l[0]}`);
  await app.store.batchPut(batch.map((key) => ({ key, value: 'in a batch' })));
  batch.forEach(event);
  const gone = 'gone';
  await app.store.put({ key: gone, value: 'x' });
  await app.store.delete(gone);
  for (let i = 0; i < 2; i++) event(gone);
  for (const key of [...keys.flat(), ...batch]) expectedKeys[partitionOf(key, PARTITIONS)]++;
  return { app, ks, keys, batch, gone, expectedKeys, expectedEvents };
}

function verify(s: Seeded | TestApp, extra: Partial<VerifyOptions> = {}): Promise<VerifyReport> {
  const app = 'app' in s ? s.app : s;
  return verifyKeyspace(app.redis, { prefix: app.prefix, partitions: PARTITIONS, buckets: BUCKETS, ...extra });
}

/** The problems as "kind key-or-redisKey", sorted. */
function found(r: VerifyReport): string[] {
  return r.problems.map((p) => `${p.kind} ${p.key ?? p.redisKey}`).sort();
}

/** A partition's stream entries, decoded (feedFormat.ts). */
async function entriesOf(s: Seeded, p: number): Promise<DecodedEntry[]> {
  const entries = (await s.app.redis.xrangeBuffer(s.ks.stream(p), '-', '+')) as unknown as [Buffer, Buffer[]][];
  return entries.map(([id, fields]) => decodeEntry(id.toString(), fields));
}

describe('verifyKeyspace on a clean keyspace', () => {
  it('finds no problem, and counts keys and events per partition', async () => {
    const s = await seeded('clean');
    const r = await verify(s);
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.problemCount).toBe(0);
    expect(r.unsettled).toBe(0);
    expect(r.perPartition.map((c) => c.keys)).toEqual(s.expectedKeys);
    // SCAN may return a key twice while Redis resizes its table (other test files write to
    // this Redis meanwhile), so the bucket fields it saw are at least the keys, and the buckets
    // at least those the keys hash to.
    r.perPartition.forEach((c, p) => {
      expect(c.bucketFields).toBeGreaterThanOrEqual(s.expectedKeys[p]!);
      const used = new Set([...s.keys.flat(), ...s.batch].filter((k) => partitionOf(k, PARTITIONS) === p).map((k) => bucketOf(k, BUCKETS)));
      expect(c.buckets).toBeGreaterThanOrEqual(used.size);
      expect(c.buckets).toBeLessThanOrEqual(s.expectedKeys[p]!);
    });
    expect(r.perPartition.map((c) => c.events)).toEqual(s.expectedEvents);
    expect(r.perPartition.map((c) => c.sequence)).toEqual(s.expectedEvents);
    expect(r.perPartition.map((c) => c.firstSeq)).toEqual(s.expectedEvents.map((n) => (n > 0 ? 1 : null)));
    expect(r.keys).toBe(s.expectedKeys.reduce((a, b) => a + b, 0));
    expect(r.events).toBe(s.expectedEvents.reduce((a, b) => a + b, 0));
    // Every key of the layout was scanned: buckets, plus index, stream and counter of each
    // partition.
    expect(r.redisKeysScanned).toBeGreaterThanOrEqual(r.perPartition.reduce((n, c) => n + c.buckets, 0) + 3 * PARTITIONS);

    // The same verdict and counts in the smallest steps (paging through every SCAN, ZSCAN,
    // XRANGE and MULTI block).
    const small = await verify(s, { scanCount: 2, batchSize: 3, streamPage: 2 });
    const exact = (x: VerifyReport) => ({ ...x, durationMs: 0, redisKeysScanned: 0, perPartition: x.perPartition.map((c) => ({ ...c, buckets: 0, bucketFields: 0 })) });
    expect(exact(small)).toEqual(exact(r));
  });

  it('passes a keyspace that was opened but never written, and a trimmed feed', async () => {
    const app = await createTestApp('empty');
    apps.push(app);
    const r = await verify(app);
    expect(r.ok).toBe(true);
    expect(r.keys + r.events).toBe(0);

    // A feed that keeps about 2 events per partition (XADD MAXLEN ~ trims whole nodes of 100
    // events): the oldest are gone, which is no fault.
    const trimmed = await createTestApp('trimmed', { feedRetention: 2 });
    apps.push(trimmed);
    const total = 250 * PARTITIONS * 4;
    for (let round = 0; round < 4; round++) {
      await trimmed.store.batchPut(Array.from({ length: 250 * PARTITIONS }, (_, i) => ({ key: `t:${i}`, value: `${round}` })));
    }
    const t = await verify(trimmed);
    expect(t.problems).toEqual([]);
    expect(t.perPartition.some((c) => (c.firstSeq ?? 1) > 1)).toBe(true);
    expect(t.events).toBeLessThan(total);
    expect(t.perPartition.reduce((s, c) => s + c.sequence, 0)).toBe(total);
    expect(t.keys).toBe(250 * PARTITIONS);
  });

  it('tells apart keyspaces whose prefixes start alike', async () => {
    const s = await seeded('alike');
    // A keyspace whose prefix extends ours ("<ours>:x") must not be taken for ours.
    const other = await createTestApp('alike', { prefix: `${s.app.prefix}:x` });
    apps.push(other);
    await other.store.put({ key: 'k:0', value: 'other keyspace' });
    expect((await verify(s)).problems).toEqual([]);
  });
});

describe('verifyKeyspace reports each kind of corruption', () => {
  it('a missing keyspace, and a partition count other than the meta key says', async () => {
    const app = await createTestApp('meta');
    apps.push(app);
    const nothing = await verifyKeyspace(app.redis, { prefix: uniquePrefix('never-opened'), partitions: PARTITIONS, buckets: BUCKETS });
    expect(nothing.ok).toBe(false);
    expect(nothing.problems.map((p) => p.kind)).toEqual(['meta']);
    expect(nothing.problems[0]!.message).toMatch(/missing/);

    const wrong = await verifyKeyspace(app.redis, { prefix: app.prefix, partitions: PARTITIONS + 1, buckets: BUCKETS });
    expect(wrong.problems.map((p) => p.kind)).toEqual(['meta']);
    expect(wrong.problems[0]!.message).toContain(`says ${PARTITIONS} partitions`);

    const buckets = await verifyKeyspace(app.redis, { prefix: app.prefix, partitions: PARTITIONS, buckets: BUCKETS + 1 });
    expect(buckets.problems.map((p) => p.kind)).toEqual(['meta']);
    expect(buckets.problems[0]!.message).toContain(`says ${BUCKETS} buckets per partition; verifying with ${BUCKETS + 1}`);

    // A keyspace of layout 1 (one hash per key) is not this layout.
    await app.redis.hset(`${app.prefix}:meta`, 'layout', '1');
    const old = await verify(app);
    expect(old.problems.map((p) => p.message)).toEqual([`${app.prefix}:meta says layout 1; this kvql reads layout 3`]);
  });

  it('an index member without its field in its bucket', async () => {
    const s = await seeded('no-field');
    const key = s.keys[0]![0]!;
    expect(await s.app.redis.hdel(s.ks.bucket(key), key)).toBe(1);
    const r = await verify(s);
    expect(r.ok).toBe(false);
    // The feed still says the key was put: its last event disagrees with the store too.
    expect(found(r)).toEqual([`feed-mismatch ${key}`, `missing-value ${key}`]);
  });

  it('a bucket field without its index member', async () => {
    const s = await seeded('no-member');
    const key = s.batch[PARTITIONS - 1]!;
    await s.app.redis.zrem(s.ks.index(partitionOf(key, PARTITIONS)), key);
    expect(found(await verify(s))).toEqual([`missing-index ${key}`]);
  });

  it('a bad version, an entry shorter than its header, createdAt after updatedAt, bytes that are not UTF-8, a wrong type', async () => {
    const s = await seeded('bad-value');
    const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map((x) => `bad:${x}`) as [string, string, string, string, string];
    for (const key of [a, b, c, d]) await s.app.store.put({ key, value: key });
    const r = s.app.redis;
    const stored = async (key: string) => unpackEntry((await r.hgetBuffer(s.ks.bucket(key), key))!)!;
    const sa = await stored(a);
    await r.hset(s.ks.bucket(a), a, packEntry(0, sa.createdAt, sa.updatedAt, sa.value));
    await r.hset(s.ks.bucket(b), b, 'short');
    const sc = await stored(c);
    await r.hset(s.ks.bucket(c), c, packEntry(sc.version, sc.updatedAt + 1000, sc.updatedAt, sc.value));
    const sd = await stored(d);
    await r.hset(s.ks.bucket(d), d, packEntry(sd.version, sd.createdAt, sd.updatedAt, Buffer.from([0x62, 0xff, 0x3a, 0x64, 0x00])));
    // A field whose name is no UTF-8 (so no key), with its index member.
    const notUtf8 = Buffer.from([0x65, 0xc3]);
    await r.hset(s.ks.bucket(e), notUtf8, packEntry(1, 1, 1, 'x'));
    await r.zadd(s.ks.index(partitionOf(e, PARTITIONS)), 0, notUtf8);
    // A bucket that is no hash: one past the bucket count, so that it holds no seeded key.
    const wrongType = s.ks.bucket('', 0, BUCKETS + 1);
    await r.set(wrongType, 'a string, not a hash');
    const report = await verify(s);
    for (const key of [a, b, c, d]) expect(found(report), key).toContain(`bad-value ${key}`);
    expect(found(report)).toContain(`bad-value ${wrongType}`);
    expect(found(report)).toContain(`bad-value ${notUtf8.toString('utf8')}`);
    // Nothing else is blamed: every problem is about one of these.
    const blamed = [a, b, c, d, wrongType, notUtf8.toString('utf8')];
    expect(report.problems.every((p) => blamed.includes(p.key ?? p.redisKey!)), JSON.stringify(report.problems)).toBe(true);
    const messages = report.problems.filter((p) => p.kind === 'bad-value').map((p) => p.message).join('\n');
    expect(messages).toMatch(/version "0", not a positive integer/);
    expect(messages).toMatch(/is 5 bytes, shorter than its 18-byte header/);
    expect(messages).toMatch(/created \(\d+\) after it was updated/);
    expect(messages).toMatch(/has a value that is not UTF-8/);
    expect(messages).toMatch(/whose bytes are not UTF-8/);
    expect(messages).toMatch(/is a string, not a hash/);
  });

  it('a field in another bucket than its key hashes to, and in a bucket past the bucket count', async () => {
    const s = await seeded('wrong-bucket');
    const r = s.app.redis;
    const [key, beyond] = [s.keys[0]![2]!, s.keys[PARTITIONS - 1]![0]!];
    const p = partitionOf(key, PARTITIONS);
    // The placement verify checks is the one the store writes: the key's field is in the
    // bucket keys.ts computes.
    const home = bucketOf(key, BUCKETS);
    expect(await r.hexists(s.ks.bucket(key, p, home), key)).toBe(1);
    const packed = (await r.hgetBuffer(s.ks.bucket(key), key))!;
    const other = (home + 1) % BUCKETS;
    await r.hdel(s.ks.bucket(key), key);
    await r.hset(s.ks.bucket(key, p, other), key, packed);
    const pb = partitionOf(beyond, PARTITIONS);
    const beyondPacked = (await r.hgetBuffer(s.ks.bucket(beyond), beyond))!;
    await r.hdel(s.ks.bucket(beyond), beyond);
    await r.hset(s.ks.bucket(beyond, pb, BUCKETS), beyond, beyondPacked);
    const report = await verify(s);
    const expected = BUCKETS > 1 ? [`wrong-bucket ${key}`, `missing-value ${key}`, `feed-mismatch ${key}`] : [];
    expected.push(`wrong-bucket ${beyond}`, `missing-value ${beyond}`, `feed-mismatch ${beyond}`);
    expect(found(report)).toEqual(expected.sort());
    const wrong = report.problems.filter((x) => x.kind === 'wrong-bucket').map((x) => x.message).join('\n');
    expect(wrong).toContain(`entry of ${JSON.stringify(beyond)} is in bucket ${BUCKETS} (${s.ks.bucket(beyond, pb, BUCKETS)}); its bucket is ${bucketOf(beyond, BUCKETS)} of ${BUCKETS}`);
  });

  it('a key in the wrong partition, and a key in a partition that does not exist', async () => {
    const s = await seeded('wrong-partition');
    const r = s.app.redis;
    // Beyond the partition count: whatever the count, partition P does not exist.
    const strayKeys = new Keyspace(s.app.prefix, PARTITIONS + 1, BUCKETS);
    const stray = strayKeys.bucket('stray', PARTITIONS);
    await r.hset(stray, 'stray', packEntry(1, 1, 1, 'x'));
    const expected = [`stray-partition ${stray}`];
    if (PARTITIONS > 1) {
      // Moved, bucket field and index member together, into the same bucket of another
      // (existing) partition.
      const key = s.keys[0]![2]!;
      const home = partitionOf(key, PARTITIONS);
      const other = (home + 1) % PARTITIONS;
      const packed = (await r.hgetBuffer(s.ks.bucket(key, home), key))!;
      await r.hdel(s.ks.bucket(key, home), key);
      await r.hset(s.ks.bucket(key, other), key, packed);
      await r.zrem(s.ks.index(home), key);
      await r.zadd(s.ks.index(other), 0, key);
      expected.push(`wrong-partition ${key}`);
    }
    const report = await verify(s);
    for (const e of expected) expect(found(report)).toContain(e);
    const wrong = report.problems.filter((p) => p.kind === 'wrong-partition');
    if (PARTITIONS > 1) {
      // Reported once per partition and key (the bucket field is found first); the feed of its
      // home partition says it is stored, that of the other has no event for it.
      expect(wrong.map((p) => p.message).join('\n')).toMatch(/entry of .* is in bucket .* of partition \d+; its partition is/);
      expect(report.problems.filter((p) => p.kind !== 'stray-partition').every((p) => p.key === s.keys[0]![2])).toBe(true);
    } else {
      expect(found(report)).toEqual(expected);
    }
  });

  it('a key under a partition tag that is none of the layout', async () => {
    const s = await seeded('unknown');
    const junk = `{${s.app.prefix}:0}:junk`;
    await s.app.redis.set(junk, '1');
    expect(found(await verify(s))).toEqual([`unknown-key ${junk}`]);
  });

  it('a gap in a stream sequence numbers', async () => {
    const s = await seeded('gap');
    // The first event of a key that was put, deleted and put again: neither the stream's first
    // event nor one whose loss breaks the key's chain of versions, so the gap is the only fault.
    const key = s.keys[0]![1]!;
    const p = partitionOf(key, PARTITIONS);
    // Each put was its own write, so its own stream entry.
    const entries = await entriesOf(s, p);
    const first = entries.findIndex((e) => e.events.some((ev) => ev.key === key));
    expect(first).toBeGreaterThan(0);
    expect(entries[first]!.events).toHaveLength(1);
    await s.app.redis.xdel(s.ks.stream(p), entries[first]!.id);
    const r = await verify(s);
    expect(found(r)).toEqual([`feed-sequence ${s.ks.stream(p)} ${entries[first + 1]!.id}`]);
    expect(r.problems[0]!.message).toMatch(/starts at event \d+ after event \d+ \(expected \d+\)/);
  });

  it('a sequence counter that disagrees with the last event, or is missing', async () => {
    const s = await seeded('counter');
    const p = PARTITIONS - 1;
    const last = (await entriesOf(s, p)).at(-1)!;
    await s.app.redis.set(s.ks.sequence(p), String(last.last + 5));
    const r = await verify(s);
    expect(found(r)).toEqual([`feed-counter ${s.ks.sequence(p)}`]);
    expect(r.problems[0]!.message).toContain(`the last entry of ${s.ks.stream(p)} is ${last.id}`);

    await s.app.redis.del(s.ks.sequence(p));
    expect(found(await verify(s))).toEqual([`feed-counter ${s.ks.sequence(p)}`]);
  });

  it('a malformed event, a version that does not follow, and a store that disagrees with its feed', async () => {
    const s = await seeded('events');
    const r = s.app.redis;
    const [a, b] = s.keys[0]! as [string, string];
    const p = partitionOf(a, PARTITIONS);
    // An entry whose event is cut short, appended as the scripts append one (ID 0-<its last
    // event's number>, then the counter).
    const q1 = Number(await r.get(s.ks.sequence(p))) + 1;
    const bad = await r.xadd(s.ks.stream(p), `0-${q1}`, 'q', String(q1), 'e', packPut(1, 1, 2, 'cut', 'short').subarray(0, -1));
    await r.incr(s.ks.sequence(p));
    // A PUT of `a` at version 9 although its last event wrote version 3.
    const q2 = q1 + 1;
    const jump = await r.xadd(s.ks.stream(p), `0-${q2}`, 'q', String(q2), 'e', packPut(9, 1, 2, a, 'x'));
    await r.incr(s.ks.sequence(p));
    // `b` changed behind the feed's back: another value of another length.
    const sb = unpackEntry((await r.hgetBuffer(s.ks.bucket(b), b))!)!;
    await r.hset(s.ks.bucket(b), b, packEntry(sb.version, sb.createdAt, sb.updatedAt, 'changed without an event'));
    const report = await verify(s);
    expect(found(report)).toEqual([`feed-event ${s.ks.stream(p)} ${bad}`, `feed-mismatch ${a}`, `feed-mismatch ${b}`, `feed-version ${a}`].sort());
    expect(report.problems.find((x) => x.kind === 'feed-version')!.redisKey).toBe(`${s.ks.stream(p)} ${jump}`);
    expect(report.problems.find((x) => x.key === b)!.message).toMatch(/value bytes/);
  });

  it('a stored key without any event in a stream that holds the whole history', async () => {
    const s = await seeded('no-event');
    const key = 'written-behind-the-feed';
    const p = partitionOf(key, PARTITIONS);
    await s.app.redis.hset(s.ks.bucket(key), key, packEntry(1, 5, 5, 'x'));
    await s.app.redis.zadd(s.ks.index(p), 0, key);
    expect(found(await verify(s))).toEqual([`feed-missing ${key}`]);
  });

  it('keeps at most maxProblems, and counts them all', async () => {
    const s = await seeded('many');
    const p = 0;
    for (let i = 0; i < 20; i++) await s.app.redis.zadd(s.ks.index(p), 0, `ghost:${i}`);
    const r = await verify(s, { maxProblems: 5 });
    expect(r.problems).toHaveLength(5);
    expect(r.truncated).toBe(true);
    // Each ghost is a member without a hash, and (when P > 1) often in the wrong partition.
    expect(r.problemCount).toBeGreaterThanOrEqual(20);
    expect(r.problems.every((x) => x.key!.startsWith('ghost:'))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/** `npm run verify` with only these settings. */
const runCli = (env: Record<string, string>) => runCommand('src/verifyCli.ts', [], env, 20_000);

describe('npm run verify (src/verifyCli.ts)', () => {
  it('prints the report, exits 0 when clean and 1 with problems', async () => {
    const s = await seeded('cli');
    // Where the keyspace is: the cluster project's cluster (REDIS_CLUSTER_NODES), or the shared Redis.
    const where: Record<string, string> = ON_CLUSTER ? { REDIS_CLUSTER_NODES: inject('clusterNodes') } : { REDIS_URL: inject('redisUrl') };
    const env: Record<string, string> = { ...where, KV_PREFIX: s.app.prefix, KV_PARTITIONS: String(PARTITIONS), KV_BUCKETS: String(BUCKETS) };
    const clean = await runCli(env);
    expect(clean.out).toContain(`keyspace "${s.app.prefix}", ${PARTITIONS} partition`);
    expect(clean.out).toContain(`total: ${s.expectedKeys.reduce((a, b) => a + b, 0)} keys`);
    expect(clean.out).toContain('OK: no problems found');
    expect(clean.code).toBe(0);

    const key = s.keys[0]![1]!;
    await s.app.redis.zrem(s.ks.index(partitionOf(key, PARTITIONS)), key);
    const broken = await runCli(env);
    expect(broken.out).toContain('PROBLEMS: 1');
    expect(broken.out).toMatch(/missing-index +entry of .* has no member in/);
    expect(broken.code).toBe(1);
  }, 45_000);

  it('without REDIS_URL, says it needs one when the managed Redis does not answer', async () => {
    const port = await freePort();
    const r = await runCli({ KV_MANAGED_REDIS_PORT: String(port) });
    expect(r.out).toContain(`checking the managed Redis of \`npm start\` at redis://127.0.0.1:${port}`);
    expect(r.out).toMatch(/no Redis answers at redis:\/\/127\.0\.0\.1:\d+ .*Set REDIS_URL/);
    expect(r.code).toBe(2);
  }, 30_000);

  it('refuses a wrong configuration, naming the variable', async () => {
    const r = await runCli({ REDIS_URL: inject('redisUrl'), KV_PARTITIONS: 'many' });
    expect(r.out).toMatch(/KV_PARTITIONS="many"/);
    expect(r.code).toBe(2);
  }, 30_000);
});
