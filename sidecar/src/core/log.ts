/**
 * The core's view of its Raft log. The log itself lives in the driver's
 * storage (PostgreSQL); this class keeps what the core must answer
 * synchronously:
 *  - the term of every entry since the snapshot, as runs (`termStarts`), so
 *    that consistency checks, votes and commit rules never wait on storage;
 *  - the tail of the log in memory (`tail`): every entry not yet durable, and
 *    recent durable ones up to a byte budget, for replication and apply;
 *  - entries the driver fetched on request (`fetched`), for followers that
 *    lag behind the in-memory tail.
 *
 * Invariants:
 *  - snapshotIndex <= applied <= committed <= lastIndex.
 *  - `tail` holds exactly the indexes [tailStart, lastIndex], contiguous.
 *  - every entry above `persisted` is in `tail` (nothing not yet durable is
 *    ever evicted), and persisted < pendingFrom.
 *  - `termStarts` has one [firstIndex, term] per term run in
 *    (snapshotIndex, lastIndex], ascending in both index and term.
 */
import type { Entry } from './types.ts';

/** Payload bytes plus a fixed allowance for the index, term and kind. */
export function entrySize(entry: Entry): number {
  return entry.data.length + 24;
}

export class RaftLog {
  snapshotIndex: number;
  snapshotTerm: number;
  lastIndex: number;
  /** Highest index known committed. */
  committed: number;
  /** Highest index whose entry the driver has applied. */
  applied: number;
  /** Highest index handed to the driver to apply (applied once the Ready is advanced). */
  applying: number;
  /** Highest index known durable in storage. */
  persisted: number;
  /** First index not yet handed to the driver to persist. */
  pendingFrom: number;

  private termStarts: Array<[number, number]>;
  private tail: Entry[] = [];
  private tailHead = 0;
  private tailStart: number;
  private tailBytes = 0;
  private fetched = new Map<number, Entry>();
  private fetchedBytes = 0;

  constructor(init: {
    snapshotIndex: number;
    snapshotTerm: number;
    lastIndex: number;
    termStarts: Array<[number, number]>;
    committed: number;
    applied: number;
  }) {
    this.snapshotIndex = init.snapshotIndex;
    this.snapshotTerm = init.snapshotTerm;
    this.lastIndex = init.lastIndex;
    this.termStarts = init.termStarts.filter(([index]) => index > init.snapshotIndex).map(([i, t]) => [i, t]);
    this.committed = Math.min(Math.max(init.committed, init.snapshotIndex, init.applied), init.lastIndex);
    this.applied = Math.max(init.applied, init.snapshotIndex);
    this.applying = this.applied;
    this.persisted = init.lastIndex;
    this.pendingFrom = init.lastIndex + 1;
    this.tailStart = init.lastIndex + 1;
  }

  get firstIndex(): number {
    return this.snapshotIndex + 1;
  }

  get lastTerm(): number {
    return this.termAt(this.lastIndex) ?? 0;
  }

  /** Term of the entry at `index`, or undefined when it is compacted or beyond the log. */
  termAt(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    if (index < this.snapshotIndex || index > this.lastIndex) return undefined;
    // Binary search for the last run starting at or before `index`.
    let lo = 0;
    let hi = this.termStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.termStarts[mid] as [number, number])[0] <= index) lo = mid;
      else hi = mid - 1;
    }
    return this.termStarts[lo]?.[1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.termAt(index) === term;
  }

  /** Raft's "at least as up-to-date" comparison of a candidate's last entry with ours (§5.4.1). */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm;
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex);
  }

  /**
   * The largest index <= `index` whose term is <= `term` (the snapshot index at
   * the least). Used on both sides of a rejected Append to skip whole terms.
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex);
    while (i > this.snapshotIndex) {
      const runIdx = this.runContaining(i);
      const run = this.termStarts[runIdx] as [number, number];
      if (run[1] <= term) return i;
      i = run[0] - 1;
    }
    return this.snapshotIndex;
  }

  private runContaining(index: number): number {
    let lo = 0;
    let hi = this.termStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.termStarts[mid] as [number, number])[0] <= index) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Appends entries that start right after the last one (leader path). */
  append(entries: Entry[]): void {
    for (const entry of entries) {
      if (entry.index !== this.lastIndex + 1) {
        throw new Error(`log hole: appending index ${entry.index} after ${this.lastIndex}`);
      }
      const lastRun = this.termStarts[this.termStarts.length - 1];
      if (lastRun === undefined || lastRun[1] !== entry.term) {
        if (lastRun !== undefined && lastRun[1] > entry.term) {
          throw new Error(`term regression: entry ${entry.index} has term ${entry.term} after term ${lastRun[1]}`);
        }
        this.termStarts.push([entry.index, entry.term]);
      }
      if (this.tailStart === this.lastIndex + 1 && this.tail.length - this.tailHead === 0) {
        this.tailStart = entry.index;
      }
      this.tail.push(entry);
      this.tailBytes += entrySize(entry);
      this.lastIndex = entry.index;
    }
  }

  /**
   * Follower path: entries after (prevIndex, prevTerm). Returns the index of
   * the last new entry, or null when the log does not contain prevIndex at
   * prevTerm. Entries already present are skipped; the first conflicting one
   * truncates the log there.
   */
  maybeAppend(prevIndex: number, prevTerm: number, entries: Entry[]): number | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNew = prevIndex + entries.length;
    let firstNew = entries.length;
    for (let k = 0; k < entries.length; k++) {
      const entry = entries[k] as Entry;
      if (entry.index <= this.snapshotIndex) continue; // covered by the snapshot, hence committed and equal
      if (entry.index > this.lastIndex || this.termAt(entry.index) !== entry.term) {
        firstNew = k;
        break;
      }
    }
    if (firstNew < entries.length) {
      const first = entries[firstNew] as Entry;
      if (first.index <= this.committed) {
        // Log Matching says this cannot happen; if it does, the cluster's safety is already broken.
        throw new Error(`refusing to overwrite committed entry ${first.index} (committed ${this.committed})`);
      }
      this.truncateFrom(first.index);
      this.append(entries.slice(firstNew));
    }
    return lastNew;
  }

  /** Drops every entry at or after `index`. */
  private truncateFrom(index: number): void {
    if (index > this.lastIndex) return;
    while (this.termStarts.length > 0 && (this.termStarts[this.termStarts.length - 1] as [number, number])[0] >= index) {
      this.termStarts.pop();
    }
    if (index <= this.tailStart) {
      this.tail = [];
      this.tailHead = 0;
      this.tailBytes = 0;
      this.tailStart = index;
    } else {
      const keep = this.tailHead + (index - this.tailStart);
      for (let i = keep; i < this.tail.length; i++) this.tailBytes -= entrySize(this.tail[i] as Entry);
      this.tail.length = keep;
    }
    for (const [i, entry] of this.fetched) {
      if (i >= index) {
        this.fetched.delete(i);
        this.fetchedBytes -= entrySize(entry);
      }
    }
    this.lastIndex = index - 1;
    this.persisted = Math.min(this.persisted, index - 1);
    this.pendingFrom = Math.min(this.pendingFrom, index);
  }

  /** The entry at `index` if it is in memory. */
  entryAt(index: number): Entry | undefined {
    if (index >= this.tailStart && index <= this.lastIndex) return this.tail[this.tailHead + index - this.tailStart];
    return this.fetched.get(index);
  }

  /**
   * Entries [lo, hi] from memory, stopping at `maxBytes` (after at least one)
   * or at the first one not in memory. Returns null when even `lo` is not in
   * memory: the caller must ask the driver to fetch.
   */
  slice(lo: number, hi: number, maxBytes: number): Entry[] | null {
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i <= hi; i++) {
      const entry = this.entryAt(i);
      if (entry === undefined) break;
      bytes += entrySize(entry);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(entry);
    }
    return out.length === 0 && lo <= hi ? null : out;
  }

  /** Entries not yet handed to the driver to persist. Marks them handed out. */
  takeUnpersisted(): Entry[] {
    if (this.pendingFrom > this.lastIndex) return [];
    const out = this.slice(this.pendingFrom, this.lastIndex, Infinity) ?? [];
    this.pendingFrom = this.lastIndex + 1;
    return out;
  }

  /** The driver made entries up to `index` (with `term`) durable. */
  persistedTo(index: number, term: number): void {
    // The log may have been truncated and rewritten since: only trust the ack
    // if the entry at `index` is still the one that was persisted.
    if (index > this.persisted && this.termAt(index) === term) this.persisted = index;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    if (index > this.lastIndex) throw new Error(`commit ${index} beyond last index ${this.lastIndex}`);
    this.committed = index;
    return true;
  }

  hasEntriesToApply(): boolean {
    return this.committed > this.applying;
  }

  /** The next run of committed entries to apply, or null when they must be fetched first. */
  takeCommittedToApply(maxBytes: number): Entry[] | null {
    if (this.committed <= this.applying) return [];
    const entries = this.slice(this.applying + 1, this.committed, maxBytes);
    if (entries === null) return null;
    if (entries.length > 0) this.applying = (entries[entries.length - 1] as Entry).index;
    return entries;
  }

  appliedTo(index: number): void {
    if (index > this.applied) this.applied = index;
    if (index > this.applying) this.applying = index;
  }

  /**
   * Takes entries the driver fetched. Only those that still match the log are
   * kept (a fetch may race with a truncation). Returns how many were kept.
   */
  addFetched(entries: Entry[]): number {
    let kept = 0;
    for (const entry of entries) {
      if (entry.index <= this.snapshotIndex || entry.index >= this.tailStart) continue;
      if (this.termAt(entry.index) !== entry.term) continue;
      if (!this.fetched.has(entry.index)) {
        this.fetched.set(entry.index, entry);
        this.fetchedBytes += entrySize(entry);
      }
      kept++;
    }
    return kept;
  }

  /**
   * Keeps memory bounded: drops durable, applied entries from the front of the
   * tail beyond `tailBudget` bytes, and the oldest fetched entries beyond
   * `fetchedBudget` bytes.
   */
  evict(tailBudget: number, fetchedBudget: number): void {
    const evictable = Math.min(this.persisted, this.applying);
    while (this.tailBytes > tailBudget && this.tailStart <= evictable && this.tailHead < this.tail.length) {
      this.tailBytes -= entrySize(this.tail[this.tailHead] as Entry);
      this.tailHead++;
      this.tailStart++;
    }
    if (this.tailHead > 1024 && this.tailHead * 2 > this.tail.length) {
      this.tail = this.tail.slice(this.tailHead);
      this.tailHead = 0;
    }
    for (const [index, entry] of this.fetched) {
      if (this.fetchedBytes <= fetchedBudget) break;
      this.fetched.delete(index);
      this.fetchedBytes -= entrySize(entry);
    }
  }

  /** Forgets entries at or below `index`, which a stored snapshot now covers. */
  compact(index: number): void {
    if (index <= this.snapshotIndex) return;
    if (index > this.applied) throw new Error(`cannot compact to ${index}: only ${this.applied} applied`);
    const term = this.termAt(index);
    if (term === undefined) throw new Error(`cannot compact to ${index}: not in the log`);
    this.snapshotIndex = index;
    this.snapshotTerm = term;
    // Drop runs that end at or before index; the run containing index now starts after it.
    const kept: Array<[number, number]> = [];
    for (let r = 0; r < this.termStarts.length; r++) {
      const [start, runTerm] = this.termStarts[r] as [number, number];
      const nextStart = this.termStarts[r + 1]?.[0] ?? this.lastIndex + 1;
      if (nextStart <= index + 1) continue;
      kept.push([Math.max(start, index + 1), runTerm]);
    }
    this.termStarts = kept;
    while (this.tailStart <= index && this.tailHead < this.tail.length) {
      this.tailBytes -= entrySize(this.tail[this.tailHead] as Entry);
      this.tailHead++;
      this.tailStart++;
    }
    if (this.tailStart <= index) this.tailStart = index + 1;
    for (const [i, entry] of this.fetched) {
      if (i <= index) {
        this.fetched.delete(i);
        this.fetchedBytes -= entrySize(entry);
      }
    }
  }

  /** Replaces the whole log with a snapshot received from the leader. */
  restore(index: number, term: number): void {
    this.snapshotIndex = index;
    this.snapshotTerm = term;
    this.lastIndex = index;
    this.termStarts = [];
    this.tail = [];
    this.tailHead = 0;
    this.tailBytes = 0;
    this.tailStart = index + 1;
    this.fetched.clear();
    this.fetchedBytes = 0;
    this.committed = index;
    this.applied = index;
    this.applying = index;
    // The snapshot travels in the same Ready as anything that depends on it.
    this.persisted = index;
    this.pendingFrom = index + 1;
  }

  /** Terms runs, for tests and status. */
  termRuns(): Array<[number, number]> {
    return this.termStarts.map(([i, t]) => [i, t]);
  }
}
