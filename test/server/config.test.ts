// The configuration: defaults, every variable, and wrong values that stop the start with a
// message naming the variable.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, defaultLimits, defaultLoad, loadConfig } from '../../src/config.js';
import { makePki, opensslOnPath } from '../harness/secureRedis.js';
import { startArgs } from '../harness/startCommand.js';

const MiB = 1024 * 1024;

/** The ConfigError that loadConfig throws for `env`; fails the test when it does not throw one. */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    expect(loadConfig({})).toEqual({
      host: '127.0.0.1',
      port: 4000,
      logLevel: 'info',
      redisUrl: undefined,
      sentinel: undefined,
      redisAdmin: {},
      replication: { minReplicas: 0, timeoutMs: 1000 },
      dataDir: './data',
      managedRedisPort: 6390,
      aofArchiveHours: 0,
      prefix: 'kv',
      partitions: 1,
      // Unset: the keyspace's own count, DEFAULT_BUCKETS for a new one (KvStore.open).
      buckets: undefined,
      redisTimeoutMs: 2000,
      feed: { retention: 100_000, bufferSize: 1000, bufferBytes: 16 * 1024 * 1024, maxSubscriptions: 10_000 },
      limits: {
        maxKeyBytes: 1024,
        maxValueBytes: 1 * MiB,
        maxBatchItems: 10_000,
        maxBatchBytes: 64 * MiB,
        maxBodyBytes: 160 * MiB,
        pageDefault: 100,
        pageMax: 1000,
        deleteRangeDefault: 1000,
        deleteRangeMax: 1000,
        maxDepth: 8,
        maxAliases: 30,
        maxTokens: 5000,
        maxCost: 50_000,
        maxDirectives: 50,
        maxRequestItems: 20_000,
      },
      load: { maxInFlight: 128, requestTimeoutMs: 10_000, maxBodyBytesInFlight: 512 * MiB, maxConnections: 10_000, headersTimeoutMs: 10_000, receiveTimeoutMs: 30_000 },
      tokens: [],
      tokenSources: { inline: undefined, file: undefined },
      graphiql: true,
      introspection: true,
      corsOrigins: [],
      csrfPrevention: true,
    });
    expect(defaultLimits()).toEqual(loadConfig({}).limits);
    expect(defaultLoad()).toEqual(loadConfig({}).load);
  });

  it('parses every variable', () => {
    const c = loadConfig({
      HOST: '::1',
      PORT: '8080',
      LOG_LEVEL: 'Debug',
      REDIS_URL: 'rediss://user:pw@redis.example:6380/2',
      KV_DATA_DIR: '/var/lib/kvql',
      KV_MANAGED_REDIS_PORT: '7000',
      KV_PREFIX: 'app_1.v2:x-y',
      KV_PARTITIONS: '16',
      KV_BUCKETS: '300',
      KV_MAX_KEY_BYTES: '512',
      KV_MAX_VALUE_BYTES: '2048',
      KV_MAX_BATCH_ITEMS: '50',
      KV_MAX_BATCH_BYTES: '4096',
      KV_MAX_BODY_BYTES: '8192',
      KV_PAGE_DEFAULT: '10',
      KV_PAGE_MAX: '20',
      KV_DELETE_RANGE_DEFAULT: '30',
      KV_DELETE_RANGE_MAX: '40',
      KV_REDIS_TIMEOUT_MS: '1500',
      KV_FEED_RETENTION: '500',
      KV_FEED_BUFFER: '64',
      KV_FEED_BUFFER_BYTES: '65536',
      KV_MAX_SUBSCRIPTIONS: '12',
      KV_MAX_IN_FLIGHT: '7',
      KV_REQUEST_TIMEOUT_MS: '2500',
      KV_MAX_BODY_BYTES_IN_FLIGHT: '16384',
      KV_MAX_CONNECTIONS: '50',
      KV_HEADERS_TIMEOUT_MS: '4000',
      KV_RECEIVE_TIMEOUT_MS: '20000',
      KV_MAX_DEPTH: '5',
      KV_MAX_ALIASES: '3',
      KV_MAX_TOKENS: '900',
      KV_MAX_COST: '1234',
      KV_MAX_DIRECTIVES: '4',
      KV_MAX_REQUEST_ITEMS: '60',
      KV_MIN_REPLICAS: '2',
      KV_REPLICATION_TIMEOUT_MS: '250',
    });
    expect(c).toEqual({
      host: '::1',
      port: 8080,
      logLevel: 'debug',
      redisUrl: 'rediss://user:pw@redis.example:6380/2',
      // rediss://: TLS, with Node's default CAs (no KV_REDIS_TLS_CA).
      redisTls: {},
      sentinel: undefined,
      redisAdmin: {},
      replication: { minReplicas: 2, timeoutMs: 250 },
      dataDir: '/var/lib/kvql',
      managedRedisPort: 7000,
      aofArchiveHours: 0,
      prefix: 'app_1.v2:x-y',
      partitions: 16,
      buckets: 300,
      redisTimeoutMs: 1500,
      feed: { retention: 500, bufferSize: 64, bufferBytes: 65_536, maxSubscriptions: 12 },
      limits: {
        maxKeyBytes: 512,
        maxValueBytes: 2048,
        maxBatchItems: 50,
        maxBatchBytes: 4096,
        maxBodyBytes: 8192,
        pageDefault: 10,
        pageMax: 20,
        deleteRangeDefault: 30,
        deleteRangeMax: 40,
        maxDepth: 5,
        maxAliases: 3,
        maxTokens: 900,
        maxCost: 1234,
        maxDirectives: 4,
        maxRequestItems: 60,
      },
      load: { maxInFlight: 7, requestTimeoutMs: 2500, maxBodyBytesInFlight: 16_384, maxConnections: 50, headersTimeoutMs: 4000, receiveTimeoutMs: 20_000 },
      tokens: [],
      tokenSources: { inline: undefined, file: undefined },
      graphiql: true,
      introspection: true,
      corsOrigins: [],
      csrfPrevention: true,
    });
    expect(typeof c.port).toBe('number');
    expect(typeof c.limits.maxBodyBytes).toBe('number');
  });

  it('accepts redis:// as well as rediss://, and the ends of every range', () => {
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379' }).redisUrl).toBe('redis://127.0.0.1:6379');
    expect(loadConfig({ REDIS_URL: 'redis://[::1]:6379/3' }).redisUrl).toBe('redis://[::1]:6379/3');
    expect(loadConfig({ PORT: '0' }).port).toBe(0);
    expect(loadConfig({ PORT: '65535' }).port).toBe(65535);
    expect(loadConfig({ KV_PARTITIONS: '1024' }).partitions).toBe(1024);
    expect(loadConfig({ KV_BUCKETS: '1' }).buckets).toBe(1);
    expect(loadConfig({ KV_BUCKETS: '1048576' }).buckets).toBe(1_048_576);
    expect(loadConfig({ KV_MAX_VALUE_BYTES: '0' }).limits.maxValueBytes).toBe(0);
    expect(loadConfig({ KV_MAX_BODY_BYTES: '1024' }).limits.maxBodyBytes).toBe(1024);
    expect(loadConfig({ KV_PAGE_DEFAULT: '1000', KV_PAGE_MAX: '1000' }).limits.pageDefault).toBe(1000);
  });

  it('reads a Sentinel deployment instead of REDIS_URL, never both', () => {
    const c = loadConfig({
      REDIS_SENTINELS: '10.0.0.1:26379,sentinel-b.internal:26380,localhost:26381',
      REDIS_MASTER_NAME: 'kv-main',
      REDIS_PASSWORD: 's3cret',
      REDIS_SENTINEL_PASSWORD: 'other',
    });
    expect(c.redisUrl).toBeUndefined();
    expect(c.sentinel).toEqual({
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: 'sentinel-b.internal', port: 26380 },
        { host: 'localhost', port: 26381 },
      ],
      masterName: 'kv-main',
      password: 's3cret',
      sentinelPassword: 'other',
    });
    expect(loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379' }).sentinel).toEqual({ sentinels: [{ host: '127.0.0.1', port: 26379 }], masterName: 'kvql' });
    expect(() => loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379', REDIS_URL: 'redis://127.0.0.1:6379' })).toThrow(/REDIS_SENTINELS: give one of REDIS_URL .* not REDIS_URL and REDIS_SENTINELS/);
    // The managed Redis is not started for a Sentinel deployment, so its port may equal PORT.
    expect(loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379', PORT: '6390' }).port).toBe(6390);
  });

  it('reads a cluster from REDIS_CLUSTER_NODES, with 64 partitions unless KV_PARTITIONS says otherwise', () => {
    const c = loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000,node-b.internal:7001', REDIS_PASSWORD: 'pw' });
    expect(c.cluster).toEqual({ clusterNodes: [{ host: '10.0.0.1', port: 7000 }, { host: 'node-b.internal', port: 7001 }], password: 'pw' });
    expect(c.partitions).toBe(64);
    expect(c.redisUrl).toBeUndefined();
    expect(c.sentinel).toBeUndefined();
    expect(loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', KV_PARTITIONS: '256' }).partitions).toBe(256);
    expect(loadConfig({}).partitions).toBe(1);
    expect(loadConfig({}).cluster).toBeUndefined();
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', REDIS_URL: 'redis://127.0.0.1:6379' })).toThrow(/REDIS_CLUSTER_NODES: give one of .* not REDIS_URL and REDIS_CLUSTER_NODES/);
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', REDIS_SENTINELS: '127.0.0.1:26379' })).toThrow(/REDIS_CLUSTER_NODES: give one of/);
    // No managed Redis for a cluster either.
    expect(loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', PORT: '6390' }).port).toBe(6390);
  });

  it('signs in as an ACL user on a Sentinel deployment or a cluster with REDIS_USERNAME, and refuses one that would be ignored', () => {
    const sentinel = loadConfig({
      REDIS_SENTINELS: '127.0.0.1:26379',
      REDIS_USERNAME: 'kvql',
      REDIS_PASSWORD: 'pw',
      REDIS_SENTINEL_USERNAME: 'watcher',
      REDIS_SENTINEL_PASSWORD: 'spw',
    }).sentinel;
    expect(sentinel).toEqual({ sentinels: [{ host: '127.0.0.1', port: 26379 }], masterName: 'kvql', username: 'kvql', password: 'pw', sentinelUsername: 'watcher', sentinelPassword: 'spw' });
    const cluster = loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', REDIS_USERNAME: 'kvql', REDIS_PASSWORD: 'pw' }).cluster;
    expect(cluster).toEqual({ clusterNodes: [{ host: '127.0.0.1', port: 7000 }], username: 'kvql', password: 'pw' });
    // Ignored, or signing in as nobody: refused, naming the variable.
    expect(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_USERNAME: 'kvql' })).toThrow(/REDIS_USERNAME: applies to REDIS_SENTINELS or REDIS_CLUSTER_NODES only; with REDIS_URL put the user in the URL/);
    expect(() => loadConfig({ REDIS_USERNAME: 'kvql', REDIS_PASSWORD: 'pw' })).toThrow(/REDIS_USERNAME: applies to REDIS_SENTINELS or REDIS_CLUSTER_NODES only/);
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', REDIS_USERNAME: 'kvql' })).toThrow(/REDIS_USERNAME: needs REDIS_PASSWORD/);
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', REDIS_SENTINEL_USERNAME: 'w', REDIS_SENTINEL_PASSWORD: 'x' })).toThrow(/REDIS_SENTINEL_USERNAME: applies to REDIS_SENTINELS only/);
    expect(() => loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379', REDIS_SENTINEL_USERNAME: 'w' })).toThrow(/REDIS_SENTINEL_USERNAME: needs REDIS_SENTINEL_PASSWORD/);
    expect(() => loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379', REDIS_USERNAME: 'kv ql', REDIS_PASSWORD: 'pw' })).toThrow(/REDIS_USERNAME="kv ql": expected an ACL user name/);
  });

  it('reads the operator commands\' Redis user (REDIS_ADMIN_USERNAME, REDIS_ADMIN_PASSWORD) for a Redis it does not manage, and refuses it for the managed one', () => {
    const nodes = '127.0.0.1:7000';
    expect(loadConfig({ REDIS_CLUSTER_NODES: nodes, REDIS_ADMIN_USERNAME: 'admin', REDIS_ADMIN_PASSWORD: 'apw' }).redisAdmin).toEqual({ username: 'admin', password: 'apw' });
    expect(loadConfig({ REDIS_SENTINELS: '127.0.0.1:26379', REDIS_ADMIN_USERNAME: 'admin', REDIS_ADMIN_PASSWORD: 'apw' }).redisAdmin).toEqual({ username: 'admin', password: 'apw' });
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_ADMIN_PASSWORD: 'apw' }).redisAdmin).toEqual({ password: 'apw' });
    expect(loadConfig({ REDIS_CLUSTER_NODES: nodes }).redisAdmin).toEqual({});
    // Not kvql's own user: the API's connection is unchanged by it.
    expect(loadConfig({ REDIS_CLUSTER_NODES: nodes, REDIS_ADMIN_USERNAME: 'admin', REDIS_ADMIN_PASSWORD: 'apw' }).cluster).toEqual({ clusterNodes: [{ host: '127.0.0.1', port: 7000 }] });
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: nodes, REDIS_ADMIN_USERNAME: 'admin' })).toThrow(/REDIS_ADMIN_USERNAME: needs REDIS_ADMIN_PASSWORD/);
    expect(() => loadConfig({ REDIS_ADMIN_PASSWORD: 'apw' })).toThrow(/REDIS_ADMIN_PASSWORD: applies to REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES only/);
    expect(() => loadConfig({ REDIS_ADMIN_USERNAME: 'admin', REDIS_ADMIN_PASSWORD: 'apw' })).toThrow(/REDIS_ADMIN_USERNAME: applies to REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES only/);
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: nodes, REDIS_ADMIN_USERNAME: 'ad min', REDIS_ADMIN_PASSWORD: 'apw' })).toThrow(/REDIS_ADMIN_USERNAME="ad min": expected an ACL user name/);
  });

  it('keeps the managed Redis\'s AOF files for KV_AOF_ARCHIVE_HOURS, and refuses it for a Redis it does not manage', () => {
    expect(loadConfig({ KV_AOF_ARCHIVE_HOURS: '24' }).aofArchiveHours).toBe(24);
    for (const [name, value] of [['REDIS_URL', 'redis://127.0.0.1:6379'], ['REDIS_SENTINELS', '127.0.0.1:26379'], ['REDIS_CLUSTER_NODES', '127.0.0.1:7000']] as const) {
      expect(() => loadConfig({ KV_AOF_ARCHIVE_HOURS: '24', [name]: value })).toThrow(new RegExp(`KV_AOF_ARCHIVE_HOURS: applies to the managed Redis only \\(not with ${name}\\)`));
      expect(loadConfig({ KV_AOF_ARCHIVE_HOURS: '0', [name]: value }).aofArchiveHours).toBe(0);
    }
  });

  it('counts an empty variable as unset', () => {
    const empty = Object.fromEntries(
      ['HOST', 'PORT', 'LOG_LEVEL', 'REDIS_URL', 'KV_DATA_DIR', 'KV_MANAGED_REDIS_PORT', 'KV_AOF_ARCHIVE_HOURS', 'KV_PREFIX', 'KV_PARTITIONS', 'KV_BUCKETS', 'KV_MAX_KEY_BYTES',
        'KV_MAX_VALUE_BYTES', 'KV_MAX_BATCH_ITEMS', 'KV_MAX_BATCH_BYTES', 'KV_MAX_BODY_BYTES', 'KV_PAGE_DEFAULT', 'KV_PAGE_MAX',
        'KV_DELETE_RANGE_DEFAULT', 'KV_DELETE_RANGE_MAX', 'KV_REDIS_TIMEOUT_MS', 'KV_MAX_IN_FLIGHT', 'KV_REQUEST_TIMEOUT_MS',
        'KV_MAX_DEPTH', 'KV_MAX_ALIASES', 'KV_MAX_TOKENS', 'KV_MAX_COST', 'KV_MAX_DIRECTIVES', 'KV_MAX_REQUEST_ITEMS'].map((k) => [k, '']),
    );
    expect(loadConfig(empty)).toEqual(loadConfig({}));
    expect(loadConfig({ REDIS_URL: '' }).redisUrl).toBeUndefined();
    expect(loadConfig({ PORT: '', KV_PARTITIONS: '4' })).toMatchObject({ port: 4000, partitions: 4 });
  });

  it('ignores variables it does not know', () => {
    expect(loadConfig({ PATH: '/bin', KV_UNKNOWN: 'x', NODE_ENV: 'development' })).toEqual(loadConfig({}));
  });

  it('serves GraphiQL and introspection unless NODE_ENV=production; KV_GRAPHIQL and KV_INTROSPECTION decide either way', () => {
    expect(loadConfig({})).toMatchObject({ graphiql: true, introspection: true });
    expect(loadConfig({ NODE_ENV: 'production' })).toMatchObject({ graphiql: false, introspection: false });
    expect(loadConfig({ NODE_ENV: 'production', KV_GRAPHIQL: 'true', KV_INTROSPECTION: '1' })).toMatchObject({ graphiql: true, introspection: true });
    expect(loadConfig({ KV_GRAPHIQL: 'false', KV_INTROSPECTION: '0' })).toMatchObject({ graphiql: false, introspection: false });
    expect(() => loadConfig({ KV_GRAPHIQL: 'yes' })).toThrow(/KV_GRAPHIQL="yes": expected true or false/);
    expect(() => loadConfig({ KV_INTROSPECTION: 'off' })).toThrow(/KV_INTROSPECTION="off": expected true or false/);
  });

  const wrong: [string, string][] = [
    ['LOG_LEVEL', 'verbose'],
    ['LOG_LEVEL', '30'],
    ['PORT', 'abc'],
    ['PORT', '-1'],
    ['PORT', '65536'],
    ['PORT', '80.5'],
    ['PORT', '1e3'],
    ['PORT', ' 80'],
    ['PORT', '0x50'],
    ['KV_MANAGED_REDIS_PORT', '0'],
    ['KV_MANAGED_REDIS_PORT', '70000'],
    ['KV_AOF_ARCHIVE_HOURS', '1.5'],
    ['KV_AOF_ARCHIVE_HOURS', '8785'],
    ['KV_PARTITIONS', 'abc'],
    ['KV_PARTITIONS', '0'],
    ['KV_PARTITIONS', '1025'],
    ['KV_PARTITIONS', '99999999999999999999999'],
    ['KV_BUCKETS', '0'],
    ['KV_BUCKETS', '1048577'],
    ['KV_BUCKETS', 'many'],
    ['KV_BUCKETS', '16k'],
    ['KV_BUCKETS', '-1'],
    ['KV_MAX_KEY_BYTES', '0'],
    ['KV_MAX_KEY_BYTES', '65537'],
    ['KV_MAX_VALUE_BYTES', '-5'],
    ['KV_MAX_VALUE_BYTES', String(512 * MiB + 1)],
    ['KV_MAX_BATCH_ITEMS', '0'],
    ['KV_MAX_BATCH_BYTES', 'lots'],
    ['KV_MAX_BODY_BYTES', '1023'],
    ['KV_PAGE_DEFAULT', '0'],
    ['KV_PAGE_MAX', 'ten'],
    ['KV_DELETE_RANGE_DEFAULT', '0'],
    ['KV_DELETE_RANGE_MAX', '1000001'],
    ['KV_REDIS_TIMEOUT_MS', '5'],
    ['KV_REDIS_TIMEOUT_MS', '2s'],
    ['KV_FEED_BUFFER_BYTES', '0'],
    ['KV_FEED_BUFFER_BYTES', '16MiB'],
    ['KV_MAX_SUBSCRIPTIONS', '0'],
    ['KV_MAX_SUBSCRIPTIONS', 'lots'],
    ['KV_MAX_IN_FLIGHT', '0'],
    ['KV_MAX_BODY_BYTES_IN_FLIGHT', '1023'],
    ['KV_MAX_CONNECTIONS', '0'],
    ['KV_MAX_CONNECTIONS', 'unlimited'],
    ['KV_HEADERS_TIMEOUT_MS', '99'],
    ['KV_HEADERS_TIMEOUT_MS', '10s'],
    ['KV_RECEIVE_TIMEOUT_MS', '3600001'],
    ['KV_MAX_BODY_BYTES_IN_FLIGHT', 'half'],
    ['KV_MAX_IN_FLIGHT', 'many'],
    ['KV_REQUEST_TIMEOUT_MS', '9'],
    ['KV_REQUEST_TIMEOUT_MS', '3600001'],
    ['KV_MAX_DEPTH', '0'],
    ['KV_MAX_ALIASES', '-1'],
    ['KV_MAX_TOKENS', '0'],
    ['KV_MAX_COST', '1.5'],
    ['KV_MAX_DIRECTIVES', 'none'],
    ['KV_MAX_REQUEST_ITEMS', '0'],
    ['REDIS_SENTINELS', '127.0.0.1'],
    ['REDIS_CLUSTER_NODES', '127.0.0.1'],
    ['REDIS_CLUSTER_NODES', 'redis://127.0.0.1:7000'],
    ['REDIS_CLUSTER_NODES', '127.0.0.1:7000;127.0.0.1:7001'],
    ['REDIS_SENTINELS', '127.0.0.1:26379,'],
    ['REDIS_SENTINELS', '127.0.0.1:26379, 127.0.0.2:26379'],
    ['REDIS_MASTER_NAME', 'has space'],
    ['KV_MIN_REPLICAS', '-1'],
    ['KV_MIN_REPLICAS', '65'],
    ['KV_REPLICATION_TIMEOUT_MS', '0'],
    ['KV_REPLICATION_TIMEOUT_MS', '1s'],
    ['KV_PREFIX', 'has space'],
    ['KV_PREFIX', '{tag}'],
    ['KV_PREFIX', 'x'.repeat(65)],
    ['KV_PREFIX', 'ünï'],
    ['REDIS_URL', 'http://localhost:6379'],
    ['REDIS_URL', 'localhost:6379'],
    ['REDIS_URL', 'tcp://localhost:6379'],
    ['REDIS_URL', 'redis://'],
    ['REDIS_URL', 'redis://host:99999'],
  ];
  for (const [name, value] of wrong) {
    it(`refuses ${name}=${JSON.stringify(value.length > 20 ? `${value.slice(0, 20)}…` : value)}, naming the variable`, () => {
      const err = configError({ [name]: value });
      expect(err.name).toBe('ConfigError');
      expect(err.message).toContain(name);
      // Only the wrong variable is named.
      const others = wrong.map(([n]) => n).filter((n) => n !== name);
      for (const other of others) expect(err.message).not.toMatch(new RegExp(`\\b${other}\\b`));
    });
  }

  it('does not print a password from a wrong REDIS_URL', () => {
    const err = configError({ REDIS_URL: 'http://user:s3cret@redis.example:6379' });
    expect(err.message).toContain('REDIS_URL');
    expect(err.message).not.toContain('s3cret');
  });

  it('names every wrong variable at once', () => {
    const err = configError({ PORT: 'x', KV_PARTITIONS: '0', KV_PREFIX: '' , REDIS_URL: 'ftp://x' });
    expect(err.message).toContain('PORT');
    expect(err.message).toContain('KV_PARTITIONS');
    expect(err.message).toContain('REDIS_URL');
  });

  it('refuses defaults that exceed their maximums, naming both variables', () => {
    const page = configError({ KV_PAGE_DEFAULT: '500', KV_PAGE_MAX: '100' });
    expect(page.message).toMatch(/KV_PAGE_DEFAULT.*KV_PAGE_MAX/);
    // The default of one against a configured maximum of the other.
    expect(configError({ KV_PAGE_MAX: '50' }).message).toMatch(/KV_PAGE_DEFAULT/);
    const del = configError({ KV_DELETE_RANGE_DEFAULT: '11', KV_DELETE_RANGE_MAX: '10' });
    expect(del.message).toMatch(/KV_DELETE_RANGE_DEFAULT.*KV_DELETE_RANGE_MAX/);
    const value = configError({ KV_MAX_VALUE_BYTES: '2000', KV_MAX_BATCH_BYTES: '1000' });
    expect(value.message).toMatch(/KV_MAX_VALUE_BYTES.*KV_MAX_BATCH_BYTES/);
  });

  it('refuses a work budget below what one field may ask for, naming the variables', () => {
    expect(configError({ KV_MAX_REQUEST_ITEMS: '9999' }).message).toMatch(/KV_MAX_REQUEST_ITEMS.*KV_MAX_BATCH_ITEMS/);
    expect(configError({ KV_MAX_BODY_BYTES_IN_FLIGHT: String(64 * MiB) }).message).toMatch(/KV_MAX_BODY_BYTES_IN_FLIGHT: must be at least KV_MAX_BODY_BYTES/);
    expect(loadConfig({ KV_MAX_BODY_BYTES: '4096', KV_MAX_BODY_BYTES_IN_FLIGHT: '4096' }).load.maxBodyBytesInFlight).toBe(4096);
    expect(configError({ KV_HEADERS_TIMEOUT_MS: '40000' }).message).toMatch(/KV_RECEIVE_TIMEOUT_MS: must be at least KV_HEADERS_TIMEOUT_MS/);
    expect(loadConfig({ KV_HEADERS_TIMEOUT_MS: '5000', KV_RECEIVE_TIMEOUT_MS: '5000' }).load).toMatchObject({ headersTimeoutMs: 5000, receiveTimeoutMs: 5000 });
    expect(configError({ KV_MAX_REQUEST_ITEMS: '1000', KV_MAX_BATCH_ITEMS: '10', KV_PAGE_MAX: '1001' }).message).toMatch(/KV_MAX_REQUEST_ITEMS/);
    expect(loadConfig({ KV_MAX_REQUEST_ITEMS: '1000', KV_MAX_BATCH_ITEMS: '1000' }).limits.maxRequestItems).toBe(1000);
  });

  it('accepts the ends of the load ranges', () => {
    expect(loadConfig({ KV_MAX_IN_FLIGHT: '1', KV_REQUEST_TIMEOUT_MS: '10' }).load).toEqual({ maxInFlight: 1, requestTimeoutMs: 10, maxBodyBytesInFlight: 512 * MiB, maxConnections: 10_000, headersTimeoutMs: 10_000, receiveTimeoutMs: 30_000 });
    expect(loadConfig({ KV_HEADERS_TIMEOUT_MS: '100', KV_RECEIVE_TIMEOUT_MS: '3600000' }).load).toMatchObject({ headersTimeoutMs: 100, receiveTimeoutMs: 3_600_000 });
    expect(loadConfig({ KV_MAX_ALIASES: '0', KV_MAX_DIRECTIVES: '0' }).limits).toMatchObject({ maxAliases: 0, maxDirectives: 0 });
  });

  it('refuses a feed retention below the batch size', () => {
    expect(configError({ KV_FEED_RETENTION: '100', KV_MAX_BATCH_ITEMS: '101' }).message).toMatch(/KV_FEED_RETENTION.*KV_MAX_BATCH_ITEMS/);
    expect(loadConfig({ KV_FEED_RETENTION: '100', KV_MAX_BATCH_ITEMS: '100' }).feed.retention).toBe(100);
  });

  it('refuses a managed Redis port equal to the API port', () => {
    const err = configError({ PORT: '7000', KV_MANAGED_REDIS_PORT: '7000' });
    expect(err.message).toContain('KV_MANAGED_REDIS_PORT');
    // With REDIS_URL there is no managed Redis, so no clash.
    expect(loadConfig({ PORT: '7000', KV_MANAGED_REDIS_PORT: '7000', REDIS_URL: 'redis://h:1' }).port).toBe(7000);
  });

  it.runIf(opensslOnPath())('reads KV_REDIS_TLS_CA, _CERT and _KEY for a rediss:// REDIS_URL, and refuses what cannot work, naming the variable', () => {
    const pki = makePki();
    try {
      const url = 'rediss://kvql:pw@redis.example:6380';
      // Defined whenever kvql speaks TLS to Redis: a rediss:// URL without files trusts Node's default CAs.
      expect(loadConfig({ REDIS_URL: url }).redisTls).toEqual({});
      expect(loadConfig({ REDIS_URL: 'redis://h:1' }).redisTls).toBeUndefined();
      const c = loadConfig({ REDIS_URL: url, KV_REDIS_TLS_CA: pki.ca, KV_REDIS_TLS_CERT: pki.clientCert, KV_REDIS_TLS_KEY: pki.clientKey });
      expect(c.redisTls).toEqual({ ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) });
      expect(loadConfig({ REDIS_URL: url, KV_REDIS_TLS_CA: pki.ca }).redisTls).toEqual({ ca: readFileSync(pki.ca) });
      // Only with TLS on: never a CA that silently does nothing.
      expect(configError({ REDIS_URL: 'redis://h:1', KV_REDIS_TLS_CA: pki.ca }).message).toMatch(/KV_REDIS_TLS_CA: applies only with TLS to Redis .*; REDIS_URL is redis:\/\/ \(plain TCP\): use rediss:\/\//);
      expect(configError({ KV_REDIS_TLS_CA: pki.ca }).message).toMatch(/KV_REDIS_TLS_CA: .*REDIS_URL is unset/);
      expect(configError({ REDIS_SENTINELS: 'h:26379', KV_REDIS_TLS_CA: pki.ca }).message).toMatch(/KV_REDIS_TLS_CA: .*with REDIS_SENTINELS, set KV_REDIS_TLS=true/);
      expect(configError({ REDIS_CLUSTER_NODES: 'h:7000', KV_REDIS_TLS_CERT: pki.clientCert }).message).toMatch(/KV_REDIS_TLS_CERT: .*with REDIS_CLUSTER_NODES, set KV_REDIS_TLS=true/);
      expect(configError({ REDIS_CLUSTER_NODES: 'h:7000', KV_REDIS_TLS: 'false', KV_REDIS_TLS_CA: pki.ca }).message).toMatch(/KV_REDIS_TLS_CA: .*set KV_REDIS_TLS=true/);
      // Files that are missing, not PEM, half a pair, or a key of another certificate.
      expect(configError({ REDIS_URL: url, KV_REDIS_TLS_CA: join(pki.dir, 'missing.crt') }).message).toMatch(/KV_REDIS_TLS_CA: cannot read ".*missing\.crt"/);
      writeFileSync(join(pki.dir, 'junk.pem'), 'not a certificate');
      expect(configError({ REDIS_URL: url, KV_REDIS_TLS_CA: join(pki.dir, 'junk.pem') }).message).toMatch(/KV_REDIS_TLS_CA: ".*junk\.pem" is not a PEM certificate/);
      expect(configError({ REDIS_URL: url, KV_REDIS_TLS_CA: pki.clientKey }).message).toMatch(/KV_REDIS_TLS_CA: .* is not a PEM certificate/);
      expect(configError({ REDIS_URL: url, KV_REDIS_TLS_CERT: pki.clientCert, KV_REDIS_TLS_KEY: pki.clientCert }).message).toMatch(/KV_REDIS_TLS_KEY: .* is not a PEM private key/);
      expect(configError({ REDIS_URL: url, KV_REDIS_TLS_CERT: pki.clientCert }).message).toMatch(/KV_REDIS_TLS_CERT: a client certificate needs both/);
      expect(configError({ REDIS_URL: url, KV_REDIS_TLS_KEY: pki.clientKey }).message).toMatch(/KV_REDIS_TLS_KEY: a client certificate needs both/);
      const wrongPair = configError({ REDIS_URL: url, KV_REDIS_TLS_CERT: pki.clientCert, KV_REDIS_TLS_KEY: pki.serverKey }).message;
      expect(wrongPair).toMatch(/KV_REDIS_TLS_KEY: is not the private key of the certificate in KV_REDIS_TLS_CERT/);
      // No message shows a key's contents.
      expect(wrongPair).not.toContain('PRIVATE KEY');
    } finally {
      pki.cleanup();
    }
  });

  it.runIf(opensslOnPath())('KV_REDIS_TLS=true: TLS to a cluster with the KV_REDIS_TLS_* files; refused where it is a contradiction or not supported', () => {
    const pki = makePki();
    try {
      const nodes = '10.0.0.1:7000,node-b.internal:7001';
      // Off by default: a cluster is plain TCP.
      expect(loadConfig({ REDIS_CLUSTER_NODES: nodes }).redisTls).toBeUndefined();
      expect(loadConfig({ REDIS_CLUSTER_NODES: nodes, KV_REDIS_TLS: 'false' }).redisTls).toBeUndefined();
      // On: every node connection is TLS, Node's default CAs without KV_REDIS_TLS_CA.
      expect(loadConfig({ REDIS_CLUSTER_NODES: nodes, KV_REDIS_TLS: 'true' }).redisTls).toEqual({});
      expect(loadConfig({ REDIS_CLUSTER_NODES: nodes, KV_REDIS_TLS: '1', KV_REDIS_TLS_CA: pki.ca }).redisTls).toEqual({ ca: readFileSync(pki.ca) });
      const c = loadConfig({ REDIS_CLUSTER_NODES: nodes, KV_REDIS_TLS: 'true', KV_REDIS_TLS_CA: pki.ca, KV_REDIS_TLS_CERT: pki.clientCert, KV_REDIS_TLS_KEY: pki.clientKey, REDIS_PASSWORD: 'pw' });
      expect(c.redisTls).toEqual({ ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) });
      expect(c.cluster).toEqual({ clusterNodes: [{ host: '10.0.0.1', port: 7000 }, { host: 'node-b.internal', port: 7001 }], password: 'pw' });
      // The same file checks as with rediss://.
      expect(configError({ REDIS_CLUSTER_NODES: nodes, KV_REDIS_TLS: 'true', KV_REDIS_TLS_CA: join(pki.dir, 'missing.crt') }).message).toMatch(/KV_REDIS_TLS_CA: cannot read/);
      expect(configError({ REDIS_CLUSTER_NODES: nodes, KV_REDIS_TLS: 'true', KV_REDIS_TLS_CERT: pki.clientCert }).message).toMatch(/KV_REDIS_TLS_CERT: a client certificate needs both/);
      // With a URL, the scheme says it: KV_REDIS_TLS may repeat it, never contradict it.
      expect(loadConfig({ REDIS_URL: 'rediss://h:1', KV_REDIS_TLS: 'true' }).redisTls).toEqual({});
      expect(loadConfig({ REDIS_URL: 'redis://h:1', KV_REDIS_TLS: 'false' }).redisTls).toBeUndefined();
      expect(configError({ REDIS_URL: 'redis://kvql:secret@h:1', KV_REDIS_TLS: 'true' }).message).toMatch(/KV_REDIS_TLS: contradicts REDIS_URL, which is redis:\/\/ \(plain TCP\)/);
      expect(configError({ REDIS_URL: 'redis://kvql:secret@h:1', KV_REDIS_TLS: 'true' }).message).not.toContain('secret');
      expect(configError({ REDIS_URL: 'rediss://h:1', KV_REDIS_TLS: 'false' }).message).toMatch(/KV_REDIS_TLS: contradicts REDIS_URL, which is rediss:\/\/ \(TLS\)/);
      // Meaningless: refused, naming the variable.
      expect(configError({ KV_REDIS_TLS: 'true' }).message).toMatch(/KV_REDIS_TLS: .*managed Redis listens on loopback, without TLS/);
      expect(loadConfig({ KV_REDIS_TLS: 'false' }).redisTls).toBeUndefined();
      expect(configError({ REDIS_CLUSTER_NODES: nodes, KV_REDIS_TLS: 'yes' }).message).toMatch(/KV_REDIS_TLS="yes": expected true or false/);
    } finally {
      pki.cleanup();
    }
  });

  it.runIf(opensslOnPath())('KV_REDIS_TLS=true with REDIS_SENTINELS: TLS to the sentinels and the data nodes alike, with the KV_REDIS_TLS_* files', () => {
    const pki = makePki();
    try {
      const sentinels = '10.0.0.1:26379,sentinel-b.internal:26380';
      // Off by default: plain TCP, as before.
      expect(loadConfig({ REDIS_SENTINELS: sentinels }).redisTls).toBeUndefined();
      expect(loadConfig({ REDIS_SENTINELS: sentinels, KV_REDIS_TLS: 'false' }).redisTls).toBeUndefined();
      // On: one switch for both, Node's default CAs without KV_REDIS_TLS_CA.
      expect(loadConfig({ REDIS_SENTINELS: sentinels, KV_REDIS_TLS: 'true' }).redisTls).toEqual({});
      const c = loadConfig({
        REDIS_SENTINELS: sentinels,
        REDIS_MASTER_NAME: 'main',
        KV_REDIS_TLS: '1',
        KV_REDIS_TLS_CA: pki.ca,
        KV_REDIS_TLS_CERT: pki.clientCert,
        KV_REDIS_TLS_KEY: pki.clientKey,
        REDIS_PASSWORD: 'pw',
        REDIS_SENTINEL_PASSWORD: 'spw',
      });
      expect(c.redisTls).toEqual({ ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) });
      expect(c.sentinel).toEqual({
        sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: 'sentinel-b.internal', port: 26380 }],
        masterName: 'main',
        password: 'pw',
        sentinelPassword: 'spw',
      });
      // The same file checks as with rediss:// and a cluster.
      expect(configError({ REDIS_SENTINELS: sentinels, KV_REDIS_TLS: 'true', KV_REDIS_TLS_CA: join(pki.dir, 'missing.crt') }).message).toMatch(/KV_REDIS_TLS_CA: cannot read/);
      expect(configError({ REDIS_SENTINELS: sentinels, KV_REDIS_TLS: 'true', KV_REDIS_TLS_KEY: pki.clientKey }).message).toMatch(/KV_REDIS_TLS_KEY: a client certificate needs both/);
      // Files without the switch: refused, never silently unused.
      expect(configError({ REDIS_SENTINELS: sentinels, KV_REDIS_TLS: 'false', KV_REDIS_TLS_CA: pki.ca }).message).toMatch(/KV_REDIS_TLS_CA: .*with REDIS_SENTINELS, set KV_REDIS_TLS=true/);
      // Still one target only: TLS does not lift that refusal.
      expect(configError({ REDIS_SENTINELS: sentinels, REDIS_CLUSTER_NODES: 'h:7000', KV_REDIS_TLS: 'true' }).message).toMatch(/REDIS_CLUSTER_NODES: give one of/);
    } finally {
      pki.cleanup();
    }
  });

  it('reads process.env by default', () => {
    const saved = process.env.KV_PARTITIONS;
    process.env.KV_PARTITIONS = '7';
    try {
      expect(loadConfig().partitions).toBe(7);
    } finally {
      if (saved === undefined) delete process.env.KV_PARTITIONS;
      else process.env.KV_PARTITIONS = saved;
    }
  });
});

describe('the real entry point', () => {
  it('exits non-zero quickly with a message naming the wrong variable', async () => {
    const started = Date.now();
    const child = spawn(process.execPath, startArgs(), {
      env: { ...process.env, KV_PARTITIONS: 'abc', REDIS_URL: '', PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    clearTimeout(timer);
    expect(code, output).not.toBe(0);
    expect(code, output).not.toBeNull();
    expect(output).toContain('KV_PARTITIONS');
    expect(output).toContain('"abc"');
    expect(output).not.toMatch(/listening|managed Redis/);
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});
