// Refuses request bodies over the configured size before they are parsed, so one request can
// not make the server buffer without bound.
import type { Plugin } from 'graphql-yoga';

export const PAYLOAD_TOO_LARGE = 'PAYLOAD_TOO_LARGE';

export function bodyLimitPlugin(maxBytes: number): Plugin {
  const refusal = (fetchAPI: { Response: typeof Response }) =>
    fetchAPI.Response.json(
      { errors: [{ message: `the request body exceeds ${maxBytes} bytes`, extensions: { code: PAYLOAD_TOO_LARGE } }] },
      { status: 413 },
    );
  return {
    async onRequest({ request, setRequest, endResponse, fetchAPI }) {
      if (request.body == null || request.method === 'GET' || request.method === 'HEAD') return;
      const declared = request.headers.get('content-length');
      // A declared length over the limit is refused before a byte of the body is read.
      if (declared !== null && /^\s*\d+\s*$/.test(declared) && Number(declared) > maxBytes) {
        endResponse(refusal(fetchAPI));
        return;
      }
      // Otherwise (chunked, or a length that may not bound what actually arrives: yoga.fetch
      // and other adapters do not cut the body at Content-Length), count while reading and
      // stop at the limit.
      const reader = request.body.getReader();
      const chunks: Uint8Array[] = [];
      let size = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > maxBytes) {
          await reader.cancel();
          endResponse(refusal(fetchAPI));
          return;
        }
        chunks.push(value);
      }
      setRequest(new fetchAPI.Request(request.url, { method: request.method, headers: request.headers, body: Buffer.concat(chunks), signal: request.signal }));
    },
  };
}
