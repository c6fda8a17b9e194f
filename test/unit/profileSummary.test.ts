// bench:profile's summary of a .cpuprofile (bench/profile.ts summarize): self time per request
// by package, file and function, idle apart.
import { expect, it } from 'vitest';
import { summarize, type CpuProfile } from '../../bench/profile.js';

const REPO_URL = new URL('../../', import.meta.url).href;

it('charges each sample to its frame, groups frames by where their code lives, and leaves idle apart', () => {
  const frame = (id: number, functionName: string, url: string, lineNumber = 0) => ({ id, callFrame: { functionName, url, lineNumber } });
  const profile: CpuProfile = {
    nodes: [
      frame(1, '(root)', ''),
      frame(2, '(idle)', ''),
      frame(3, 'serve', `${REPO_URL}src/fastLane.ts`, 9),
      frame(4, 'executeField', `${REPO_URL}node_modules/@graphql-tools/executor/esm/execution/execute.js`, 332),
      // A package nested in another's node_modules is itself.
      frame(5, 'getArgumentValues', `${REPO_URL}node_modules/@graphql-tools/executor/node_modules/@graphql-tools/utils/esm/x.js`, 81),
      frame(6, 'writev', ''),
      frame(7, 'emit', 'node:events', 470),
    ],
    samples: [2, 3, 3, 4, 5, 6, 7, 2, 1],
    timeDeltas: [1000, 100, 100, 40, 20, 60, 30, 500, 0],
  };
  const s = summarize(profile, 2);
  expect(s.idleUs).toBe(750);
  expect(s.busyUs).toBe(175);
  expect(s.groups).toEqual([
    { name: 'src/fastLane.ts', us: 100 },
    { name: 'writev', us: 30 },
    { name: '@graphql-tools/executor', us: 20 },
    { name: 'node (internals)', us: 15 },
    { name: '@graphql-tools/utils', us: 10 },
  ]);
  expect(s.functions[0]).toEqual({ name: 'serve src/fastLane.ts:10', us: 100 });
  expect(s.functions.map((f) => f.name)).toContain('getArgumentValues @graphql-tools/utils:82');
});
