// kvql's Redis ACL user (users.acl, a template) and the secrets of the managed Redis: the ACL
// file it is started with is built from the template at every start, with kvql's password (as
// its SHA-256) and key patterns for KV_PREFIX, and a `default` user that needs a password too.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PREFIX_PATTERN } from './store/keys.js';

/** The shipped template (repository root). */
export const USERS_ACL_TEMPLATE = fileURLToPath(new URL('../users.acl', import.meta.url));

/** The user kvql connects as. */
export const KVQL_USER = 'kvql';

const PLACEHOLDER = '#PASSWORD_SHA256';
/** The template's key patterns, written for the default prefix "kv". */
const TEMPLATE_PATTERNS: Record<string, (prefix: string) => string> = {
  '~kv:meta': (p) => `~${p}:meta`,
  '~{kv:*': (p) => `~{${p}:*`,
};

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * The rules of user kvql from the template (the part after `user kvql`), with its password's
 * hash and the key patterns of `prefix`.
 */
export function kvqlAclRules(opts: { prefix: string; password: string; template?: string }): string {
  if (!PREFIX_PATTERN.test(opts.prefix)) throw new Error(`invalid key prefix ${JSON.stringify(opts.prefix)}`);
  const text = opts.template ?? readFileSync(USERS_ACL_TEMPLATE, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith(`user ${KVQL_USER} `));
  if (!line) throw new Error(`${USERS_ACL_TEMPLATE} defines no "user ${KVQL_USER}" line`);
  const tokens = line.trim().split(/\s+/).slice(2);
  if (!tokens.includes(PLACEHOLDER)) throw new Error(`${USERS_ACL_TEMPLATE}: the ${KVQL_USER} line has no ${PLACEHOLDER}`);
  for (const pattern of Object.keys(TEMPLATE_PATTERNS)) {
    if (!tokens.includes(pattern)) throw new Error(`${USERS_ACL_TEMPLATE}: the ${KVQL_USER} line has no key pattern ${pattern}`);
  }
  return tokens
    .map((t) => (t === PLACEHOLDER ? `#${sha256Hex(opts.password)}` : (TEMPLATE_PATTERNS[t]?.(opts.prefix) ?? t)))
    .join(' ');
}

/**
 * A whole ACL file: user kvql, and `default` either protected by `adminPassword` (every
 * command and key: for the operator's redis-cli and tools) or off. Off, it keeps every
 * permission: Redis 7.0 replays the append-only file as the default user and checks its ACL
 * inside MULTI/EXEC, so a default user without rights would silently drop every script's writes
 * (all of kvql's) at the next start (redis/redis#14541). Off, nobody can sign in as it anyway.
 */
export function usersAclFile(opts: { prefix: string; password: string; adminPassword?: string; template?: string }): string {
  const lines = [`user ${KVQL_USER} ${kvqlAclRules(opts)}`];
  lines.push(
    opts.adminPassword === undefined ? 'user default off resetpass ~* &* +@all' : `user default on #${sha256Hex(opts.adminPassword)} ~* &* +@all`,
  );
  return `${lines.join('\n')}\n`;
}

/** A new random password: 24 bytes, hex (safe in a URL without escaping). */
export function newPassword(): string {
  return randomBytes(24).toString('hex');
}

/**
 * The secret kept in `file` (mode 0600), created with a random password on first use. A file
 * readable by others is made private again, and `onLoose` says so.
 */
export function loadOrCreateSecret(file: string, onLoose?: (message: string) => void): string {
  if (!existsSync(file)) {
    try {
      writeFileSync(file, `${newPassword()}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another process made it first
    }
  }
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    chmodSync(file, 0o600);
    onLoose?.(`${file} was readable by others (mode ${mode.toString(8)}); made it 0600`);
  }
  const secret = readFileSync(file, 'utf8').trim();
  if (!/^[A-Za-z0-9_-]{16,}$/.test(secret)) throw new Error(`${file} does not hold a password (16 or more of A-Z a-z 0-9 _ -); delete it to have a new one made`);
  return secret;
}

/** Writes `text` to `file` with mode 0600 when it differs; whether it changed. */
export function writePrivateFile(file: string, text: string): boolean {
  const before = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
  if (before === text) {
    if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
    return false;
  }
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600); // writeFileSync's mode applies only to a new file
  return true;
}
