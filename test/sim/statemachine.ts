/**
 * The replicated state machine of a simulated node: a key-value map written by
 * client commands. It is DURABLE (like rale's, which lives in PostgreSQL): each
 * entry's effect, the applied index and the dedupe table change together
 * atomically, so a crash never loses an applied entry or re-applies one.
 *
 * Exactly-once for retried proposals: a client retries with the same proposal
 * id, so a retry may land in the log twice. The dedupe table (proposal id ->
 * index where it took effect) is stored with the state and travels in
 * snapshots; a second entry with a known id is applied as a no-op.
 *
 * `effects` counts how many times each id actually changed the state. It is
 * the ground truth for the at-most-once check, independent of the dedupe
 * table that is supposed to guarantee it (the test-only `ignoreDedupe`
 * switch breaks the table, and the check must notice).
 *
 * `history` is a hash chain over every entry applied (index, term, digest):
 * two state machines at the same applied index with the same history have
 * applied exactly the same entries. Snapshots carry it, so that a snapshot
 * install is checked against the entries other nodes applied.
 */
import {
  applyConfigChange,
  decodeConfigChange,
  EntryKind,
  type ClusterConfig,
  type Entry,
} from '../../sidecar/src/core/index.ts';
import { decodeCommand, entryDigest } from './codec.ts';
import { hashString } from './hash.ts';

export type ApplyOutcome =
  | { kind: 'noop' }
  | { kind: 'config'; config: ClusterConfig }
  | { kind: 'write'; id: string }
  | { kind: 'duplicate'; id: string; firstIndex: number };

interface SnapshotData {
  applied: number;
  history: number;
  config: ClusterConfig;
  data: Array<[string, string]>;
  dedupe: Array<[string, number]>;
  effects: Array<[string, number]>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class KvStateMachine {
  applied = 0;
  history = 0;
  /** The configuration as of `applied` (config entries, the bootstrap one first, applied in log order). */
  config: ClusterConfig;
  readonly data = new Map<string, string>();
  readonly dedupe = new Map<string, number>();
  readonly effects = new Map<string, number>();
  /** Test-only: skip the dedupe table, so that retried proposals apply twice. */
  private readonly ignoreDedupe: boolean;

  constructor(ignoreDedupe = false) {
    // Empty until the bootstrap entry (index 1) is applied, or a snapshot restored.
    this.config = { voters: [], learners: [] };
    this.ignoreDedupe = ignoreDedupe;
  }

  apply(entry: Entry): ApplyOutcome {
    if (entry.index !== this.applied + 1) {
      throw new Error(`state machine at ${this.applied} asked to apply entry ${entry.index}`);
    }
    let outcome: ApplyOutcome;
    if (entry.kind === EntryKind.Noop) {
      outcome = { kind: 'noop' };
    } else if (entry.kind === EntryKind.Config) {
      try {
        this.config = applyConfigChange(this.config, decodeConfigChange(entry.data));
      } catch {
        // The core keeps the previous configuration for a change that does not apply; so do we.
      }
      outcome = { kind: 'config', config: this.config };
    } else {
      const command = decodeCommand(entry.data);
      const firstIndex = this.dedupe.get(command.id);
      if (firstIndex !== undefined && !this.ignoreDedupe) {
        outcome = { kind: 'duplicate', id: command.id, firstIndex };
      } else {
        this.data.set(command.key, command.value);
        if (firstIndex === undefined) this.dedupe.set(command.id, entry.index);
        this.effects.set(command.id, (this.effects.get(command.id) ?? 0) + 1);
        outcome = { kind: 'write', id: command.id };
      }
    }
    this.applied = entry.index;
    this.history = chainHistory(this.history, entry);
    return outcome;
  }

  snapshot(): Uint8Array {
    const data: SnapshotData = {
      applied: this.applied,
      history: this.history,
      config: this.config,
      data: [...this.data],
      dedupe: [...this.dedupe],
      effects: [...this.effects],
    };
    return encoder.encode(JSON.stringify(data));
  }

  /** Replaces the whole state with a snapshot's. */
  restore(bytes: Uint8Array): void {
    const snap = JSON.parse(decoder.decode(bytes)) as SnapshotData;
    this.applied = snap.applied;
    this.history = snap.history;
    this.config = snap.config;
    this.data.clear();
    for (const [k, v] of snap.data) this.data.set(k, v);
    this.dedupe.clear();
    for (const [k, v] of snap.dedupe) this.dedupe.set(k, v);
    this.effects.clear();
    for (const [k, v] of snap.effects) this.effects.set(k, v);
  }

  /** A digest of the user-visible state (data and dedupe table), for convergence checks. */
  stateDigest(): number {
    const data = [...this.data].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const dedupe = [...this.dedupe].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return hashString(JSON.stringify([this.applied, data, dedupe]));
  }
}

/** The history hash after applying `entry` on top of `history`. */
export function chainHistory(history: number, entry: Entry): number {
  return hashString(`${history}|${entry.index}:${entry.term}:${entryDigest(entry)}`);
}
