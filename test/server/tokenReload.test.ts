// KV_TOKENS_FILE is read again while the server runs (README, "Security: revoking a token"): when
// the file changes, and on SIGHUP (main.ts calls reloadTokens). A removed token is refused from
// then on; a file that does not parse or holds no token is refused with an error line, and the
// tokens in force stay.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { newToken } from '../../src/auth/tokens.js';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { uniquePrefix } from '../harness/app.js';
import { until } from '../harness/until.js';

const dir = mkdtempSync(join(tmpdir(), 'kvql-reload-'));
const file = join(dir, 'tokens.json');
const a = newToken('a', ['read', 'write'], ['r:']);
const b = newToken('b', ['read'], ['r:']);
const lines: string[] = [];
let server: RunningServer;

beforeAll(async () => {
  writeFileSync(file, JSON.stringify([a.entry, b.entry]));
  const config = loadConfig({ REDIS_URL: inject('redisUrl'), PORT: '0', KV_PREFIX: uniquePrefix('reload'), KV_TOKENS_FILE: file, LOG_LEVEL: 'info' });
  server = await startServer(config, (m) => lines.push(m));
});

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const status = async (token: string) =>
  (
    await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: '{ get(key:"r:1"){ key } }' }),
    })
  ).status;


describe('KV_TOKENS_FILE while running', () => {
  it('takes a changed file within seconds: a removed token gets 401, a kept one goes on', async () => {
    expect([await status(a.token), await status(b.token)]).toEqual([200, 200]);
    writeFileSync(file, JSON.stringify([a.entry]));
    await until(8000, 'b to be refused', async () => ((await status(b.token)) === 401 ? true : undefined));
    expect(await status(a.token)).toBe(200);
    expect(lines.some((l) => /tokens revoked or changed: b\b/.test(l))).toBe(true);
  });

  it('keeps the tokens in force when the new file is broken or empty, and says why', async () => {
    for (const [text, why] of [
      ['[{"id":', /KV_TOKENS_FILE: not JSON/],
      ['[]', /holds no token/],
    ] as const) {
      const before = lines.length;
      writeFileSync(file, text);
      await until(8000, 'the refusal to be logged', () => (lines.slice(before).some((l) => why.test(l)) ? true : undefined));
      expect(lines.slice(before).some((l) => /previous tokens stay in force/.test(l))).toBe(true);
      expect(await status(a.token)).toBe(200);
    }
  });

  it('reads the file again on reloadTokens (SIGHUP), and never logs a token or its hash', async () => {
    const c = newToken('c', ['read'], ['r:']);
    writeFileSync(file, JSON.stringify([c.entry]));
    // Not waiting for the poll: reloadTokens reads now.
    expect(server.reloadTokens('SIGHUP')).toBe(true);
    expect([await status(c.token), await status(a.token)]).toEqual([200, 401]);
    const log = lines.join('\n');
    for (const t of [a, b, c]) {
      expect(log).not.toContain(t.token);
      expect(log).not.toContain(t.entry.sha256);
    }
  });
});
