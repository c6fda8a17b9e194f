// The change feed's entry format (src/store/feedFormat.ts) as the write scripts produce it.
import { describe, expect, it } from 'vitest';
import { decodeEntry, FEED_ENTRY_BYTES, MalformedEntryError } from '../../src/store/feedFormat.js';
import { source } from '../../src/store/scripts.js';
import { packDelete, packPut } from '../harness/feedStream.js';

const fields = (q: number, e: Buffer) => [Buffer.from('q'), Buffer.from(String(q)), Buffer.from('e'), e];

describe('decodeEntry', () => {
  it('numbers an entry’s events from its q, and reads UTF-8 keys and values by their byte lengths', () => {
    const e = Buffer.concat([packPut(3, 1700000000000, 1700000000123, 'ключ', 'värde 😀'), packDelete(4, 'x\u0000y'), packPut(1, 5, 5, '', '')]);
    expect(decodeEntry('0-12', fields(10, e))).toEqual({
      id: '0-12',
      first: 10,
      last: 12,
      events: [
        { seq: 10, type: 'P', key: 'ключ', version: 3, value: 'värde 😀', createdAt: 1700000000000, updatedAt: 1700000000123 },
        { seq: 11, type: 'D', key: 'x\u0000y', version: 4 },
        { seq: 12, type: 'P', key: '', version: 1, value: '', createdAt: 5, updatedAt: 5 },
      ],
    });
  });

  it('reads the mark of the move from layout 2: an entry of no events', () => {
    expect(decodeEntry('0-41', fields(42, Buffer.alloc(0)))).toEqual({ id: '0-41', first: 42, last: 41, events: [] });
  });

  it('refuses what the scripts do not write: an ID that disagrees with the events, a cut event, an unknown type, a layout-2 entry', () => {
    const one = packPut(1, 1, 1, 'k', 'v');
    const refused = (id: string, f: Buffer[]) => () => decodeEntry(id, f);
    expect(refused('0-8', fields(7, one))).toThrow(MalformedEntryError);
    expect(refused('0-8', fields(7, one))).toThrow(/its ID should be 0-7/);
    expect(refused('0-7', fields(7, one.subarray(0, -1)))).toThrow(/cut short/);
    expect(refused('0-7', fields(7, Buffer.from('Xabc')))).toThrow(/unknown type/);
    expect(refused('1700000000000-0', ['t', 'P', 'k', 'key', 'q', '7'].map((x) => Buffer.from(x)))).toThrow(/no events field/);
    expect(refused('1700000000000-0', fields(7, one))).toThrow(/time-based ID/);
    expect(refused('0-7', fields(0, one))).toThrow(/no positive sequence number/);
  });

  it('FEED_ENTRY_BYTES is the write scripts’ own (feedEntries.lua, put into each by scripts.ts)', () => {
    for (const script of ['put', 'delete', 'batchApply'] as const) {
      const lua = source(script);
      expect(lua, script).not.toMatch(/^-- #include/m);
      expect(/^local FEED_ENTRY_BYTES = (\d+)$/m.exec(lua)?.[1], script).toBe(String(FEED_ENTRY_BYTES));
    }
  });
});
