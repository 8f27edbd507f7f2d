/**
 * The leader's view of one follower's replication.
 *
 *  - probe: the leader does not know where the follower's log matches; it
 *    sends one Append at a time and waits for the answer (or the next
 *    heartbeat response) before sending another.
 *  - replicate: the follower is known to match up to `match`; the leader
 *    streams Appends optimistically (advancing `next` as it sends), at most
 *    `maxInflight` unacknowledged at once.
 *  - snapshot: the follower needs entries the leader has compacted; a snapshot
 *    is on its way and nothing else is sent until it is acknowledged.
 *
 * Invariant: match < next.
 */
export enum ProgressState {
  Probe = 'probe',
  Replicate = 'replicate',
  Snapshot = 'snapshot',
}

export class Progress {
  match = 0;
  next: number;
  state = ProgressState.Probe;
  /** In probe state: an Append is out and unanswered. */
  probeSent = false;
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Last index of each Append in flight, ascending (replicate state). */
  inflight: number[] = [];
  /** Tick at which the leader last heard from this peer (check-quorum). */
  lastActiveTick: number;
  /** Waiting for the driver to fetch entries from `next` on: nothing to send until they arrive. */
  awaitingFetch = false;

  constructor(next: number, nowTick: number) {
    this.next = next;
    this.lastActiveTick = nowTick;
  }

  becomeProbe(): void {
    // After a snapshot, resume right after it; otherwise right after the match.
    this.next = this.state === ProgressState.Snapshot ? Math.max(this.match, this.pendingSnapshot) + 1 : this.match + 1;
    this.state = ProgressState.Probe;
    this.resetSending();
  }

  becomeReplicate(): void {
    this.state = ProgressState.Replicate;
    this.next = this.match + 1;
    this.resetSending();
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.state = ProgressState.Snapshot;
    this.resetSending();
    this.pendingSnapshot = snapshotIndex;
  }

  private resetSending(): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflight = [];
    this.awaitingFetch = false;
  }

  /** Records an acknowledgement up to `index`. Returns false for a stale one. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.match) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * Handles a rejection of the Append that followed `rejectedIndex`.
   * Returns false when the rejection is stale (answers an older Append).
   */
  maybeDecrease(rejectedIndex: number, newNext: number): boolean {
    if (this.state === ProgressState.Replicate) {
      // Everything up to match is known to be right: a rejection at or below it is stale.
      if (rejectedIndex <= this.match) return false;
      this.next = Math.max(this.match + 1, Math.min(rejectedIndex, newNext));
      return true;
    }
    // Probe: only the answer to the Append we sent last counts.
    if (this.next - 1 !== rejectedIndex) return false;
    this.next = Math.max(this.match + 1, Math.min(rejectedIndex, newNext), 1);
    this.probeSent = false;
    return true;
  }

  /** Frees the in-flight slots acknowledged by a response up to `index`. */
  freeInflightTo(index: number): void {
    let drop = 0;
    while (drop < this.inflight.length && (this.inflight[drop] ?? Infinity) <= index) drop++;
    if (drop > 0) this.inflight.splice(0, drop);
  }

  isPaused(maxInflight: number): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflight.length >= maxInflight;
      case ProgressState.Snapshot:
        return true;
    }
  }

  /** Bookkeeping after sending an Append whose last entry is `lastIndex`. */
  sentEntries(lastIndex: number, entryCount: number): void {
    if (this.state === ProgressState.Replicate) {
      if (entryCount > 0) {
        this.next = lastIndex + 1;
        this.inflight.push(lastIndex);
      }
    } else if (this.state === ProgressState.Probe) {
      this.probeSent = true;
    }
  }
}
