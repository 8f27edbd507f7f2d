/**
 * A simulated node's durable storage: the Raft log, the hard state and the
 * latest snapshot. It survives crashes; everything else a node holds does not.
 *
 * `persist` is atomic (all of a Ready's durable part, or none of it, survives
 * a crash): the simulator calls it in one event, and a crash is an event of
 * its own, so a crash can only fall before or after a whole batch.
 *
 * Invariants (a violation throws 'ready-contract': the core asked for
 * something its contract forbids):
 *  - the log is contiguous: it holds exactly the indexes
 *    (snapshot.index, lastIndex], and terms never decrease along it;
 *  - entries are appended at most one past the end; an entry at an existing
 *    index replaces it and everything after it (truncate on conflict);
 *  - the durable term never decreases.
 */
import {
  EntryKind,
  type Entry,
  type HardState,
  type Snapshot,
  type SnapshotMeta,
  type StorageState,
} from '../../sidecar/src/core/index.ts';
import { violation } from './violation.ts';

export interface PersistBatch {
  snapshot: Snapshot | null;
  entries: Entry[];
  hardState: HardState | null;
}

export class DurableStorage {
  hardState: HardState = { term: 0, vote: null, commit: 0 };
  /** The latest snapshot (taken locally or installed from the leader); null until the first. */
  snapshot: Snapshot | null = null;
  /** log[k] holds the entry at index snapshotIndex + 1 + k. */
  private log: Entry[] = [];

  /** Index 0 / term 0 with an empty configuration until there is a snapshot (the founders' voters are entry 1). */
  get snapshotMeta(): SnapshotMeta {
    return this.snapshot?.meta ?? { index: 0, term: 0, config: { voters: [], learners: [] } };
  }

  get empty(): boolean {
    return this.snapshot === null && this.log.length === 0 && this.hardState.term === 0 && this.hardState.vote === null;
  }

  get snapshotIndex(): number {
    return this.snapshot?.meta.index ?? 0;
  }

  get lastIndex(): number {
    return this.snapshotIndex + this.log.length;
  }

  entryAt(index: number): Entry | undefined {
    return this.log[index - this.snapshotIndex - 1];
  }

  termAt(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshot?.meta.term ?? 0;
    return this.entryAt(index)?.term;
  }

  /** The entries in the log, ascending (for whole-log comparisons). */
  entries(): readonly Entry[] {
    return this.log;
  }

  persist(batch: PersistBatch): void {
    if (batch.snapshot !== null) {
      // Installing a snapshot replaces the whole log.
      this.snapshot = batch.snapshot;
      this.log = [];
    }
    for (const entry of batch.entries) {
      if (entry.index <= this.snapshotIndex) {
        violation('ready-contract', `asked to persist entry ${entry.index} at or below the snapshot (${this.snapshotIndex})`);
      }
      if (entry.index > this.lastIndex + 1) {
        violation('ready-contract', `asked to persist entry ${entry.index} after ${this.lastIndex}: a hole in the log`);
      }
      // Truncate on conflict: the entry replaces whatever is at its index and everything after.
      this.log.length = entry.index - this.snapshotIndex - 1;
      const prevTerm = this.termAt(entry.index - 1) ?? 0;
      if (entry.term < prevTerm) violation('ready-contract', `entry ${entry.index} has term ${entry.term} after term ${prevTerm}`);
      this.log.push(entry);
    }
    if (batch.hardState !== null) {
      if (batch.hardState.term < this.hardState.term) {
        violation('ready-contract', `hard state term went back from ${this.hardState.term} to ${batch.hardState.term}`);
      }
      this.hardState = { ...batch.hardState };
    }
  }

  /**
   * Entries [lo, hi] in the durable log, stopping at maxBytes of payload
   * (after at least one). Entries below the first retained index are not
   * returned (the answer starts later, or is empty).
   */
  read(lo: number, hi: number, maxBytes: number): Entry[] {
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = Math.max(lo, this.snapshotIndex + 1); i <= hi; i++) {
      const entry = this.entryAt(i);
      if (entry === undefined) break;
      bytes += entry.data.length + 24;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(entry);
    }
    return out;
  }

  /** Stores a snapshot taken locally, then drops the entries it covers. */
  saveSnapshot(snapshot: Snapshot): void {
    const index = snapshot.meta.index;
    if (index <= this.snapshotIndex) return;
    if (this.termAt(index) !== snapshot.meta.term) {
      violation('ready-contract', `local snapshot at ${index} term ${snapshot.meta.term} does not match the log (term ${String(this.termAt(index))})`);
    }
    const keep = this.log.slice(index - this.snapshotIndex);
    this.snapshot = snapshot;
    this.log = keep;
  }

  /** What a restarting core needs (the caller adds `applied` from the state machine). */
  load(): Omit<StorageState, 'applied'> {
    const termStarts: Array<[number, number]> = [];
    const configEntries: Entry[] = [];
    for (const entry of this.log) {
      const lastRun = termStarts[termStarts.length - 1];
      if (lastRun === undefined || lastRun[1] !== entry.term) termStarts.push([entry.index, entry.term]);
      if (entry.kind === EntryKind.Config) configEntries.push(entry);
    }
    const meta = this.snapshotMeta;
    return {
      hardState: { ...this.hardState },
      snapshot: { index: meta.index, term: meta.term, config: { voters: [...meta.config.voters], learners: [...meta.config.learners] } },
      lastIndex: this.lastIndex,
      termStarts,
      configEntries,
    };
  }
}
