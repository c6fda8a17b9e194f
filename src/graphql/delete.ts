// Deleting one key, with an optional compare-and-set.
import type { Entry } from '../store/store.js';
import { requireKeys } from './access.js';
import type { Builder } from './builder.js';
import type { Validators } from './validators.js';

export function addDelete(builder: Builder, v: Validators): void {
  const DeleteResult = builder.objectRef<{ deleted: boolean; previous: Entry | null }>('DeleteResult');
  builder.objectType(DeleteResult, {
    fields: (t) => ({
      deleted: t.exposeBoolean('deleted', { description: 'False when the key did not exist.' }),
      previous: t.field({ type: 'Entry', nullable: true, resolve: (r) => r.previous }),
    }),
  });

  builder.mutationFields((t) => ({
    delete: t.field({
      type: DeleteResult,
      args: {
        key: t.arg.string({ required: true }),
        expectedVersion: t.arg.int({
          description: 'Compare-and-set: the version the key must have now; 0 means it must not exist.',
        }),
      },
      validate: v.deleteArgs,
      resolve: (_, { key, expectedVersion }, ctx) => {
        requireKeys(ctx.principal, 'write', [key]);
        return ctx.store.delete(key, expectedVersion);
      },
    }),
  }));
}
