// Failover, short form (the full run is `npm run failover-test`): a Sentinel deployment (a
// primary, two replicas, three sentinels, down-after 1000 ms) on loopback. First the harness
// alone, with ioredis through Sentinel: kill -9 of the primary, a new primary, the old one back
// as a replica of it. Then kvql's API through Sentinel (KV_MIN_REPLICAS=1) under concurrent
// writers: one kill -9 of the primary, and no acknowledged write may be lost; a change-feed
// subscriber open across it receives every acknowledged write to its keys.
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { startSentinelDeployment } from '../harness/sentinel.js';
import { formatSummary, runFailoverExperiment } from './failover.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('failover through Redis Sentinel', () => {
  it('the harness: a kill -9 of the primary promotes a replica, and the old primary rejoins as its replica', async () => {
    const dep = await startSentinelDeployment({ downAfterMs: 1000, failoverTimeoutMs: 10_000 });
    const client = new Redis({ sentinels: dep.sentinelAddresses, name: dep.masterName, maxRetriesPerRequest: 1, sentinelRetryStrategy: () => 100 });
    client.on('error', () => {});
    try {
      expect(dep.sentinels).toMatch(/^127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+$/);
      const first = await dep.currentPrimary();
      expect(first.port).toBe(dep.nodes[0]!.port);
      // Acknowledged by a replica (WAIT), so it must survive the failover.
      await client.set('before', '1');
      expect(await client.wait(1, 2000)).toBeGreaterThanOrEqual(1);

      const old = dep.node(first.port);
      await old.kill9();
      const { port, ms } = await dep.waitForFailover(first.port, 20_000);
      expect(port).not.toBe(first.port);
      expect(ms).toBeLessThan(20_000);
      expect((await dep.replication(port)).role).toBe('master');

      // ioredis follows the sentinels to the new primary.
      let after: string | null = null;
      for (let i = 0; i < 100 && after === null; i++) {
        after = await client.set('after', '2').catch(() => null);
        if (after === null) await sleep(100);
      }
      expect(after).toBe('OK');
      // Acknowledged by a replica too: on a starved machine the sentinels may fail over once more.
      expect(await client.wait(1, 2000)).toBeGreaterThanOrEqual(1);
      expect(await client.get('before')).toBe('1');

      // Restarted from its own config it is a primary, until the sentinels demote it.
      await old.restart();
      const rejoin = await dep.waitForRejoin(old, 40_000);
      // It follows the primary the sentinels name now: usually `port`, but with CI's load a
      // starved new primary can itself be failed over (seen once: a second promotion), and
      // following that one is the right behaviour too.
      const now = await dep.currentPrimary();
      expect(rejoin.primaryPort).toBe(now.port);
      expect(now.port).not.toBe(old.port);
      expect(rejoin.info.role).toBe('slave');
      expect(rejoin.info.linkUp).toBe(true);
      expect(rejoin.info.masterReplid).toBe((await dep.replication(now.port)).masterReplid);
      // In the new history: it has the write made while it was dead, and takes no writes.
      await client.wait(2, 2000);
      expect(await dep.direct(old.port, (c) => c.get('after'))).toBe('2');
      await expect(dep.direct(old.port, (c) => c.set('x', '1'))).rejects.toThrow(/READONLY/);
    } finally {
      client.disconnect();
      await dep.stop();
    }
  }, 60_000);

  it('the API: loses no acknowledged write over a kill -9 of the primary, resumes writes, and the old primary rejoins', async () => {
    const lines: string[] = [];
    const s = await runFailoverExperiment({
      rounds: 1,
      downAfterMs: 1000,
      failoverTimeoutMs: 10_000,
      pauseRound: false,
      replicaPause: false,
      writersPerKind: 1,
      timeLimitMs: 50_000,
      log: (l) => lines.push(l),
    });
    const printed = `${formatSummary(s)}\n${lines.join('\n')}`;
    expect(s.aborted, printed).toBeNull();
    expect(s.killRounds, printed).toHaveLength(1);
    const round = s.killRounds[0]!;
    // Measured: a new primary in ~2.3 s and writes through the API after ~2.6 s (down-after
    // 1000 ms); the bound leaves a wide margin for a loaded machine.
    expect(round.writesResumedMs, printed).not.toBeNull();
    expect(round.writesResumedMs!, printed).toBeLessThan(30_000);
    expect(round.rejoinMs, printed).not.toBeNull();
    expect(round.newHistoryFound, printed).toBe(round.newHistoryChecked);
    expect(s.ackedWritesChecked, printed).toBeGreaterThan(50);
    expect(s.ackedWritesLost, printed).toBe(0);
    expect(s.ackedWithoutEvent, printed).toBe(0);
    // A change-feed subscriber open across the failover got every acknowledged write to its keys.
    expect(s.subscriber!.acknowledged, printed).toBeGreaterThan(10);
    expect(s.subscriber!.missing, printed).toBe(0);
    expect(s.failures, printed).toEqual([]);
    expect(s.ok, printed).toBe(true);
  }, 60_000);
});
