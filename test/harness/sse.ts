// A GraphQL-over-SSE test client (graphql-yoga's "distinct connections" mode): one POST per
// subscription with `accept: text/event-stream`, whose streamed body carries `event: next`
// frames (data: one ExecutionResult as JSON) and a final `event: complete`.
import { Collector, DEFAULT_TIMEOUT_MS, type SubscriptionStream } from './stream.js';

export interface SseOptions {
  /** How long to wait for the response headers. */
  connectTimeoutMs?: number;
  /** Extra request headers (e.g. authorization). */
  headers?: Record<string, string>;
  /** The request's `extensions` (e.g. a trusted document's persistedQuery); `query` is then sent only when not empty. */
  extensions?: Record<string, unknown>;
}

/** One parsed frame of an event stream: its event name and its data lines joined by "\n". */
export interface SseFrame {
  event: string;
  data: string;
}

/**
 * Splits the text received so far into complete frames; returns them and the unfinished
 * rest. Comment lines (":" keep-alives) and frames without data or event are dropped.
 */
export function parseSseFrames(buffer: string): { frames: SseFrame[]; rest: string } {
  const frames: SseFrame[] = [];
  const parts = buffer.split(/\r?\n\r?\n/);
  const rest = parts.pop()!;
  for (const part of parts) {
    let event = 'message';
    const data: string[] = [];
    let any = false;
    for (const line of part.split(/\r?\n/)) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') {
        event = value;
        any = true;
      } else if (field === 'data') {
        data.push(value);
        any = true;
      }
    }
    if (any) frames.push({ event, data: data.join('\n') });
  }
  return { frames, rest };
}

/**
 * Starts a subscription over SSE. Resolves once the response headers have arrived (which is
 * not yet proof that the server has set the subscription up).
 */
export async function sseSubscribe(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  opts: SseOptions = {},
): Promise<SubscriptionStream> {
  const abort = new AbortController();
  const collector = new Collector(`SSE ${JSON.stringify(variables)}`);
  const connectTimeout = setTimeout(() => abort.abort(), opts.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS);
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...opts.headers },
      body: JSON.stringify(opts.extensions ? { ...(query ? { query } : {}), variables, extensions: opts.extensions } : { query, variables }),
      signal: abort.signal,
    });
  } finally {
    clearTimeout(connectTimeout);
  }
  const type = res.headers.get('content-type') ?? '';
  if (res.status !== 200 || !type.startsWith('text/event-stream')) {
    const body = await res.text().catch(() => '');
    abort.abort();
    throw new Error(`SSE subscription refused: HTTP ${res.status} ${type}: ${body.slice(0, 500)}`);
  }

  const reading = (async () => {
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const { frames, rest } = parseSseFrames(buffer);
        buffer = rest;
        for (const f of frames) {
          if (f.event === 'next') collector.push(JSON.parse(f.data));
          else if (f.event === 'complete') {
            collector.end({ kind: 'complete' });
            abort.abort();
            return;
          } else collector.end({ kind: 'error', error: new Error(`unexpected SSE frame: ${JSON.stringify(f)}`) });
        }
      }
      collector.end({ kind: 'closed' });
    } catch (err) {
      collector.end(abort.signal.aborted ? { kind: 'closed' } : { kind: 'error', error: err });
    }
  })();

  return {
    next: (ms) => collector.next(ms),
    poll: (ms) => collector.poll(ms),
    ended: (ms) => collector.ended(ms),
    async close() {
      abort.abort();
      await reading;
    },
  };
}
