// Point-in-time restore (src/pointInTimeRestore.ts, `npm run restore-to-time`) with real
// redis-servers from the repo's redis.conf, whose `aof-timestamp-enabled yes` it relies on:
// writes of one second, then of later seconds; a copy of appendonlydir/ cut back to the first
// second holds exactly the first writes, as whole scripts (the keyspace verifies), and nothing
// the copy cannot honestly give is made up.
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { AOF_DIR, aofTimes, lastIncrAof, readAofManifest } from '../../src/aofTail.js';
import { redisServerOnPath } from '../../src/managedRedis.js';
import { describeCopy, parseMoment, restoreToTime } from '../../src/pointInTimeRestore.js';
import { parseInfo } from '../../src/redisInfo.js';
import type { Entry } from '../../src/store/store.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { openStore, type OpenedStore } from '../harness/app.js';
import { runCommand } from '../harness/command.js';
import { startTestRedis, type TestRedis } from '../harness/redisServer.js';
import { until } from '../harness/until.js';

const PREFIX = 'pitr';
const PARTITIONS = 2;
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

async function redisOn(dir?: string, extra: string[] = []): Promise<TestRedis> {
  const server = await startTestRedis(extra, dir === undefined ? {} : { dir });
  cleanups.push(() => server.stop());
  return server;
}

async function open(url: string): Promise<OpenedStore> {
  const o = await openStore(url, PREFIX, PARTITIONS);
  cleanups.push(async () => o.redis.disconnect());
  return o;
}

const tempDir = (name: string) => {
  const dir = mkdtempSync(join(tmpdir(), `kvql-${name}-`));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

const second = () => Math.floor(Date.now() / 1000);
/** Waits until the clock is into the second after `s`, and a little more. */
async function pastSecond(s: number): Promise<void> {
  while (second() <= s) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 30));
}

/** A copy of the running Redis's appendonlydir/ into a new backup directory (no rewrite runs in these tests). */
function copyOf(server: TestRedis): string {
  const backup = tempDir('pitr-backup');
  cpSync(join(server.dir, AOF_DIR), join(backup, AOF_DIR), { recursive: true });
  return backup;
}

async function expectHolds(o: OpenedStore, held: Map<string, Entry>, absent: string[]): Promise<void> {
  const keys = [...held.keys()];
  expect(await o.store.getMany(keys)).toEqual(keys.map((k) => held.get(k)));
  expect(await o.store.getMany(absent)).toEqual(absent.map(() => null));
  expect((await verifyKeyspace(o.redis, { prefix: PREFIX, partitions: PARTITIONS })).problems).toEqual([]);
}

const persistence = async (redis: Redis) => parseInfo(await redis.info('persistence'));
const quiet = () => {};

describe('parseMoment', () => {
  it('takes ISO 8601 with a zone, or Unix seconds, and refuses a time without a zone', () => {
    expect(parseMoment('2026-11-28T13:05:00Z').toISOString()).toBe('2026-11-28T13:05:00.000Z');
    expect(parseMoment('2026-11-28T14:05:00+01:00').toISOString()).toBe('2026-11-28T13:05:00.000Z');
    expect(parseMoment('1795870000').toISOString()).toBe(new Date(1795870000 * 1000).toISOString());
    expect(() => parseMoment('2026-11-28T13:05:00')).toThrow(/with its zone/);
    expect(() => parseMoment('yesterday')).toThrow(/not a moment/);
    expect(() => parseMoment('2026-13-45T13:05:00Z')).toThrow(/not a valid date/);
  });
});

describe.skipIf(!redisServerOnPath())('restore-to-time: a copy of the AOF cut back to a second', () => {
  it('holds every write of that second and before, and none after, as whole scripts', async () => {
    const server = await redisOn();
    const o = await open(server.url);
    // The first writes: single puts and a batch over both partitions.
    const early = new Map<string, Entry>();
    for (let i = 0; i < 5; i++) early.set(`early:${i}`, await o.store.put({ key: `early:${i}`, value: `early ${i}` }));
    for (const e of await o.store.batchPut(Array.from({ length: 20 }, (_, i) => ({ key: `early:b${i}`, value: `batch ${i}` })))) early.set(e.key, e);
    // The second of the last of them (or later): the moment to go back to.
    const first = second();
    // Later seconds: a new key, a delete and an overwrite of the first second's keys.
    await pastSecond(first);
    const late = await o.store.put({ key: 'late:0', value: 'late' });
    await o.store.delete('early:0');
    const beforeLast = second();
    const overwritten = await o.store.put({ key: 'early:1', value: 'changed' });
    const afterLast = second();
    const backup = copyOf(server);

    // What the copy covers (--show): from its base to the second of its last write.
    const covers = await describeCopy(backup);
    expect(covers.baseAt.getTime()).toBeLessThanOrEqual(first * 1000);
    expect(covers.lastWriteAt!.getTime()).toBeGreaterThanOrEqual(beforeLast * 1000);
    expect(covers.lastWriteAt!.getTime()).toBeLessThanOrEqual(afterLast * 1000);
    expect(covers.untimedWrites).toBe(false);
    const shown = await runCommand('src/pointInTimeRestoreCli.ts', [backup, '--show'], {});
    expect(shown.code, shown.out).toBe(0);
    expect(shown.out).toContain(`can be restored to any second from ${covers.baseAt.toISOString()} (its base) to ${covers.lastWriteAt!.toISOString()} (its last write)`);
    const usage = await runCommand('src/pointInTimeRestoreCli.ts', [backup, tempDir('pitr-target'), '2026-11-28T13:05:00'], {});
    expect(usage.code, usage.out).toBe(2);
    expect(usage.out).toMatch(/with its zone/);

    // Cut back to the first second.
    const target = tempDir('pitr-target');
    const restored = await restoreToTime(backup, target, new Date(first * 1000 + 999), quiet);
    expect(restored.at.getTime()).toBe(first * 1000);
    expect(restored.baseAt.getTime()).toBeLessThanOrEqual(first * 1000);
    const then = await open((await redisOn(target)).url);
    await expectHolds(then, early, ['late:0']);

    // Cut at the copy's end: everything.
    const target2 = tempDir('pitr-target');
    await restoreToTime(backup, target2, new Date(), quiet);
    const now = await open((await redisOn(target2)).url);
    const all = new Map(early);
    all.delete('early:0');
    all.set('early:1', overwritten);
    all.set('late:0', late);
    await expectHolds(now, all, ['early:0']);
  });

  it('cuts a copy of several incremental files (taken while a rewrite ran) in the right one, and empties the ones after it', async () => {
    const server = await redisOn();
    const o = await open(server.url);
    const put = async (key: string) => new Map([[key, await o.store.put({ key, value: key })]]);
    const a = await put('a');
    const sa = second();
    await pastSecond(sa);
    const b = await put('b');
    const sb = second();
    // A rewrite whose child is slowed (300 ms per key it writes): the writes after its start go
    // into a second incremental file, and the copy holds both.
    await o.redis.config('SET', 'rdb-key-save-delay', '300000');
    await o.redis.bgrewriteaof();
    await o.redis.config('SET', 'rdb-key-save-delay', '0');
    // Most often still in b's second: then the new file begins with it, without a #TS: of its
    // own (Redis writes one only before a second's first write), and it belongs to that second.
    const b2 = await put('b2');
    const inB = second() === sb;
    await pastSecond(sb);
    const c = await put('c');
    const backup = copyOf(server);
    expect((await persistence(o.redis)).aof_rewrite_in_progress).toBe('1');
    const incr = readAofManifest(backup)!.files.filter((f) => f.type === 'i');
    expect(incr).toHaveLength(2);
    expect(aofTimes(join(backup, AOF_DIR, incr[1]!.name)).untimed).toBe(inB);
    // Untimed writes at the start of a later file are placed (after the file before's last #TS:).
    expect((await describeCopy(backup)).untimedWrites).toBe(false);

    // In the first file (redis-check-aof --truncate-to-timestamp refuses: not the last file)...
    const toA = tempDir('pitr-multi');
    await restoreToTime(backup, toA, new Date(sa * 1000), quiet);
    expect(statSync(join(toA, AOF_DIR, incr[1]!.name)).size).toBe(0);
    await expectHolds(await open((await redisOn(toA)).url), a, ['b', 'b2', 'c']);
    // ...at its end (redis-check-aof gives up on the second file, which has nothing before it)...
    const toB = tempDir('pitr-multi');
    await restoreToTime(backup, toB, new Date(sb * 1000), quiet);
    await expectHolds(await open((await redisOn(toB)).url), new Map([...a, ...b, ...(inB ? b2 : [])]), inB ? ['c'] : ['b2', 'c']);
    // ...and in the second.
    const toC = tempDir('pitr-multi');
    await restoreToTime(backup, toC, new Date(), quiet);
    await expectHolds(await open((await redisOn(toC)).url), new Map([...a, ...b, ...b2, ...c]), []);
  });

  it('before the copy\'s base: refused, with the moment the copy begins; between the base and the next write: the base', async () => {
    const server = await redisOn();
    const o = await open(server.url);
    const before = await o.store.put({ key: 'before', value: 'b' });
    await pastSecond(second());
    const beforeRewrite = second();
    await pastSecond(beforeRewrite);
    // A rewrite: the base now holds `before`, and the history of its writes is gone.
    await o.redis.bgrewriteaof();
    await until(10_000, 'the rewrite', async () => {
      const p = await persistence(o.redis);
      return p.aof_rewrite_in_progress === '0' && p.aof_rewrite_scheduled === '0' ? true : undefined;
    });
    const rewritten = second();
    // With nothing written since the rewrite, a moment before it is refused all the same.
    const bare = tempDir('pitr-target');
    await expect(restoreToTime(copyOf(server), bare, new Date(beforeRewrite * 1000), quiet)).rejects.toThrow(/is before what the copy holds/);
    expect(existsSync(join(bare, AOF_DIR))).toBe(false);
    await pastSecond(rewritten);
    await o.store.put({ key: 'after', value: 'a' });
    const backup = copyOf(server);

    const target = tempDir('pitr-target');
    await expect(restoreToTime(backup, target, new Date(beforeRewrite * 1000), quiet)).rejects.toThrow(/is before what the copy holds: this copy begins at .*an older copy/);
    expect(existsSync(join(target, AOF_DIR)), 'nothing is left behind').toBe(false);

    const restored = await restoreToTime(backup, target, new Date(rewritten * 1000), quiet);
    expect(restored.keys).toBeGreaterThan(0);
    const then = await open((await redisOn(target)).url);
    await expectHolds(then, new Map([['before', before]]), ['after']);
  });

  it('cuts a torn tail off the copy (a write being appended as it was taken, never acknowledged) before it cuts at the moment', async () => {
    const server = await redisOn();
    const o = await open(server.url);
    const held = new Map([['k', await o.store.put({ key: 'k', value: 'v' })]]);
    const backup = copyOf(server);
    appendFileSync(lastIncrAof(backup)!, '*1\r\n$5\r\nMULTI\r\n*4\r\n$4\r\nHSET\r\n$3\r\nabc');
    const target = tempDir('pitr-target');
    await restoreToTime(backup, target, new Date(), quiet);
    await expectHolds(await open((await redisOn(target)).url), held, []);
  });

  it('refuses to place a moment among writes appended before aof-timestamp-enabled was on, and cuts after them', async () => {
    const server = await redisOn(undefined, ['--aof-timestamp-enabled', 'no']);
    const o = await open(server.url);
    const untimed = await o.store.put({ key: 'untimed', value: 'u' });
    await pastSecond(second());
    const between = second();
    await pastSecond(between);
    await o.redis.config('SET', 'aof-timestamp-enabled', 'yes');
    const timed = await o.store.put({ key: 'timed', value: 't' });
    const backup = copyOf(server);
    expect((await describeCopy(backup)).untimedWrites).toBe(true);

    const target = tempDir('pitr-target');
    await expect(restoreToTime(backup, target, new Date(between * 1000), quiet)).rejects.toThrow(/holds writes without a time/);
    expect(existsSync(join(target, AOF_DIR))).toBe(false);
    await restoreToTime(backup, target, new Date(), quiet);
    await expectHolds(await open((await redisOn(target)).url), new Map([['untimed', untimed], ['timed', timed]]), []);
  });

  it('refuses a data directory that holds an AOF or a dump.rdb, a copy without one, and a moment in the future, changing nothing', async () => {
    const server = await redisOn();
    const o = await open(server.url);
    await o.store.put({ key: 'k', value: 'v' });
    const backup = copyOf(server);

    const occupied = tempDir('pitr-target');
    mkdirSync(join(occupied, AOF_DIR));
    await expect(restoreToTime(backup, occupied, new Date(), quiet)).rejects.toThrow(/exists: Redis would start from it/);
    expect(readdirSync(join(occupied, AOF_DIR))).toEqual([]);

    const withRdb = tempDir('pitr-target');
    cpSync(join(backup, AOF_DIR, 'appendonly.aof.manifest'), join(withRdb, 'dump.rdb'));
    await expect(restoreToTime(backup, withRdb, new Date(), quiet)).rejects.toThrow(/dump\.rdb exists/);
    expect(existsSync(join(withRdb, AOF_DIR))).toBe(false);

    const empty = tempDir('pitr-target');
    await expect(restoreToTime(tempDir('pitr-empty'), empty, new Date(), quiet)).rejects.toThrow(/holds no AOF manifest/);
    await expect(restoreToTime(backup, empty, new Date(Date.now() + 60_000), quiet)).rejects.toThrow(/in the future/);
    expect(existsSync(join(empty, AOF_DIR))).toBe(false);
  });
});
