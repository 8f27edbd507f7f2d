/**
 * LogStorage in memory: for tests, the simulator and the embeddable library.
 *
 * Durability model: the "disk" is the state object this class holds. A
 * persist is validated first and then installed in one synchronous step, so
 * at any moment the state holds all of a batch or none of it, like a
 * committed PostgreSQL transaction. `clone()` copies that state into a new
 * storage: what a node would find after a crash and restart. Everything is
 * copied on the way in and out, so callers can never alter stored state by
 * mutating what they passed or got.
 *
 * The rules shared with PgLogStorage (validation of a batch, the byte limit
 * of `entries`) are exported from here so that both storages enforce exactly
 * the same ones; test/storage/compliance.ts checks both. Rule violations are
 * RaleError STORAGE errors whose message names the offending index.
 */
import { EntryKind, type ClusterConfig, type Entry, type HardState, type Snapshot, type StorageState } from '../core/types.ts';
import { RaleError } from '../errors.ts';
import type { LogStorage, PersistBatch } from './types.ts';

export const EMPTY_CONFIG: Readonly<ClusterConfig> = Object.freeze({ voters: [], learners: [] });

export const INITIAL_HARD_STATE: Readonly<HardState> = Object.freeze({ term: 0, vote: null, commit: 0 });

/**
 * Throws unless `entries` is a well-formed run: integer indexes >= 1,
 * ascending by exactly one, terms >= 1, a known kind, bytes as data. Checked
 * before anything is written, so a bad batch changes nothing.
 */
export function checkEntries(entries: readonly Entry[]): void {
  entries.forEach((e, i) => {
    const where = `entry #${i} of the batch (index ${e.index})`;
    if (!Number.isSafeInteger(e.index) || e.index < 1) throw new RaleError('STORAGE', `Invalid log index in ${where}: indexes are integers >= 1.`);
    if (!Number.isSafeInteger(e.term) || e.term < 1) throw new RaleError('STORAGE', `Invalid term ${e.term} in ${where}: entries have terms >= 1.`);
    if (!Number.isInteger(e.kind) || !(e.kind in EntryKind)) throw new RaleError('STORAGE', `Invalid kind ${e.kind} in ${where}: not an EntryKind.`);
    if (!(e.data instanceof Uint8Array)) throw new RaleError('STORAGE', `Invalid data in ${where}: entry data must be a Uint8Array.`);
    const previous = entries[i - 1];
    if (previous && e.index !== previous.index + 1) {
      throw new RaleError('STORAGE', `The entries of a batch must be contiguous: index ${e.index} follows ${previous.index}. Nothing was written.`);
    }
  });
}

/**
 * The entries of a batch that the log takes, after the snapshot at
 * `snapshotIndex`: those at or below it are dropped (they are covered by the
 * snapshot, hence committed, hence identical by Log Matching). Throws if the
 * rest would leave a hole after `lastIndex`.
 */
export function entriesToWrite(entries: readonly Entry[], snapshotIndex: number, lastIndex: number): Entry[] {
  const fresh = entries.filter((e) => e.index > snapshotIndex);
  const first = fresh[0];
  if (first && first.index > lastIndex + 1) {
    throw new RaleError(
      'STORAGE',
      `Persisting entries from index ${first.index} would leave a hole: the log ends at index ${lastIndex}. ` +
        `Entries must start at or before lastIndex + 1 (a driver bug). Nothing was written.`,
    );
  }
  return fresh;
}

/**
 * The longest prefix of `entries` whose payload fits in `maxBytes`, but
 * never fewer than one entry (an entry larger than the limit must still be
 * sent, alone).
 */
export function limitBytes<T extends { data: Uint8Array }>(entries: readonly T[], maxBytes: number): T[] {
  const out: T[] = [];
  let bytes = 0;
  for (const e of entries) {
    if (out.length > 0 && bytes + e.data.length > maxBytes) break;
    out.push(e);
    bytes += e.data.length;
  }
  return out;
}

/** `[[firstIndex, term], ...]`: the first index of every run of equal terms, ascending. */
export function termStartsOf(entries: readonly Pick<Entry, 'index' | 'term'>[]): Array<[number, number]> {
  const starts: Array<[number, number]> = [];
  for (const e of entries) {
    if (starts.at(-1)?.[1] !== e.term) starts.push([e.index, e.term]);
  }
  return starts;
}

export function copyEntry(e: Entry): Entry {
  const copy: Entry = { index: e.index, term: e.term, kind: e.kind, data: new Uint8Array(e.data) };
  if (e.leader !== undefined) copy.leader = e.leader;
  return copy;
}

export function copyConfig(c: ClusterConfig): ClusterConfig {
  return { voters: [...c.voters], learners: [...c.learners] };
}

function copySnapshot(s: Snapshot): Snapshot {
  return { meta: { index: s.meta.index, term: s.meta.term, config: copyConfig(s.meta.config) }, data: new Uint8Array(s.data) };
}

/** What survives a crash. Invariant: `log` holds exactly the indexes (snapshot index) + 1 .. lastIndex. */
interface DurableState {
  hardState: HardState | null;
  snapshot: Snapshot | null;
  log: Entry[];
  /** See node/cluster-id.ts. */
  clusterId?: string | null;
}

export interface MemoryLogStorageOptions {
  /** Configuration reported while no snapshot is stored (see StorageState.snapshot). */
  bootstrap?: ClusterConfig;
}

export class MemoryLogStorage implements LogStorage {
  private state: DurableState = { hardState: null, snapshot: null, log: [] };
  private closed = false;
  private readonly bootstrap: ClusterConfig;

  constructor(options: MemoryLogStorageOptions = {}) {
    this.bootstrap = copyConfig(options.bootstrap ?? EMPTY_CONFIG);
  }

  /**
   * A new, open storage holding a copy of this one's durable state: a
   * restart after a crash. Works on a closed storage too (the disk survives).
   */
  clone(): MemoryLogStorage {
    const copy = new MemoryLogStorage({ bootstrap: this.bootstrap });
    copy.state = {
      hardState: this.state.hardState && { ...this.state.hardState },
      snapshot: this.state.snapshot && copySnapshot(this.state.snapshot),
      log: this.state.log.map(copyEntry),
      clusterId: this.state.clusterId,
    };
    return copy;
  }

  private get snapshotIndex(): number {
    return this.state.snapshot?.meta.index ?? 0;
  }

  private get lastIndex(): number {
    return this.snapshotIndex + this.state.log.length;
  }

  private checkOpen(): void {
    if (this.closed) throw new RaleError('STORAGE', 'This MemoryLogStorage is closed; use clone() to reopen its data.');
  }

  async load(): Promise<Omit<StorageState, 'applied'>> {
    this.checkOpen();
    const { hardState, snapshot, log } = this.state;
    return {
      hardState: { ...(hardState ?? INITIAL_HARD_STATE) },
      snapshot: snapshot
        ? { index: snapshot.meta.index, term: snapshot.meta.term, config: copyConfig(snapshot.meta.config) }
        : { index: 0, term: 0, config: copyConfig(this.bootstrap) },
      lastIndex: this.lastIndex,
      termStarts: termStartsOf(log),
      configEntries: log.filter((e) => e.kind === EntryKind.Config).map(copyEntry),
    };
  }

  async persist(batch: PersistBatch): Promise<void> {
    this.checkOpen();
    checkEntries(batch.entries);
    // Build the next state aside, then install it at once: all or nothing.
    let snapshot = this.state.snapshot;
    let log = this.state.log;
    if (batch.snapshot) {
      snapshot = copySnapshot(batch.snapshot);
      log = [];
    }
    const snapshotIndex = snapshot?.meta.index ?? 0;
    const fresh = entriesToWrite(batch.entries, snapshotIndex, snapshotIndex + log.length);
    const first = fresh[0];
    if (first) {
      // Keep what precedes the first new entry; it replaces everything from there on.
      log = [...log.slice(0, first.index - snapshotIndex - 1), ...fresh.map(copyEntry)];
    }
    const hardState = batch.hardState ? { ...batch.hardState } : this.state.hardState;
    this.state = { ...this.state, hardState, snapshot, log };
  }

  async entries(lo: number, hi: number, maxBytes: number): Promise<Entry[]> {
    this.checkOpen();
    const first = this.snapshotIndex + 1;
    const from = Math.max(lo, first);
    const to = Math.min(hi, this.lastIndex);
    if (from > to) return [];
    return limitBytes(this.state.log.slice(from - first, to - first + 1), maxBytes).map(copyEntry);
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    this.checkOpen();
    // An older snapshot than the stored one is ignored: installing it would
    // leave a hole between it and the log (a race between a local snapshot
    // and an installed one can produce it).
    if (snapshot.meta.index < this.snapshotIndex) return;
    const log = this.state.log.filter((e) => e.index > snapshot.meta.index);
    this.state = { ...this.state, snapshot: copySnapshot(snapshot), log };
  }

  async latestSnapshot(): Promise<Snapshot | null> {
    this.checkOpen();
    return this.state.snapshot && copySnapshot(this.state.snapshot);
  }

  async clusterId(): Promise<string | null> {
    this.checkOpen();
    return this.state.clusterId ?? null;
  }

  async saveClusterId(id: string): Promise<void> {
    this.checkOpen();
    this.state.clusterId = id;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
