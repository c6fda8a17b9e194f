// One shared Redis for the whole run; each test file works under its own key prefix.
import type { TestProject } from 'vitest/node';
import { startTestRedis } from './redisServer.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const redis = await startTestRedis();
  project.provide('redisUrl', redis.url);
  return () => redis.stop();
}
