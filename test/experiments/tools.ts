// What the experiments share besides their command line (cli.ts): one GraphQL POST that never
// throws, a seeded random source, and sleep.

export interface GqlError {
  message: string;
  path?: (string | number)[];
  extensions?: Record<string, any>;
}

export interface Reply {
  status: number;
  body: { data?: any; errors?: GqlError[] } | null;
  /** A transport failure (no HTTP answer, or a body that is not JSON): "transport:<code>". */
  transport?: string;
}

/** POSTs a GraphQL operation; a failure to get an answer is a Reply too (`transport`). */
export async function post(url: string, query: string, variables: Record<string, unknown>, timeoutMs = 15_000): Promise<Reply> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const code = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
    return { status: 0, body: null, transport: `transport:${code}` };
  }
  const text = await res.text().catch(() => '');
  try {
    return { status: res.status, body: JSON.parse(text) as Reply['body'] };
  } catch {
    return { status: res.status, body: null, transport: `transport:body(${res.status})` };
  }
}

/** null: answered with data and no error; otherwise the first error's code (or the transport failure). */
export function codeOf(r: Reply): string | null {
  if (r.transport) return r.transport;
  const e = r.body?.errors?.[0];
  if (e) return String(e.extensions?.code ?? `HTTP ${r.status}`);
  if (r.body?.data == null) return `HTTP ${r.status} without data`;
  return null;
}

/** A deterministic random source (mulberry32), so that a seed replays a run's choices. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
