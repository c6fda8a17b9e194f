// kvql as the ACL user of users.acl on a Redis Cluster and on a Sentinel deployment
// (REDIS_USERNAME, REDIS_SENTINEL_USERNAME): every connection kvql opens to the cluster's nodes
// (reads, the writer, the change feed's subscribers) signs in as `kvql`, the workload works with
// only its commands and keys, and with Sentinel the sentinels see kvql as their own ACL user.
// The nodes keep their `default` user for the harness; kvql's connections are told apart by
// the user CLIENT LIST names.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { kvqlAclRules, newPassword } from '../../src/redisAcl.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { clusterSeedProblem } from '../../src/store/redis.js';
import { keysInDistinctPartitions, uniquePrefix } from '../harness/app.js';
import { startTestCluster, type TestCluster } from '../harness/cluster.js';
import { runCommand } from '../harness/command.js';
import { gqlData as gql } from '../harness/secureRedis.js';
import { startSentinelDeployment, type SentinelDeployment } from '../harness/sentinel.js';
import { sseSubscribe } from '../harness/sse.js';
import type { SubscriptionStream } from '../harness/stream.js';
import { until } from '../harness/until.js';
import type { Redis } from 'ioredis';

const PARTITIONS = 6;
const PUT = 'mutation($key: String!, $value: String!) { put(key: $key, value: $value) { version } }';
const GET = 'query($key: String!) { get(key: $key) { value version } }';
const BATCH = 'mutation($items: [PutInput!]!) { batchPut(items: $items) { key version } }';
const RANGE = 'query($p: String!) { range(prefix: $p, first: 100) { edges { node { key value } } totalCount } }';
const CHANGES = 'subscription($p: String!) { changes(prefix: $p) { type key version } }';

/** The user of each client connection but the one asking (CLIENT LIST of `client`). */
async function otherClientsUsers(client: Redis): Promise<string[]> {
  const list = String(await client.call('CLIENT', 'LIST'));
  return list
    .split('\n')
    .filter((line) => line.trim() !== '' && !/\bcmd=client\|list\b/.test(line))
    .map((line) => /\buser=(\S+)/.exec(line)?.[1] ?? '?');
}

const aclLog = async (client: Redis) => (await client.call('ACL', 'LOG')) as unknown[];

/** The workload every topology must serve as kvql: writes, reads, a batch over partitions, a range, the feed. */
async function workload(url: string, base: string): Promise<void> {
  let stream: SubscriptionStream | undefined;
  try {
    stream = await sseSubscribe(url, CHANGES, { p: base });
    let marks = 0;
    await until(15_000, 'the subscription receives a marker put', async () => {
      await gql(url, PUT, { key: `${base}mark`, value: String(++marks) });
      return (await stream!.poll(200)) ? true : undefined;
    }, 0);
    while (await stream.poll(300));

    expect((await gql(url, PUT, { key: `${base}one`, value: 'as kvql' })).put.version).toBe(1);
    expect((await gql(url, GET, { key: `${base}one` })).get).toEqual({ value: 'as kvql', version: 1 });
    const keys = keysInDistinctPartitions(`${base}b`, PARTITIONS, PARTITIONS);
    const batch = (await gql(url, BATCH, { items: keys.map((key) => ({ key, value: `v-${key}` })) })).batchPut;
    expect(batch.map((e: { key: string }) => e.key)).toEqual(keys);
    const page = (await gql(url, RANGE, { p: `${base}b` })).range;
    expect(page.totalCount).toBe(PARTITIONS);
    expect(page.edges.map((e: { node: { key: string } }) => e.node.key)).toEqual([...keys].sort());
    const seen = new Set<string>();
    await until(10_000, 'every batch key on the change feed', async () => {
      for (let p = await stream!.poll(100); p; p = await stream!.poll(100)) seen.add(p.data?.changes?.key);
      return keys.every((k) => seen.has(k)) ? true : undefined;
    }, 0);
  } finally {
    await stream?.close();
  }
}

describe('kvql as ACL user kvql on a Redis Cluster (REDIS_USERNAME)', () => {
  const prefix = uniquePrefix('aclc');
  const password = newPassword();
  let cluster: TestCluster;
  let server: RunningServer | undefined;

  beforeAll(async () => {
    cluster = await startTestCluster({ masters: 3, replicas: 0 });
    // ACLs are per node (not replicated, not spread by the cluster bus): the same user on each.
    const rules = kvqlAclRules({ prefix, password }).split(' ');
    for (const n of cluster.nodes) await cluster.direct(n.port, (r) => r.call('ACL', 'SETUSER', 'kvql', ...rules));
  }, 90_000);

  afterAll(async () => {
    await server?.close();
    await cluster?.stop();
  }, 30_000);

  it('signs in as kvql on every connection to every master, and serves the whole workload within its rights', async () => {
    const config = loadConfig({
      PORT: '0',
      REDIS_CLUSTER_NODES: cluster.seedList,
      REDIS_USERNAME: 'kvql',
      REDIS_PASSWORD: password,
      KV_PREFIX: prefix,
      KV_PARTITIONS: String(PARTITIONS),
      KV_BUCKETS: '5',
    });
    server = await startServer(config, createLogger({ level: 'silent' }));
    await workload(server.url, 'acl:');

    const masters = await cluster.masters();
    expect(masters).toHaveLength(3);
    for (const port of masters) {
      const users = await cluster.direct(port, otherClientsUsers);
      // kvql's reads, its writer and the feed's subscriber reach every master.
      expect(users.length, `master ${port}`).toBeGreaterThan(0);
      expect(new Set(users), `master ${port}: ${users.join(',')}`).toEqual(new Set(['kvql']));
      expect(await cluster.direct(port, aclLog), `ACL LOG of ${port}: ${JSON.stringify(await cluster.direct(port, aclLog))}`).toEqual([]);
    }
  });

  it('npm run verify checks the keyspace as kvql too', async () => {
    const env = { REDIS_CLUSTER_NODES: cluster.seedList, REDIS_USERNAME: 'kvql', REDIS_PASSWORD: password, KV_PREFIX: prefix, KV_PARTITIONS: String(PARTITIONS), KV_BUCKETS: '5' };
    const verified = await runCommand('src/verifyCli.ts', [], env, 30_000);
    expect(verified.out).toContain('OK: no problems found');
    expect(verified.code).toBe(0);
    for (const port of await cluster.masters()) expect(await cluster.direct(port, aclLog), `ACL LOG of ${port}`).toEqual([]);
  });

  it('a wrong password is refused, and kvql says why', async () => {
    const seeds = cluster.seeds.slice(0, 1);
    expect(await clusterSeedProblem({ clusterNodes: seeds, username: 'kvql', password }, { commandTimeoutMs: 1000 })).toBeUndefined();
    expect(await clusterSeedProblem({ clusterNodes: seeds, username: 'kvql', password: 'wrong' }, { commandTimeoutMs: 1000 })).toMatch(/WRONGPASS/);
  });
});

describe('kvql as ACL user kvql on a Sentinel deployment, and as its own user on the sentinels', () => {
  const prefix = uniquePrefix('acls');
  const password = newPassword();
  const sentinelPassword = newPassword();
  let dep: SentinelDeployment;
  let server: RunningServer | undefined;
  /** kvql's settings for this deployment: as kvql on the data nodes, as kvql-watch on the sentinels. */
  const asKvql = () => ({
    REDIS_SENTINELS: dep.sentinels,
    REDIS_MASTER_NAME: dep.masterName,
    REDIS_USERNAME: 'kvql',
    REDIS_PASSWORD: password,
    REDIS_SENTINEL_USERNAME: 'kvql-watch',
    REDIS_SENTINEL_PASSWORD: sentinelPassword,
    KV_PREFIX: prefix,
    KV_PARTITIONS: String(PARTITIONS),
    KV_BUCKETS: '5',
  });

  beforeAll(async () => {
    dep = await startSentinelDeployment();
    const rules = kvqlAclRules({ prefix, password }).split(' ');
    for (const n of dep.nodes) await dep.direct(n.port, (r) => r.call('ACL', 'SETUSER', 'kvql', ...rules));
    // What ioredis asks a sentinel: SENTINEL queries, and +switch-master for its failover detector.
    for (const s of dep.sentinelNodes) {
      await dep.direct(s.port, (r) => r.call('ACL', 'SETUSER', 'kvql-watch', 'on', `>${sentinelPassword}`, 'allchannels', '-@all', '+sentinel', '+ping', '+subscribe', '+info', '+client|setname'));
    }
  }, 90_000);

  afterAll(async () => {
    await server?.close();
    await dep?.stop();
  }, 30_000);

  it('signs in as kvql on the primary and as kvql-watch on the sentinels, and serves the whole workload', async () => {
    const config = loadConfig({ PORT: '0', ...asKvql(), KV_MIN_REPLICAS: '1' });
    server = await startServer(config, createLogger({ level: 'silent' }));
    await workload(server.url, 'acl:');

    const primary = await dep.currentPrimary();
    const users = await dep.direct(primary.port, otherClientsUsers);
    // The replicas' links and the sentinels' connections are the default user's; kvql's are kvql's.
    expect(users.filter((u) => u === 'kvql').length).toBeGreaterThan(0);
    expect(users.every((u) => u === 'kvql' || u === 'default'), users.join(',')).toBe(true);
    expect(await dep.direct(primary.port, aclLog)).toEqual([]);
    let watchers = 0;
    for (const s of dep.sentinelNodes) {
      watchers += (await dep.direct(s.port, otherClientsUsers)).filter((u) => u === 'kvql-watch').length;
      expect(await dep.direct(s.port, aclLog), `ACL LOG of sentinel ${s.port}`).toEqual([]);
    }
    expect(watchers).toBeGreaterThan(0);
  });

  it('npm run verify asks the sentinels for the primary (as kvql-watch) and checks the keyspace there as kvql', async () => {
    const env = asKvql();
    const primary = await dep.currentPrimary();
    const verified = await runCommand('src/verifyCli.ts', [], env, 30_000);
    expect(verified.out).toContain(`the primary "${dep.masterName}" at 127.0.0.1:${primary.port}`);
    expect(verified.out).toMatch(/total: [1-9]\d* keys/);
    expect(verified.out).toContain('OK: no problems found');
    expect(verified.code).toBe(0);
    expect(await dep.direct(primary.port, aclLog)).toEqual([]);
    for (const s of dep.sentinelNodes) expect(await dep.direct(s.port, aclLog), `ACL LOG of sentinel ${s.port}`).toEqual([]);

    // A sentinel password that is refused: nothing to check, exit 2, and the reason.
    const refused = await runCommand('src/verifyCli.ts', [], { ...env, REDIS_SENTINEL_PASSWORD: 'wrong' }, 30_000);
    expect(refused.out).toMatch(/cannot learn the primary "kvql" from sentinels .*WRONGPASS/);
    expect(refused.code).toBe(2);
  });
});
