// The change feed's entry format (src/store/feedFormat.ts) as the write scripts produce it.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeEntry, FEED_ENTRY_BYTES, MalformedEntryError } from '../../src/store/feedFormat.js';

/** Events packed as put.lua and delete.lua pack them. */
function put(version: number, createdAt: number, updatedAt: number, key: string, value: string): Buffer {
  const k = Buffer.from(key);
  const v = Buffer.from(value);
  const head = Buffer.alloc(27);
  head.write('P', 0);
  head.writeUIntLE(version, 1, 6);
  head.writeUIntLE(createdAt, 7, 6);
  head.writeUIntLE(updatedAt, 13, 6);
  head.writeUInt32LE(k.length, 19);
  head.writeUInt32LE(v.length, 23);
  return Buffer.concat([head, k, v]);
}
function del(version: number, key: string): Buffer {
  const k = Buffer.from(key);
  const head = Buffer.alloc(11);
  head.write('D', 0);
  head.writeUIntLE(version, 1, 6);
  head.writeUInt32LE(k.length, 7);
  return Buffer.concat([head, k]);
}
const fields = (q: number, e: Buffer) => [Buffer.from('q'), Buffer.from(String(q)), Buffer.from('e'), e];

describe('decodeEntry', () => {
  it('numbers an entry’s events from its q, and reads UTF-8 keys and values by their byte lengths', () => {
    const e = Buffer.concat([put(3, 1700000000000, 1700000000123, 'ключ', 'värde 😀'), del(4, 'x\u0000y'), put(1, 5, 5, '', '')]);
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
    const one = put(1, 1, 1, 'k', 'v');
    const refused = (id: string, f: Buffer[]) => () => decodeEntry(id, f);
    expect(refused('0-8', fields(7, one))).toThrow(MalformedEntryError);
    expect(refused('0-8', fields(7, one))).toThrow(/its ID should be 0-7/);
    expect(refused('0-7', fields(7, one.subarray(0, -1)))).toThrow(/cut short/);
    expect(refused('0-7', fields(7, Buffer.from('Xabc')))).toThrow(/unknown type/);
    expect(refused('1700000000000-0', ['t', 'P', 'k', 'key', 'q', '7'].map((x) => Buffer.from(x)))).toThrow(/no events field/);
    expect(refused('1700000000000-0', fields(7, one))).toThrow(/time-based ID/);
    expect(refused('0-7', fields(0, one))).toThrow(/no positive sequence number/);
  });

  it('FEED_ENTRY_BYTES is the write scripts’ own', () => {
    for (const script of ['put', 'delete', 'batchApply']) {
      const lua = readFileSync(new URL(`../../src/store/lua/${script}.lua`, import.meta.url), 'utf8');
      expect(/^local FEED_ENTRY_BYTES = (\d+)$/m.exec(lua)?.[1], script).toBe(String(FEED_ENTRY_BYTES));
    }
  });
});
