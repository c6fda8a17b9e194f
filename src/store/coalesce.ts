// Coalesced writes to Redis: while replies are outstanding on a connection, the commands issued
// in one turn of the event loop leave in one write to its socket instead of one write each.
//
// Why: a CPU profile of the API serving get at 32 clients spent about a tenth of its time in the
// write() of each request's HMGET, one system call per command. ioredis's own remedy,
// enableAutoPipelining, builds a Pipeline object per batch and was slower here (redis.ts). This
// only corks the socket until the loop's check phase (setImmediate), and only while the
// connection is busy: with nothing outstanding a command is written at once, so a lone client
// never waits for company. Measured with `npm run bench:ab` (README, "How a request is served").
//
// It reads two ioredis fields that are not typed as public (`stream`, the socket of the current
// connection, and `commandQueue`, the commands awaiting replies). Without them it does nothing.
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';

interface Internals {
  stream?: unknown;
  commandQueue?: { length: number };
}

const COALESCING = Symbol('kvql.coalescing');

/** Coalesces the writes of `redis` on every connection it makes from now on. */
export function coalesceWrites(redis: Redis): Redis {
  // 'connect' comes once per connection, each with a new socket.
  redis.on('connect', () => {
    const { stream, commandQueue } = redis as unknown as Internals;
    if (commandQueue && isSocket(stream)) corkWhileBusy(stream, commandQueue);
  });
  return redis;
}

function isSocket(stream: unknown): stream is Socket & { [COALESCING]?: true } {
  return typeof stream === 'object' && stream !== null && typeof (stream as Socket).cork === 'function' && typeof (stream as Socket).write === 'function';
}

function corkWhileBusy(socket: Socket & { [COALESCING]?: true }, outstanding: { length: number }): void {
  if (socket[COALESCING]) return;
  socket[COALESCING] = true;
  let corked = false;
  const flush = () => {
    corked = false;
    socket.uncork();
  };
  const write = socket.write;
  socket.write = function (this: Socket, ...args: Parameters<Socket['write']>): boolean {
    // ioredis writes a command before it queues it: `outstanding` counts the others.
    if (!corked && outstanding.length > 0) {
      corked = true;
      socket.cork();
      setImmediate(flush);
    }
    return write.apply(this, args);
  } as Socket['write'];
}
