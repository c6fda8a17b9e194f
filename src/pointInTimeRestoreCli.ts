// `npm run restore-to-time -- <backup dir> <data dir> <moment>`: writes <data dir>/appendonlydir/
// as the keyspace was at <moment> (src/pointInTimeRestore.ts), from a copy of appendonlydir/
// (what `npm run backup` writes). <moment>: ISO 8601 with its zone, or Unix seconds. Start kvql
// on the data directory afterwards. Exit status: 0 restored, 1 failed (what it wrote is removed
// again), 2 usage.
import { parseMoment, restoreToTime } from './pointInTimeRestore.js';

const [from, dir, moment, ...rest] = process.argv.slice(2);
if (!from || !dir || !moment || rest.length > 0) {
  console.error('usage: npm run restore-to-time -- <backup dir holding appendonlydir/> <data dir without appendonlydir/> <2026-11-28T13:05:00Z | unix seconds>');
  process.exit(2);
}
let at: Date;
try {
  at = parseMoment(moment);
} catch (err) {
  console.error(`kvql restore-to-time: ${(err as Error).message}`);
  process.exit(2);
}
try {
  await restoreToTime(from, dir, at);
} catch (err) {
  console.error(`kvql restore-to-time: ${(err as Error).message}`);
  process.exit(1);
}
