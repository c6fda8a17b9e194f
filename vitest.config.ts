import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

// The API suite runs twice: with one partition and the default 16384 buckets, and with four
// partitions of five buckets each (so most keys share a bucket) on the same Redis, so the
// multi-partition and shared-bucket code is proven on every run. Everything else runs once.
export default defineConfig({
  // Node (npm start) loads graphql's CommonJS build for every importer; make the tests do the
  // same, so that our code and graphql-yoga share one graphql and its instanceof checks.
  resolve: { alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }] },
  test: {
    globalSetup: ['test/harness/globalSetup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'p1', include: ['test/**/*.test.ts'], env: { KV_TEST_PARTITIONS: '1' } } },
      { extends: true, test: { name: 'p4', include: ['test/api/**/*.test.ts', 'test/feed/**/*.test.ts'], env: { KV_TEST_PARTITIONS: '4', KV_TEST_BUCKETS: '5' } } },
    ],
  },
});
