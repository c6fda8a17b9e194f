// TLS to Redis (rediss://): a real redis-server that speaks TLS only, with a throwaway CA and
// certificates made by the openssl CLI. kvql verifies the server against KV_REDIS_TLS_CA (or
// Node's default CAs without it) and refuses a server it cannot verify; with tls-auth-clients it
// presents KV_REDIS_TLS_CERT/KEY.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startServer } from '../../src/server.js';
import { createRedis, type RedisTls } from '../../src/store/redis.js';
import { uniquePrefix } from '../harness/app.js';
import { post } from '../experiments/tools.js';
import { makePki, once, opensslOnPath, startTlsRedis, type Pki, type SpawnedRedis } from '../harness/secureRedis.js';

const PUT = 'mutation($key: String!, $value: String!) { put(key: $key, value: $value) { version } }';
const GET = 'query($key: String!) { get(key: $key) { value version } }';

const gql = async (url: string, query: string, variables: Record<string, unknown>): Promise<any> => (await post(url, query, variables, 10_000)).body;

/** Connects with createRedis as kvql does; resolves 'ready', or rejects with the first error. */
async function tryConnect(url: string, tls?: RedisTls): Promise<string> {
  const redis = createRedis(url, { commandTimeoutMs: 2000, ...(tls ? { tls } : {}) });
  const first = new Promise<never>((_, reject) => redis.once('error', reject));
  try {
    await Promise.race([redis.connect(), first]);
    return (await redis.ping()) === 'PONG' ? 'ready' : 'no PONG';
  } finally {
    redis.disconnect();
  }
}

describe.runIf(opensslOnPath())('TLS to Redis (rediss://)', () => {
  let pki: Pki;
  let plain: SpawnedRedis; // tls-auth-clients no
  let mutual: SpawnedRedis; // tls-auth-clients yes
  const read = (f: string) => readFileSync(f);

  beforeAll(async () => {
    pki = makePki();
    [plain, mutual] = await Promise.all([startTlsRedis(pki, false), startTlsRedis(pki, true)]);
  }, 60_000);

  afterAll(async () => {
    await plain?.stop();
    await mutual?.stop();
    pki?.cleanup();
  });

  it('this redis-server speaks TLS only: a plain connection gets no answer', async () => {
    await expect(once({ port: plain.port, connectTimeout: 1000, commandTimeout: 1000 }, (r) => r.ping())).rejects.toThrow();
  });

  it('serves puts and gets over rediss:// with KV_REDIS_TLS_CA, logging no certificate trouble', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', destination: { write: (l: string) => void lines.push(l) } });
    const config = loadConfig({ PORT: '0', REDIS_URL: `rediss://127.0.0.1:${plain.port}`, KV_REDIS_TLS_CA: pki.ca, KV_PREFIX: uniquePrefix('tls') });
    expect(config.redisTls?.ca?.equals(read(pki.ca))).toBe(true);
    const server = await startServer(config, log);
    try {
      expect((await gql(server.url, PUT, { key: 'secure', value: 'über TLS' })).data.put.version).toBe(1);
      expect((await gql(server.url, GET, { key: 'secure' })).data.get).toEqual({ value: 'über TLS', version: 1 });
      // The feed's own connection (a duplicate) uses TLS too: a subscription-free check that it
      // connected is that the server is ready and nothing was logged about Redis.
      expect(lines.filter((l) => /"msg":"redis: /.test(l))).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('refuses a server whose certificate the given CA did not sign, or, without a CA, that Node does not trust', async () => {
    await expect(tryConnect(`rediss://127.0.0.1:${plain.port}`, { ca: read(pki.otherCa) })).rejects.toThrow(/self[- ]signed|unable to (verify|get)/i);
    await expect(tryConnect(`rediss://127.0.0.1:${plain.port}`)).rejects.toThrow(/self[- ]signed|unable to (verify|get)/i);
    // By name too (the certificate has IP:127.0.0.1 and DNS:localhost).
    expect(await tryConnect(`rediss://localhost:${plain.port}`, { ca: read(pki.ca) })).toBe('ready');
  });

  it('with tls-auth-clients yes: presents KV_REDIS_TLS_CERT and KV_REDIS_TLS_KEY; without them, refused', async () => {
    const config = loadConfig({
      PORT: '0',
      REDIS_URL: `rediss://127.0.0.1:${mutual.port}`,
      KV_REDIS_TLS_CA: pki.ca,
      KV_REDIS_TLS_CERT: pki.clientCert,
      KV_REDIS_TLS_KEY: pki.clientKey,
      KV_PREFIX: uniquePrefix('mtls'),
    });
    const server = await startServer(config, () => {});
    try {
      expect((await gql(server.url, PUT, { key: 'm', value: 'v' })).data.put.version).toBe(1);
      expect((await gql(server.url, GET, { key: 'm' })).data.get.value).toBe('v');
    } finally {
      await server.close();
    }
    await expect(tryConnect(`rediss://127.0.0.1:${mutual.port}`, { ca: read(pki.ca) })).rejects.toThrow();
  });
});
