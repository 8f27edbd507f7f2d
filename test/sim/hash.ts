/**
 * Small deterministic hashes: digests of entries and state-machine histories,
 * and the running hash of a simulation's event trace (the determinism test
 * compares it between two runs of one seed).
 */

/** cyrb53: a fast 53-bit string hash, identical on every platform. */
export function hashString(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** Streaming 64-bit FNV-1a-style hash of a sequence of strings (two 32-bit lanes). */
export class TraceHash {
  private a = 0x811c9dc5;
  private b = 0x01000193;
  private count = 0;

  update(line: string): void {
    let a = this.a;
    let b = this.b;
    for (let i = 0; i < line.length; i++) {
      const ch = line.charCodeAt(i);
      a = Math.imul(a ^ ch, 0x01000193);
      b = Math.imul(b ^ ch, 0x5bd1e995);
    }
    // A separator, so that ["ab", "c"] and ["a", "bc"] hash differently.
    this.a = Math.imul(a ^ 0x0a, 0x01000193);
    this.b = Math.imul(b ^ 0x0a, 0x5bd1e995);
    this.count++;
  }

  get lines(): number {
    return this.count;
  }

  digest(): string {
    return (this.a >>> 0).toString(16).padStart(8, '0') + (this.b >>> 0).toString(16).padStart(8, '0');
  }
}
