// `npm run restore-rdb -- <dump.rdb> <data dir>`: writes <data dir>/appendonlydir/ from an RDB
// snapshot (src/rdbRestore.ts says why a snapshot cannot simply be put in place). Stop kvql and
// its Redis first, and move the data directory's appendonlydir/ away. Exit status: 0 restored,
// 1 failed (what it wrote is removed again), 2 usage.
import { restoreRdb } from './rdbRestore.js';

const [rdb, dir, ...rest] = process.argv.slice(2);
if (!rdb || !dir || rest.length > 0) {
  console.error('usage: npm run restore-rdb -- <dump.rdb> <data dir without appendonlydir/>');
  process.exit(2);
}
try {
  await restoreRdb(rdb, dir);
} catch (err) {
  console.error(`kvql restore-rdb: ${(err as Error).message}`);
  process.exit(1);
}
