// An operator command (src/*Cli.ts) run as its own process, as `npm run <name>` runs it (tsx),
// with no kvql setting of the test process: where Redis is (REDIS_URL, REDIS_CLUSTER_NODES,
// REDIS_SENTINELS, passwords), KV_*, PORT and HOST come only from `env`.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** Its exit code and its stdout and stderr together; killed (and the promise rejected) after `ms`. */
export function runCommand(script: string, args: string[], env: Record<string, string>, ms = 60_000): Promise<{ code: number | null; out: string }> {
  const clean = { ...process.env };
  for (const name of Object.keys(clean)) if (/^(REDIS_|KV_|PORT$|HOST$)/.test(name)) delete clean[name];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: REPO, env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.stderr.on('data', (c: Buffer) => (out += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} did not exit within ${ms / 1000} s:\n${out}`));
    }, ms);
    // 'close': after its output has all been read ('exit' can come first).
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}
