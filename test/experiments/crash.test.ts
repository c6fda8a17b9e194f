// The crash experiment's short form (the full run is `npm run crash-test`): a few crashes of each
// kind (kill -9 of Redis, kill -9 of the API process, a torn AOF tail) under concurrent writers,
// and nothing promised may be broken afterwards. Runs in the p1 project only.
import { describe, expect, it } from 'vitest';
import { formatSummary, runCrashExperiment } from './crash.js';

describe('the crash experiment, short form', () => {
  it('loses no acknowledged write, applies no batch in part, and keeps the feed and the data in step', async () => {
    const lines: string[] = [];
    const s = await runCrashExperiment({ rounds: 3, partitions: 4, timeLimitMs: 100_000, log: (l) => lines.push(l) });
    const printed = `${formatSummary(s)}\n${lines.join('\n')}`;

    // It really crashed, and really checked.
    expect(s.aborted, printed).toBeNull();
    expect(s.rounds, printed).toEqual({ redis: 3, api: 3, torn: 3 });
    expect(s.crashes).toBe(9);
    expect(s.perRound.ackedWritesChecked, printed).toBeGreaterThan(100);
    expect(s.final.ackedWritesChecked).toBeGreaterThanOrEqual(s.perRound.ackedWritesChecked);
    expect(s.perRound.batchesChecked).toBeGreaterThan(10);
    expect(s.attempts.unknown, 'writes cut off by the crashes').toBeGreaterThan(0);
    expect(s.api.restarts).toBe(3);
    expect(s.api.firstWriteAfterRestartOk).toBe(3);

    // Nothing promised was broken, after each crash and at the end.
    for (const f of [s.perRound, s.final]) {
      expect(f.ackedWritesLost, printed).toBe(0);
      expect(f.unexplainedStates, printed).toBe(0);
      expect(f.batchesPartial, printed).toBe(0);
      expect(f.writesWithoutEvent, printed).toBe(0);
      expect(f.eventsWithoutWrite, printed).toBe(0);
      expect(f.verifyProblems, printed).toBe(0);
    }
    expect(s.torn.predictionMismatches, printed).toBe(0);
    expect(s.restartFailures).toBe(0);
    expect(s.failures, printed).toEqual([]);
    expect(s.ok).toBe(true);
  }, 150_000);
});
