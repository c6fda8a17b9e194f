// Loads the Lua scripts in ./lua and registers each on an ioredis client as a custom command.
// A call sends EVALSHA and falls back to EVAL when Redis has lost its script cache (a restart,
// a failover, SCRIPT FLUSH); in a pipeline, ioredis's own script commands do the same.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Command } from 'ioredis';
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

/**
 * A script call whose arguments are used as given. ioredis's Command copies its arguments
 * through Array.prototype.flat, which costs V8 about 0.1 µs per element: some 20 µs for a
 * range page's 200-odd arguments and 0.6 ms for a batch of 1,000 puts' 7,002 (a CPU profile of
 * the API under batches of 1,000 gave ioredis's Command 1.16 ms of each). This one flattens an
 * empty list, then takes `args` as they are. Not a subclass of Command: constructing one here
 * kept V8's optimizing compiler aborting callScript ("dependency change", some 270 times in a
 * 12-second loop, 4-18 ms each on a background thread), and that cost more CPU than it saved.
 */
function scriptCommand(name: 'evalsha' | 'eval', args: (string | Buffer | number)[], replyEncoding: 'utf8' | null): Command {
  const made = new Command(name, [], { replyEncoding });
  made.args = args;
  // Numbers to strings, and buffer mode if an argument is a Buffer, as ioredis does.
  made.stringifyArguments();
  if (args.length >= FLAT_FROM_ARGS) made.toWritable = flatWritable;
  return made;
}

/**
 * Calls with this many arguments (a batch or group of some 15 items on) are written by
 * flatWritable. A single put or get keeps ioredis's encoding, a few pieces, and no method of its
 * own on its Command: `npm run bench:ab -- HEAD --op put --concurrency 32` measured 1.030 of the
 * API's CPU per put with flatWritable on every call (within the noise, but no gain to buy).
 */
const FLAT_FROM_ARGS = 64;

/**
 * The command as RESP in one flat string, when every argument is an ASCII string (each one's
 * length in bytes is then its length in characters); otherwise ioredis's own encoding. ioredis
 * appends each argument to one string with `+=`, five pieces each: for a batch of 1,000 puts a
 * rope of some 35,000 pieces, which Node flattens and encodes when it writes it to the socket
 * (a CPU profile of the API under batches of 1,000 at one client gave that write 1.23 ms of
 * each batch's 8.67 ms, and ioredis's encoding 0.23). Joined from an array, the string is flat
 * from the start. Whether all is ASCII is one count over the whole string: its UTF-8 length
 * equals its length only then. A Buffer argument (a Buffer is never stringified) takes ioredis's
 * way too. Exported for its test (test/api/scriptEncoding.test.ts).
 */
export function flatWritable(this: Command, socket: object): string | Buffer {
  const args = this.args;
  const parts: string[] = new Array(args.length + 1);
  parts[0] = `*${args.length + 1}\r\n$${this.name.length}\r\n${this.name}\r\n`;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (typeof arg !== 'string') return Command.prototype.toWritable.call(this, socket);
    parts[i + 1] = `$${arg.length}\r\n${arg}\r\n`;
  }
  const flat = parts.join('');
  return Buffer.byteLength(flat) === flat.length ? flat : Command.prototype.toWritable.call(this, socket);
}

/**
 * Sends a script call, `args` as ioredis's script commands take them after the script's SHA1 at
 * args[0] (numKeys, the keys, the arguments): EVALSHA, then on NOSCRIPT the script's `text`
 * (EVAL), which also puts it back in Redis's cache. Replies as strings, or as Buffers with
 * `replyEncoding` null.
 */
function callScript(redis: RedisClient, text: string, args: (string | Buffer | number)[], replyEncoding: 'utf8' | null): Promise<unknown> {
  const sent = redis.sendCommand(scriptCommand('evalsha', args, replyEncoding)) as Promise<unknown>;
  return sent.catch((err: unknown) => {
    if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
    args[0] = text;
    return redis.sendCommand(scriptCommand('eval', args, replyEncoding));
  });
}

type ScriptMethod = (this: unknown, ...args: (string | Buffer | number)[]) => unknown;

/**
 * Defines every script on `redis` as `<command>` (replies as strings) and `<command>Buffer`,
 * sent by callScript. A pipeline or MULTI of this client copies these methods and calls them on
 * itself: for it they are ioredis's own (defineCommand), which queue the call in the pipeline
 * (callScript would send it on the client, outside it).
 */
export function registerScripts<T extends RedisClient>(redis: T): T & ScriptCommands {
  const methods = redis as unknown as Record<string, ScriptMethod>;
  for (const name of SCRIPTS) {
    const command = COMMAND[name];
    if (command in redis) continue;
    const text = source(name);
    const sha = createHash('sha1').update(text).digest('hex');
    redis.defineCommand(command, { lua: text });
    for (const [method, encoding] of [[command, 'utf8'], [`${command}Buffer`, null]] as const) {
      const ioredis = methods[method]!;
      methods[method] = function (...args) {
        if (this !== redis) return ioredis.apply(this, args);
        // The call's own array (rest parameters): the SHA1 goes in front, nothing is copied.
        args.unshift(sha);
        return callScript(redis, text, args, encoding);
      };
    }
  }
  return redis as T & ScriptCommands;
}
