// npm run token -- --id ci-reader --scopes read,write --prefix tenantA: [--prefix tenantB:]
// Prints a new random bearer token (give it to the client; it is shown once and stored nowhere)
// and the entry to add to KV_TOKENS or the KV_TOKENS_FILE array, which holds only its SHA-256.
import { parseArgs } from 'node:util';
import { newToken, SCOPES, TokenEntrySchema, type Scope } from './auth/tokens.js';

function fail(message: string): never {
  process.stderr.write(`${message}\nusage: npm run token -- --id <name> --scopes read,write,admin --prefix <key prefix> [--prefix ...]\n`);
  process.exit(2);
}

let values: { id?: string; scopes?: string; prefix?: string[] };
try {
  ({ values } = parseArgs({ options: { id: { type: 'string' }, scopes: { type: 'string' }, prefix: { type: 'string', multiple: true } } }));
} catch (err) {
  fail((err as Error).message);
}
if (!values.id) fail('--id is required');
const scopes = (values.scopes ?? '').split(',').filter(Boolean);
const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
if (scopes.length === 0 || unknown.length > 0) fail(`--scopes: a comma-separated list of ${SCOPES.join(', ')}`);
const { token, entry } = newToken(values.id, scopes as Scope[], values.prefix ?? []);
const checked = TokenEntrySchema.safeParse(entry);
if (!checked.success) fail(checked.error.issues.map((i) => i.message).join('; '));
process.stdout.write(`token (give it to the client; it is not stored anywhere):\n${token}\n\nentry (add it to the KV_TOKENS / KV_TOKENS_FILE array):\n${JSON.stringify(entry)}\n`);
