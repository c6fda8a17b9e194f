// TLS to a Sentinel deployment (REDIS_SENTINELS with KV_REDIS_TLS=true): a primary, two replicas
// and three sentinels that speak TLS only (port 0, tls-port; replication and the sentinels' links
// to the nodes and to each other over TLS), with a throwaway CA and certificates made by the
// openssl CLI (the server certificate names IP 127.0.0.1: hostname verification stays on). kvql's
// startServer asks the sentinels over TLS for the primary and a replica and serves puts, gets
// (STRONG from the primary, EVENTUAL from a replica); a plain connection gets no answer; a kvql
// given a CA that did not sign the certificates never gets ready; after a kill -9 of the primary,
// kvql writes again through the promoted replica, over TLS.
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { askRedis } from '../../src/managedRedis.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { createRedis, sentinelProblem, type RedisTls } from '../../src/store/redis.js';
import { uniquePrefix } from '../harness/app.js';
import { post } from '../experiments/tools.js';
import { expectKvqlNeverReady, gqlData as gql, makePki, opensslOnPath, type Pki } from '../harness/secureRedis.js';
import { parseInfo, startSentinelDeployment, type SentinelDeployment } from '../harness/sentinel.js';
import { until } from '../harness/until.js';


const PUT = 'mutation($key: String!, $value: String!) { put(key: $key, value: $value) { version } }';
const GET = 'query($key: String!, $c: Consistency!) { get(key: $key, consistency: $c) { value version } }';

/** Connects through the sentinels with createRedis as kvql does; 'ready', or rejects with why not. */
async function trySentinel(dep: SentinelDeployment, tls: RedisTls | undefined, ms = 3000): Promise<string> {
  const redis = createRedis({ sentinels: dep.sentinelAddresses, masterName: dep.masterName }, { commandTimeoutMs: 1000, ...(tls ? { tls } : {}) });
  const errors: string[] = [];
  redis.on('error', (err: Error) => errors.push(err.message));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.connect(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('not ready in time')), ms))),
    ]);
    return (await redis.ping()) === 'PONG' ? 'ready' : 'no PONG';
  } catch (err) {
    // ioredis only says that no sentinel answered ("Connection is closed."); kvql's log asks one why (sentinelProblem).
    const why = await sentinelProblem({ sentinels: dep.sentinelAddresses, masterName: dep.masterName }, { commandTimeoutMs: 1000, ...(tls ? { tls } : {}) });
    throw new Error(`${(err as Error).message}; errors: ${[...new Set(errors)].join(' | ')}; sentinel: ${why}`);
  } finally {
    clearTimeout(timer);
    redis.disconnect();
  }
}

describe.runIf(opensslOnPath())('TLS to Redis Sentinel (REDIS_SENTINELS, KV_REDIS_TLS=true)', () => {
  let pki: Pki;
  let dep: SentinelDeployment;

  beforeAll(async () => {
    pki = makePki();
    dep = await startSentinelDeployment({ downAfterMs: 1000, failoverTimeoutMs: 10_000, tls: { ca: pki.ca, cert: pki.serverCert, key: pki.serverKey } });
  }, 40_000);

  afterAll(async () => {
    await dep?.stop();
    pki?.cleanup();
  }, 30_000);

  it('every process speaks TLS only; the sentinels see each other and the replicas over TLS', async () => {
    for (const n of dep.nodes) {
      const get = async (name: string) => ((await dep.direct(n.port, (r) => r.config('GET', name))) as string[])[1];
      expect(await get('port')).toBe('0');
      expect(await get('tls-port')).toBe(String(n.port));
      expect(await get('tls-replication')).toBe('yes');
    }
    // Each sentinel knows the two others by their TLS ports (what they announce).
    const sentinelPorts = dep.sentinelNodes.map((s) => s.port);
    for (const s of dep.sentinelNodes) {
      const others = (await dep.direct(s.port, (r) => r.call('SENTINEL', 'sentinels', dep.masterName))) as string[][];
      const ports = others.map((o) => Number(o[o.indexOf('port') + 1])).sort();
      expect(ports).toEqual(sentinelPorts.filter((p) => p !== s.port).sort());
    }
    // Plain TCP: no answer, from a data node or from a sentinel.
    for (const port of [dep.nodes[0]!.port, dep.sentinelNodes[0]!.port]) {
      await expect(askRedis(port, (c) => c.ping(), 1500)).rejects.toThrow();
    }
    // And kvql's client without TLS gets nothing from the sentinels.
    await expect(trySentinel(dep, undefined, 2000)).rejects.toThrow();
  });

  it('serves put, get STRONG and EVENTUAL (from a replica) through the sentinels, over TLS', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', destination: { write: (l: string) => void lines.push(l) } });
    const config = loadConfig({
      PORT: '0',
      REDIS_SENTINELS: dep.sentinels,
      REDIS_MASTER_NAME: dep.masterName,
      KV_REDIS_TLS: 'true',
      KV_REDIS_TLS_CA: pki.ca,
      KV_PREFIX: uniquePrefix('tlss'),
    });
    expect(config.redisTls).toEqual({ ca: readFileSync(pki.ca) });
    let server: RunningServer | undefined;
    try {
      server = await startServer(config, log);
      const url = server.url;
      expect((await gql(url, PUT, { key: 'tls:one', value: 'über TLS' })).put.version).toBe(1);
      expect((await gql(url, GET, { key: 'tls:one', c: 'STRONG' })).get).toEqual({ value: 'über TLS', version: 1 });
      // An EVENTUAL read answered by a replica (its own TLS connection, named by the sentinels).
      const replicaReads = async () => {
        let calls = 0;
        for (const n of dep.nodes.slice(1)) {
          const stats = parseInfo(String(await dep.direct(n.port, (c) => c.info('commandstats'))));
          for (const [name, v] of Object.entries(stats)) if (/^cmdstat_(hmget|hget|evalsha|fcall_ro|evalsha_ro)$/.test(name)) calls += Number(/calls=(\d+)/.exec(v)?.[1] ?? 0);
        }
        return calls;
      };
      const before = await replicaReads();
      await until(10_000, 'an EVENTUAL get answered by a replica', async () => {
        const value = (await gql(url, GET, { key: 'tls:one', c: 'EVENTUAL' })).get?.value;
        return value === 'über TLS' && (await replicaReads()) > before ? true : undefined;
      }, 200);
      // Nothing was logged about Redis: no handshake refused, no connection failed.
      expect(lines.filter((l) => /"msg":"redis: /.test(l))).toEqual([]);
    } finally {
      await server?.close();
    }
  });

  it('refuses sentinels and nodes whose certificate the given CA did not sign; a kvql with that CA never gets ready', async () => {
    await expect(trySentinel(dep, { ca: readFileSync(pki.otherCa) })).rejects.toThrow(/self[- ]signed|unable to (verify|get)/i);
    expect(await trySentinel(dep, { ca: readFileSync(pki.ca) })).toBe('ready');

    await expectKvqlNeverReady({
      REDIS_SENTINELS: dep.sentinels,
      REDIS_MASTER_NAME: dep.masterName,
      KV_REDIS_TLS: 'true',
      KV_REDIS_TLS_CA: pki.otherCa,
      KV_PREFIX: uniquePrefix('tlsbad'),
    });
  });

  it('a reconnect that the failover detector cuts short is retried, not left "Connection is closed." for good', async () => {
    const redis = createRedis({ sentinels: dep.sentinelAddresses, masterName: dep.masterName }, { commandTimeoutMs: 1000, tls: { ca: readFileSync(pki.ca) } });
    redis.on('error', () => {});
    try {
      await redis.connect();
      // ioredis's internals (5.x): what its FailoverDetector does on +switch-master, at the moment
      // it did harm in the failover case below: while a reconnect asks a sentinel for the primary
      // (the 'connecting' event comes once that question is under way).
      const connector = (redis as unknown as { connector: { failoverDetector: { disconnect(): void } | null } }).connector;
      const detector = await until(5000, 'the failover detector subscribed', () => connector.failoverDetector ?? undefined);
      redis.once('connecting', () => detector.disconnect());
      const closed = new Promise((resolve) => redis.once('close', resolve));
      redis.disconnect(true);
      await closed;
      await until(5000, 'the client ready again', () => (redis.status === 'ready' ? true : undefined), 20);
      expect(await redis.ping()).toBe('PONG');
    } finally {
      redis.disconnect();
    }
  });

  it("an error on one of the failover detector's sentinel connections stays out of stderr (no ioredis \"Unhandled error event\")", async () => {
    const redis = createRedis({ sentinels: dep.sentinelAddresses, masterName: dep.masterName }, { commandTimeoutMs: 1000, tls: { ca: readFileSync(pki.ca) } });
    redis.on('error', () => {});
    const printed: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void printed.push(args.map(String).join(' ')));
    try {
      await redis.connect();
      // ioredis's internals (5.x), as above: the detector's connections, one per sentinel.
      type Detector = { sentinels: { client: Redis }[] };
      const connector = (redis as unknown as { connector: { failoverDetector: Detector | null } }).connector;
      const detector = await until(5000, 'the failover detector subscribed', () => connector.failoverDetector ?? undefined);
      expect(detector.sentinels).toHaveLength(dep.sentinelAddresses.length);
      // How ioredis reports a connection's error (a TLS alert when a failover closes it mid-handshake).
      for (const { client } of detector.sentinels) (client as unknown as { silentEmit(event: string, arg: unknown): void }).silentEmit('error', new Error('tlsv1 alert decode error'));
      expect(printed.filter((line) => line.includes('Unhandled error event'))).toEqual([]);
      expect(await redis.ping()).toBe('PONG');
    } finally {
      spy.mockRestore();
      redis.disconnect();
    }
  });

  // This case failed in 2 of about 5 full-suite runs (kvql STORE_UNAVAILABLE, "Connection is
  // closed.", for 15-30 s after a settled failover) until its cause was found: ioredis's failover
  // detector ended, for good, a client whose reconnect was asking a sentinel for the primary at
  // that moment. SentinelRedis (src/store/redis.ts) retries such a connect; the test above pins
  // the race down.
  it('after a kill -9 of the primary, kvql writes again through the promoted replica, over TLS', async () => {
    const config = loadConfig({
      PORT: '0',
      REDIS_SENTINELS: dep.sentinels,
      REDIS_MASTER_NAME: dep.masterName,
      KV_REDIS_TLS: 'true',
      KV_REDIS_TLS_CA: pki.ca,
      KV_MIN_REPLICAS: '1',
      KV_PREFIX: uniquePrefix('tlsf'),
    });
    const logged: string[] = [];
    const server = await startServer(config, (m) => logged.push(m));
    try {
      const url = server.url;
      // Acknowledged by a replica (KV_MIN_REPLICAS=1), so it survives the failover.
      expect((await gql(url, PUT, { key: 'f:before', value: '1' })).put.version).toBe(1);
      const first = await dep.currentPrimary();
      await dep.node(first.port).kill9();
      const { port } = await dep.waitForFailover(first.port, 20_000);
      expect(port).not.toBe(first.port);
      // A key per attempt: a write that timed out waiting for a replica (REPLICATION_TIMEOUT,
      // while the other replica moves to the new primary) was applied all the same.
      let attempt = 0;
      let last = '';
      // Usually ~2 s; the bound is for the full suite's load (the other replica resyncs over TLS).
      const key = await until(30_000, 'a put acknowledged through the promoted replica', async () => {
        const k = `f:after:${++attempt}`;
        const body = (await post(url, PUT, { key: k, value: '2' }, 10_000)).body ?? {};
        last = JSON.stringify(body.errors);
        // REPLICATION_TIMEOUT counts too: the write was applied on the promoted primary (reached
        // over TLS), only its replica had not reattached yet (slow under the full suite's load).
        const applied = body.errors === undefined ? body.data?.put?.version === 1 : body.errors.every((e: { extensions?: { code?: string } }) => e.extensions?.code === 'REPLICATION_TIMEOUT');
        return applied ? k : undefined;
      }, 100).catch(async (err: Error) => {
        const states = await Promise.all(dep.nodes.map((n) => dep.replication(n.port).then((r) => `${n.name}:${r.role}:${r.masterPort ?? ''}:${r.linkUp ?? ''}:${r.connectedSlaves}`, (e: Error) => `${n.name}:${e.message}`)));
        throw new Error(`${err.message}; last errors: ${last}; nodes: ${states.join(' ')}; kvql's log:\n${logged.slice(-30).join('\n')}`);
      });
      // A read may still meet a reconnect: the sentinels' +switch-master can reach kvql's
      // failover detector after its own reconnect already found the promoted node, and the
      // detector reconnects once more. STORE_UNAVAILABLE is the retryable answer for that
      // moment; any other error, or a wrong value, fails at once.
      const read = (k: string) =>
        until(10_000, `a STRONG read of ${k}`, async () => {
          const body = (await post(url, GET, { key: k, c: 'STRONG' }, 10_000)).body ?? {};
          const codes = (body.errors ?? []).map((e: { extensions?: { code?: string } }) => e.extensions?.code);
          if (codes.length > 0 && codes.every((c: string | undefined) => c === 'STORE_UNAVAILABLE')) return undefined;
          return { errors: body.errors, get: body.data?.get };
        }, 100);
      expect(await read('f:before')).toEqual({ errors: undefined, get: { value: '1', version: 1 } });
      expect(await read(key)).toEqual({ errors: undefined, get: { value: '2', version: 1 } });
      // kvql's connection is to the promoted node now.
      expect((await dep.replication(port)).role).toBe('master');
    } finally {
      await server.close();
    }
  }, 70_000);
});
