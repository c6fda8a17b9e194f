// A bounded cache of parsed and validated documents for graphql-yoga. Yoga's default keeps
// 1,024 documents keyed by their text for an hour; a document that carries a 1 MiB literal
// value would be kept whole, so 1,024 of them could hold a gigabyte. Here only documents up to
// MAX_CACHED_CHARS are kept: real clients send small documents with variables, and those are
// the ones worth caching.
const MAX_CACHED_CHARS = 4096;
const MAX_ENTRIES = 1024;

export class BoundedCache<T> {
  private readonly map = new Map<string, T>();

  get(key: string): T | undefined {
    const hit = this.map.get(key);
    if (hit !== undefined) {
      // Most recently used goes last.
      this.map.delete(key);
      this.map.set(key, hit);
    }
    return hit;
  }

  set(key: string, value: T): void {
    if (key.length > MAX_CACHED_CHARS) return;
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > MAX_ENTRIES) this.map.delete(this.map.keys().next().value!);
  }
}
