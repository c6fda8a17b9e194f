// `npm start`'s node flags (package.json): the harness reads them from the start script, so
// that every API process the tests, benchmarks and experiments start runs as a deployment does.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { START_FLAGS, startArgs, startFlags } from '../harness/startCommand.js';

/** The new space's size after a burst of short-lived allocations, in a node run with `flags`. */
function newSpaceBytes(flags: readonly string[]): number {
  const probe = `
    let keep = [];
    for (let i = 0; i < 3e6; i++) { keep.push({ a: i, b: 'x' + i }); if (keep.length > 20000) keep = []; }
    const space = require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    console.log(space.space_size);`;
  const run = spawnSync(process.execPath, [...flags, '-e', probe], { encoding: 'utf8', timeout: 20_000 });
  expect(run.status, run.stderr).toBe(0);
  return Number(run.stdout.trim());
}

describe("npm start's node flags", () => {
  it('are read from a start script of the form node <flags> src/main.ts', () => {
    expect(startFlags('node --max-semi-space-size=64 --import tsx src/main.ts')).toEqual(['--max-semi-space-size=64', '--import', 'tsx']);
    expect(startArgs('bench/baseline.ts').at(-1)).toBe('bench/baseline.ts');
    expect(startArgs()).toEqual([...START_FLAGS, 'src/main.ts']);
  });

  it('refuse a start script of another form, naming it', () => {
    expect(() => startFlags('tsx src/main.ts')).toThrow(/start script is not .*tsx src\/main\.ts/);
    expect(() => startFlags('node --import tsx src/other.ts')).toThrow(/start script/);
    expect(() => startFlags('node --import tsx extra src/main.ts')).toThrow(/start script/);
  });

  it('are flags node accepts, and give the young generation more room than the default', () => {
    // Why the flag: less garbage-collection time per request (docs/request-path.md).
    expect(START_FLAGS).toContain('--max-semi-space-size=64');
    const withFlags = newSpaceBytes(START_FLAGS);
    const without = newSpaceBytes([]);
    expect(withFlags).toBeGreaterThan(without);
  });
});
