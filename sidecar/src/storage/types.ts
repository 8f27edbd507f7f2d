/**
 * The storage roles a rale node is built from. The Raft core never calls
 * these: the driver does, in the order the core's Ready prescribes. Every role
 * has an in-memory implementation (tests, the embeddable library) and a
 * PostgreSQL one, and both pass the same compliance suite (test/storage/).
 */
import type { Entry, HardState, Snapshot, SnapshotMeta, StorageState } from '../core/types.ts';

/** One Ready's durable part. */
export interface PersistBatch {
  /** Installed first: replaces the whole log (every entry is dropped) and becomes the latest snapshot. */
  snapshot: Snapshot | null;
  /**
   * Appended after the snapshot. Contiguous and ascending. An entry whose
   * index already exists replaces it AND every entry after it (truncate on
   * conflict). Invariant: there is never a hole in the log.
   */
  entries: Entry[];
  hardState: HardState | null;
}

/**
 * The Raft log, hard state and snapshots of one node.
 *
 * Correctness rules:
 *  - `persist` is atomic and durable when its promise resolves: after a crash
 *    either all of the batch is visible or none of it.
 *  - The log never has a hole: indexes run from snapshot.index + 1 to lastIndex.
 *  - `compact(index)` only drops entries at or below a snapshot that is already stored.
 */
export interface LogStorage {
  /** Everything a core needs to restart (see StorageState). `applied` is filled in by the state machine. */
  load(): Promise<Omit<StorageState, 'applied'>>;
  persist(batch: PersistBatch): Promise<void>;
  /**
   * Entries in [lo, hi] (inclusive), ascending, stopping early once `maxBytes`
   * of payload is reached (at least one entry is returned when lo <= hi and
   * lo is in the log). Entries below the first retained index are not returned.
   */
  entries(lo: number, hi: number, maxBytes: number): Promise<Entry[]>;
  /** Stores a snapshot taken locally, then drops log entries at or below `snapshot.meta.index`. */
  saveSnapshot(snapshot: Snapshot): Promise<void>;
  /** The latest stored snapshot (from saveSnapshot or an installed one), or null. */
  latestSnapshot(): Promise<Snapshot | null>;
  /** Optional: the cluster id stored with the log (node/cluster-id.ts), or null when none is. */
  clusterId?(): Promise<string | null>;
  /** Optional: stores the cluster id, durably, replacing any. */
  saveClusterId?(id: string): Promise<void>;
  close(): Promise<void>;
}

/** The outcome of applying one entry. */
export interface ApplyResult {
  index: number;
  /** 'ok' with an optional result value, or 'failed' with a message: both are final and identical on every node. */
  status: 'ok' | 'failed';
  result?: unknown;
  error?: string;
}

/**
 * The replicated state machine. Contract: `apply` is deterministic (the same
 * entries give the same state and results on every node), and records the
 * applied index atomically with the effects, so that an entry is applied
 * exactly once per node even across crashes.
 */
export interface StateMachine {
  /** Index of the last applied entry, as durably recorded with the state. */
  appliedIndex(): Promise<number>;
  /** Applies committed entries in order. Entries at or below appliedIndex() are skipped. */
  apply(entries: Entry[]): Promise<ApplyResult[]>;
  /** The whole state at the applied index, as opaque bytes. */
  snapshot(): Promise<{ index: number; term: number; data: Uint8Array }>;
  /** Replaces the whole state with a snapshot's and sets the applied index to meta.index. */
  restore(meta: SnapshotMeta, data: Uint8Array): Promise<void>;
}
