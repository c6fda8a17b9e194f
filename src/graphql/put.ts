// Writes: put one entry, or a batch of entries atomically, each with an optional compare-and-set.
import { requireKeys } from './access.js';
import type { Builder } from './builder.js';
import type { Validators } from './validators.js';

export function addPut(builder: Builder, v: Validators): void {
  const PutInput = builder.inputType('PutInput', {
    fields: (t) => ({
      // Checked by the batch's own schema (validators.ts), in one pass over the items.
      key: t.string({ required: true }),
      value: t.string({ required: true }),
      expectedVersion: t.int({
        description: 'Compare-and-set: the version the key must have now; 0 means it must not exist.',
      }),
    }),
  });

  builder.mutationFields((t) => ({
    put: t.field({
      type: 'Entry',
      description:
        'Creates or replaces a key. Acknowledged only once Redis has written it to its append-only file.',
      args: {
        key: t.arg.string({ required: true }),
        value: t.arg.string({ required: true }),
        expectedVersion: t.arg.int({
          description: 'Compare-and-set: the version the key must have now; 0 means it must not exist.',
        }),
      },
      validate: v.putArgs,
      resolve: (_, args, ctx) => {
        requireKeys(ctx.principal, 'write', [args.key]);
        return ctx.store.put(args);
      },
    }),
    batchPut: t.field({
      type: ['Entry'],
      description:
        'Writes every item or none. One conflicting expectedVersion rejects the batch and names every conflict.',
      args: {
        items: t.arg({ type: [PutInput], required: true, validate: v.batch('a batch') }),
      },
      resolve: (_, { items }, ctx) => {
        requireKeys(ctx.principal, 'write', items.map((i) => i.key));
        return ctx.store.batchPut(items);
      },
    }),
  }));
}
