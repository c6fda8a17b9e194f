// How `npm start` runs the API: package.json's start script, `node <flags> src/main.ts`. Every
// process that the tests, benchmarks and experiments start as "the API" runs with the same node
// flags, so what they measure is what a deployment runs (docs/request-path.md).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const PACKAGE_JSON = fileURLToPath(new URL('../../package.json', import.meta.url));

/** The node flags of a start script of the form `node <flags> src/main.ts`. */
export function startFlags(startScript: string): string[] {
  const words = startScript.trim().split(/\s+/);
  if (words[0] !== 'node' || words.at(-1) !== 'src/main.ts' || words.slice(1, -1).some((w) => !w.startsWith('-') && w !== 'tsx')) {
    throw new Error(`package.json's start script is not "node <flags> src/main.ts": ${startScript}`);
  }
  return words.slice(1, -1);
}

/** `npm start`'s node flags (package.json), read once. */
export const START_FLAGS: readonly string[] = startFlags(
  (JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { scripts: { start: string } }).scripts.start,
);

/** The arguments for `process.execPath` that run `script` (src/main.ts by default) as `npm start` does. */
export function startArgs(script = 'src/main.ts'): string[] {
  return [...START_FLAGS, script];
}
