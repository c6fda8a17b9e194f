// A real Redis Cluster for tests: every node its own redis-server process in its own temp
// directory, from copies of the repo's redis.conf and cluster.conf (the way docker-compose and the
// README start a cluster node: `redis-server redis.conf --include cluster.conf --port P --dir D`),
// on loopback ports whose cluster bus port (port + 10000) is free too. redis-cli creates the
// cluster (`--cluster create`), adds masters (`--cluster add-node`) and moves slots to them
// (`--cluster rebalance`), as an operator would.
//
// Nodes can be crashed (kill -9), stopped and restarted from the same config and data directory
// (and so the same nodes.conf: a restarted node rejoins as the node it was). Every wait is
// bounded; every probe is a short-lived connection (askRedis). With `tls`, the nodes speak TLS
// only (port 0, tls-port; TLS on the cluster bus and for replication), and so do the probes and redis-cli.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { REDIS_CONF } from '../../src/managedRedis.js';
import { parseClusterNodes, parseInfo, type ClusterNodeLine } from '../../src/redisInfo.js';
import { askNode, waitNodeReady } from './secureRedis.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CLUSTER_CONF = join(REPO, 'cluster.conf');

/** A Redis Cluster node's bus port is its port + 10000 (Redis's fixed offset). */
const BUS_OFFSET = 10_000;
const SLOTS = 16_384;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface TestClusterOptions {
  /** Masters created with the cluster; 3 by default (redis-cli needs at least 3). */
  masters?: number;
  /** Replicas per master; 1 by default. */
  replicas?: number;
  /** Extra redis-server options for every node (also nodes added later), e.g. ['--maxmemory', '64mb']. */
  extra?: string[];
  /** How long creating the cluster and its first settling may take; 60 s by default. */
  readyTimeoutMs?: number;
  /**
   * TLS only: every node listens with `port 0` and `tls-port`, and speaks TLS on its cluster bus
   * and for replication; redis-cli and the harness's own probes connect with TLS too. Unset: plain TCP.
   */
  tls?: TestClusterTls;
}

/** PEM files (paths) for a TLS cluster, e.g. from makePki() (test/harness/secureRedis.ts). */
export interface TestClusterTls {
  /** The CA the nodes trust (tls-ca-cert-file), and that clients verify the nodes against. */
  ca: string;
  /** Every node's server certificate and key (tls-cert-file, tls-key-file): it must name 127.0.0.1 (IP SAN). */
  cert: string;
  key: string;
  /**
   * A client certificate and key (clientAuth): the nodes present it to each other (cluster bus,
   * replication) and the harness's redis-cli and probes present it. Required: a node asks every
   * peer on the cluster bus for a certificate whatever tls-auth-clients says, and a certificate
   * made for serverAuth only is refused there (redis-cli --cluster create then waits forever).
   */
  clientCert: string;
  clientKey: string;
  /** tls-auth-clients: 'no' by default. */
  authClients?: 'yes' | 'no' | 'optional';
}

export interface TestClusterNode {
  port: number;
  /** The current redis-server process (changes on restart; undefined before the first start). */
  readonly pid: number | undefined;
  dir: string;
  /** Its copies of redis.conf and cluster.conf, and its log file. */
  conf: string;
  clusterConf: string;
  logFile: string;
  /** Whether its process is running (not killed or stopped). */
  running(): boolean;
  /** Crash: SIGKILL; resolves once it has exited. */
  kill9(): Promise<void>;
  /** Start again from the same config files and data directory (so the same nodes.conf), on the same port. */
  restart(): Promise<void>;
  /** SIGTERM (SIGKILL after 10 s); leaves its directory. */
  stop(): Promise<void>;
}

export interface TestCluster {
  /** Every node started, in start order (the ones added by addMaster() last), running or not. */
  nodes: TestClusterNode[];
  /** Every node's address (also those added later: this array grows), for ioredis's Cluster. */
  seeds: { host: string; port: number }[];
  /** "127.0.0.1:p1,127.0.0.1:p2,...": REDIS_CLUSTER_NODES's format, of the nodes created with the cluster. */
  seedList: string;
  /** The node on `port`. */
  node(port: number): TestClusterNode;
  /** The masters' ports (sorted) as CLUSTER NODES of a live node reports them, skipping nodes flagged failed. */
  masters(): Promise<number[]>;
  /** The ports (sorted) of the replicas of the master on `masterPort`, skipping nodes flagged failed. */
  replicasOf(masterPort: number): Promise<number[]>;
  /** Starts another node, joins it to the cluster (an empty master) and waits until every live node knows it. */
  addMaster(): Promise<TestClusterNode>;
  /** `redis-cli --cluster rebalance --cluster-use-empty-masters`, then waitHealthy(). */
  rebalance(timeoutMs?: number): Promise<void>;
  /**
   * Waits until every live node says cluster_state:ok, every live node's view assigns every slot,
   * and to the same master, which is up (running, flagged failed by no live node), no live node
   * is flagged failed, and every live replica's link to its master is up.
   */
  waitHealthy(ms: number): Promise<void>;
  /** Runs `ask` on a short-lived direct connection to the node on `port` (no redirects, bounded). */
  direct<T>(port: number, ask: (client: Redis) => Promise<T>, ms?: number): Promise<T>;
  /** Stops every node (SIGTERM, SIGKILL after a bound) and removes every directory. */
  stop(): Promise<void>;
}

/** One implementation for src and the tests (src/redisInfo.ts). */
export { parseClusterNodes, parseInfo, type ClusterNodeLine };

/** Parses "host:port,host:port" (REDIS_CLUSTER_NODES's format). */
export function parseSeedList(list: string): { host: string; port: number }[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((hp) => {
      const i = hp.lastIndexOf(':');
      const port = Number(hp.slice(i + 1));
      if (i <= 0 || !Number.isInteger(port) || port <= 0) throw new Error(`not host:port: ${hp}`);
      return { host: hp.slice(0, i), port };
    });
}

/** redis-server's options for a TLS node listening on `port` (tls-port; no plain port). */
function tlsServerArgs(port: number, tls: TestClusterTls): string[] {
  return [
    '--port', '0',
    '--tls-port', String(port),
    '--tls-cluster', 'yes',
    '--tls-replication', 'yes',
    '--tls-cert-file', tls.cert,
    '--tls-key-file', tls.key,
    '--tls-ca-cert-file', tls.ca,
    '--tls-auth-clients', tls.authClients ?? 'no',
    ...(tls.clientCert && tls.clientKey ? ['--tls-client-cert-file', tls.clientCert, '--tls-client-key-file', tls.clientKey] : []),
  ];
}

/** redis-cli's options to reach TLS nodes; none for plain TCP. */
function cliTlsArgs(tls: TestClusterTls | undefined): string[] {
  if (!tls) return [];
  return ['--tls', '--cacert', tls.ca, ...(tls.clientCert && tls.clientKey ? ['--cert', tls.clientCert, '--key', tls.clientKey] : [])];
}

const failedFlag = (flags: string[]) => flags.some((f) => f === 'fail' || f === 'fail?' || f === 'noaddr' || f === 'handshake');

// --- Ports -------------------------------------------------------------------------------------

/** Ports (and bus ports) handed out by this process and not yet released. */
const reserved = new Set<number>();

function listenOn(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(undefined));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(srv));
  });
}

const closeServer = (srv: Server) => new Promise<void>((resolve) => srv.close(() => resolve()));

/** The range to draw ports from: below the kernel's ephemeral range (where freePort() and
 * outgoing connections take theirs), bus port included, when there is room; else anywhere. */
function portRange(): [number, number] {
  let ephemeralLow = 32_768;
  try {
    const [lo] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/);
    if (Number(lo) > 0) ephemeralLow = Number(lo);
  } catch {
    // not Linux: keep the usual default
  }
  const hi = Math.min(ephemeralLow - 1 - BUS_OFFSET, 65_535 - BUS_OFFSET);
  return hi - 10_000 >= 1000 ? [10_000, hi] : [1024, 65_535 - BUS_OFFSET];
}

/** A loopback port P <= 55535 with P and P + 10000 both free right now (and not handed out before). */
export async function freeClusterPort(): Promise<number> {
  const [lo, hi] = portRange();
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = lo + Math.floor(Math.random() * (hi - lo + 1));
    if (reserved.has(port) || reserved.has(port + BUS_OFFSET)) continue;
    const a = await listenOn(port);
    if (!a) continue;
    const b = await listenOn(port + BUS_OFFSET);
    await closeServer(a);
    if (!b) continue;
    await closeServer(b);
    reserved.add(port);
    reserved.add(port + BUS_OFFSET);
    return port;
  }
  throw new Error(`no free port pair (P, P+${BUS_OFFSET}) found in ${lo}-${hi}`);
}

function releasePort(port: number) {
  reserved.delete(port);
  reserved.delete(port + BUS_OFFSET);
}

// --- Processes ---------------------------------------------------------------------------------

function logTail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Runs a command with a time bound; rejects with its output when it fails or times out. */
function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeoutMs} ms` : `exited with ${err.code ?? err.signal}`;
        const tail = `${stdout}\n${stderr}`.trim().split('\n').slice(-15).join('\n');
        reject(new Error(`${cmd} ${args.join(' ')} ${why}:\n${tail}`));
      } else resolve(stdout);
    });
  });
}

const exited = (c: ChildProcess) =>
  new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('exit', () => resolve())));

/** Children of this process still running, killed if the process exits without stopping them. */
const children = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(c: ChildProcess) {
  children.add(c);
  c.once('exit', () => children.delete(c));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const child of children) child.kill('SIGKILL');
    });
  }
}

async function startNode(extra: string[], tls?: TestClusterTls): Promise<TestClusterNode> {
  const dir = mkdtempSync(join(tmpdir(), 'kvql-cluster-'));
  const conf = join(dir, 'redis.conf');
  const clusterConf = join(dir, 'cluster.conf');
  const logFile = join(dir, 'redis.log');
  copyFileSync(REDIS_CONF, conf);
  copyFileSync(CLUSTER_CONF, clusterConf);
  let port = 0;
  let child: ChildProcess | undefined;

  const launch = async () => {
    const c = spawn(
      'redis-server',
      [conf, '--include', clusterConf, ...(tls ? tlsServerArgs(port, tls) : ['--port', String(port)]), '--dir', dir, '--bind', '127.0.0.1', '--logfile', logFile, ...extra],
      { cwd: dir, stdio: 'ignore' },
    );
    child = c;
    track(c);
    let spawnError: string | undefined;
    c.once('error', (err) => (spawnError = err.message));
    const failed = () =>
      spawnError !== undefined
        ? `could not run redis-server: ${spawnError}`
        : c.exitCode !== null || c.signalCode !== null
          ? `redis-server on port ${port} exited (${c.signalCode ?? c.exitCode}) before it was ready; ${logFile}:\n${logTail(logFile)}`
          : undefined;
    await waitNodeReady(port, 60_000, failed, tls);
    // Whatever answers must be our process, not another that took the port meanwhile.
    const answering = Number(/process_id:(\d+)/.exec(await askNode(port, (r) => r.info('server'), 2000, tls))?.[1]);
    if (answering !== c.pid) {
      c.kill('SIGKILL');
      await exited(c);
      throw new Error(`port ${port} is answered by pid ${answering}, not our redis-server pid ${c.pid}`);
    }
  };

  // A port can be taken between the check and redis-server's bind (other test runs on this
  // machine): try a few.
  for (let attempt = 1; ; attempt++) {
    port = await freeClusterPort();
    try {
      await launch();
      break;
    } catch (err) {
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited(child);
      }
      releasePort(port);
      if (attempt >= 5) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  return {
    get port() {
      return port;
    },
    get pid() {
      return child?.pid;
    },
    dir,
    conf,
    clusterConf,
    logFile,
    running,
    async kill9() {
      if (!child || !running()) return;
      child.kill('SIGKILL');
      await exited(child);
    },
    async restart() {
      if (running()) throw new Error(`node ${port} is still running (pid ${child?.pid})`);
      await launch();
    },
    async stop() {
      if (!child || !running()) return;
      const c = child;
      c.kill('SIGCONT');
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await exited(c);
      clearTimeout(timer);
    },
  };
}

// --- The cluster -------------------------------------------------------------------------------

export async function startTestCluster(opts: TestClusterOptions = {}): Promise<TestCluster> {
  const masterCount = opts.masters ?? 3;
  const replicas = opts.replicas ?? 1;
  const extra = opts.extra ?? [];
  const readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
  const tls = opts.tls;
  const cliTls = cliTlsArgs(tls);
  if (masterCount < 3) throw new Error('redis-cli --cluster create needs at least 3 masters');

  const nodes: TestClusterNode[] = [];
  const stopAll = async () => {
    await Promise.all(
      nodes.map(async (n) => {
        await n.stop().catch(() => {});
        releasePort(n.port);
        rmSync(n.dir, { recursive: true, force: true });
      }),
    );
  };

  const started = await Promise.allSettled(Array.from({ length: masterCount * (1 + replicas) }, () => startNode(extra, tls)));
  for (const s of started) if (s.status === 'fulfilled') nodes.push(s.value);
  const failedStart = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failedStart) {
    await stopAll();
    throw failedStart.reason;
  }

  const live = () => nodes.filter((n) => n.running());
  const byPort = (port: number) => nodes.find((n) => n.port === port);
  const direct = <T>(port: number, ask: (client: Redis) => Promise<T>, ms = 3000) => askNode(port, ask, ms, tls);
  const clusterNodes = async (port: number) => parseClusterNodes(String(await direct(port, (c) => c.call('CLUSTER', 'NODES'))));
  const clusterInfo = async (port: number) => parseInfo(String(await direct(port, (c) => c.call('CLUSTER', 'INFO'))));

  /** CLUSTER NODES from the first live node that answers. */
  const view = async (): Promise<ClusterNodeLine[]> => {
    let last: unknown = new Error('no node is running');
    for (const n of live()) {
      try {
        return await clusterNodes(n.port);
      } catch (err) {
        last = err;
      }
    }
    throw last;
  };

  const masters = async () =>
    (await view())
      .filter((l) => l.flags.includes('master') && !failedFlag(l.flags))
      .map((l) => l.port)
      .sort((a, b) => a - b);

  const replicasOf = async (masterPort: number) => {
    const lines = await view();
    const master = lines.find((l) => l.port === masterPort);
    if (!master) throw new Error(`no node on port ${masterPort} in CLUSTER NODES`);
    return lines
      .filter((l) => l.flags.includes('slave') && l.masterId === master.id && !failedFlag(l.flags))
      .map((l) => l.port)
      .sort((a, b) => a - b);
  };

  /** Why the cluster is not healthy yet, or undefined when it is. */
  const unhealthy = async (): Promise<string | undefined> => {
    const up = live();
    if (up.length === 0) return 'no node is running';
    const upPorts = new Set(up.map((n) => n.port));
    let reference: string | undefined;
    for (const n of up) {
      const info = await clusterInfo(n.port);
      if (info.cluster_state !== 'ok') return `node ${n.port}: cluster_state:${info.cluster_state}`;
      const lines = await clusterNodes(n.port);
      for (const l of lines) {
        if (upPorts.has(l.port) && failedFlag(l.flags)) return `node ${n.port} sees node ${l.port} as ${l.flags.join(',')}`;
      }
      for (const m of up) {
        if (!lines.some((l) => l.port === m.port)) return `node ${n.port} does not know node ${m.port}`;
      }
      // Who owns each slot in this node's view: every slot by a live master, the same in every view.
      const owner = new Array<number>(SLOTS).fill(0);
      for (const l of lines) {
        if (!l.flags.includes('master')) continue;
        for (const [a, b] of l.slots) for (let s = a; s <= b; s++) owner[s] = l.port;
      }
      const orphan = owner.findIndex((p) => !upPorts.has(p));
      if (orphan >= 0) return `node ${n.port}: slot ${orphan} has ${owner[orphan] ? `master ${owner[orphan]}, which is down` : 'no master'}`;
      const signature = owner.join(',');
      if (reference === undefined) reference = signature;
      else if (signature !== reference) return `node ${n.port} disagrees with node ${up[0]?.port} on slot owners`;
      const me = lines.find((l) => l.flags.includes('myself'));
      if (me?.flags.includes('slave')) {
        const repl = parseInfo(await direct(n.port, (c) => c.info('replication')));
        if (repl.master_link_status !== 'up') return `replica ${n.port}: master_link_status:${repl.master_link_status}`;
        if (repl.master_sync_in_progress === '1') return `replica ${n.port}: sync in progress`;
      }
    }
    return undefined;
  };

  const waitFor = async (what: string, ms: number, check: () => Promise<string | undefined>) => {
    const deadline = Date.now() + ms;
    let why: string | undefined = 'not checked yet';
    while (Date.now() < deadline) {
      try {
        why = await check();
      } catch (err) {
        why = (err as Error).message;
      }
      if (why === undefined) return;
      await sleep(200);
    }
    throw new Error(`${what}: not within ${ms} ms; last: ${why}`);
  };

  const waitHealthy = (ms: number) => waitFor('cluster healthy', ms, unhealthy);

  const addr = (n: TestClusterNode) => `127.0.0.1:${n.port}`;

  /** A live master's port for redis-cli to start from. */
  const liveMaster = async () => {
    const up = new Set(live().map((n) => n.port));
    const port = (await masters()).find((p) => up.has(p));
    if (port === undefined) throw new Error('no live master');
    return port;
  };

  const seeds = nodes.map((n) => ({ host: '127.0.0.1', port: n.port }));
  const seedList = seeds.map((s) => `${s.host}:${s.port}`).join(',');

  try {
    const deadline = Date.now() + readyTimeoutMs;
    await run('redis-cli', ['--cluster', 'create', ...nodes.map(addr), '--cluster-replicas', String(replicas), '--cluster-yes', ...cliTls], readyTimeoutMs);
    await waitHealthy(Math.max(deadline - Date.now(), 1000));
  } catch (err) {
    const tails = nodes.map((n) => `--- node ${n.port} (${n.logFile}):\n${logTail(n.logFile, 4)}`).join('\n');
    await stopAll();
    throw new Error(`${(err as Error).message}\n${tails}`);
  }

  return {
    nodes,
    seeds,
    seedList,
    node(port) {
      const n = byPort(port);
      if (!n) throw new Error(`no node on port ${port}`);
      return n;
    },
    masters,
    replicasOf,
    async addMaster() {
      const existing = await liveMaster();
      const n = await startNode(extra, tls);
      nodes.push(n);
      seeds.push({ host: '127.0.0.1', port: n.port });
      await run('redis-cli', ['--cluster', 'add-node', addr(n), `127.0.0.1:${existing}`, ...cliTls], 60_000);
      const id = String(await direct(n.port, (c) => c.call('CLUSTER', 'MYID')));
      await waitFor(`every node knows new master ${n.port}`, 30_000, async () => {
        for (const m of live()) {
          const line = (await clusterNodes(m.port)).find((l) => l.id === id);
          if (!line) return `node ${m.port} does not know it`;
          if (failedFlag(line.flags)) return `node ${m.port} sees it as ${line.flags.join(',')}`;
          if (!line.flags.includes('master')) return `node ${m.port} sees it as ${line.flags.join(',')}`;
        }
        const info = await clusterInfo(n.port);
        if (Number(info.cluster_known_nodes) < live().length) return `it knows ${info.cluster_known_nodes} of ${live().length} nodes`;
        if (info.cluster_state !== 'ok') return `its cluster_state:${info.cluster_state}`;
        return undefined;
      });
      return n;
    },
    async rebalance(timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      await run('redis-cli', ['--cluster', 'rebalance', `127.0.0.1:${await liveMaster()}`, '--cluster-use-empty-masters', ...cliTls], timeoutMs);
      await waitHealthy(Math.max(deadline - Date.now(), 10_000));
    },
    waitHealthy,
    direct,
    stop: stopAll,
  };
}
