// The cluster experiment, short form (the full run is `npm run cluster-test`): each phase once,
// small. compare: a few hundred operations on a 3+3 cluster and on one Redis, identical answers
// and change events. capacity: twice one node's maxmemory (28 MiB each) loaded and read back on
// the cluster; one Redis with the same maxmemory refuses the same load. failover: kill -9 of a
// master under writers (KV_MIN_REPLICAS=1, cluster-node-timeout 2000 ms), no acknowledged write
// lost. reshard: a master added and slots moved to it under writers and readers, no acknowledged
// write lost, no stale or missing read; backups taken meanwhile restore into another cluster
// with every write acknowledged before them.
import { describe, expect, it } from 'vitest';
import { formatSummary, runClusterExperiment } from './cluster.js';

describe('kvql on a Redis Cluster', () => {
  it('answers as on one Redis, holds more than one node, survives a failover and a reshard', async () => {
    const lines: string[] = [];
    const s = await runClusterExperiment({
      timeLimitMs: 170_000,
      compare: { ops: 300, partitions: 16 },
      capacity: { maxmemoryMb: 28, factor: 2, valueBytes: 2000, batchItems: 100, partitions: 6, smallKeys: 300, pages: 30 },
      failover: { nodeTimeoutMs: 2000, beforeMs: 1500, afterMs: 1500 },
      reshard: { preloadKeys: 3000, beforeMs: 1000, afterMs: 1000 },
      log: (l) => lines.push(l),
    });
    const printed = `${formatSummary(s)}\n${lines.join('\n')}`;
    expect(s.aborted, printed).toBeNull();

    const c = s.compare!;
    expect(c.ops, printed).toBeGreaterThanOrEqual(300);
    expect(c.mismatches, printed).toBe(0);
    expect(c.documentedDifferences, printed).toBeGreaterThan(0);
    expect(c.eventsCompared, printed).toBeGreaterThan(100);
    expect(c.eventMismatchKeys, printed).toBe(0);

    const cap = s.capacity!;
    expect(cap.bytesLoaded, printed).toBeGreaterThanOrEqual(2 * 28 * 1024 * 1024);
    expect(cap.readBack.checked, printed).toBeGreaterThanOrEqual(cap.keys);
    expect(cap.readBack.missing + cap.readBack.wrong, printed).toBe(0);
    expect(cap.standalone!.capacityRefusals, printed).toBeGreaterThan(0);
    expect(cap.standalone!.readsFailed, printed).toBe(0);
    expect(cap.standalone!.rangeServed, printed).toBe(true);

    const f = s.failover!;
    expect(f.promotedMs, printed).not.toBeNull();
    expect(f.rejoinedAsReplicaOf, printed).toBe(f.promotedReplica);
    expect(f.firstAckToKilledMs, printed).not.toBeNull();
    expect(f.ackedChecked, printed).toBeGreaterThan(50);
    expect(f.ackedLost, printed).toBe(0);
    // Clients hear STORE_UNAVAILABLE (or REPLICATION_TIMEOUT) during the outage, never a masked error.
    expect(f.answers.INTERNAL_SERVER_ERROR ?? 0, printed).toBe(0);

    const r = s.reshard!;
    expect(r.newMasterSlots, printed).toBeGreaterThan(3000);
    expect(r.ackedChecked, printed).toBeGreaterThan(1000);
    expect(r.ackedLost, printed).toBe(0);
    expect(r.readsChecked, printed).toBeGreaterThan(1000);
    expect(r.staleReads, printed).toBe(0);
    expect(r.missingReads, printed).toBe(0);
    expect(r.errors.INTERNAL_SERVER_ERROR ?? 0, printed).toBe(0);
    // Backups taken while slots moved restore whole: what was acknowledged before each began.
    const restored = r.backups.filter((b) => b.refused === null);
    expect(restored.filter((b) => b.duringRebalance).length, printed).toBeGreaterThan(0);
    for (const b of restored) {
      expect(b.ackedChecked, printed).toBeGreaterThan(1000);
      expect(b.ackedMissing, printed).toBe(0);
      expect(b.missingParts, printed).toBe(0);
      expect(b.verifyProblems, printed).toEqual([]);
    }

    expect(s.failures, printed).toEqual([]);
    expect(s.ok, printed).toBe(true);
  }, 180_000);
});
