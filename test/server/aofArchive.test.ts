// The managed Redis's AOF archive (src/aofArchive.ts, KV_AOF_ARCHIVE_HOURS): kvql makes the
// rewrites, each after hard-linking the files it replaces into aof-archive/, so restore-to-time
// reaches a moment from before the live AOF's base. Real redis-servers from the repo's
// redis.conf, started by startManagedRedis as `npm start` starts them.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ARCHIVE_DIR, configuredPercentage, entryName, entryTime, pruneArchive, rewriteDue } from '../../src/aofArchive.js';
import { AOF_DIR, readAofManifest } from '../../src/aofTail.js';
import { REDIS_CONF, redisServerOnPath, startManagedRedis } from '../../src/managedRedis.js';
import { Metrics } from '../../src/metrics.js';
import { describeCopy, restoreToTime } from '../../src/pointInTimeRestore.js';
import { parseInfo } from '../../src/redisInfo.js';
import type { Entry } from '../../src/store/store.js';
import { openStore, type OpenedStore } from '../harness/app.js';
import { runCommand } from '../harness/command.js';
import { freePort, startTestRedis } from '../harness/redisServer.js';
import { until } from '../harness/until.js';

const PREFIX = 'archive';
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

const tempDir = (name: string) => {
  const dir = mkdtempSync(join(tmpdir(), `kvql-${name}-`));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

async function open(url: string): Promise<OpenedStore> {
  const o = await openStore(url, PREFIX, 1);
  cleanups.push(async () => o.redis.disconnect());
  return o;
}

const second = () => Math.floor(Date.now() / 1000);
/** Waits until the clock is into the second after `s`, and a little more. */
async function pastSecond(s: number): Promise<void> {
  while (second() <= s) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 30));
}

async function putAll(o: OpenedStore, tag: string, n: number): Promise<Map<string, Entry>> {
  const held = new Map<string, Entry>();
  for (let i = 0; i < n; i++) {
    const e = await o.store.put({ key: `${tag}:${i}`, value: `${tag} ${i}` });
    held.set(e.key, e);
  }
  return held;
}

async function expectHolds(dataDir: string, held: Map<string, Entry>, absent: string[]): Promise<void> {
  const server = await startTestRedis([], { dir: dataDir });
  cleanups.push(() => server.stop());
  const o = await open(server.url);
  const keys = [...held.keys()];
  expect(await o.store.getMany(keys)).toEqual(keys.map((k) => held.get(k)));
  expect(await o.store.getMany(absent)).toEqual(absent.map(() => null));
}

describe('the archive\'s parts', () => {
  it('names an entry by its moment and reads it back; other names are not its own', () => {
    const at = new Date('2026-11-28T15:13:35.123Z');
    expect(entryName(at)).toBe('20261128T151335.123Z');
    expect(entryTime(entryName(at))).toEqual(at);
    expect(entryTime('now')).toBeUndefined();
    expect(entryTime('20261328T151335.123Z')).toBeUndefined();
  });

  it('rewrites by Redis\'s own rule: grown by the percentage over the base, above the minimum size, nothing forked', () => {
    const info = { aof_enabled: '1', aof_rewrite_in_progress: '0', aof_rewrite_scheduled: '0', rdb_bgsave_in_progress: '0', aof_base_size: '1000', aof_current_size: '2000' };
    const rule = { percentage: 100, minBytes: 1500 };
    expect(rewriteDue(info, rule)).toBe(true);
    expect(rewriteDue({ ...info, aof_current_size: '1999' }, rule)).toBe(false);
    expect(rewriteDue(info, { ...rule, minBytes: 2000 })).toBe(false);
    expect(rewriteDue(info, { ...rule, percentage: 0 })).toBe(false);
    for (const busy of ['aof_rewrite_in_progress', 'aof_rewrite_scheduled', 'rdb_bgsave_in_progress']) expect(rewriteDue({ ...info, [busy]: '1' }, rule)).toBe(false);
    expect(rewriteDue({ ...info, aof_enabled: '0' }, rule)).toBe(false);
    expect(configuredPercentage(REDIS_CONF)).toBe(100);
  });

  it('prunes the entries archived before the retention, and nothing it did not name', () => {
    const archive = tempDir('prune');
    const now = new Date('2026-11-28T15:00:00.000Z');
    const names = ['2026-11-28T12:59:59.999Z', '2026-11-28T13:00:00.000Z', '2026-11-28T14:30:00.000Z'].map((t) => entryName(new Date(t)));
    for (const name of [...names, 'now']) mkdirSync(join(archive, name, AOF_DIR), { recursive: true });
    expect(pruneArchive(archive, 2 * 3_600_000, now)).toEqual([names[0]]);
    expect(readdirSync(archive).sort()).toEqual([...names.slice(1), 'now'].sort());
    expect(pruneArchive(join(archive, 'none'), 1, now)).toEqual([]);
  });
});

/** A managed Redis with the archive on, looking every 100 ms; its log lines, the store as kvql and as admin. */
async function archivingRedis(name: string) {
  const dataDir = tempDir(name);
  const said: string[] = [];
  const managed = await startManagedRedis({ dataDir, port: await freePort(), prefix: PREFIX, log: (m) => said.push(m), aofArchive: { keepMs: 3_600_000, everyMs: 100 } });
  cleanups.push(() => managed.stop());
  return { dataDir, said, managed, o: await open(managed.kvqlUrl), admin: await open(managed.url) };
}

describe.skipIf(!redisServerOnPath())('the managed Redis with KV_AOF_ARCHIVE_HOURS', () => {
  it('archives the files each rewrite replaces, so a moment before the live base is restored from the archive', async () => {
    const { dataDir, said, managed, o, admin } = await archivingRedis('archive-data');
    // Redis's own rewrites are off from its start (not only from kvql's first look, which found
    // nothing to set): one of them would delete the files unarchived.
    expect(await admin.redis.config('GET', 'auto-aof-rewrite-percentage')).toEqual(['auto-aof-rewrite-percentage', '0']);
    expect(said.filter((m) => /auto-aof-rewrite-percentage was/.test(m))).toEqual([]);

    const first = await putAll(o, 'first', 5);
    const firstAt = new Date();
    await pastSecond(second());
    const later = await putAll(o, 'later', 5);
    const baseBefore = readAofManifest(dataDir)!.files.find((f) => f.type === 'b')!.name;
    expect(existsSync(join(dataDir, ARCHIVE_DIR))).toBe(false);

    // Grown past the minimum size (lowered for the test; 64mb in redis.conf): kvql links, then rewrites.
    await admin.redis.config('SET', 'auto-aof-rewrite-min-size', '0');
    const archive = join(dataDir, ARCHIVE_DIR);
    await until(20_000, 'an archived rewrite', async () => {
      const info = parseInfo(await admin.redis.info('persistence'));
      const base = readAofManifest(dataDir)!.files.find((f) => f.type === 'b')!.name;
      return existsSync(archive) && readdirSync(archive).length === 1 && base !== baseBefore && info.aof_rewrite_in_progress === '0' ? true : undefined;
    });
    await admin.redis.config('SET', 'auto-aof-rewrite-min-size', '64mb');
    const [entry] = readdirSync(archive);
    expect(entryTime(entry!)).toBeDefined();
    expect(said.some((m) => m.includes(`AOF archive: ${join(archive, entry!)} holds the AOF before this rewrite`))).toBe(true);
    // The archived copy holds the replaced base, which Redis itself has deleted.
    expect(readAofManifest(join(archive, entry!))!.files.find((f) => f.type === 'b')!.name).toBe(baseBefore);
    await until(5000, 'Redis deleting the replaced files', () => (existsSync(join(dataDir, AOF_DIR, baseBefore)) ? undefined : true));
    expect(existsSync(join(archive, entry!, AOF_DIR, baseBefore))).toBe(true);
    // Its metrics: the entry, the bytes it keeps on disk, and a recent look.
    const metrics = new Metrics({ processMetrics: false });
    metrics.observeArchive(managed.archiver!);
    const text = await metrics.render();
    const bytes = readdirSync(join(archive, entry!, AOF_DIR)).reduce((n, f) => n + statSync(join(archive, entry!, AOF_DIR, f)).size, 0);
    expect(bytes).toBeGreaterThan(0);
    expect(text).toMatch(/^kvql_aof_archive_entries 1$/m);
    expect(text).toMatch(new RegExp(`^kvql_aof_archive_bytes ${bytes}$`, 'm'));
    const lastLook = Number(/^kvql_aof_archive_last_look_timestamp_seconds (\S+)$/m.exec(text)?.[1]);
    expect(Date.now() / 1000 - lastLook).toBeLessThan(10);

    // The data directory as kvql runs on it holds both its live files and its archive: a
    // restore (into another directory) or --show given it reads them together.
    const viaData = tempDir('archive-via-data');
    await restoreToTime(dataDir, viaData, firstAt, () => {});
    await expectHolds(viaData, first, [...later.keys()]);
    const shownData = await runCommand('src/pointInTimeRestoreCli.ts', [dataDir, '--show'], {});
    expect(shownData.code, shownData.out).toBe(0);
    expect(shownData.out.trim().split('\n').map((l) => l.split(' can be')[0])).toEqual([`kvql restore-to-time: ${join(archive, entry!)}`, `kvql restore-to-time: ${dataDir}`]);

    // The live files alone begin at the rewrite, after the first writes: the moment is lost to them...
    // (In a later second than the rewrite: writes in its second carry no time in the new file.)
    await pastSecond(second());
    const after = await putAll(o, 'after', 3);
    const live = join(archive, 'now');
    cpSync(join(dataDir, AOF_DIR), join(live, AOF_DIR), { recursive: true });
    expect((await describeCopy(live)).baseAt.getTime()).toBeGreaterThan(firstAt.getTime());
    await expect(restoreToTime(live, tempDir('archive-lost'), firstAt, () => {})).rejects.toThrow(/before what the copy holds/);
    // ...and the archive, with the live copy put in it, has it: the copy holding the moment is chosen.
    const target = tempDir('archive-restore');
    const told: string[] = [];
    await restoreToTime(archive, target, firstAt, (m) => told.push(m));
    expect(told[0]).toContain(`of 2 copies, ${join(archive, entry!)}`);
    await expectHolds(target, first, [...later.keys(), ...after.keys()]);
    const now = tempDir('archive-now');
    await restoreToTime(archive, now, new Date(), () => {});
    await expectHolds(now, new Map([...first, ...later, ...after]), []);
    // A moment before the archive's earliest copy is refused, naming where it begins.
    await expect(restoreToTime(archive, tempDir('archive-early'), new Date(Date.now() - 3_600_000), () => {})).rejects.toThrow(/before what the archive holds: its earliest copy begins at/);
    // --show lists each copy's span, the earliest first.
    const shown = await runCommand('src/pointInTimeRestoreCli.ts', [archive, '--show'], {});
    expect(shown.code, shown.out).toBe(0);
    expect(shown.out.trim().split('\n').map((l) => l.split(' can be')[0])).toEqual([`kvql restore-to-time: ${join(archive, entry!)}`, `kvql restore-to-time: ${live}`]);

    // An operator turning Redis's own rewrites on (or a tool putting back what it read) is
    // undone at the next look, the value taken as kvql's rule.
    await admin.redis.config('SET', 'auto-aof-rewrite-percentage', '50');
    await managed.archiver!.pass();
    expect(await admin.redis.config('GET', 'auto-aof-rewrite-percentage')).toEqual(['auto-aof-rewrite-percentage', '0']);
    expect(said.some((m) => /auto-aof-rewrite-percentage was 50/.test(m))).toBe(true);
  });

  it('archives a rewrite it did not start (a BGREWRITEAOF by hand) while it runs', async () => {
    const { dataDir, said, admin, o } = await archivingRedis('archive-hand');
    const first = await putAll(o, 'hand', 5);
    const firstAt = new Date();
    await pastSecond(second());
    const baseBefore = readAofManifest(dataDir)!.files.find((f) => f.type === 'b')!.name;
    // The rewrite's child slowed down (100 ms per key it writes), so that it runs across looks.
    await admin.redis.config('SET', 'rdb-key-save-delay', '100000');
    await admin.redis.bgrewriteaof();
    await admin.redis.config('SET', 'rdb-key-save-delay', '0');
    const archive = join(dataDir, ARCHIVE_DIR);
    await until(5000, 'the running rewrite archived', () => (existsSync(archive) && readdirSync(archive).length === 1 ? true : undefined));
    expect(parseInfo(await admin.redis.info('persistence')).aof_rewrite_in_progress).toBe('1');
    await until(30_000, 'the rewrite done', async () => {
      const base = readAofManifest(dataDir)!.files.find((f) => f.type === 'b')!.name;
      return parseInfo(await admin.redis.info('persistence')).aof_rewrite_in_progress === '0' && base !== baseBefore ? true : undefined;
    });
    expect(said.filter((m) => m.includes('a rewrite kvql did not start'))).toHaveLength(1);
    const [entry] = readdirSync(archive);
    expect(readAofManifest(join(archive, entry!))!.files.find((f) => f.type === 'b')!.name).toBe(baseBefore);
    await pastSecond(second());
    const later = await putAll(o, 'later', 3);
    // The moment before the rewrite, from the archive (the live files begin after it).
    const target = tempDir('archive-hand-restore');
    await restoreToTime(archive, target, firstAt, () => {});
    await expectHolds(target, first, [...later.keys()]);
  });
});
