// `npm run repair-aof -- <redis data dir> [--check]`: before starting a Redis that crashed, cut a
// torn tail off its append-only file (src/aofTail.ts) - what the managed Redis does by itself at
// every start. For a Redis kvql does not manage (REDIS_URL, Docker). Redis must not be running.
// Exit status: 0 nothing to do or cut, 1 the file is corrupt elsewhere than at its tail (see
// README "After a crash": redis-check-aof), 2 usage.
import { existsSync } from 'node:fs';
import { checkAofTail, repairTornAofTail } from './aofTail.js';

const args = process.argv.slice(2);
const checkOnly = args.includes('--check');
const dir = args.find((a) => !a.startsWith('--'));
if (!dir || !existsSync(dir)) {
  console.error('usage: npm run repair-aof -- <redis data dir, the one holding appendonlydir/> [--check]');
  process.exit(2);
}
const r = checkOnly ? { ...checkAofTail(dir), truncated: 0 } : repairTornAofTail(dir);
const file = r.file ?? '(none)';
if (r.state === 'none') console.log(`kvql repair-aof: no incremental AOF file under ${dir}: nothing to do`);
else if (r.state === 'ok') console.log(`kvql repair-aof: ${file} (${r.size} bytes) ends with a complete write: nothing to do`);
else if (r.state === 'torn') {
  console.log(
    checkOnly
      ? `kvql repair-aof: ${file} has a torn tail of ${r.size - r.validUpTo} bytes (${r.detail}); run without --check to cut it`
      : `kvql repair-aof: cut ${r.truncated} bytes off ${file} (${r.detail}); it now ends at byte ${r.validUpTo} with a complete write`,
  );
} else {
  console.error(
    `kvql repair-aof: ${file} is damaged elsewhere than at its tail: ${r.detail}. Left as it is. ` +
      'See README "After a crash" (redis-check-aof).',
  );
  process.exit(1);
}
