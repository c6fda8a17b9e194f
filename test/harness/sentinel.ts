// A replicated kvql deployment for tests: a primary, two replicas and three Redis Sentinels, each
// its own redis-server process in its own temp directory on a free loopback port. The data nodes
// run a copy of redis.conf with replication.conf appended (replicas also get `replicaof`); the
// sentinels a copy of sentinel.conf with its port and monitor line pointed at this deployment.
// Sentinel rewrites these copies (CONFIG REWRITE, its own state), never the repo's files.
//
// Nodes can be crashed (kill -9), hung (SIGSTOP) and restarted from the same config and data
// directory. A restarted old primary comes back as a primary (its config still says so) until
// the sentinels reconfigure it as a replica of the new one: waitForRejoin() waits for that.
//
// With `tls`, every process speaks TLS only (port 0, tls-port): the data nodes replicate over TLS
// (tls-replication), the sentinels talk to the nodes and to each other over TLS (tls-replication
// in sentinel mode; they announce their tls-port), and the harness's own probes use TLS too.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { REDIS_CONF, redisServerOnPath } from '../../src/managedRedis.js';
import { parseInfo } from '../../src/redisInfo.js';
import { askNode, waitNodeReady } from './secureRedis.js';
import { freePort } from './redisServer.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const REPLICATION_CONF = join(REPO, 'replication.conf');
export const SENTINEL_CONF = join(REPO, 'sentinel.conf');
export const MASTER_NAME = 'kvql';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SentinelDeploymentOptions {
  /** `sentinel down-after-milliseconds` (sentinel.conf's value when unset). */
  downAfterMs?: number;
  /** `sentinel failover-timeout` (sentinel.conf's value when unset). */
  failoverTimeoutMs?: number;
  /** How long the replicas and sentinels may take to be in place; 30 s by default. */
  readyTimeoutMs?: number;
  log?: (line: string) => void;
  /**
   * TLS only: every data node and sentinel listens with `port 0` and `tls-port`; replication and
   * the sentinels' connections (to the nodes and to each other) are TLS; so are the harness's
   * probes. Unset: plain TCP, as before.
   */
  tls?: SentinelDeploymentTls;
}

/** PEM files (paths) for a TLS deployment, e.g. from makePki() (test/harness/secureRedis.ts). */
export interface SentinelDeploymentTls {
  /** The CA every process trusts (tls-ca-cert-file), and that clients verify them against. */
  ca: string;
  /** Every process's server certificate and key: it must name 127.0.0.1 (IP SAN). */
  cert: string;
  key: string;
  /** A client certificate (clientAuth) the processes present to each other and the probes present; optional. */
  clientCert?: string;
  clientKey?: string;
  /** tls-auth-clients: 'no' by default. */
  authClients?: 'yes' | 'no' | 'optional';
}

export interface DeploymentNode {
  /** redis-0 (the first primary), redis-1, redis-2, sentinel-0 ... */
  name: string;
  kind: 'redis' | 'sentinel';
  port: number;
  /** The current process (changes on restart). */
  readonly pid: number | undefined;
  dir: string;
  /** Its config file (the copy it runs, which Sentinel may rewrite) and its log file. */
  conf: string;
  logFile: string;
  running(): boolean;
  /** Crash: SIGKILL; resolves once it has exited. */
  kill9(): Promise<void>;
  /** Hang: SIGSTOP, connections stay open but nothing is answered. */
  pause(): void;
  /** Undo pause(): SIGCONT. */
  resume(): void;
  /** Start again from the same config file and data directory, on the same port. */
  restart(): Promise<void>;
  /** SIGCONT + SIGTERM (SIGKILL after 10 s); leaves the directory. */
  stop(): Promise<void>;
}

export interface Address {
  host: string;
  port: number;
}

/** A data node's replication state as INFO replication reports it. */
export interface ReplicationInfo {
  role: 'master' | 'slave';
  masterPort?: number;
  linkUp?: boolean;
  masterReplid: string;
  offset: number;
  connectedSlaves: number;
  raw: Record<string, string>;
}

export interface RejoinResult {
  ms: number;
  info: ReplicationInfo;
  primaryPort: number;
}

export interface SentinelDeployment {
  /** For REDIS_SENTINELS: "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3". */
  sentinels: string;
  sentinelAddresses: Address[];
  masterName: string;
  downAfterMs: number;
  failoverTimeoutMs: number;
  /** The data nodes; nodes[0] was the first primary. */
  nodes: DeploymentNode[];
  sentinelNodes: DeploymentNode[];
  /** The data node on `port`. */
  node(port: number): DeploymentNode;
  /** The primary as the first sentinel that answers reports it (SENTINEL get-master-addr-by-name). */
  currentPrimary(): Promise<Address>;
  /** What each sentinel reports as the primary (null where one does not answer). */
  primaryBySentinel(): Promise<(Address | null)[]>;
  /**
   * Waits until a sentinel reports a primary other than `oldPort` and that node says it is a
   * master; resolves with the new primary and the time waited.
   */
  waitForFailover(oldPort: number, timeoutMs: number): Promise<{ port: number; ms: number }>;
  /**
   * Waits until `node` is a replica of the current primary in the new history: role:slave,
   * master_port the primary's, master_link_status:up, and the primary's master_replid.
   */
  waitForRejoin(node: DeploymentNode, timeoutMs: number): Promise<RejoinResult>;
  /**
   * Waits until every sentinel names the same primary, sees both replicas (not down) and the two
   * other sentinels, and both replicas are linked to that primary: ready for the next failure.
   */
  waitSettled(timeoutMs: number): Promise<Address>;
  /** INFO replication of a data node, on a short-lived connection. */
  replication(port: number): Promise<ReplicationInfo>;
  /** Runs `ask` on a short-lived direct connection to `port` (no retries, bounded). */
  direct<T>(port: number, ask: (client: Redis) => Promise<T>, ms?: number): Promise<T>;
  /** Stops every process and removes every directory. */
  stop(): Promise<void>;
}

/** Runs `ask` on a short-lived connection to `port` (TLS with `tls`); rejects after `ms`. */
export function direct<T>(port: number, ask: (client: Redis) => Promise<T>, ms = 3000, tls?: SentinelDeploymentTls): Promise<T> {
  return askNode(port, ask, ms, tls);
}

/** Config lines of a TLS-only process on `port`: no plain port, TLS for replication (and Sentinel's links). */
function tlsConfLines(port: number, tls: SentinelDeploymentTls): string[] {
  return [
    'port 0',
    `tls-port ${port}`,
    'tls-replication yes',
    `tls-cert-file ${tls.cert}`,
    `tls-key-file ${tls.key}`,
    `tls-ca-cert-file ${tls.ca}`,
    `tls-auth-clients ${tls.authClients ?? 'no'}`,
    ...(tls.clientCert && tls.clientKey ? [`tls-client-cert-file ${tls.clientCert}`, `tls-client-key-file ${tls.clientKey}`] : []),
  ];
}

/** One implementation for src and the tests (src/redisInfo.ts). */
export { parseInfo };

async function replicationOf(port: number, tls?: SentinelDeploymentTls): Promise<ReplicationInfo> {
  const raw = parseInfo(await direct(port, (c) => c.info('replication'), 2000, tls));
  const role = raw.role === 'slave' ? 'slave' : 'master';
  return {
    role,
    ...(role === 'slave' ? { masterPort: Number(raw.master_port), linkUp: raw.master_link_status === 'up' } : {}),
    masterReplid: raw.master_replid ?? '',
    offset: Number(role === 'slave' ? raw.slave_repl_offset : raw.master_repl_offset),
    connectedSlaves: Number(raw.connected_slaves ?? 0),
    raw,
  };
}

/** A flat [field, value, ...] reply (SENTINEL MASTER, SENTINEL REPLICAS) as an object. */
function pairs(reply: unknown): Record<string, string> {
  const arr = reply as string[];
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < arr.length; i += 2) out[arr[i]!] = arr[i + 1]!;
  return out;
}

function startNode(name: string, kind: 'redis' | 'sentinel', port: number, dir: string, conf: string, logFile: string, tls?: SentinelDeploymentTls): DeploymentNode & { start(): Promise<void> } {
  let child: ChildProcess | undefined;
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const exited = () =>
    new Promise<void>((resolve) => (child === undefined || !running() ? resolve() : child.once('exit', () => resolve())));
  const tail = () => {
    try {
      return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-8).join('\n');
    } catch {
      return '(no log)';
    }
  };
  const start = async () => {
    if (running()) throw new Error(`${name} is already running`);
    const c = spawn('redis-server', kind === 'sentinel' ? [conf, '--sentinel'] : [conf], { stdio: 'ignore' });
    child = c;
    let spawnError: string | undefined;
    c.once('error', (err) => (spawnError = String(err)));
    await waitNodeReady(port, 60_000, () => {
      if (spawnError) return `${name}: could not run redis-server: ${spawnError}`;
      return c.exitCode !== null || c.signalCode !== null ? `${name} (port ${port}) exited (${c.exitCode ?? c.signalCode}):\n${tail()}` : undefined;
    }, tls);
  };
  return {
    name,
    kind,
    port,
    dir,
    conf,
    logFile,
    get pid() {
      return child?.pid;
    },
    running,
    start,
    async kill9() {
      if (!running()) return;
      child!.kill('SIGKILL');
      await exited();
    },
    pause() {
      if (running()) child!.kill('SIGSTOP');
    },
    resume() {
      if (running()) child!.kill('SIGCONT');
    },
    restart: start,
    async stop() {
      if (!running()) return;
      child!.kill('SIGCONT');
      child!.kill('SIGTERM');
      const force = setTimeout(() => child!.kill('SIGKILL'), 10_000);
      await exited();
      clearTimeout(force);
    },
  };
}

/** Replaces the one line matching `re` (which must exist) by `line`. */
function replaceLine(text: string, re: RegExp, line: string, what: string): string {
  if (!re.test(text)) throw new Error(`sentinel.conf has no ${what} line to replace`);
  return text.replace(re, line);
}

export async function startSentinelDeployment(opts: SentinelDeploymentOptions = {}): Promise<SentinelDeployment> {
  if (!redisServerOnPath()) throw new Error('the Sentinel deployment needs a local redis-server binary');
  const log = opts.log ?? (() => {});
  const tls = opts.tls;
  const readyMs = opts.readyTimeoutMs ?? 30_000;
  const sentinelTemplate = readFileSync(SENTINEL_CONF, 'utf8');
  const confValue = (name: string) => Number(new RegExp(`^sentinel ${name} ${MASTER_NAME} (\\d+)`, 'm').exec(sentinelTemplate)?.[1]);
  const downAfterMs = opts.downAfterMs ?? confValue('down-after-milliseconds');
  const failoverTimeoutMs = opts.failoverTimeoutMs ?? confValue('failover-timeout');
  const dataConf = `${readFileSync(REDIS_CONF, 'utf8')}\n# --- replication.conf\n${readFileSync(REPLICATION_CONF, 'utf8')}\n`;

  const nodes: (DeploymentNode & { start(): Promise<void> })[] = [];
  const sentinelNodes: (DeploymentNode & { start(): Promise<void> })[] = [];
  const dirs: string[] = [];
  const stopAll = async () => {
    await Promise.all([...sentinelNodes, ...nodes].map((n) => n.stop().catch(() => {})));
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };

  try {
    // Data nodes: redis.conf + replication.conf, then what makes this one distinct.
    let primaryPort = 0;
    for (let i = 0; i < 3; i++) {
      const dir = mkdtempSync(join(tmpdir(), `kvql-redis-${i}-`));
      dirs.push(dir);
      const port = await freePort();
      if (i === 0) primaryPort = port;
      const conf = join(dir, 'redis.conf');
      const logFile = join(dir, 'redis.log');
      const own = [...(tls ? tlsConfLines(port, tls) : [`port ${port}`]), `dir ${dir}`, `logfile ${logFile}`, ...(i > 0 ? [`replicaof 127.0.0.1 ${primaryPort}`] : [])];
      writeFileSync(conf, `${dataConf}\n# --- this node (test harness)\n${own.join('\n')}\n`);
      const node = startNode(`redis-${i}`, 'redis', port, dir, conf, logFile, tls);
      await node.start();
      nodes.push(node);
    }
    // Sentinels: sentinel.conf with its port and monitor line pointed at this deployment.
    const sentinelAddresses: Address[] = [];
    for (let i = 0; i < 3; i++) {
      const dir = mkdtempSync(join(tmpdir(), `kvql-sentinel-${i}-`));
      dirs.push(dir);
      const port = await freePort();
      const conf = join(dir, 'sentinel.conf');
      const logFile = join(dir, 'sentinel.log');
      // TLS only: the template's port line becomes port 0, tls-port this one, and the TLS files.
      let text = replaceLine(sentinelTemplate, /^port \d+$/m, tls ? tlsConfLines(port, tls).join('\n') : `port ${port}`, 'port');
      text = replaceLine(text, new RegExp(`^sentinel monitor ${MASTER_NAME} \\S+ \\d+ (\\d+)$`, 'm'), `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${primaryPort} $1`, 'monitor');
      text = replaceLine(text, new RegExp(`^sentinel down-after-milliseconds ${MASTER_NAME} \\d+$`, 'm'), `sentinel down-after-milliseconds ${MASTER_NAME} ${downAfterMs}`, 'down-after-milliseconds');
      text = replaceLine(text, new RegExp(`^sentinel failover-timeout ${MASTER_NAME} \\d+$`, 'm'), `sentinel failover-timeout ${MASTER_NAME} ${failoverTimeoutMs}`, 'failover-timeout');
      // Addresses stay IPs (nothing to resolve on loopback); dir and log in its own directory.
      text += `\n# --- this sentinel (test harness)\nsentinel resolve-hostnames no\ndir ${dir}\nlogfile ${logFile}\n`;
      writeFileSync(conf, text);
      const node = startNode(`sentinel-${i}`, 'sentinel', port, dir, conf, logFile, tls);
      await node.start();
      sentinelNodes.push(node);
      sentinelAddresses.push({ host: '127.0.0.1', port });
    }

    const askSentinel = <T>(s: DeploymentNode, q: (c: Redis) => Promise<T>) => direct(s.port, q, 2000, tls);
    const primaryOf = async (s: DeploymentNode): Promise<Address | null> => {
      if (!s.running()) return null;
      try {
        const r = (await askSentinel(s, (c) => c.call('SENTINEL', 'get-master-addr-by-name', MASTER_NAME))) as [string, string] | null;
        return r ? { host: r[0], port: Number(r[1]) } : null;
      } catch {
        return null;
      }
    };
    const replication = (port: number) => replicationOf(port, tls);
    const nodeAt = (port: number) => {
      const n = nodes.find((x) => x.port === port);
      if (!n) throw new Error(`no data node of this deployment on port ${port}`);
      return n;
    };
    const currentPrimary = async (): Promise<Address> => {
      for (const s of sentinelNodes) {
        const a = await primaryOf(s);
        if (a) return a;
      }
      throw new Error('no sentinel answered get-master-addr-by-name');
    };

    /** Polls `probe` every `every` ms until it returns a value (not undefined) or `ms` pass. */
    const until = async <T>(ms: number, what: () => string, probe: () => Promise<T | undefined>, every = 100): Promise<T> => {
      const deadline = Date.now() + ms;
      for (;;) {
        const v = await probe().catch(() => undefined);
        if (v !== undefined) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
        await sleep(every);
      }
    };

    let lastSettle = '';
    const waitSettled = async (timeoutMs: number): Promise<Address> =>
      until(timeoutMs, () => `the deployment to settle (${lastSettle})`, async () => {
        const views = await Promise.all(sentinelNodes.map((s) => primaryOf(s)));
        const ports = new Set(views.map((v) => v?.port ?? -1));
        if (ports.size !== 1 || ports.has(-1)) return void (lastSettle = `sentinels disagree: ${views.map((v) => v?.port ?? '-').join(', ')}`);
        const primary = views[0]!;
        const info = await replication(primary.port);
        if (info.role !== 'master') return void (lastSettle = `${primary.port} is not a master`);
        for (const n of nodes) {
          if (n.port === primary.port) continue;
          const r = await replication(n.port);
          if (r.role !== 'slave' || r.masterPort !== primary.port || !r.linkUp || r.masterReplid !== info.masterReplid)
            return void (lastSettle = `${n.name} not linked to ${primary.port}`);
        }
        for (const s of sentinelNodes) {
          const m = pairs(await askSentinel(s, (c) => c.call('SENTINEL', 'master', MASTER_NAME)));
          if (m.flags !== 'master' || m['num-other-sentinels'] !== '2') return void (lastSettle = `${s.name}: master flags ${m.flags}, other sentinels ${m['num-other-sentinels']}`);
          const reps = ((await askSentinel(s, (c) => c.call('SENTINEL', 'replicas', MASTER_NAME))) as unknown[]).map(pairs);
          const ok = reps.filter((r) => r.flags === 'slave' && r['master-link-status'] === 'ok' && Number(r['master-port']) === primary.port);
          if (ok.length !== 2) return void (lastSettle = `${s.name} sees ${ok.length} healthy replicas (${reps.map((r) => `${r.port}:${r.flags}`).join(' ')})`);
        }
        return primary;
      }, 200);

    const dep: SentinelDeployment = {
      sentinels: sentinelAddresses.map((a) => `${a.host}:${a.port}`).join(','),
      sentinelAddresses,
      masterName: MASTER_NAME,
      downAfterMs,
      failoverTimeoutMs,
      nodes,
      sentinelNodes,
      node: nodeAt,
      currentPrimary,
      primaryBySentinel: () => Promise.all(sentinelNodes.map((s) => primaryOf(s))),
      replication,
      direct: (port, ask, ms) => direct(port, ask, ms, tls),
      async waitForFailover(oldPort, timeoutMs) {
        const t0 = performance.now();
        const port = await until(timeoutMs, () => `a failover away from port ${oldPort}`, async () => {
          for (const s of sentinelNodes) {
            const a = await primaryOf(s);
            if (a && a.port !== oldPort && (await replication(a.port)).role === 'master') return a.port;
          }
          return undefined;
        });
        return { port, ms: performance.now() - t0 };
      },
      async waitForRejoin(node, timeoutMs) {
        const t0 = performance.now();
        let last = '';
        return until(timeoutMs, () => `${node.name} to rejoin as a replica (${last})`, async () => {
          const primary = await currentPrimary();
          if (primary.port === node.port) return void (last = 'sentinels still name it the primary');
          const [mine, theirs] = await Promise.all([replication(node.port), replication(primary.port)]);
          last = `role ${mine.role}, master_port ${mine.masterPort ?? '-'}, link ${mine.linkUp ? 'up' : 'down'}`;
          if (mine.role !== 'slave' || mine.masterPort !== primary.port || !mine.linkUp) return undefined;
          if (theirs.role !== 'master' || mine.masterReplid !== theirs.masterReplid) return void (last += ', other replication history');
          return { ms: performance.now() - t0, info: mine, primaryPort: primary.port };
        }, 200);
      },
      waitSettled,
      stop: stopAll,
    };

    await waitSettled(readyMs);
    log(`sentinel deployment: primary ${nodes[0]!.port}, replicas ${nodes[1]!.port} ${nodes[2]!.port}, sentinels ${dep.sentinels} (down-after ${downAfterMs} ms, failover-timeout ${failoverTimeoutMs} ms)`);
    return dep;
  } catch (err) {
    await stopAll();
    throw err;
  }
}
