// The checks of keys, values, versions and batches, built from the configured limits. They run in
// the validation plugin, before a resolver (and so Redis) is reached.
//
// Plain functions behind the Standard Schema interface the plugin takes, not zod: every check
// is a test of a string's form and byte length, and a batch is checked in one pass over its
// items. With a zod schema on each field of PutInput, a batchPut of 1,000 items ran 3,000
// schemas through the plugin's per-field machinery: about a third of the API's CPU for that
// request in a profile (docs/request-path.md).
import type { StandardSchemaV1 } from '@pothos/plugin-validation';
import type { Limits } from '../config.js';

export const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');

/** One refusal: the plugin's validationError (builder.ts) joins the messages and takes the first code. */
export interface Refusal {
  message: string;
  path?: (string | number)[];
  /** An issue may name its own error code (PAYLOAD_TOO_LARGE); every other is BAD_USER_INPUT. */
  params?: { code: string };
}

/** A check: undefined when the value is fine, else every refusal it earns. */
export type Check<T> = (value: T) => Refusal[] | undefined;

/** A check as the validation plugin takes it: the value passes through unchanged. */
function schema<T>(check: Check<T>): StandardSchemaV1<unknown, T> {
  return {
    '~standard': {
      version: 1,
      vendor: 'kvql',
      validate: (value) => {
        const issues = check(value as T);
        return issues ? { issues } : { value: value as T };
      },
    },
  };
}

const tooLarge = { code: 'PAYLOAD_TOO_LARGE' };

/** Refusals of `issues` (maybe undefined) plus one more, `extra` when `failed`. */
function add(issues: Refusal[] | undefined, failed: boolean, extra: Refusal): Refusal[] | undefined {
  if (!failed) return issues;
  return issues ? [...issues, extra] : [extra];
}

/** The refusals of `issues`, each with `prefix` in front of its path. */
const under = (prefix: (string | number)[], issues: Refusal[]) => issues.map((i) => ({ ...i, path: [...prefix, ...(i.path ?? [])] }));

/** Named values checked in order: an object's fields, or a field's arguments. */
type Fields = readonly (readonly [name: string, check: Check<any>])[];

/**
 * The refusals of the first of `fields` that fails (absent and null ones are not checked), under
 * its name; undefined when all pass. Only the first: the validation plugin stops at the first
 * failing field of an object, and its answers were kept when the checks moved here.
 */
function firstRefused(fields: Fields, obj: Record<string, unknown>): Refusal[] | undefined {
  for (const [name, check] of fields) {
    const value = obj[name];
    if (value === undefined || value === null) continue;
    const refused = check(value);
    if (refused) return under([name], refused);
  }
  return undefined;
}

/**
 * A field's arguments, checked by one schema on the field: the plugin's per-argument machinery
 * (copied objects, paths and closures for every argument and list element) cost more than the
 * checks. Paths and messages are those of a schema on each argument.
 */
const args = <T extends object>(fields: Fields) => schema<T>((obj) => firstRefused(fields, obj as Record<string, unknown>));

export function validators(limits: Limits) {
  const { maxKeyBytes, maxValueBytes, maxBatchItems, maxBatchBytes } = limits;

  /** A lone surrogate has no UTF-8 form: storing it would silently change it, so it is refused. */
  const wellFormed = (what: string, s: string) =>
    s.isWellFormed() ? undefined : [{ message: `${what} must be well-formed Unicode (it has a lone surrogate)` }];

  const keyCheck: Check<string> = (s) => {
    const n = byteLength(s);
    return add(wellFormed('a key', s), n < 1 || n > maxKeyBytes, { message: `a key must be 1 to ${maxKeyBytes} bytes of UTF-8` });
  };
  const valueCheck: Check<string> = (s) =>
    add(wellFormed('a value', s), byteLength(s) > maxValueBytes, { message: `a value must be at most ${maxValueBytes} bytes of UTF-8`, params: tooLarge });
  /** A range bound or prefix: the same alphabet as keys; a prefix may be empty. */
  const boundCheck: Check<string> = (s) =>
    add(wellFormed('a range bound', s), byteLength(s) > maxKeyBytes, { message: `a range bound must be at most ${maxKeyBytes} bytes` });
  const versionCheck: Check<number> = (n) =>
    Number.isInteger(n) && n >= 0 ? undefined : [{ message: 'expectedVersion must be 0 (must not exist) or a positive version' }];

  /** The keys of one request: their number first (alone when too many), then every key. */
  const keyListCheck: Check<string[]> = (keys) => {
    if (keys.length > maxBatchItems) return [{ message: `at most ${maxBatchItems} keys per request`, params: tooLarge }];
    let issues: Refusal[] | undefined;
    for (let i = 0; i < keys.length; i++) {
      const refused = keyCheck(keys[i]!);
      if (refused) (issues ??= []).push(...under([i], refused));
    }
    return issues;
  };

  const putFields: Fields = [['key', keyCheck], ['value', valueCheck], ['expectedVersion', versionCheck]];

  /**
   * A batch of puts: every item, each reported by its first failing field only; then, when
   * every item passed, the batch's size.
   */
  const batch = <T extends { key: string; value: string; expectedVersion?: number | null }>(what: string) =>
    schema<T[]>((items) => {
      let issues: Refusal[] | undefined;
      let bytes = 0;
      for (let i = 0; i < items.length; i++) {
        const item = items[i]!;
        const refused = firstRefused(putFields, item);
        if (refused) (issues ??= []).push(...under([i], refused));
        else bytes += byteLength(item.key) + byteLength(item.value);
      }
      if (issues) return issues;
      const sized = add(undefined, items.length > maxBatchItems, { message: `${what} may hold at most ${maxBatchItems} items`, params: tooLarge });
      return add(sized, bytes > maxBatchBytes, { message: `${what} may hold at most ${maxBatchBytes} bytes of keys and values`, params: tooLarge });
    });

  return {
    /** One range bound, on each argument that is one (rangeArgs: shared by three fields). */
    bound: schema(boundCheck),
    /** The arguments of a field, checked together (the field's `validate`, its arguments have none). */
    putArgs: args(putFields),
    deleteArgs: args([['key', keyCheck], ['expectedVersion', versionCheck]]),
    getArgs: args([['key', keyCheck]]),
    getManyArgs: args([['keys', keyListCheck]]),
    batch,
  };
}

export type Validators = ReturnType<typeof validators>;
