// What the experiments' command lines share: reading `--name value` options, stopping after the
// current phase on the first Ctrl+C (SIGTERM too) and at once on the second, printing the
// summary and exiting 0 only when the run says ok.

export function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

export function flag(name: string): boolean {
  return process.argv.includes(`--${name}`);
}

/** Runs an experiment from the command line; `run` gets the signal that asks it to stop. */
export function runExperimentCli<S extends { ok: boolean }>(
  name: string,
  run: (signal: AbortSignal) => Promise<S>,
  format: (summary: S) => string,
): void {
  const stop = new AbortController();
  const onSignal = () => {
    if (stop.signal.aborted) process.exit(130);
    console.log('stopping after this phase (again to exit now)');
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  run(stop.signal).then(
    (s) => {
      console.log(format(s));
      process.exit(s.ok ? 0 : 1);
    },
    (err: unknown) => {
      console.error(`${name} failed:`, err);
      process.exit(1);
    },
  );
}

/** The options every experiment takes: --rounds N, --seed S, --minutes M (its time limit). */
export function commonOptions(): { rounds?: number; seed?: number; timeLimitMs?: number } {
  const rounds = arg('rounds');
  const seed = arg('seed');
  const minutes = arg('minutes');
  return {
    ...(rounds ? { rounds: Number(rounds) } : {}),
    ...(seed ? { seed: Number(seed) } : {}),
    ...(minutes ? { timeLimitMs: Number(minutes) * 60_000 } : {}),
  };
}

/** The last lines of every experiment's summary: why it aborted, its first failures, the verdict. */
export function summaryEnd(s: { aborted: string | null; failures: string[]; ok: boolean }): string[] {
  const lines: string[] = [];
  if (s.aborted) lines.push(`  ABORTED: ${s.aborted}`);
  if (s.failures.length > 0) lines.push('  first failures:', ...s.failures.slice(0, 10).map((m) => `    ${m.slice(0, 400)}`));
  lines.push(s.ok ? 'RESULT: ok' : 'RESULT: FAILED');
  return lines;
}
