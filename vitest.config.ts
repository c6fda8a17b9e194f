import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

// The API suite runs twice on one standalone Redis: with one partition and the default 16384 buckets, and with four
// partitions of five buckets each (so most keys share a bucket) on the same Redis, so the
// multi-partition and shared-bucket code is proven on every run. Everything else runs once.
// The "cluster" project runs the API and feed suites a third time, on a real Redis Cluster (3
// masters, 3 replicas, started once for the project by test/harness/clusterSetup.ts) with 16
// partitions of five buckets, so the partitions spread over every master.
//
// globalSetup: the root project always runs the root list; each project that has test files in
// the run runs its own list, which with `extends: true` is the root list followed by the
// project's own (so the cluster project gets its standalone Redis and `redisUrl` as well as its
// cluster). p1 and p4 add nothing, so they start no cluster.
export default defineConfig({
  // Node (npm start) loads graphql's CommonJS build for every importer; make the tests do the
  // same, so that our code and graphql-yoga share one graphql and its instanceof checks.
  resolve: { alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }] },
  test: {
    globalSetup: ['test/harness/globalSetup.ts'],
    testTimeout: 30_000,
    // Two test files at a time, whatever the core count (vitest's default on 2 cores is one):
    // most files wait on Redis, child processes and sockets rather than on the CPU, and the
    // suite takes about 5 minutes instead of 8 on the 2-core development machine.
    maxWorkers: 2,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'p1', include: ['test/**/*.test.ts'], env: { KV_TEST_PARTITIONS: '1' } } },
      { extends: true, test: { name: 'p4', include: ['test/api/**/*.test.ts', 'test/feed/**/*.test.ts'], env: { KV_TEST_PARTITIONS: '4', KV_TEST_BUCKETS: '5' } } },
      {
        extends: true,
        test: {
          name: 'cluster',
          include: ['test/api/**/*.test.ts', 'test/feed/**/*.test.ts'],
          env: { KV_TEST_CLUSTER: '1', KV_TEST_PARTITIONS: '16', KV_TEST_BUCKETS: '5' },
          globalSetup: ['test/harness/clusterSetup.ts'],
        },
      },
    ],
  },
});
