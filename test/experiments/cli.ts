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
