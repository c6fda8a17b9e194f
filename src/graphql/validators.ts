// The zod schemas for keys, values and batches, built from the configured limits. They run in
// the validation plugin, before a resolver (and so Redis) is reached.
import { z } from 'zod';
import type { Limits } from '../config.js';

/** A lone surrogate has no UTF-8 form: storing it would silently change it, so it is refused. */
const LONE_SURROGATE = /\p{Surrogate}/u;

export const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');

const wellFormed = (what: string) =>
  z.string().refine((s) => !LONE_SURROGATE.test(s), `${what} must be well-formed Unicode (it has a lone surrogate)`);

const tooLarge = { params: { code: 'PAYLOAD_TOO_LARGE' } };

export function validators(limits: Limits) {
  const key = wellFormed('a key').refine((s) => {
    const n = byteLength(s);
    return n >= 1 && n <= limits.maxKeyBytes;
  }, `a key must be 1 to ${limits.maxKeyBytes} bytes of UTF-8`);

  const value = wellFormed('a value').refine((s) => byteLength(s) <= limits.maxValueBytes, {
    message: `a value must be at most ${limits.maxValueBytes} bytes of UTF-8`,
    ...tooLarge,
  });

  /** A range bound or prefix: the same alphabet as keys; a prefix may be empty. */
  const bound = wellFormed('a range bound').refine((s) => byteLength(s) <= limits.maxKeyBytes, `a range bound must be at most ${limits.maxKeyBytes} bytes`);

  const version = z.number().int().min(0, 'expectedVersion must be 0 (must not exist) or a positive version');

  const batch = <T extends { key: string; value: string }>(what: string) =>
    z
      .array(z.custom<T>())
      // A refinement, not .max(): zod's built-in checks drop `params`, and with it the code.
      .refine((items) => items.length <= limits.maxBatchItems, {
        message: `${what} may hold at most ${limits.maxBatchItems} items`,
        ...tooLarge,
      })
      .refine((items) => items.reduce((n, i) => n + byteLength(i.key) + byteLength(i.value), 0) <= limits.maxBatchBytes, {
        message: `${what} may hold at most ${limits.maxBatchBytes} bytes of keys and values`,
        ...tooLarge,
      });

  const keyList = z
    .array(z.string())
    .refine((keys) => keys.length <= limits.maxBatchItems, {
      message: `at most ${limits.maxBatchItems} keys per request`,
      ...tooLarge,
    });

  return { key, value, bound, version, batch, keyList };
}

export type Validators = ReturnType<typeof validators>;
