/**
 * The simulator's only source of randomness. Everything the simulator decides
 * (latencies, losses, which fault next, election-timeout randomness inside
 * each core) comes from generators seeded from the scenario seed, so one seed
 * always replays the same run. Math.random and Date are never used.
 */
import { seededRandom, type Random } from '../../sidecar/src/core/index.ts';

/** Mixes several integers into one 32-bit seed (splitmix-style finaliser). */
export function deriveSeed(...parts: number[]): number {
  let h = 0x2545f491;
  for (const part of parts) {
    h = Math.imul(h ^ (part >>> 0), 0x9e3779b1) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h >>> 0;
}

export class Rng {
  private readonly source: Random;

  constructor(seed: number) {
    this.source = seededRandom(seed >>> 0);
  }

  /** Float in [0, 1). */
  float(): number {
    return this.source();
  }

  /** Integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.source() * (hi - lo));
  }

  chance(p: number): boolean {
    return p > 0 && this.source() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('Rng.pick from an empty list');
    return items[Math.floor(this.source() * items.length)] as T;
  }

  /** A shuffled copy (Fisher-Yates). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.source() * (i + 1));
      [out[i], out[j]] = [out[j] as T, out[i] as T];
    }
    return out;
  }

  /** A new seed drawn from this generator (for an independent sub-generator). */
  seed(): number {
    return Math.floor(this.source() * 4294967296) >>> 0;
  }
}
