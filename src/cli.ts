// What the operator commands (npm run backup, restore-snapshots, verify) do alike: read the
// configuration as the server does, and turn an outcome into an exit status with one line saying why.
import { ConfigError, loadConfig, type Config } from './config.js';

/** The configuration, or undefined after printing why it is wrong (the command then exits 2). */
export function commandConfig(command: string): Config | undefined {
  try {
    return loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`kvql ${command}: ${err.message}`);
    return undefined;
  }
}

/** 0 when `work` succeeds; 1 after printing its error. */
export function exitStatus(command: string, work: Promise<unknown>): Promise<number> {
  return work.then(
    () => 0,
    (err: Error) => {
      console.error(`kvql ${command}: ${err.message}`);
      return 1;
    },
  );
}
