/**
 * Reconnect delays: exponential, capped, with "equal jitter" (a delay is
 * drawn uniformly from the upper half of the current step), so that nodes
 * that lost the same peer at the same moment do not retry in lockstep, while
 * every delay stays at least half the nominal one.
 */
export class Backoff {
  private failures = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call counts one more consecutive failure. */
  next(): number {
    const step = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.failures, 30));
    this.failures++;
    return step / 2 + this.random() * (step / 2);
  }

  /** A success: the next failure starts from the initial delay again. */
  reset(): void {
    this.failures = 0;
  }
}
