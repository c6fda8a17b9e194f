// Consistency: which Redis may answer a read (README, "Operations: replication and failover").
import type { Consistency } from '../store/store.js';
import type { Builder } from './builder.js';

export function addConsistency(builder: Builder) {
  return builder.enumType('Consistency', {
    description: "Which copy of the data may answer a read (as etcd's linearizable and serializable reads).",
    values: {
      STRONG: {
        value: 'strong' as Consistency,
        description: 'From the primary: every write acknowledged before the read began is seen. The default.',
      },
      EVENTUAL: {
        value: 'eventual' as Consistency,
        description:
          'A replica may answer (the primary when none can): cheaper for the primary, but the answer may miss ' +
          'writes of the last moments, and two reads may go to replicas at different points.',
      },
    } as const,
  });
}

export type ConsistencyRef = ReturnType<typeof addConsistency>;
