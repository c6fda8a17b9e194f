// The torn-tail check and repair of the AOF (src/aofTail.ts) on files made by hand: every byte at
// which a crash can cut a write, transactions, annotations, several files, and corruption that
// is not a torn tail (left alone).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { checkAofTail, lastIncrAof, readAofManifest, repairTornAofTail } from '../../src/aofTail.js';
import { packEntry } from '../../src/store/keys.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** One command in RESP, as Redis writes it to the AOF. */
function resp(...args: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** What put.lua's effects look like in the AOF: one MULTI ... EXEC block. */
function script(key: string, value: string | Buffer): Buffer {
  return Buffer.concat([
    resp('MULTI'),
    resp('HSET', '{kv:0}:b:0', key, Buffer.concat([packEntry(1, 1, 1, ''), Buffer.isBuffer(value) ? value : Buffer.from(value)])),
    resp('ZADD', '{kv:0}:i', '0', key),
    resp('INCR', '{kv:0}:q'),
    resp('XADD', '{kv:0}:s', '1-1', 't', 'P', 'k', key, 'n', '1', 'v', value, 'c', '1', 'u', '1', 'q', '1'),
    resp('EXEC'),
  ]);
}

/** A data directory whose AOF is `files` (name -> content), listed in the manifest in order. */
function dataDir(files: [name: string, type: 'b' | 'i', content: Buffer][]): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvql-aoftail-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'appendonlydir'));
  const manifest = files.map(([name, type], i) => `file ${name} seq ${i + 1} type ${type}\n`).join('');
  writeFileSync(join(dir, 'appendonlydir', 'appendonly.aof.manifest'), manifest);
  for (const [name, , content] of files) writeFileSync(join(dir, 'appendonlydir', name), content);
  return dir;
}

const INCR = 'appendonly.aof.1.incr.aof';
const before = Buffer.concat([resp('SELECT', '0'), script('a', 'first'), resp('SET', 'plain', 'x')]);

describe('checkAofTail and repairTornAofTail', () => {
  it('has nothing to do without an AOF, or with a complete one', () => {
    const empty = mkdtempSync(join(tmpdir(), 'kvql-aoftail-'));
    dirs.push(empty);
    expect(checkAofTail(empty).state).toBe('none');
    expect(repairTornAofTail(empty).truncated).toBe(0);

    const dir = dataDir([
      ['appendonly.aof.1.base.rdb', 'b', Buffer.from('REDIS0010 not parsed')],
      [INCR, 'i', Buffer.concat([before, script('b', 'second')])],
    ]);
    expect(lastIncrAof(dir)).toBe(join(dir, 'appendonlydir', INCR));
    const c = checkAofTail(dir);
    expect(c).toMatchObject({ state: 'ok', size: before.length + script('b', 'second').length });
    expect(c.validUpTo).toBe(c.size);
    expect(repairTornAofTail(dir).truncated).toBe(0);
    expect(statSync(join(dir, 'appendonlydir', INCR)).size).toBe(c.size);
  });

  it('cuts a write torn at any byte back to where it began, before its MULTI', () => {
    const write = script('b', 'second value');
    // Every byte at which a crash can end the file inside the write.
    for (let cut = 1; cut < write.length; cut++) {
      const dir = dataDir([[INCR, 'i', Buffer.concat([before, write.subarray(0, cut)])]]);
      const c = checkAofTail(dir);
      expect(c.state, `cut at ${cut}`).toBe('torn');
      expect(c.validUpTo, `cut at ${cut}`).toBe(before.length);
      expect(c.detail).toMatch(cut <= resp('MULTI').length - 1 ? /torn/ : /transaction \(MULTI\) that starts at byte/);
      const r = repairTornAofTail(dir);
      expect(r.truncated).toBe(cut);
      expect(readFileSync(join(dir, 'appendonlydir', INCR)).equals(before)).toBe(true);
      expect(checkAofTail(dir).state).toBe('ok');
    }
  });

  it('cuts a torn single command outside a transaction, and a torn value larger than its read window', () => {
    const single = resp('SET', 'k', 'v'.repeat(50));
    for (const cut of [1, 5, 20, single.length - 1]) {
      const dir = dataDir([[INCR, 'i', Buffer.concat([before, single.subarray(0, cut)])]]);
      expect(repairTornAofTail(dir)).toMatchObject({ state: 'torn', truncated: cut, validUpTo: before.length });
    }
    const big = script('big', Buffer.alloc(3 << 20, 'z')); // 3 MiB, past the 1 MiB window
    const whole = dataDir([[INCR, 'i', Buffer.concat([before, big])]]);
    expect(checkAofTail(whole).state).toBe('ok');
    const torn = dataDir([[INCR, 'i', Buffer.concat([before, big.subarray(0, big.length - (2 << 20))])]]);
    expect(repairTornAofTail(torn)).toMatchObject({ state: 'torn', validUpTo: before.length });
  });

  it('reads annotations, and only the last incremental file of several', () => {
    const ts = Buffer.from('#TS:1700000000\r\n');
    const dir = dataDir([
      ['appendonly.aof.1.base.aof', 'b', resp('SET', 'base', '1')],
      [INCR, 'i', Buffer.concat([before, Buffer.from('not RESP at all')])], // not the last: never read
      ['appendonly.aof.2.incr.aof', 'i', Buffer.concat([ts, before, ts, script('c', 'x').subarray(0, 30)])],
    ]);
    expect(readAofManifest(dir)!.files.map((f) => f.type)).toEqual(['b', 'i', 'i']);
    expect(lastIncrAof(dir)).toBe(join(dir, 'appendonlydir', 'appendonly.aof.2.incr.aof'));
    // The annotation before the torn write is complete, and outside any transaction: kept.
    expect(repairTornAofTail(dir)).toMatchObject({ state: 'torn', validUpTo: ts.length + before.length + ts.length });
  });

  it('leaves alone a file that is corrupt elsewhere than at its tail', () => {
    for (const [why, content] of [
      ['garbage between writes', Buffer.concat([before, Buffer.from('garbage\r\n'), script('b', 'x')])],
      ['zeros where a write was', Buffer.concat([before, Buffer.alloc(64), script('b', 'x')])],
      ['a length that lies', Buffer.concat([before, Buffer.from('*1\r\n$3\r\nSETX\r\n'), script('b', 'x')])],
      ['MULTI inside MULTI', Buffer.concat([before, resp('MULTI'), resp('SET', 'a', '1'), script('b', 'x')])],
      ['EXEC without MULTI', Buffer.concat([before, resp('EXEC'), script('b', 'x')])],
    ] as [string, Buffer][]) {
      const dir = dataDir([[INCR, 'i', content]]);
      const r = repairTornAofTail(dir);
      expect(r.state, why).toBe('corrupt');
      expect(r.truncated, why).toBe(0);
      expect(readFileSync(join(dir, 'appendonlydir', INCR)).equals(content), why).toBe(true);
    }
  });
});

describe('npm run repair-aof (src/aofRepairCli.ts)', () => {
  const REPO = fileURLToPath(new URL('../../', import.meta.url));
  const run = (...args: string[]) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/aofRepairCli.ts', ...args], { cwd: REPO, encoding: 'utf8', timeout: 20_000 });
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  };

  it('checks without cutting, cuts a torn tail, leaves a damaged file alone, and says how it is used', () => {
    const torn = Buffer.concat([before, script('b', 'x').subarray(0, 40)]);
    const dir = dataDir([[INCR, 'i', torn]]);
    const file = join(dir, 'appendonlydir', INCR);

    const check = run(dir, '--check');
    expect(check.out).toMatch(/has a torn tail of 40 bytes .*run without --check to cut it/);
    expect(check.code).toBe(0);
    expect(statSync(file).size).toBe(torn.length);

    const cut = run(dir);
    expect(cut.out).toMatch(new RegExp(`cut 40 bytes off .*ends at byte ${before.length} with a complete write`));
    expect(cut.code).toBe(0);
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(run(dir).out).toMatch(/ends with a complete write: nothing to do/);

    const damaged = Buffer.concat([before, Buffer.from('garbage\r\n'), script('b', 'x')]);
    const bad = dataDir([[INCR, 'i', damaged]]);
    const refused = run(bad);
    expect(refused.out).toMatch(/damaged elsewhere than at its tail: .*Left as it is/);
    expect(refused.code).toBe(1);
    expect(readFileSync(join(bad, 'appendonlydir', INCR)).equals(damaged)).toBe(true);

    const usage = run();
    expect(usage.out).toMatch(/usage: npm run repair-aof -- <redis data dir/);
    expect(usage.code).toBe(2);
  }, 60_000);
});
