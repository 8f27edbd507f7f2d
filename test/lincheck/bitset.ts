/**
 * Fixed-size set of small integers (operation indexes within one partition),
 * used for the "already resolved" set of the search.
 *
 * Stored as bytes so that `key()` can decode them as latin1, where each byte
 * becomes exactly one character (a bijection, unlike UTF-8 or UTF-16, which
 * would replace invalid sequences): the key is a string of ceil(size / 8)
 * characters that a JavaScript Set/Map hashes and compares natively, produced
 * by native code (the search's hottest path).
 */
export class Bitset {
  private readonly bytes: Uint8Array;
  /** A view on `bytes` (no copy), so it always reflects the current contents. */
  private readonly view: Buffer;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`bitset size must be a non-negative integer, got ${size}`);
    this.bytes = new Uint8Array(Math.ceil(size / 8));
    this.view = Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  has(index: number): boolean {
    this.checkIndex(index);
    return ((this.bytes[index >>> 3] ?? 0) & (1 << (index & 7))) !== 0;
  }

  set(index: number): void {
    this.checkIndex(index);
    const byte = index >>> 3;
    this.bytes[byte] = (this.bytes[byte] ?? 0) | (1 << (index & 7));
  }

  clear(index: number): void {
    this.checkIndex(index);
    const byte = index >>> 3;
    this.bytes[byte] = (this.bytes[byte] ?? 0) & ~(1 << (index & 7));
  }

  count(): number {
    let total = 0;
    for (const byte of this.bytes) {
      let bits = byte;
      while (bits !== 0) {
        bits &= bits - 1;
        total++;
      }
    }
    return total;
  }

  /**
   * Exact encoding of the contents: two bitsets of the same size have equal
   * keys iff they hold the same indexes. Its length depends only on `size`,
   * so a key can be concatenated with another string without a separator.
   */
  key(): string {
    return this.view.toString('latin1');
  }

  private checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new RangeError(`bit ${index} out of range for a bitset of size ${this.size}`);
    }
  }
}
