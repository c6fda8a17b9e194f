// A torn AOF tail with a real redis-server and kvql's own scripts: a batchPut over several
// partitions is cut off the end of the append-only file, as a crash of the machine would, at a
// command boundary inside its MULTI ... EXEC and inside one of its commands. Shows what Redis
// 7.0 does by itself, why kvql cuts a torn tail before Redis starts (src/aofTail.ts), and that
// the managed Redis does so.
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkAofTail, lastIncrAof, repairTornAofTail } from '../../src/aofTail.js';
import { startManagedRedis, type ManagedRedis } from '../../src/managedRedis.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { parseCommands, readRegion, transactions } from '../harness/aof.js';
import { openStore, type OpenedStore } from '../harness/app.js';
import { freePort, startTestRedis, type TestRedis } from '../harness/redisServer.js';

const PARTITIONS = 4;
const PREFIX = 'torn';
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

type Opened = OpenedStore;
const open = (url: string): Promise<Opened> => openStore(url, PREFIX, PARTITIONS);

async function testRedis(): Promise<{ server: TestRedis; log: () => string }> {
  const dir = mkdtempSync(join(tmpdir(), 'kvql-torn-log-'));
  const logFile = join(dir, 'redis.log');
  const server = await startTestRedis(['--logfile', logFile]);
  cleanups.push(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, log: () => readFileSync(logFile, 'utf8') };
}

const batchKeys = Array.from({ length: 8 }, (_, i) => `batch:${i}`);

/**
 * Acknowledged puts, then a batchPut whose MULTI ... EXEC block is cut off the file's end at
 * `where`: the end of its second command (a command boundary inside the block) or the middle of
 * its fourth. Redis is killed (kill -9) before the cut. Returns the size before the batch.
 */
async function tearBatch(dataDir: string, o: Opened, kill: () => Promise<void>, where: 'boundary' | 'inside'): Promise<number> {
  for (let i = 0; i < 10; i++) await o.store.put({ key: `before:${i}`, value: `v${i}` });
  const file = lastIncrAof(dataDir)!;
  const noted = statSync(file).size;
  await o.store.batchPut(batchKeys.map((key) => ({ key, value: 'torn away' })));
  const size = statSync(file).size;
  o.redis.disconnect();
  await kill();
  const { complete } = transactions(parseCommands(readRegion(file, noted, size), noted).commands);
  expect(complete).toHaveLength(1);
  const block = complete[0]!;
  expect(block.commands[0]!.args).toEqual(['MULTI']);
  expect(block.commands.at(-1)!.args).toEqual(['EXEC']);
  const cut = where === 'boundary' ? block.commands[1]!.end : block.commands[3]!.start + 5;
  truncateSync(file, cut);
  return noted;
}

async function expectWhole(o: Opened, present: string[], absent: string[]): Promise<void> {
  const got = await o.store.getMany([...present, ...absent]);
  expect(got.slice(0, present.length).every((e) => e !== null), 'present').toBe(true);
  expect(got.slice(present.length), 'absent').toEqual(absent.map(() => null));
  const report = await verifyKeyspace(o.redis, { prefix: PREFIX, partitions: PARTITIONS });
  expect(report.problems).toEqual([]);
}

describe('a batchPut torn off the end of the AOF', () => {
  it('cut at a command boundary inside its MULTI: Redis reverts the whole block, now and at later restarts', async () => {
    const { server, log } = await testRedis();
    await tearBatch(server.dir, await open(server.url), () => server.kill9(), 'boundary');
    await server.restart();
    expect(log()).toMatch(/Revert incomplete MULTI\/EXEC transaction/);
    let o = await open(server.url);
    const before = Array.from({ length: 10 }, (_, i) => `before:${i}`);
    await expectWhole(o, before, batchKeys);
    // Later writes and another crash: still whole.
    await o.store.put({ key: 'after', value: 'x' });
    o.redis.disconnect();
    await server.kill9();
    await server.restart();
    o = await open(server.url);
    await expectWhole(o, [...before, 'after'], batchKeys);
    o.redis.disconnect();
  });

  it('cut inside a command: Redis 7.0 alone keeps the block open and runs half of it at the next restart (why src/aofTail.ts exists)', async () => {
    const { server, log } = await testRedis();
    await tearBatch(server.dir, await open(server.url), () => server.kill9(), 'inside');
    await server.restart();
    expect(log()).toMatch(/loaded anyway because aof-load-truncated is enabled/);
    let o = await open(server.url);
    // Right after this load all is well...
    await expectWhole(o, ['before:0'], batchKeys);
    // ...but Redis cut the file back only to the last whole command: MULTI and part of the
    // batch are still at its end, and the next write is appended after them.
    expect(checkAofTail(server.dir).state, 'Redis no longer leaves an open MULTI: src/aofTail.ts may be unneeded').toBe('torn');
    await o.store.put({ key: 'after', value: 'x' });
    o.redis.disconnect();
    await server.kill9();
    await server.restart();
    o = await open(server.url);
    // The torn batch's first commands ran with the next write's transaction: half a script.
    const report = await verifyKeyspace(o.redis, { prefix: PREFIX, partitions: PARTITIONS });
    expect(report.ok).toBe(false);
    expect(report.problems.some((p) => p.key === batchKeys[0])).toBe(true);
    o.redis.disconnect();
  });

  it('cut inside a command, with the tail cut before Redis starts: whole, now and at later restarts', async () => {
    const { server, log } = await testRedis();
    const noted = await tearBatch(server.dir, await open(server.url), () => server.kill9(), 'inside');
    const repaired = repairTornAofTail(server.dir);
    expect(repaired).toMatchObject({ state: 'torn', validUpTo: noted });
    expect(repaired.truncated).toBeGreaterThan(0);
    await server.restart();
    expect(log()).not.toMatch(/aof-load-truncated|Revert incomplete/);
    let o = await open(server.url);
    const before = Array.from({ length: 10 }, (_, i) => `before:${i}`);
    await expectWhole(o, before, batchKeys);
    await o.store.put({ key: 'after', value: 'x' });
    o.redis.disconnect();
    await server.kill9();
    expect(repairTornAofTail(server.dir)).toMatchObject({ state: 'ok', truncated: 0 });
    await server.restart();
    o = await open(server.url);
    await expectWhole(o, [...before, 'after'], batchKeys);
    o.redis.disconnect();
  });

  it('the managed Redis cuts a torn tail before it starts redis-server', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'kvql-torn-managed-'));
    const port = await freePort();
    const messages: string[] = [];
    const log = (m: string) => messages.push(m);
    let managed: ManagedRedis | undefined = await startManagedRedis({ dataDir, port, log });
    cleanups.push(async () => {
      await managed?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    });
    const first = managed;
    const noted = await tearBatch(dataDir, await open(first.url), async () => {
      const pid = first.pid()!;
      process.kill(pid, 'SIGKILL');
      await first.stop(); // no restart by the first instance: this test starts the next itself
    }, 'inside');
    managed = await startManagedRedis({ dataDir, port, log });
    expect(messages.join('\n')).toMatch(/cut a torn tail of \d+ bytes .*inside the transaction \(MULTI\)/);
    expect(statSync(lastIncrAof(dataDir)!).size).toBeGreaterThanOrEqual(noted);
    const o = await open(managed.url);
    await expectWhole(o, ['before:9'], batchKeys);
    o.redis.disconnect();
  });
});
