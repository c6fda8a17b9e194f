// redis-entrypoint.sh, the start of every Redis data node in docker-compose.yml, run here as
// compose runs it (only the paths and the port differ; each node runs copies of the repo's
// config files): a primary with replication.conf and a replica of it. The default user is off,
// the replica's link signs in as admin, kvql serves as its ACL user with KV_MIN_REPLICAS=1, a
// restart keeps every write (Redis 7.0 replays the AOF as the default user: see the script),
// the written files hold no password but the one masterauth needs and are private, and a bad
// password stops the start with a message naming it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { askRedis } from '../../src/managedRedis.js';
import { newPassword } from '../../src/redisAcl.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { gqlData as gql } from '../harness/secureRedis.js';
import { freePort } from '../harness/redisServer.js';
import { until } from '../harness/until.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = join(REPO, 'redis-entrypoint.sh');

interface Node {
  port: number;
  dir: string;
  args: string[];
  child: ChildProcess;
}

/** The env compose gives a data node, with copies of the repo's files where the container has its mounts. */
function nodeEnv(dir: string, passwords: { kvql: string; admin: string }): NodeJS.ProcessEnv {
  // Where the container has its read-only mounts (the script writes users.acl into the data dir).
  const mounts = join(dir, 'etc');
  mkdirSync(mounts, { recursive: true });
  for (const f of ['redis.conf', 'replication.conf', 'users.acl']) copyFileSync(join(REPO, f), join(mounts, f));
  return {
    PATH: process.env.PATH,
    KVQL_REDIS_PASSWORD: passwords.kvql,
    REDIS_ADMIN_PASSWORD: passwords.admin,
    REDIS_DATA_DIR: dir,
    KVQL_ACL_TEMPLATE: join(mounts, 'users.acl'),
    REDIS_CONF: join(mounts, 'redis.conf'),
  };
}

describe('redis-entrypoint.sh (docker-compose.yml data nodes)', () => {
  const passwords = { kvql: newPassword(), admin: newPassword() };
  const admin = { username: 'admin', password: passwords.admin };
  const nodes: Node[] = [];
  let server: RunningServer | undefined;

  /** Starts the script as compose does (its options, then a port and directory of this run's). */
  const run = async (node: Omit<Node, 'child'>): Promise<Node> => {
    const child = spawn('sh', [SCRIPT, ...node.args, '--port', String(node.port), '--dir', node.dir], { cwd: node.dir, env: nodeEnv(node.dir, passwords), stdio: 'ignore' });
    await until(10_000, `the node on ${node.port} answering admin`, () => askRedis(node.port, (r) => r.ping(), 1000, admin).catch(() => undefined), 100);
    return { ...node, child };
  };
  const start = async (args: (dir: string) => string[]): Promise<Node> => {
    const dir = mkdtempSync(join(tmpdir(), 'kvql-entrypoint-'));
    const node = await run({ port: await freePort(), dir, args: args(dir) });
    nodes.push(node);
    return node;
  };

  beforeAll(async () => {
    const primary = await start((dir) => ['--include', join(dir, 'etc', 'replication.conf')]);
    await start((dir) => ['--include', join(dir, 'etc', 'replication.conf'), '--replicaof', '127.0.0.1', String(primary.port)]);
    // replication.conf's min-replicas-to-write: the primary takes writes once it counts the
    // replica as good, which it reckons once a second, a moment after the replica's link is up.
    await until(15_000, 'the primary counting its replica as good', async () => {
      const info = String(await askRedis(primary.port, (r) => r.info('replication'), 1000, admin));
      return /min_slaves_good_slaves:1\b/.test(info) ? true : undefined;
    }, 200);
  }, 30_000);

  afterAll(async () => {
    await server?.close();
    for (const n of nodes) {
      n.child.kill('SIGKILL');
      rmSync(n.dir, { recursive: true, force: true });
    }
  });

  it('turns the default user off and links the replica to its primary as admin', async () => {
    const [primary, replica] = nodes as [Node, Node];
    await expect(askRedis(primary.port, (r) => r.ping(), 1000)).rejects.toThrow(/NOAUTH/);
    await until(15_000, 'the replica linked to the primary', async () => {
      const info = String(await askRedis(replica.port, (r) => r.info('replication'), 1000, admin));
      return /master_link_status:up/.test(info) ? true : undefined;
    }, 200);
    const users = (await askRedis(primary.port, (r) => r.call('ACL', 'USERS'), 1000, admin)) as string[];
    expect([...users].sort()).toEqual(['admin', 'default', 'kvql']);
    const def = (await askRedis(primary.port, (r) => r.call('ACL', 'GETUSER', 'default'), 1000, admin)) as unknown[];
    expect(String(def[1])).toContain('off');
  });

  it('serves kvql as its ACL user, with writes waiting for the replica', async () => {
    const [primary] = nodes as [Node];
    const config = loadConfig({
      PORT: '0',
      REDIS_URL: `redis://kvql:${passwords.kvql}@127.0.0.1:${primary.port}`,
      KV_MIN_REPLICAS: '1',
    });
    server = await startServer(config, createLogger({ level: 'silent' }));
    const put = 'mutation($k: String!, $v: String!) { put(key: $k, value: $v) { version } }';
    expect((await gql(server.url, put, { k: 'compose', v: 'as kvql' })).put.version).toBe(1);
    expect((await gql(server.url, 'query($k: String!) { get(key: $k) { value } }', { k: 'compose' })).get.value).toBe('as kvql');
    expect(await askRedis(primary.port, (r) => r.call('ACL', 'LOG'), 1000, admin)).toEqual([]);
  });

  it('keeps every write across a restart of the primary (the AOF replays in full)', async () => {
    const [primary] = nodes as [Node];
    const put = 'mutation($k: String!, $v: String!) { put(key: $k, value: $v) { version } }';
    for (let i = 0; i < 20; i++) await gql(server!.url, put, { k: `restart:${i}`, v: `v${i}` });
    // The replica must not hand the data back: it is stopped too, so only the AOF can.
    for (const n of nodes) {
      const exited = new Promise((r) => n.child.once('exit', r));
      n.child.kill('SIGKILL');
      await exited;
    }
    nodes[0] = await run(primary);
    const acl = (await askRedis(primary.port, (r) => r.call('ACL', 'LOG'), 1000, admin)) as unknown[];
    expect(acl, JSON.stringify(acl).slice(0, 300)).toEqual([]);
    // kvql reconnects by itself and finds every value.
    const get = 'query($k: String!) { get(key: $k) { value version } }';
    await until(15_000, 'kvql reading from the restarted primary', async () => ((await gql(server!.url, get, { k: 'restart:0' })).get ? true : undefined), 200);
    for (let i = 0; i < 20; i++) expect((await gql(server!.url, get, { k: `restart:${i}` })).get, `restart:${i}`).toEqual({ value: `v${i}`, version: 1 });

    // A kvql started now, while the primary refuses writes (its replica is down: NOREPLICAS),
    // still starts on the existing keyspace and serves the reads.
    const late = await startServer(loadConfig({ PORT: '0', REDIS_URL: `redis://kvql:${passwords.kvql}@127.0.0.1:${primary.port}`, KV_MIN_REPLICAS: '1' }), createLogger({ level: 'silent' }));
    try {
      expect((await gql(late.url, get, { k: 'restart:7' })).get).toEqual({ value: 'v7', version: 1 });
    } finally {
      await late.close();
    }
  });

  it('writes private files: the ACL file holds hashes only', () => {
    for (const n of nodes) {
      const acl = readFileSync(join(n.dir, 'users.acl'), 'utf8');
      expect(acl).not.toContain(passwords.kvql);
      expect(acl).not.toContain(passwords.admin);
      expect(acl).toMatch(/^user kvql on #[0-9a-f]{64} /m);
      expect(statSync(join(n.dir, 'users.acl')).mode & 0o077).toBe(0);
      // masterauth needs the password itself: readable by its owner only.
      expect(statSync(join(n.dir, 'auth.conf')).mode & 0o077).toBe(0);
    }
  });

  it('refuses to start without a password, or with one a config line cannot hold', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvql-entrypoint-'));
    try {
      const run = (env: NodeJS.ProcessEnv) => spawnSync('sh', [SCRIPT, '--port', '1'], { env, encoding: 'utf8', timeout: 10_000 });
      const quoted = run(nodeEnv(dir, { kvql: passwords.kvql, admin: 'a"b c' }));
      expect(quoted.status).toBe(2);
      expect(quoted.stderr).toMatch(/REDIS_ADMIN_PASSWORD: use letters, digits/);
      const { KVQL_REDIS_PASSWORD: _, ...withoutKvql } = nodeEnv(dir, passwords);
      const missing = run(withoutKvql);
      expect(missing.status).not.toBe(0);
      expect(missing.stderr).toMatch(/KVQL_REDIS_PASSWORD/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
