// `npm run restore-to-time -- <backup dir> <data dir> <moment>`: writes <data dir>/appendonlydir/
// as the keyspace was at <moment> (src/pointInTimeRestore.ts), from a copy of appendonlydir/
// (what `npm run backup` writes), or from the copy of an archive of them that holds <moment>
// (the managed Redis's aof-archive/; a data directory given as <backup dir> is read with its
// archive). <moment>: ISO 8601 with its zone, or Unix seconds. Start
// kvql on the data directory afterwards. `-- <backup dir> --show` prints what a copy (or each
// copy of an archive) covers instead.
// Exit status: 0 restored (or shown), 1 failed (what it wrote is removed again), 2 usage.
import { copiesIn, describeArchive, parseMoment, restoreToTime } from './pointInTimeRestore.js';

const args = process.argv.slice(2);
if (args.length === 2 && args[1] === '--show') {
  // What a copy (or each copy of an archive) covers, read only: pick the copy before restoring from it.
  try {
    for (const { dir, coverage: c } of await describeArchive(copiesIn(args[0]!))) {
      console.log(`kvql restore-to-time: ${dir} can be restored to any second from ${c.baseAt.toISOString()} (its base) to ${(c.lastWriteAt ?? c.baseAt).toISOString()} (${c.lastWriteAt ? 'its last write' : 'no write after the base'})`);
      if (c.untimedWrites) console.log('kvql restore-to-time: it also holds writes without a time (made in the second of a rewrite, or before aof-timestamp-enabled): a moment before the first time after them is refused');
    }
    process.exit(0);
  } catch (err) {
    console.error(`kvql restore-to-time: ${(err as Error).message}`);
    process.exit(1);
  }
}
const [from, dir, moment, ...rest] = args;
if (!from || !dir || !moment || rest.length > 0) {
  console.error('usage: npm run restore-to-time -- <backup dir holding appendonlydir/, or an archive of them> <data dir without appendonlydir/> <2026-11-28T13:05:00Z | unix seconds>');
  console.error('       npm run restore-to-time -- <backup dir or archive> --show   (what it can be restored to)');
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
