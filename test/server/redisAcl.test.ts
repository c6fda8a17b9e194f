// kvql as the least-privileged Redis ACL user of users.acl: the whole workload works with only
// its commands and key patterns, on a Redis whose `default` user is off; what it is not given is
// refused; its password reaches no log line and no response; and the managed Redis runs it that
// way, with passwords it makes itself and keeps private.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { ACL_FILE, ADMIN_PASSWORD_FILE, KVQL_PASSWORD_FILE, REDIS_CONF, startManagedRedis, type ManagedRedis } from '../../src/managedRedis.js';
import { kvqlAclRules, newPassword } from '../../src/redisAcl.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { Keyspace, LAYOUT_VERSION } from '../../src/store/keys.js';
import { createRedis } from '../../src/store/redis.js';
import { KvStore } from '../../src/store/store.js';
import { verifyKeyspace } from '../../src/store/verify.js';
import { uniquePrefix } from '../harness/app.js';
import { freePort } from '../harness/redisServer.js';
import { once, startAclRedis, type AclRedis } from '../harness/secureRedis.js';
import { sseSubscribe } from '../harness/sse.js';
import { until } from '../harness/until.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));


/** A pino logger whose every written line (after redaction: what really goes out) is kept. */
function capturingLogger() {
  const raw: string[] = [];
  return { raw, log: createLogger({ level: 'trace', destination: { write: (line: string) => void raw.push(line) } }) };
}

async function gql(url: string, query: string, variables: Record<string, unknown> = {}): Promise<{ status: number; text: string; body: any }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return { status: res.status, text, body: JSON.parse(text) };
}

const PUT = 'mutation($key: String!, $value: String!) { put(key: $key, value: $value) { key version } }';
const GET = 'query($key: String!) { get(key: $key) { value version } }';

/** Commands kvql must be refused, each as sent with `call`. */
const REFUSED: string[][] = [
  ['FLUSHALL'],
  ['FLUSHDB'],
  ['CONFIG', 'SET', 'appendfsync', 'no'],
  ['CONFIG', 'GET', '*'],
  ['KEYS', '*'],
  ['DEBUG', 'SLEEP', '0'],
  ['MONITOR'],
  ['ACL', 'WHOAMI'],
  ['ACL', 'SETUSER', 'kvql', '+@all'],
  ['SCRIPT', 'FLUSH'],
  ['FUNCTION', 'FLUSH'],
  ['CLIENT', 'LIST'],
  ['CLIENT', 'KILL', 'TYPE', 'normal'],
  ['SELECT', '1'],
  ['SWAPDB', '0', '1'],
  ['REPLICAOF', '127.0.0.1', '1'],
  ['SAVE'],
  ['BGREWRITEAOF'],
  ['SHUTDOWN', 'NOSAVE'],
];

describe('kvql as ACL user kvql, on a Redis whose default user is off', () => {
  const prefix = uniquePrefix('acl');
  const kvqlPassword = newPassword();
  const adminPassword = newPassword();
  let redis: AclRedis;
  let server: RunningServer | undefined;
  const logger = capturingLogger();
  /** Every response body the tests received. */
  const bodies: string[] = [];
  let kvql: Redis;

  beforeAll(async () => {
    // DEBUG enabled: so that its refusal below is the ACL's, not enable-debug-command's.
    redis = await startAclRedis(prefix, kvqlPassword, adminPassword, ['--enable-debug-command', 'yes']);
    // Four partitions of eight buckets: the feed reads several streams, writes span partitions.
    server = await startServer(
      loadConfig({ PORT: '0', REDIS_URL: redis.kvqlUrl, KV_PREFIX: prefix, KV_PARTITIONS: '4', KV_BUCKETS: '8', LOG_LEVEL: 'trace' }),
      logger.log,
    );
    kvql = new Redis(redis.kvqlUrl, { lazyConnect: true, maxRetriesPerRequest: 0 });
    kvql.on('error', () => {});
    await kvql.connect();
  }, 40_000);

  afterAll(async () => {
    kvql?.disconnect();
    await server?.close().catch(() => {});
    await redis?.stop();
  });

  it('a connection without credentials can do nothing', async () => {
    await expect(once({ port: redis.port }, (r) => r.ping())).rejects.toThrow(/NOAUTH/);
    await expect(once({ port: redis.port }, (r) => r.get(`${prefix}:meta`))).rejects.toThrow(/NOAUTH/);
  });

  it('the whole workload works as kvql: writes, reads, ranges, the change feed, verify, WAIT', async () => {
    const url = server!.url;
    const sub = await sseSubscribe(url, 'subscription { changes(prefix: "w:") { type key entry { value } } }');
    try {
      // The subscription is live once a put made now is delivered.
      await until(5000, 'the subscription delivers', async () => {
        bodies.push((await gql(url, PUT, { key: 'w:probe', value: 'p' })).text);
        return (await sub.poll(100))?.data?.changes?.key === 'w:probe' ? true : undefined;
      });
      const put = await gql(url, PUT, { key: 'w:a', value: 'A' });
      bodies.push(put.text);
      expect(put.body.errors).toBeUndefined();
      const batch = await gql(url, 'mutation($items: [PutInput!]!) { batchPut(items: $items) { key version } }', {
        items: [
          { key: 'w:b', value: 'B' },
          { key: 'w:c', value: 'C' },
          { key: 'w:d', value: 'D' },
        ],
      });
      bodies.push(batch.text);
      expect(batch.body.errors).toBeUndefined();
      const del = await gql(url, 'mutation($key: String!) { delete(key: $key) { deleted } }', { key: 'w:b' });
      expect(del.body.data.delete.deleted).toBe(true);
      const get = await gql(url, GET, { key: 'w:a' });
      expect(get.body.data.get).toEqual({ value: 'A', version: 1 });
      const many = await gql(url, 'query($keys: [String!]!) { getMany(keys: $keys) { value } }', { keys: ['w:a', 'w:b', 'w:c'] });
      expect(many.body.data.getMany).toEqual([{ value: 'A' }, null, { value: 'C' }]);
      const range = await gql(url, '{ range(prefix: "w:", first: 10) { totalCount edges { node { key } } pageInfo { hasNextPage } } }');
      expect(range.body.data.range.edges.map((e: any) => e.node.key)).toEqual(['w:a', 'w:c', 'w:d', 'w:probe']);
      expect(range.body.data.range.totalCount).toBe(4);
      const back = await gql(url, '{ range(prefix: "w:", last: 2) { edges { node { key } } pageInfo { hasPreviousPage } } }');
      expect(back.body.data.range.edges.map((e: any) => e.node.key)).toEqual(['w:d', 'w:probe']);
      const dr = await gql(url, 'mutation { deleteRange(prefix: "w:p") { deleted hasMore } }');
      expect(dr.body.data.deleteRange).toEqual({ deleted: 1, hasMore: false });
      bodies.push(get.text, many.text, range.text, back.text, dr.text, del.text);
      // Every write reached the subscriber.
      const seen: string[] = [];
      await until(5000, 'every event', async () => {
        const e = await sub.poll(100);
        if (e?.data?.changes) seen.push(`${e.data.changes.type} ${e.data.changes.key}`);
        return seen.length >= 6 ? true : undefined;
      });
      // (In commit order per key; partitions interleave.)
      expect([...seen].sort()).toEqual(['DELETE w:b', 'DELETE w:probe', 'PUT w:a', 'PUT w:b', 'PUT w:c', 'PUT w:d']);
      expect(seen.indexOf('PUT w:b')).toBeLessThan(seen.indexOf('DELETE w:b'));
    } finally {
      await sub.close();
    }

    // npm run verify's whole check, as kvql.
    const report = await verifyKeyspace(kvql, { prefix, partitions: 4, buckets: 8 });
    expect(report.ok, JSON.stringify(report.problems)).toBe(true);
    // KV_MIN_REPLICAS's WAIT (no replicas here: 0 of 0).
    expect(await kvql.wait(0, 0)).toBe(0);
    // The rate-limit script, where this tree has it: its key {<prefix>:rl/<id>} is in the patterns.
    const other = createRedis(redis.kvqlUrl, { commandTimeoutMs: 2000 });
    other.on('error', () => {});
    await other.connect();
    try {
      const store = await KvStore.open(other, { prefix, partitions: 4, buckets: 8 });
      const rateLimit = (store as unknown as { rateLimit?: (id: string, l: object, b: number) => Promise<{ ok: boolean }> }).rateLimit;
      if (rateLimit) expect((await rateLimit.call(store, 'tok', { requestsPerSecond: 10, burstSeconds: 1 }, 1)).ok).toBe(true);
      store.close();
    } finally {
      other.disconnect();
    }

    // Nothing kvql did was refused, not even a command whose failure is ignored.
    const log = (await once(redis.admin, (r) => r.call('ACL', 'LOG'))) as unknown[][];
    expect(log.map((entry) => JSON.stringify(entry))).toEqual([]);
  });

  it('a batch moves its feed counter with one INCRBY; an ACL user from a users.acl without INCRBY still writes, one INCR per event', async () => {
    const keyspace = new Keyspace(prefix, 4, 8);
    // Keys of one partition: one stream and one counter, so the batch's four events move it together.
    const keys = Array.from({ length: 200 }, (_, i) => `c:${i}`).filter((k) => keyspace.partition(k) === 1).slice(0, 4);
    const calls = async (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(await once(redis.admin, (r) => r.info('commandstats')))?.[1] ?? 0);
    const counter = async () => Number(await once(redis.admin, (r) => r.get(keyspace.sequence(1))));
    const batch = async (store: KvStore) => (await store.batchPut(keys.map((key) => ({ key, value: 'v' })))).map((e) => e.version);

    const store = await KvStore.open(kvql, { prefix, partitions: 4, buckets: 8 });
    let [incrby, incr, seq] = [await calls('incrby'), await calls('incr'), await counter()];
    expect(await batch(store)).toEqual([1, 1, 1, 1]);
    expect([await calls('incrby') - incrby, await calls('incr') - incr, await counter() - seq]).toEqual([1, 0, 4]);

    // The same rules as users.acl's but INCRBY, as an ACL made by hand before it was granted.
    const oldPassword = newPassword();
    const rules = kvqlAclRules({ prefix, password: oldPassword }).split(' ').filter((r) => r !== '+incrby');
    expect(rules).toContain('+incr');
    await once(redis.admin, (r) => r.call('ACL', 'SETUSER', 'kvql-old', ...rules));
    const old = new Redis(`redis://kvql-old:${oldPassword}@127.0.0.1:${redis.port}`, { lazyConnect: true, maxRetriesPerRequest: 0 });
    old.on('error', () => {});
    await old.connect();
    try {
      const oldStore = await KvStore.open(old, { prefix, partitions: 4, buckets: 8 });
      [incrby, incr, seq] = [await calls('incrby'), await calls('incr'), await counter()];
      expect(await batch(oldStore)).toEqual([2, 2, 2, 2]);
      // Refused INCRBY calls are counted as failed, not as calls: the counter moved by INCRs.
      expect([await calls('incrby') - incrby, await calls('incr') - incr, await counter() - seq]).toEqual([0, 4, 4]);
      const log = (await once(redis.admin, (r) => r.call('ACL', 'LOG'))) as unknown[][];
      expect(log.map((entry) => JSON.stringify(entry))).toEqual([expect.stringMatching(/"object","incrby","username","kvql-old"/)]);
      // Every event is in the feed, in order, and the keyspace checks out.
      expect((await oldStore.get(keys[0]!))?.version).toBe(2);
      const report = await verifyKeyspace(kvql, { prefix, partitions: 4, buckets: 8 });
      expect(report.ok, JSON.stringify(report.problems)).toBe(true);
    } finally {
      old.disconnect();
      await once(redis.admin, (r) => r.call('ACL', 'DELUSER', 'kvql-old'));
      await once(redis.admin, (r) => r.call('ACL', 'LOG', 'RESET'));
    }
  });

  it('kvql is refused FLUSHALL, CONFIG, KEYS, DEBUG, SHUTDOWN and every other command it is not given', async () => {
    const before = await once(redis.admin, (r) => r.dbsize());
    for (const [command, ...args] of REFUSED) {
      await expect(kvql.call(command!, ...args), `${command} ${args.join(' ')}`).rejects.toThrow(/NOPERM/);
    }
    expect(await once(redis.admin, (r) => r.dbsize())).toBe(before);
    expect(await once(redis.admin, (r) => r.call('CONFIG', 'GET', 'appendfsync'))).toEqual(['appendfsync', 'always']);
    // Each refusal is in the ACL log, as kvql's.
    const log = (await once(redis.admin, (r) => r.call('ACL', 'LOG', '100'))) as string[][];
    const refused = log.map((e) => Object.fromEntries(Array.from({ length: e.length / 2 }, (_, i) => [e[2 * i], e[2 * i + 1]])));
    expect(refused.every((e) => e.username === 'kvql')).toBe(true);
    expect(new Set(refused.map((e) => e.object))).toEqual(
      new Set(['flushall', 'flushdb', 'config|set', 'config|get', 'keys', 'debug', 'monitor', 'acl|whoami', 'acl|setuser', 'script|flush', 'function|flush', 'client|list', 'client|kill', 'select', 'swapdb', 'replicaof', 'save', 'bgrewriteaof', 'shutdown']),
    );
  });

  it('kvql cannot read or write keys outside its patterns, not even from a script, nor listen on other channels', async () => {
    await once(redis.admin, async (r) => {
      await r.set('other:secret', 's');
      await r.hset('{other:0}:b:1', 'k', 'v');
      await r.hset(`${prefix}x:meta`, 'layout', '2');
    });
    const outside = ['other:secret', '{other:0}:b:1', `${prefix}x:meta`, `{${prefix}x:0}:i`, 'kv:meta'];
    for (const key of outside) {
      await expect(kvql.get(key), `GET ${key}`).rejects.toThrow(/NOPERM/);
      await expect(kvql.hget(key, 'k'), `HGET ${key}`).rejects.toThrow(/NOPERM/);
      await expect(kvql.hset(key, 'k', 'x'), `HSET ${key}`).rejects.toThrow(/NOPERM/);
      await expect(kvql.del(key), `DEL ${key}`).rejects.toThrow(/NOPERM/);
      await expect(kvql.eval("return redis.call('GET', KEYS[1])", 1, key), `EVAL GET ${key}`).rejects.toThrow(/NOPERM/);
    }
    // A script that names an allowed key but touches another, or runs a refused command.
    await expect(kvql.eval("return redis.call('GET', 'other:secret')", 1, `${prefix}:meta`)).rejects.toThrow(/can't access at least one of the keys/);
    await expect(kvql.eval("return redis.call('FLUSHALL')", 0)).rejects.toThrow(/can't run this command/);
    await expect(kvql.eval("return redis.call('KEYS', '*')", 0)).rejects.toThrow(/can't run this command/);
    await expect(kvql.eval("return redis.call('SET', KEYS[1], 'x')", 1, `${prefix}:meta`)).rejects.toThrow(/can't run this command/);
    // Its own keys: fine.
    expect(await kvql.hget(`${prefix}:meta`, 'layout')).toBe(LAYOUT_VERSION);
    expect(await once(redis.admin, (r) => r.get('other:secret'))).toBe('s');
    // Channels: only the keyevent channel of XADD (the change feed on a cluster).
    const sub = new Redis(redis.kvqlUrl, { lazyConnect: true, maxRetriesPerRequest: 0 });
    sub.on('error', () => {});
    await sub.connect();
    try {
      await expect(sub.subscribe('__keyevent@0__:xadd')).resolves.toBe(1);
      await expect(sub.subscribe('__keyevent@0__:del')).rejects.toThrow(/NOPERM/);
      await expect(sub.psubscribe('*')).rejects.toThrow(/NOPERM/);
    } finally {
      sub.disconnect();
    }
  });

  it('no log line and no error response holds a password: a wrong one, a refused one, Redis gone', async () => {
    // A second server as a user that does not exist yet: Redis refuses it (WRONGPASS) until the
    // user is made, and the server waits meanwhile, logging the refusals.
    const wrong = newPassword();
    const second = capturingLogger();
    const starting = startServer(
      loadConfig({ PORT: '0', REDIS_URL: `redis://late:${wrong}@127.0.0.1:${redis.port}`, KV_PREFIX: prefix, KV_PARTITIONS: '4', KV_BUCKETS: '8', LOG_LEVEL: 'trace' }),
      second.log,
    );
    try {
      await until(10_000, 'a logged WRONGPASS', () => (second.raw.some((l) => /WRONGPASS/.test(l)) ? true : undefined));
      await once(redis.admin, (r) => r.call('ACL', 'SETUSER', 'late', ...kvqlAclRules({ prefix, password: wrong }).split(' ')));
    } finally {
      await (await starting).close();
    }
    expect(second.raw.join('')).not.toContain(wrong);

    // Redis gone: every request fails, /ready says why.
    await redis.stop();
    const failed = await until(10_000, 'a failed get', async () => {
      const r = await gql(server!.url, GET, { key: 'w:a' });
      return r.body.errors ? r : undefined;
    });
    expect(failed.body.errors[0].extensions.code).toBe('STORE_UNAVAILABLE');
    bodies.push(failed.text, (await gql(server!.url, PUT, { key: 'w:z', value: 'z' })).text);
    const ready = await fetch(server!.url.replace(/\/graphql$/, '/ready'), { signal: AbortSignal.timeout(5000) });
    expect(ready.status).toBe(503);
    bodies.push(await ready.text());

    // The loss of Redis is logged (by the connection's error events).
    await until(5000, 'a logged Redis error', () => (logger.raw.some((l) => /"msg":"redis: /.test(l)) ? true : undefined));
    const all = [...logger.raw, ...bodies].join('\n');
    expect(all).not.toContain(kvqlPassword);
    expect(all).not.toContain(adminPassword);
    expect(all).not.toContain(wrong);
    await server!.close();
    server = undefined;
  });
});

describe('the managed Redis runs kvql as user kvql', () => {
  const dirs: string[] = [];
  const started: ManagedRedis[] = [];
  afterAll(async () => {
    for (const m of started) await m.stop().catch(() => {});
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'kvql-managed-acl-'));
    dirs.push(d);
    return d;
  };
  const messages: string[] = [];
  const log = (m: string) => void messages.push(m);

  it('makes its passwords once, keeps them private, and gives kvql only its own keys', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const prefix = uniquePrefix('managed');
    const managed = await startManagedRedis({ dataDir, port, prefix, log });
    started.push(managed);
    const kvqlPassword = readFileSync(join(dataDir, KVQL_PASSWORD_FILE), 'utf8').trim();
    const adminPassword = readFileSync(join(dataDir, ADMIN_PASSWORD_FILE), 'utf8').trim();
    expect(kvqlPassword).toMatch(/^[0-9a-f]{48}$/);
    expect(adminPassword).toMatch(/^[0-9a-f]{48}$/);
    expect(adminPassword).not.toBe(kvqlPassword);
    for (const f of [KVQL_PASSWORD_FILE, ADMIN_PASSWORD_FILE, ACL_FILE]) expect(statSync(join(dataDir, f)).mode & 0o777, f).toBe(0o600);
    // The ACL file holds hashes only; the command line holds no password.
    const acl = readFileSync(join(dataDir, ACL_FILE), 'utf8');
    expect(acl).not.toContain(kvqlPassword);
    expect(acl).not.toContain(adminPassword);
    const cmdline = readFileSync(`/proc/${managed.pid()}/cmdline`, 'utf8');
    expect(cmdline).not.toContain(kvqlPassword);
    expect(cmdline).not.toContain(adminPassword);
    expect(managed.kvqlUrl).toBe(`redis://kvql:${kvqlPassword}@127.0.0.1:${port}`);
    expect(messages.join('\n')).not.toContain(kvqlPassword);

    // No password: nothing. The default user's password: everything. kvql's: its keys only.
    await expect(once({ port }, (r) => r.ping())).rejects.toThrow(/NOAUTH/);
    expect(await once({ port, password: adminPassword }, (r) => r.call('CONFIG', 'GET', 'appendfsync'))).toEqual(['appendfsync', 'always']);
    const redis = createRedis(managed.kvqlUrl, { commandTimeoutMs: 2000 });
    redis.on('error', () => {});
    await redis.connect();
    try {
      const store = await KvStore.open(redis, { prefix, partitions: 2 });
      await store.put({ key: 'a', value: '1' });
      expect((await store.get('a'))?.value).toBe('1');
      await expect(redis.call('FLUSHALL')).rejects.toThrow(/NOPERM/);
      await expect(redis.get('kv:meta')).rejects.toThrow(/NOPERM/);
      store.close();
    } finally {
      redis.disconnect();
    }

    // Stopped and started again: the same passwords, the data still there.
    await managed.stop();
    const again = await startManagedRedis({ dataDir, port, prefix, log });
    started.push(again);
    expect(again.kvqlUrl).toBe(managed.kvqlUrl);
    expect(readFileSync(join(dataDir, ADMIN_PASSWORD_FILE), 'utf8').trim()).toBe(adminPassword);
    // Adopted by a second start with another KV_PREFIX: its users are reloaded for that prefix.
    const other = uniquePrefix('managed2');
    const adopter = await startManagedRedis({ dataDir, port, prefix: other, log });
    expect(adopter.pid()).toBe(again.pid());
    expect(messages.join('\n')).toMatch(/found running redis-server.*[\s\S]*reloaded its users/);
    await once({ port, username: 'kvql', password: kvqlPassword }, async (r) => {
      expect(await r.hsetnx(`${other}:meta`, 'layout', '2')).toBe(1);
      await expect(r.get(`${prefix}:meta`)).rejects.toThrow(/NOPERM/);
    });
    // Both stop together: each watches the same redis-server and would restart it for the other.
    await Promise.all([adopter.stop(), again.stop()]);
  });

  it('restarts a Redis left running by a kvql without the ACL, with the ACL', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    // As an older kvql started it: no --aclfile, so a default user without a password.
    const old = spawn('redis-server', [REDIS_CONF, '--port', String(port), '--dir', dataDir, '--pidfile', join(dataDir, 'redis.pid')], { stdio: 'ignore', detached: true });
    try {
      await until(10_000, 'the old Redis', async () => ((await once({ port }, (r) => r.ping()).catch(() => undefined)) === 'PONG' ? true : undefined));
      await until(5000, 'its pid file', () => (statSync(join(dataDir, 'redis.pid'), { throwIfNoEntry: false }) ? true : undefined));
      const managed = await startManagedRedis({ dataDir, port, log });
      started.push(managed);
      expect(messages.join('\n')).toContain(`redis-server pid ${old.pid} runs without kvql's ACL user; restarting it`);
      expect(managed.pid()).not.toBe(old.pid);
      await expect(once({ port }, (r) => r.ping())).rejects.toThrow(/NOAUTH/);
      expect(await once({ port, username: 'kvql', password: readFileSync(join(dataDir, KVQL_PASSWORD_FILE), 'utf8').trim() }, (r) => r.ping())).toBe('PONG');
      await managed.stop();
    } finally {
      if (old.exitCode === null && old.signalCode === null) old.kill('SIGKILL');
    }
  });

  it('npm start (no REDIS_URL) serves as kvql, and npm run verify checks it as kvql, neither printing a password', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const prefix = uniquePrefix('start');
    const logger = capturingLogger();
    const running = await startServer(loadConfig({ PORT: '0', KV_DATA_DIR: dataDir, KV_MANAGED_REDIS_PORT: String(port), KV_PREFIX: prefix, LOG_LEVEL: 'trace' }), logger.log);
    let out = '';
    try {
      started.push(running.managed!);
      expect((await gql(running.url, PUT, { key: 'x', value: 'y' })).body.data.put.version).toBe(1);
      expect((await gql(running.url, GET, { key: 'x' })).body.data.get.value).toBe('y');
      const clients = (await once({ port, password: readFileSync(join(dataDir, ADMIN_PASSWORD_FILE), 'utf8').trim() }, (r) => r.call('CLIENT', 'LIST'))) as string;
      const users = new Set([...clients.matchAll(/ user=(\S+)/g)].map((m) => m[1]));
      expect(users).toEqual(new Set(['kvql', 'default'])); // the API's connections, and this one
      // npm run verify, with the same environment and no REDIS_URL.
      const env = { ...process.env };
      for (const name of Object.keys(env)) if (/^(REDIS_|KV_|PORT$|HOST$)/.test(name)) delete env[name];
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'src/verifyCli.ts'], {
          cwd: REPO,
          env: { ...env, KV_DATA_DIR: dataDir, KV_MANAGED_REDIS_PORT: String(port), KV_PREFIX: prefix },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        child.stdout.on('data', (c: Buffer) => (out += c));
        child.stderr.on('data', (c: Buffer) => (out += c));
        child.on('exit', resolve);
      });
      expect(out).toContain('OK: no problems found');
      expect(code, out).toBe(0);
    } finally {
      await running.close();
    }
    const text = logger.raw.join('') + out;
    expect(text).toMatch(/started redis-server pid/);
    expect(text).not.toContain(readFileSync(join(dataDir, KVQL_PASSWORD_FILE), 'utf8').trim());
    expect(text).not.toContain(readFileSync(join(dataDir, ADMIN_PASSWORD_FILE), 'utf8').trim());
  });
});
