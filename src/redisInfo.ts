/** The fields of a Redis INFO (or CLUSTER INFO) reply: "name:value" lines; sections and blanks skipped. */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/**
 * Polls `info` (an INFO persistence reply) every 100 ms until `done` holds for its fields (`done`
 * may throw, to stop at a failure it sees); rejects after `ms`, saying `what` never happened.
 */
export async function untilPersistence(info: () => Promise<string>, done: (fields: Record<string, string>) => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (done(parseInfo(await info()))) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 60_000} minutes`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
