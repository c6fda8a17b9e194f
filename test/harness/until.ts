// Waiting for a condition in tests: poll, with a bound, and say what never happened.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` every `every` ms until it returns a value (not undefined); fails after `ms`
 * saying `what` did not happen (with the last error `check` threw, if it threw).
 */
export async function until<T>(ms: number, what: string, check: () => Promise<T | undefined> | T | undefined, every = 50): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${last instanceof Error ? last.message : String(last)})` : ''}`);
    await sleep(every);
  }
}

/**
 * Rejects, saying `what` did not finish, when `p` has not settled within `ms` (`what` may be a
 * function, to describe the state at that moment).
 */
export async function within<T>(ms: number, what: string | (() => string), p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${typeof what === 'function' ? what() : what}: not within ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
