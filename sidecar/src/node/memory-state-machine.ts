/**
 * An in-memory state machine for the embeddable library and tests. By
 * default it is a key-value map driven by KvCommands; give `apply` to run
 * your own deterministic command handler instead.
 *
 * Exactly once: the ids of applied commands are kept with the state (and in
 * its snapshots), so a command id that reaches the log twice takes effect
 * once; the second copy answers with the first one's result.
 */
import { EntryKind, type Entry, type SnapshotMeta } from '../core/types.ts';
import type { ApplyResult, StateMachine } from '../storage/types.ts';
import { decodeCommand, isKvCommand } from './command.ts';

export type ApplyFunction = (command: unknown, entry: Entry) => unknown;

interface SnapshotImage {
  applied: number;
  appliedTerm: number;
  kv: Array<[string, unknown]>;
  results: Array<[string, ApplyResult]>;
  user: unknown;
}

export interface MemoryStateMachineOptions {
  /** Your command handler; throwing marks that entry failed (identically on every node). */
  apply?: ApplyFunction;
  /** With a custom `apply`: capture and restore your state for snapshots. */
  snapshot?: () => unknown;
  restore?: (image: unknown) => void;
}

export class MemoryStateMachine implements StateMachine {
  readonly kv = new Map<string, unknown>();
  private applied = 0;
  private appliedTerm = 0;
  private readonly results = new Map<string, ApplyResult>();
  private readonly options: MemoryStateMachineOptions;

  constructor(options: MemoryStateMachineOptions = {}) {
    this.options = options;
  }

  async appliedIndex(): Promise<number> {
    return this.applied;
  }

  async apply(entries: Entry[]): Promise<ApplyResult[]> {
    const out: ApplyResult[] = [];
    for (const entry of entries) {
      if (entry.index <= this.applied) continue;
      out.push(this.applyOne(entry));
      this.applied = entry.index;
      this.appliedTerm = entry.term;
    }
    return out;
  }

  private applyOne(entry: Entry): ApplyResult {
    if (entry.kind !== EntryKind.Normal) return { index: entry.index, status: 'ok', result: null };
    let envelope;
    try {
      envelope = decodeCommand(entry.data);
    } catch (err) {
      return { index: entry.index, status: 'failed', error: (err as Error).message };
    }
    const previous = this.results.get(envelope.id);
    if (previous !== undefined) return { ...previous, index: entry.index };
    let result: ApplyResult;
    try {
      const value = this.options.apply ? this.options.apply(envelope.command, entry) : this.applyKv(envelope.command);
      result = { index: entry.index, status: 'ok', result: value ?? null };
    } catch (err) {
      result = { index: entry.index, status: 'failed', error: (err as Error).message };
    }
    this.results.set(envelope.id, result);
    return result;
  }

  private applyKv(command: unknown): unknown {
    if (!isKvCommand(command)) throw new Error('unknown command: expected {op: "set"|"delete"|"cas", key, ...}');
    switch (command.op) {
      case 'set':
        this.kv.set(command.key, command.value);
        return { ok: true };
      case 'delete':
        return { ok: true, existed: this.kv.delete(command.key) };
      case 'cas': {
        const current = this.kv.has(command.key) ? this.kv.get(command.key) : null;
        if (JSON.stringify(current) !== JSON.stringify(command.expected ?? null)) return { ok: false, current };
        this.kv.set(command.key, command.value);
        return { ok: true };
      }
    }
  }

  /** The outcome recorded for a command id, if it was applied. */
  resultOf(id: string): ApplyResult | undefined {
    return this.results.get(id);
  }

  async snapshot(): Promise<{ index: number; term: number; data: Uint8Array }> {
    const image: SnapshotImage = {
      applied: this.applied,
      appliedTerm: this.appliedTerm,
      kv: [...this.kv],
      results: [...this.results],
      user: this.options.snapshot ? this.options.snapshot() : null,
    };
    return { index: this.applied, term: this.appliedTerm, data: new TextEncoder().encode(JSON.stringify(image)) };
  }

  async restore(meta: SnapshotMeta, data: Uint8Array): Promise<void> {
    const image = JSON.parse(new TextDecoder().decode(data)) as SnapshotImage;
    this.kv.clear();
    for (const [k, v] of image.kv) this.kv.set(k, v);
    this.results.clear();
    for (const [k, v] of image.results) this.results.set(k, v);
    if (this.options.restore) this.options.restore(image.user);
    this.applied = meta.index;
    this.appliedTerm = meta.term;
  }
}
