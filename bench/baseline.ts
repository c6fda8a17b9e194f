// The "bare Node" baseline of `npm run bench`: a minimal node:http server, no GraphQL, that does
// kvql's work with ioredis directly (bench/rawRedis.ts): JSON body in, JSON out, one POST path
// per operation. What is left between it and kvql is the cost of graphql-yoga, the schema,
// validation and kvql's own checks.
//
//   POST /get       {"key": k}                 -> entry or null
//   POST /getMany   {"keys": [k, ...]}         -> [entry or null, ...]
//   POST /put       {"key": k, "value": v}     -> {"version": n}
//   POST /delete    {"key": k}                 -> {"deleted": true or false}
//   POST /batchPut  {"items": [{key, value}]}  -> [{"version": n}, ...]
//   POST /range     {"start": k, "first": n}   -> [entry, ...]
//   GET  /ready                                -> 200 once Redis answers
//
// Started by bench/run.ts as its own process, the way the API is (test/harness/apiProcess.ts):
// HOST, PORT and REDIS_URL from the environment.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRedis } from '../src/store/redis.js';
import { rawOps } from './rawRedis.js';

const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { commandTimeoutMs: 10_000 });
redis.on('error', () => {}); // a failed command answers 500
await redis.connect();
const ops = rawOps(redis);

type Body = { key?: string; keys?: string[]; value?: string; items?: { key: string; value: string }[]; start?: string; first?: number };

async function answer(path: string, b: Body): Promise<unknown> {
  switch (path) {
    case '/get':
      return ops.get(b.key!);
    case '/getMany':
      return ops.getMany(b.keys!);
    case '/put':
      return { version: await ops.put(b.key!, b.value!) };
    case '/delete':
      return { deleted: await ops.delete(b.key!) };
    case '/batchPut':
      return (await ops.batchPut(b.items!)).map((version) => ({ version }));
    case '/range':
      return ops.range(b.start!, b.first ?? 100);
    default:
      return undefined;
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method === 'GET' && req.url === '/ready') {
    const ok = await redis.ping().then(() => true, () => false);
    return send(res, ok ? 200 : 503, { status: ok ? 'ready' : 'unavailable' });
  }
  if (req.method !== 'POST') return send(res, 405, { error: 'POST only' });
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  let result: unknown;
  try {
    result = await answer(req.url ?? '', JSON.parse(Buffer.concat(chunks).toString('utf8')) as Body);
  } catch (err) {
    return send(res, 500, { error: err instanceof Error ? err.message : String(err) });
  }
  if (result === undefined) return send(res, 404, { error: `no ${req.url}` });
  send(res, 200, result);
}

const server = createServer((req, res) => void handle(req, res));
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1');

const stop = () => {
  server.close();
  server.closeAllConnections();
  redis.disconnect();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
