// The Redis Cluster test harness (test/harness/cluster.ts) itself: a 3+3 cluster from the repo's
// redis.conf and cluster.conf comes up healthy, and a Cluster client reads back what it wrote.
// Its kill -9, restart, addMaster and rebalance are proven by the cluster experiment's short
// form (test/experiments/cluster.test.ts: failover and reshard phases).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, type RedisClient } from '../../src/store/redis.js';
import { parseClusterNodes, parseInfo, startTestCluster, type TestCluster } from '../harness/cluster.js';

let cluster: TestCluster | undefined;
let client: RedisClient | undefined;

// Keys in different slots (so on different masters) and a few sharing one slot.
const KEYS = [...Array.from({ length: 30 }, (_, i) => `harness:k${i}`), '{harness}:a', '{harness}:b'];

beforeAll(async () => {
  cluster = await startTestCluster({ masters: 3, replicas: 1 });
}, 70_000);

afterAll(async () => {
  client?.disconnect();
  await cluster?.stop();
}, 30_000);

describe('startTestCluster', () => {
  it('starts 3 masters with a replica each, every node from copies of redis.conf and cluster.conf', async () => {
    const c = cluster!;
    expect(c.nodes).toHaveLength(6);
    expect(c.seeds.map((s) => s.port)).toEqual(c.nodes.map((n) => n.port));
    expect(c.seedList).toBe(c.nodes.map((n) => `127.0.0.1:${n.port}`).join(','));
    for (const n of c.nodes) {
      expect(n.port).toBeLessThanOrEqual(55_535);
      const info = parseInfo(String(await c.direct(n.port, (r) => r.call('CLUSTER', 'INFO'))));
      expect(info.cluster_state).toBe('ok');
      expect(info.cluster_known_nodes).toBe('6');
      expect(info.cluster_slots_assigned).toBe('16384');
      // redis.conf's settings hold on a cluster node too.
      expect(await c.direct(n.port, (r) => r.config('GET', 'appendfsync'))).toEqual(['appendfsync', 'always']);
      expect(await c.direct(n.port, (r) => r.config('GET', 'cluster-require-full-coverage'))).toEqual(['cluster-require-full-coverage', 'no']);
    }
    const masters = await c.masters();
    expect(masters).toHaveLength(3);
    const replicas = (await Promise.all(masters.map((m) => c.replicasOf(m)))).flat();
    for (const m of masters) expect(await c.replicasOf(m)).toHaveLength(1);
    expect(new Set([...masters, ...replicas]).size).toBe(6);
  });

  it('serves a Cluster client: what it writes reads back, spread over the masters', async () => {
    const c = cluster!;
    client = createRedis({ clusterNodes: c.seeds }, { commandTimeoutMs: 2000 });
    client.on('error', () => {});
    await client.connect();
    for (const k of KEYS) await client.set(k, `v-${k}`);
    for (const k of KEYS) expect(await client.get(k)).toBe(`v-${k}`);
    // The keys landed on more than one master (CLUSTER KEYSLOT -> the owner in CLUSTER NODES).
    const lines = parseClusterNodes(String(await c.direct(c.nodes[0]!.port, (r) => r.call('CLUSTER', 'NODES'))));
    const owners = new Set<number>();
    for (const k of KEYS) {
      const slot = Number(await client.call('CLUSTER', 'KEYSLOT', k));
      const owner = lines.find((l) => l.flags.includes('master') && l.slots.some(([a, b]) => slot >= a && slot <= b));
      owners.add(owner!.port);
    }
    expect(owners.size).toBe(3);
  });
});
