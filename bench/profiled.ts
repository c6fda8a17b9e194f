// A server run under the inspector's sampling profiler, for `npm run bench:profile`
// (bench/profile.ts): the first SIGUSR2 starts profiling, the second stops it and writes the
// profile (Chrome DevTools' .cpuprofile JSON) to BENCH_PROFILE_OUT. The server is the module
// BENCH_PROFILE_TARGET names (src/main.ts, or the bare-Node baseline), with its usual variables.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const out = process.env.BENCH_PROFILE_OUT;
const target = process.env.BENCH_PROFILE_TARGET ?? 'src/main.ts';
if (!out) throw new Error('BENCH_PROFILE_OUT: the path to write the profile to is not set');

const session = new Session();
session.connect();
await session.post('Profiler.enable');
// 100 µs: fine enough for requests costing 100 µs of CPU, at a few percent of overhead.
await session.post('Profiler.setSamplingInterval', { interval: 100 });
let profiling = false;
process.on('SIGUSR2', () => {
  const step = profiling
    ? session.post('Profiler.stop').then(({ profile }) => writeFileSync(out, JSON.stringify(profile)))
    : session.post('Profiler.start');
  profiling = !profiling;
  step.catch((err: unknown) => console.error(`bench/profiled.ts: ${String(err)}`));
});
await import(pathToFileURL(resolve(target)).href);
