// Loads the Lua scripts in ./lua and registers each on an ioredis client as a custom command.
// ioredis sends EVALSHA and falls back to EVAL when Redis has lost its script cache (a restart).
import { readFileSync } from 'node:fs';
import type { RedisClient } from './redis.js';

const SCRIPTS = ['put', 'delete', 'get', 'range', 'batchPrepare', 'batchApply', 'batchForget', 'rateLimit', 'migrateFeed'] as const;
export type ScriptName = (typeof SCRIPTS)[number];

function read(file: string): string {
  return readFileSync(new URL(`./lua/${file}`, import.meta.url), 'utf8');
}

/**
 * A script's text, each line `-- #include <file>.lua` replaced by that file of ./lua: a Lua
 * script cannot load another, and what several scripts share is written once (feedEntries.lua,
 * indexChanges.lua).
 */
export function source(name: ScriptName): string {
  return read(`${name}.lua`).replace(/^-- #include (\w+\.lua)$/gm, (_, file: string) => read(file));
}

/** The script commands this store calls. Every call passes the number of keys first. */
export interface ScriptCommands {
  kvPut(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  kvDelete(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  // The reads are called in their Buffer form (ioredis defines one for every command it is
  // given): the packed entries they return are bytes.
  /** get.lua. */
  kvGetBuffer(numKeys: number, ...args: (string | Buffer | number)[]): Promise<(Buffer | null)[]>;
  /** range.lua. */
  kvRangeBuffer(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  kvBatchPrepare(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  kvBatchApply(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  kvBatchForget(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  /** rateLimit.lua answers one integer: 0 allowed, n > 0 wait n ms, -1 never (too large). */
  kvRateLimit(numKeys: number, ...args: (string | Buffer | number)[]): Promise<number>;
  /** migrateFeed.lua: 1 when it moved the partition's feed to layout 3, 0 when it was there already. */
  kvMigrateFeed(numKeys: number, ...args: (string | Buffer | number)[]): Promise<number>;
}

/** The command each script is defined as (the reads are called as `<command>Buffer`). */
const COMMAND: Record<ScriptName, string> = {
  put: 'kvPut',
  delete: 'kvDelete',
  get: 'kvGet',
  range: 'kvRange',
  batchPrepare: 'kvBatchPrepare',
  batchApply: 'kvBatchApply',
  batchForget: 'kvBatchForget',
  rateLimit: 'kvRateLimit',
  migrateFeed: 'kvMigrateFeed',
};

export function registerScripts<T extends RedisClient>(redis: T): T & ScriptCommands {
  for (const name of SCRIPTS) {
    if (!(COMMAND[name] in redis)) redis.defineCommand(COMMAND[name], { lua: source(name) });
  }
  return redis as T & ScriptCommands;
}
