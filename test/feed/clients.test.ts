// The README's Apollo Client and urql snippets, run as written against a real server: the
// clients our users use, over their own transports (graphql-ws for subscriptions, HTTP for the
// rest).
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { Client as UrqlClient, fetchExchange, subscriptionExchange } from '@urql/core';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { BUCKETS, PARTITIONS, uniquePrefix } from '../harness/app.js';
import { Collector } from '../harness/stream.js';

let server: RunningServer;
const sockets: WsClient[] = [];

beforeAll(async () => {
  server = await startServer(
    loadConfig({ PORT: '0', REDIS_URL: inject('redisUrl'), KV_PREFIX: uniquePrefix('clients'), KV_PARTITIONS: String(PARTITIONS), KV_BUCKETS: String(BUCKETS) }),
    () => {},
  );
});
afterAll(async () => {
  await Promise.allSettled(sockets.map((s) => s.dispose()));
  await server?.close();
});

const wsUrl = () => server.url.replace(/^http/, 'ws');

/** Puts until the subscription has delivered a marker, so we know it is established. */
async function established(put: (key: string) => Promise<unknown>, events: Collector, marker: string) {
  for (let i = 0; i < 50; i++) {
    await put(marker);
    const p = await events.poll(100);
    if (p?.data?.changes?.key === marker) {
      while (await events.poll(50)); // drain the other markers
      return;
    }
  }
  throw new Error('the subscription was never established');
}

it('Apollo Client: queries and mutations over HTTP, the change feed over graphql-ws', async () => {
  const ws = createWsClient({ url: wsUrl(), webSocketImpl: WebSocket });
  sockets.push(ws);
  const link = ApolloLink.split(
    ({ query }) => {
      const def = getMainDefinition(query);
      return def.kind === 'OperationDefinition' && def.operation === 'subscription';
    },
    new GraphQLWsLink(ws),
    new HttpLink({ uri: server.url }),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });

  const events = new Collector('apollo');
  const sub = client
    .subscribe({
      query: gql`
        subscription ($prefix: String, $after: String) {
          changes(prefix: $prefix, after: $after) { type key version entry { value } cursor }
        }
      `,
      variables: { prefix: 'user:' },
    })
    .subscribe({ next: (r) => events.push(r as never), error: (error) => events.end({ kind: 'error', error }) });

  const PUT = gql`mutation ($k: String!, $v: String!) { put(key: $k, value: $v) { key version } }`;
  const put = (k: string, v = 'x') => client.mutate({ mutation: PUT, variables: { k, v } });
  await established((k) => put(k), events, 'user:marker');

  const written = await put('user:42', '{"name":"Ada"}');
  expect(written.data).toMatchObject({ put: { key: 'user:42', version: 1 } });
  await put('other:1'); // outside the prefix: never arrives
  await put('user:42', '{"name":"Ada L."}');
  const first = (await events.next()).data!.changes;
  expect(first).toMatchObject({ type: 'PUT', key: 'user:42', version: 1, entry: { value: '{"name":"Ada"}' } });
  expect((await events.next()).data!.changes).toMatchObject({ key: 'user:42', version: 2 });

  const read = await client.query({ query: gql`query { get(key: "user:42") { value version } }`, fetchPolicy: 'network-only' });
  expect(read.data).toMatchObject({ get: { value: '{"name":"Ada L."}', version: 2 } });
  sub.unsubscribe();
});

it('urql: subscriptionExchange over graphql-ws, fetchExchange for the rest', async () => {
  const ws = createWsClient({ url: wsUrl(), webSocketImpl: WebSocket });
  sockets.push(ws);
  const client = new UrqlClient({
    url: server.url,
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query ?? '' }, sink) }),
        }),
      }),
    ],
  });

  const events = new Collector('urql');
  const { unsubscribe } = client
    .subscription('subscription($prefix: String) { changes(prefix: $prefix) { type key version cursor } }', { prefix: 'user:' })
    .subscribe((result) => {
      if (result.error) events.end({ kind: 'error', error: result.error });
      else events.push({ data: result.data } as never);
    });

  const put = (k: string) =>
    client.mutation('mutation($k: String!) { put(key: $k, value: "v") { version } }', { k }).toPromise();
  await established(put, events, 'user:urql-marker');

  await put('user:7');
  await client.mutation('mutation { delete(key: "user:7") { deleted } }', {}).toPromise();
  expect((await events.next()).data!.changes).toMatchObject({ type: 'PUT', key: 'user:7', version: 1 });
  expect((await events.next()).data!.changes).toMatchObject({ type: 'DELETE', key: 'user:7', version: 1 });
  unsubscribe();
});
