// Where the token entries come from: KV_TOKENS (inline JSON) and KV_TOKENS_FILE (a JSON file).
// Read once at start by config.ts, and again by the running server whenever the file changes or
// the process gets SIGHUP, so that a token can be revoked (or added) without a restart.
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { TokenListSchema, type TokenEntry } from './tokens.js';

/** Token entries from one variable's JSON text; a problem line naming the variable otherwise. */
export function parseTokenList(name: string, text: string, problems: string[]): TokenEntry[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    problems.push(`  ${name}: not JSON (${(err as Error).message}); expected an array of {"id","sha256","scopes","prefixes"}`);
    return [];
  }
  const parsed = TokenListSchema.safeParse(json);
  if (!parsed.success) {
    for (const i of parsed.error.issues) problems.push(`  ${name}: entry ${i.path.join('.') || '(the list)'}: ${i.message}`);
    return [];
  }
  return parsed.data;
}

export interface TokenSources {
  /** KV_TOKENS: inline JSON. */
  inline?: string;
  /** KV_TOKENS_FILE: the path of a JSON file. */
  file?: string;
}

/** Reads both sources; every problem (unreadable, not JSON, a bad entry, a duplicate) as a line naming its variable. */
export function readTokens(sources: TokenSources): { tokens: TokenEntry[]; problems: string[] } {
  const problems: string[] = [];
  const tokens: TokenEntry[] = [];
  if (sources.inline !== undefined) tokens.push(...parseTokenList('KV_TOKENS', sources.inline, problems));
  if (sources.file !== undefined) {
    let text: string | undefined;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (err) {
      problems.push(`  KV_TOKENS_FILE: cannot read ${JSON.stringify(sources.file)}: ${(err as Error).message}`);
    }
    if (text !== undefined) tokens.push(...parseTokenList('KV_TOKENS_FILE', text, problems));
  }
  const ids = new Set<string>();
  const hashes = new Set<string>();
  for (const t of tokens) {
    if (ids.has(t.id)) problems.push(`  KV_TOKENS: token id "${t.id}" appears twice`);
    if (hashes.has(t.sha256)) problems.push(`  KV_TOKENS: token "${t.id}" has the same sha256 as another`);
    ids.add(t.id);
    hashes.add(t.sha256);
  }
  return { tokens, problems };
}

export interface TokenWatch {
  /** Reads the sources again now (SIGHUP does this); resolves to whether the new list was taken. */
  reload(reason: string): boolean;
  stop(): void;
}

/**
 * Watches KV_TOKENS_FILE (by polling its mtime and size every `intervalMs`: portable, and cheap at
 * one stat a second) and hands every valid new list to `apply`. A list that does not parse, or
 * that holds no token at all, is refused and the tokens in force stay: an editing mistake must
 * neither lock everyone out nor turn authentication off.
 */
export function watchTokens(
  sources: TokenSources,
  apply: (tokens: TokenEntry[]) => void,
  log: { info(m: string): void; error(m: string): void },
  intervalMs = 1000,
): TokenWatch {
  const reload = (reason: string): boolean => {
    const { tokens, problems } = readTokens(sources);
    if (problems.length > 0) {
      log.error(`tokens not reloaded (${reason}); the previous tokens stay in force:\n${problems.join('\n')}`);
      return false;
    }
    if (tokens.length === 0) {
      log.error(`tokens not reloaded (${reason}): the new list holds no token; the previous tokens stay in force`);
      return false;
    }
    apply(tokens);
    log.info(`tokens reloaded (${reason}): ${tokens.length} in force`);
    return true;
  };
  const file = sources.file;
  const onChange = (now: Stats, before: Stats) => {
    if (now.mtimeMs !== before.mtimeMs || now.size !== before.size || now.ino !== before.ino) reload(`${file} changed`);
  };
  if (file !== undefined) watchFile(file, { interval: intervalMs, persistent: false }, onChange);
  return {
    reload,
    stop: () => {
      if (file !== undefined) unwatchFile(file, onChange);
    },
  };
}
