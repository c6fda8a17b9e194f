// Loads the Lua scripts in ./lua and registers each on an ioredis client as a custom command.
// ioredis sends EVALSHA and falls back to EVAL when Redis has lost its script cache (a restart).
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';

const SCRIPTS = ['put', 'delete', 'range'] as const;
export type ScriptName = (typeof SCRIPTS)[number];

function source(name: ScriptName): string {
  return readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');
}

/** The script commands this store calls. Every call passes the number of keys first. */
export interface ScriptCommands {
  kvPut(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  kvDelete(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
  kvRange(numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown[]>;
}

const COMMAND: Record<ScriptName, keyof ScriptCommands> = {
  put: 'kvPut',
  delete: 'kvDelete',
  range: 'kvRange',
};

export function registerScripts(redis: Redis): Redis & ScriptCommands {
  for (const name of SCRIPTS) {
    if (!(COMMAND[name] in redis)) redis.defineCommand(COMMAND[name], { lua: source(name) });
  }
  return redis as Redis & ScriptCommands;
}
