// Entry: one key with its value and metadata; the get and getMany queries.
import { requireKeys } from './access.js';
import type { Builder } from './builder.js';
import type { ConsistencyRef } from './consistency.js';
import { loaderFor } from './context.js';
import type { Validators } from './validators.js';

export function addEntry(builder: Builder, v: Validators, Consistency: ConsistencyRef): void {
  builder.objectType('Entry', {
    description: 'A key with its value. Keys are ordered by their UTF-8 bytes.',
    fields: (t) => ({
      key: t.exposeString('key'),
      value: t.exposeString('value'),
      version: t.exposeInt('version', {
        description: '1 when the key is created, +1 on every put; a put after a delete starts again at 1.',
      }),
      createdAt: t.field({ type: 'DateTime', resolve: (e) => e.createdAt }),
      updatedAt: t.field({ type: 'DateTime', resolve: (e) => e.updatedAt }),
    }),
  });

  builder.queryFields((t) => ({
    get: t.field({
      type: 'Entry',
      nullable: true,
      description: 'The entry for a key; null when the key does not exist.',
      args: {
        key: t.arg.string({ required: true }),
        consistency: t.arg({ type: Consistency, required: true, defaultValue: 'strong' }),
      },
      validate: v.getArgs,
      resolve: (_, { key, consistency }, ctx) => {
        requireKeys(ctx.principal, 'read', [key]);
        return loaderFor(ctx, consistency).load(key);
      },
    }),
    getMany: t.field({
      type: ['Entry'],
      nullable: { list: false, items: true },
      description: 'Entries in the order asked, null where a key does not exist.',
      args: {
        keys: t.arg.stringList({ required: true }),
        consistency: t.arg({ type: Consistency, required: true, defaultValue: 'strong' }),
      },
      validate: v.getManyArgs,
      resolve: async (_, { keys, consistency }, ctx) => {
        requireKeys(ctx.principal, 'read', keys);
        const entries = await loaderFor(ctx, consistency).loadMany(keys);
        const failed = entries.find((e) => e instanceof Error);
        if (failed) throw failed;
        return entries as (typeof entries[number] & object | null)[] as never;
      },
    }),
  }));
}
