// Global setup of the "cluster" test project: one Redis Cluster (3 masters, 3 replicas) for the
// whole project; each test file works under its own key prefix, as on the shared standalone Redis.
// The root globalSetup (globalSetup.ts, the standalone Redis and `redisUrl`) runs for this project
// too: vitest merges a project's globalSetup list after the root's when the project `extends`.
import type { TestProject } from 'vitest/node';
import { startTestCluster } from './cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** "127.0.0.1:p1,127.0.0.1:p2,...": the cluster's nodes (REDIS_CLUSTER_NODES's format); only in the cluster project. */
    clusterNodes: string;
  }
}

export default async function setup(project: TestProject) {
  const cluster = await startTestCluster({ masters: 3, replicas: 1 });
  project.provide('clusterNodes', cluster.seedList);
  return () => cluster.stop();
}
