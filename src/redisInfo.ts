/** The fields of a Redis INFO (or CLUSTER INFO) reply: "name:value" lines; sections and blanks skipped. */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** One line of CLUSTER NODES. */
export interface ClusterNodeLine {
  id: string;
  host: string;
  port: number;
  flags: string[];
  /** The master's node id for a replica; '-' for a master. */
  masterId: string;
  linkState: string;
  /** The slots it serves (masters), expanded; importing/migrating markers left out. */
  slots: [number, number][];
}

export function parseClusterNodes(text: string): ClusterNodeLine[] {
  const out: ClusterNodeLine[] = [];
  for (const line of text.split(/\r?\n/)) {
    const parts = line.trim().split(' ');
    if (parts.length < 8) continue;
    const [id, addr, flags, masterId, , , , linkState, ...slotSpecs] = parts as [string, string, string, string, string, string, string, string, ...string[]];
    // ip:port@cport[,hostname]
    const hostPort = addr.split('@')[0] ?? '';
    const colon = hostPort.lastIndexOf(':');
    const slots: [number, number][] = [];
    for (const spec of slotSpecs) {
      if (spec.startsWith('[')) continue;
      const [a, b] = spec.split('-');
      slots.push([Number(a), Number(b ?? a)]);
    }
    out.push({
      id,
      host: hostPort.slice(0, colon),
      port: Number(hostPort.slice(colon + 1)),
      flags: flags.split(','),
      masterId,
      linkState,
      slots,
    });
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
