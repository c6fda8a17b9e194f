// `npm run bench:feed`: change-feed latency and throughput, beside raw Redis in the same run.
//
// Starts its own Redis from redis.conf (appendfsync always) and the API as a separate process,
// both on 127.0.0.1. This process subscribes over WebSocket (graphql-ws) and writes over HTTP.
//   latency: ms from a put's acknowledgement (HTTP response) to its event at each subscriber,
//            at a paced 200 puts/s, with 1, 100 and 1,000 subscribers (negative: the event beat
//            the acknowledgement);
//   throughput: events delivered per second to all subscribers while 16 writers put flat out.
// Baseline: raw Redis doing the same work straight through ioredis: XADD, and one blocking
// XREAD reader fanning out to the same number of in-process callbacks.
// Bounded: every phase runs for a fixed time. Usage: npm run bench:feed [-- --quick]
import { spawn } from 'node:child_process';
import { createClient, type Client } from 'graphql-ws';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { freePort, startTestRedis } from '../test/harness/redisServer.js';
import { startArgs } from '../test/harness/startCommand.js';
import { httpClient } from './driver.js';

const QUICK = process.argv.includes('--quick');
const PACED_SECONDS = QUICK ? 1 : 4;
const FLAT_OUT_SECONDS = QUICK ? 1 : 3;
const SUBSCRIBERS = QUICK ? [1, 10] : [1, 100, 1000];
const PER_CLIENT = 100; // subscriptions multiplexed on one WebSocket

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Row {
  system: string;
  subscribers: number;
  /** From the acknowledgement of the write to the event's arrival. */
  p50: number;
  p99: number;
  /** From sending the write to the event's arrival. */
  sentP50: number;
  sentP99: number;
  samples: number;
  eventsPerSec: number;
}

/** Paced writes, then flat-out writes; `subscribe` registers a callback per subscriber. */
async function run(
  system: string,
  n: number,
  subscribe: (onEvent: (key: string) => void) => Promise<() => Promise<void>>,
  write: (key: string) => Promise<void>,
): Promise<Row> {
  const acked = new Map<string, number>();
  const sent = new Map<string, number>();
  const arrived = new Map<string, number[]>();
  let delivered = 0;
  let counting = false;
  const onEvent = (key: string) => {
    if (counting) delivered++;
    else {
      let list = arrived.get(key);
      if (!list) arrived.set(key, (list = []));
      list.push(now());
    }
  };
  const stop = await subscribe(onEvent);
  await sleep(200);

  // Paced: 200 puts/s, each to a fresh key.
  let i = 0;
  const pacedEnd = now() + PACED_SECONDS * 1000;
  while (now() < pacedEnd) {
    const key = `${system}:${n}:p${i++}`;
    sent.set(key, now());
    await write(key);
    acked.set(key, now());
    await sleep(5);
  }
  await sleep(300);

  // Flat out: 16 concurrent writers.
  counting = true;
  const start = now();
  const end = start + FLAT_OUT_SECONDS * 1000;
  await Promise.all(
    Array.from({ length: 16 }, async (_, w) => {
      for (let j = 0; now() < end; j++) await write(`${system}:${n}:f${w}:${j}`);
    }),
  );
  await sleep(500); // let deliveries drain
  counting = false;
  const eventsPerSec = delivered / ((now() - start) / 1000);
  await stop();
  const fromAck: number[] = [];
  const fromSend: number[] = [];
  for (const [key, ack] of acked) {
    for (const t of arrived.get(key) ?? []) {
      fromAck.push(t - ack);
      fromSend.push(t - sent.get(key)!);
    }
  }
  fromAck.sort((a, b) => a - b);
  fromSend.sort((a, b) => a - b);
  return {
    system,
    subscribers: n,
    p50: percentile(fromAck, 50),
    p99: percentile(fromAck, 99),
    sentP50: percentile(fromSend, 50),
    sentP99: percentile(fromSend, 99),
    samples: fromAck.length,
    eventsPerSec,
  };
}

async function main(): Promise<void> {
  const redisServer = await startTestRedis();
  const port = await freePort();
  const api = spawn(process.execPath, startArgs(), {
    env: { ...process.env, REDIS_URL: redisServer.url, PORT: String(port), KV_PREFIX: 'bench', NODE_ENV: 'production' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  // Stopped early (Ctrl-C, or the test of its short form timing out): stop what it started.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      api.kill('SIGTERM');
      void redisServer.stop().finally(() => process.exit(1));
    });
  }
  const base = `http://127.0.0.1:${port}`;
  const rows: Row[] = [];
  try {
    for (let t = 0; ; t++) {
      if (t > 300) throw new Error('the API did not become ready');
      const ok = await fetch(`${base}/ready`).then((r) => r.ok, () => false);
      if (ok) break;
      await sleep(100);
    }

    // The main bench's keep-alive client (httpClient), not fetch: this process also runs
    // every subscriber, so the writers' own cost per request comes out of the rate they reach.
    const client = httpClient(`${base}/graphql`, 16);
    const put = async (key: string) => {
      const text = await client.post('/graphql', JSON.stringify({ query: 'mutation($k:String!,$v:String!){ put(key:$k, value:$v){ version } }', variables: { k: key, v: 'x'.repeat(100) } }));
      const body = JSON.parse(text) as { errors?: unknown };
      if (body.errors) throw new Error(JSON.stringify(body.errors));
    };

    for (const n of SUBSCRIBERS) {
      rows.push(
        await run('kvql', n, async (onEvent) => {
          const clients: Client[] = [];
          const disposers: (() => void)[] = [];
          for (let c = 0; c * PER_CLIENT < n; c++) {
            const client = createClient({ url: `ws://127.0.0.1:${port}/graphql`, webSocketImpl: WebSocket, lazy: false });
            clients.push(client);
            for (let s = c * PER_CLIENT; s < Math.min(n, (c + 1) * PER_CLIENT); s++) {
              disposers.push(
                client.subscribe<{ changes: { key: string } }>(
                  { query: 'subscription { changes { key version } }' },
                  { next: (r) => r.data && onEvent(r.data.changes.key), error: (e) => console.error('subscription error', e), complete: () => {} },
                ),
              );
            }
          }
          return async () => {
            disposers.forEach((d) => d());
            await Promise.all(clients.map((c) => c.dispose()));
          };
        }, put),
      );
    }

    // Raw Redis: XADD with appendfsync always, one XREAD BLOCK reader fanning out in-process.
    const writer = new Redis(redisServer.url, { enableAutoPipelining: true });
    for (const n of SUBSCRIBERS) {
      rows.push(
        await run('raw Redis', n, async (onEvent) => {
          const reader = new Redis(redisServer.url);
          let last = (await writer.xrevrange('raw', '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
          let running = true;
          const loop = (async () => {
            while (running) {
              const reply = (await reader.xread('COUNT', 500, 'BLOCK', 200, 'STREAMS', 'raw', last)) as [string, [string, string[]][]][] | null;
              for (const [, entries] of reply ?? []) {
                for (const [id, fields] of entries) {
                  last = id;
                  for (let s = 0; s < n; s++) onEvent(fields[1]!);
                }
              }
            }
          })();
          return async () => {
            running = false;
            await loop;
            reader.disconnect();
          };
        }, async (key) => {
          await writer.xadd('raw', 'MAXLEN', '~', 100000, '*', 'k', key, 'v', 'x'.repeat(100));
        }),
      );
    }
    writer.disconnect();
    client.close();
  } finally {
    api.kill('SIGTERM');
    await new Promise((r) => api.once('exit', r));
    await redisServer.stop();
  }

  const fmt = (x: number) => (Number.isNaN(x) ? 'n/a' : x.toFixed(2));
  console.log('\nchange feed, ms from a write to its event at each subscriber (ack: from the write\'s acknowledgement,');
  console.log('negative when the event arrives first; sent: from sending the write), and events/s delivered to all');
  console.log('subscribers while 16 writers write flat out');
  console.log('system      subscribers  ack p50  ack p99  sent p50  sent p99   samples   events/s delivered');
  for (const r of rows) {
    console.log(
      `${r.system.padEnd(11)} ${String(r.subscribers).padStart(11)} ${fmt(r.p50).padStart(8)} ${fmt(r.p99).padStart(8)} ${fmt(r.sentP50).padStart(9)} ${fmt(r.sentP99).padStart(9)} ${String(r.samples).padStart(9)}   ${Math.round(r.eventsPerSec)}`,
    );
  }
}

await main();
