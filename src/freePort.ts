// A TCP port on 127.0.0.1 that nothing listens on right now: the operators' tools start a
// short-lived redis-server there (rdbRestore.ts), and the tests start theirs.
import { createServer } from 'node:net';

export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
