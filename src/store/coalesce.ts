// Coalesced writes to Redis: while replies are outstanding on a connection, the commands issued
// in one turn of the event loop leave in one write to its socket instead of one write each.
//
// Why: a CPU profile of the API serving get at 32 clients spent about a tenth of its time in the
// write() of each request's HMGET, one system call per command. ioredis's own remedy,
// enableAutoPipelining, builds a Pipeline object per batch and was slower here (redis.ts). This
// only corks the socket until the loop's check phase (setImmediate), and only while the
// connection is busy: with nothing outstanding a command is written at once, so a lone client
// never waits for company. Measured with `npm run bench:ab` (docs/request-path.md).
//
// It wraps the client's sendCommand (public) and reads two ioredis fields that are not typed as
// public: `stream`, the socket of the current connection, and `commandQueue`, the commands
// awaiting replies. Without them it does nothing. The socket itself is left as Node made it:
// a first version replaced its write method, and that alone cost about 4 µs per command at one
// client (own properties on one socket slow Node's stream code for it).
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';

interface Internals {
  stream?: Socket;
  commandQueue?: { length: number };
}

/** Coalesces the writes of `redis`, on whatever connection it has at each command. */
export function coalesceWrites(redis: Redis): Redis {
  const client = redis as unknown as Internals;
  const send = redis.sendCommand;
  let corked: Socket | null = null;
  const flush = () => {
    corked?.uncork();
    corked = null;
  };
  redis.sendCommand = function (this: Redis, ...args: Parameters<Redis['sendCommand']>) {
    const stream = client.stream;
    if (corked === null && stream && (client.commandQueue?.length ?? 0) > 0 && typeof stream.cork === 'function') {
      corked = stream;
      stream.cork();
      setImmediate(flush);
    }
    return send.apply(this, args);
  } as Redis['sendCommand'];
  return redis;
}
