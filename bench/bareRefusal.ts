// The floor under kvql's refusals, for `npm run load-test`: a bare node:http server that answers
// every request with the same 503 OVERLOADED body and headers kvql's listener sends when every
// admission slot is taken, without reading the body. What it costs per answer is what Node's HTTP
// stack costs on this machine; kvql's refusal cannot be cheaper. Listens on PORT at 127.0.0.1.
import { createServer } from 'node:http';
import { overloadedBody, RETRY_AFTER_SECONDS } from '../src/admission.js';
import { defaultLoad } from '../src/config.js';

// The same bytes as the API's refusal: it runs with the same environment (KV_MAX_IN_FLIGHT).
const body = overloadedBody(Number(process.env.KV_MAX_IN_FLIGHT ?? defaultLoad().maxInFlight));
const server = createServer((req, res) => {
  res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'retry-after': String(RETRY_AFTER_SECONDS), 'content-length': Buffer.byteLength(body) });
  res.end(body);
  req.resume();
});
server.listen(Number(process.env.PORT), '127.0.0.1', () => process.send?.('listening'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
