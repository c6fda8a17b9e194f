// The token configuration (KV_TOKENS, KV_TOKENS_FILE) and the safe default: no tokens only on
// loopback. A wrong value stops the start with a message naming the variable.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Authenticator, hashToken, newToken } from '../../src/auth/tokens.js';
import { rangeWithin } from '../../src/graphql/access.js';
import { ConfigError, isLoopback, loadConfig } from '../../src/config.js';
import { prefixRange, UNBOUNDED } from '../../src/store/order.js';

const dir = mkdtempSync(join(tmpdir(), 'kvql-tokens-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function refusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

const reader = newToken('ci-reader', ['read'], ['tenantA:']);

describe('tokens in the configuration', () => {
  it('refuses a non-loopback HOST without tokens, naming HOST and KV_TOKENS/KV_TOKENS_FILE', () => {
    for (const HOST of ['0.0.0.0', '::', '10.0.0.5', 'example.com', '128.0.0.1']) {
      const message = refusal({ HOST });
      expect(message).toMatch(/HOST/);
      expect(message).toMatch(/KV_TOKENS or KV_TOKENS_FILE/);
    }
    for (const HOST of ['127.0.0.1', '::1', 'localhost', '127.1.2.3', '[::1]']) {
      expect(isLoopback(HOST), HOST).toBe(true);
      expect(loadConfig({ HOST }).tokens).toEqual([]);
    }
  });

  it('accepts any HOST with tokens, from KV_TOKENS and from KV_TOKENS_FILE', () => {
    const c = loadConfig({ HOST: '0.0.0.0', KV_TOKENS: JSON.stringify([reader.entry]) });
    expect(c.tokens).toEqual([reader.entry]);
    const file = join(dir, 'tokens.json');
    const writer = newToken('writer', ['write', 'read'], ['tenantB:', '']);
    writeFileSync(file, JSON.stringify([writer.entry]));
    expect(loadConfig({ HOST: '0.0.0.0', KV_TOKENS_FILE: file }).tokens).toEqual([writer.entry]);
    expect(loadConfig({ HOST: '0.0.0.0', KV_TOKENS_FILE: file, KV_TOKENS: JSON.stringify([reader.entry]) }).tokens.map((t) => t.id)).toEqual(['ci-reader', 'writer']);
  });

  it('refuses wrong token entries, naming the variable', () => {
    const bad: [Record<string, string>, RegExp][] = [
      [{ KV_TOKENS: 'not json' }, /KV_TOKENS: not JSON/],
      [{ KV_TOKENS: '{}' }, /KV_TOKENS: .*array/],
      [{ KV_TOKENS: '[]' }, /KV_TOKENS: holds no token/],
      [{ KV_TOKENS: JSON.stringify([{ ...reader.entry, sha256: 'abc' }]) }, /KV_TOKENS: entry 0.sha256: .*hex SHA-256/],
      [{ KV_TOKENS: JSON.stringify([{ ...reader.entry, scopes: ['root'] }]) }, /KV_TOKENS: entry 0.scopes.0/],
      [{ KV_TOKENS: JSON.stringify([{ ...reader.entry, scopes: [] }]) }, /KV_TOKENS: .*at least one/],
      [{ KV_TOKENS: JSON.stringify([{ ...reader.entry, prefixes: [] }]) }, /KV_TOKENS: .*needs at least one prefix/],
      [{ KV_TOKENS: JSON.stringify([{ ...reader.entry, token: 'secret' }]) }, /KV_TOKENS: entry 0/],
      [{ KV_TOKENS: JSON.stringify([reader.entry, reader.entry]) }, /appears twice/],
      [{ KV_TOKENS_FILE: join(dir, 'missing.json') }, /KV_TOKENS_FILE: cannot read/],
    ];
    for (const [env, pattern] of bad) expect(refusal(env), JSON.stringify(env)).toMatch(pattern);
  });

  it('a token is checked by its SHA-256; the entry never holds the token', () => {
    const auth = new Authenticator([reader.entry]);
    expect(reader.entry.sha256).toBe(hashToken(reader.token).toString('hex'));
    expect(JSON.stringify(reader.entry)).not.toContain(reader.token);
    expect(auth.authenticate(`Bearer ${reader.token}`)).toMatchObject({ id: 'ci-reader', read: true, write: false, prefixes: ['tenantA:'] });
    for (const h of [undefined, '', 'Bearer', `Bearer ${reader.entry.sha256}`, `Basic ${reader.token}`, `Bearer  ${reader.token}`, `Bearer ${reader.token} x`])
      expect(auth.authenticate(h), String(h)).toBeNull();
    // An upper-case hash in the configuration is the same hash.
    expect(new Authenticator([{ ...reader.entry, sha256: reader.entry.sha256.toUpperCase() }]).authenticate(`Bearer ${reader.token}`)?.id).toBe('ci-reader');
    // No tokens: auth is off.
    expect(new Authenticator([]).authenticate(undefined)).toMatchObject({ read: true, write: true, prefixes: [''] });
    // admin: read and write everywhere, whatever prefixes it lists.
    const admin = newToken('root', ['admin'], ['x:']);
    expect(new Authenticator([admin.entry]).authenticate(`Bearer ${admin.token}`)).toMatchObject({ read: true, write: true, prefixes: [''] });
  });
});

describe('npm run token', () => {
  it('prints a new token and an entry holding only its hash, which the configuration accepts', () => {
    const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/tokenCli.ts', ...args], { encoding: 'utf8' });
    const out = run('--id', 'ci-reader', '--scopes', 'read,write', '--prefix', 'tenantA:', '--prefix', 'tenantB:');
    expect(out.status, out.stderr).toBe(0);
    const lines = out.stdout.split('\n');
    const token = lines[1]!;
    const entry = JSON.parse(lines.find((l) => l.startsWith('{'))!);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(entry).toEqual({ id: 'ci-reader', sha256: hashToken(token).toString('hex'), scopes: ['read', 'write'], prefixes: ['tenantA:', 'tenantB:'] });
    expect(JSON.stringify(entry)).not.toContain(token);
    const config = loadConfig({ HOST: '0.0.0.0', KV_TOKENS: JSON.stringify([entry]) });
    expect(new Authenticator(config.tokens).authenticate(`Bearer ${token}`)?.id).toBe('ci-reader');
    // Two runs, two tokens.
    expect(run('--id', 'x', '--scopes', 'admin').stdout.split('\n')[1]).not.toBe(token);
    for (const bad of [['--scopes', 'read'], ['--id', 'x'], ['--id', 'x', '--scopes', 'root'], ['--id', 'x', '--scopes', 'read']]) {
      const r = run(...bad);
      expect(r.status, bad.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
    }
  });
});

describe('rangeWithin', () => {
  const r = (lo: string | null, hi: string | null) => ({ lo: lo === null ? UNBOUNDED : { key: lo, inclusive: true }, hi: hi === null ? UNBOUNDED : { key: hi, inclusive: false } });
  it('holds exactly the ranges whose every key starts with the prefix', () => {
    expect(rangeWithin(prefixRange('tenantA:'), 'tenantA:')).toBe(true);
    expect(rangeWithin(prefixRange('tenantA:x'), 'tenantA:')).toBe(true);
    expect(rangeWithin(prefixRange('tenantA'), 'tenantA:')).toBe(false);
    expect(rangeWithin(prefixRange('tenantAB:'), 'tenantA:')).toBe(false);
    expect(rangeWithin(prefixRange(''), 'tenantA:')).toBe(false);
    expect(rangeWithin(r(null, null), 'tenantA:')).toBe(false);
    expect(rangeWithin(r(null, null), '')).toBe(true);
    expect(rangeWithin(r('tenantA:', 'tenantA;'), 'tenantA:')).toBe(true);
    expect(rangeWithin(r('tenantA:', 'tenantA;\0'), 'tenantA:')).toBe(false);
    expect(rangeWithin({ lo: { key: 'tenantA:', inclusive: true }, hi: { key: 'tenantA;', inclusive: true } }, 'tenantA:')).toBe(false);
    expect(rangeWithin(r('tenantA9', 'tenantA;'), 'tenantA:')).toBe(false);
    expect(rangeWithin(r('tenantA:', null), 'tenantA:')).toBe(false);
    expect(rangeWithin(r(null, 'tenantA:z'), 'tenantA:')).toBe(false);
    // Multi-byte prefixes: the successor is taken on UTF-8 bytes.
    expect(rangeWithin(r('é', 'ê'), 'é')).toBe(true);
    expect(rangeWithin(r('é', 'ê\0'), 'é')).toBe(false);
    expect(rangeWithin(prefixRange('😀a'), '😀')).toBe(true);
  });
});
