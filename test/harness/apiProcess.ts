// The API as a separate process (`node <flags> src/main.ts`, startCommand.ts), as `npm start`
// runs it, with REDIS_URL: for experiments that must kill it (SIGKILL) or measure it from
// outside. Ready when /ready answers 200 (not by its log lines, whose format is the logger's
// business).
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from './redisServer.js';
import { startArgs } from './startCommand.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ApiProcessOptions {
  redisUrl: string;
  prefix: string;
  partitions: number;
  /** More environment variables (KV_FEED_RETENTION, ...). */
  env?: Record<string, string>;
  /** How long it may take to answer /ready; 60 s by default. */
  readyTimeoutMs?: number;
  /**
   * The entry point, relative to the repo: `src/main.ts` by default. Another server that reads
   * the same variables and answers /ready (the benchmark's bare-Node baseline) runs the same way.
   */
  script?: string;
}

export interface ApiProcess {
  /** http://127.0.0.1:<port>/graphql */
  url: string;
  /** http://127.0.0.1:<port> */
  base: string;
  pid: number;
  /** Whether the process is still running. */
  running(): boolean;
  /** The last 64 KiB of its stdout and stderr. */
  output(): string;
  /** Crash: SIGKILL, no chance to finish anything; resolves once it has exited. */
  kill9(): Promise<void>;
  /** SIGTERM (a clean stop), SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Waits until GET `base`/ready answers 200, or fails after `ms` or when `failed()` says why. */
export async function waitForReady(base: string, ms: number, failed: () => string | undefined = () => undefined): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    const why = failed();
    if (why !== undefined) throw new Error(why);
    const ok = await fetch(`${base}/ready`, { signal: AbortSignal.timeout(2000) }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return performance.now() - t0;
    await sleep(50);
  }
  throw new Error(`${base}/ready did not answer 200 within ${ms} ms`);
}

export async function startApiProcess(opts: ApiProcessOptions): Promise<ApiProcess> {
  // The parent's own kvql settings must not leak into the child.
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of Object.keys(env)) if (/^(REDIS_URL|KV_|PORT$|HOST$)/.test(name)) delete env[name];
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child: ChildProcess = spawn(process.execPath, startArgs(opts.script), {
      cwd: REPO,
      env: {
        ...env,
        HOST: '127.0.0.1',
        PORT: String(port),
        REDIS_URL: opts.redisUrl,
        KV_PREFIX: opts.prefix,
        KV_PARTITIONS: String(opts.partitions),
        ...opts.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const keep = (chunk: Buffer) => {
      out = (out + chunk.toString()).slice(-65_536);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const running = () => child.exitCode === null && child.signalCode === null;
    const base = `http://127.0.0.1:${port}`;
    const kill = async (signal: NodeJS.Signals, graceMs: number) => {
      if (!running()) return;
      child.kill(signal);
      const force = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(force);
    };
    try {
      await waitForReady(base, opts.readyTimeoutMs ?? 60_000, () =>
        running() ? undefined : `the API exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${out}`,
      );
    } catch (err) {
      await kill('SIGKILL', 0);
      lastError = err;
      // Another process may have taken the port between freePort() and listen: try another.
      if (/EADDRINUSE/.test(out)) continue;
      throw err;
    }
    return {
      url: `${base}/graphql`,
      base,
      pid: child.pid!,
      running,
      output: () => out,
      kill9: () => kill('SIGKILL', 0),
      stop: (graceMs = 10_000) => kill('SIGTERM', graceMs),
    };
  }
  throw lastError;
}
