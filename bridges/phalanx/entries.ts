/**
 * How a rale log entry travels as a Phalanx LogEntry, and back.
 *
 * Log matching needs every member to hold the same entry at each (index,
 * term). Index and term are copied unchanged. The payload is chosen so that a
 * Phalanx node applies what it can of rale's command, and so that the rale
 * entry can be rebuilt exactly from what the Phalanx node holds:
 *
 *  - rale Noop            -> Type 0 (command), Data null: exactly the no-op a
 *                            Phalanx leader writes at the start of its term,
 *                            which its state machine skips (empty Data).
 *  - rale Config          -> Type 1 (config change), Data = rale's ConfigChange
 *                            JSON, unchanged. Phalanx neither applies nor reads
 *                            config-change entries it receives, so the bytes
 *                            only ride along.
 *  - rale Normal (command) -> Type 0, Data = the JSON of a Phalanx Command
 *                            (`op`, `key`, `value`) plus one extra key, `rale`:
 *                            the base64 of the rale entry's data. Go's decoder
 *                            ignores unknown keys, so Phalanx applies SET /
 *                            DELETE; commands Phalanx has no operation for (cas,
 *                            handler calls) carry op `RALE`, which Phalanx's
 *                            state machine refuses ("unknown op", logged) and
 *                            skips: it applies nothing for them.
 *
 * Backwards (Phalanx -> rale), our own encodings come back bit for bit. A
 * Phalanx node's own entries map deterministically: its no-op to Noop, its
 * SET/DELETE to a Normal entry whose command id is derived from (term, index)
 * so that every node builds the same bytes. Only rale leaders replicate to
 * Phalanx members (a Phalanx member never leads, see docs/bridges/phalanx.md),
 * so this direction is used by tests and tooling, not by replication.
 *
 * Pure functions, no I/O.
 */
import { EntryKind, type Entry } from '../../sidecar/src/core/types.ts';
import { decodeGoBase64, encodeBase64, quoteGoString } from '../shared/go-json.ts';
import { CommandOp, decodeCommand, encodeCommand, EntryType, PhalanxDecodeError, type Command, type LogEntry } from './codec.ts';

/** The op a Phalanx Command carries for a rale command Phalanx cannot apply. */
export const RALE_OP = 'RALE';

/** A Phalanx entry that has no rale equivalent; `reason` says why. */
export class PhalanxEntryError extends Error {
  constructor(
    readonly index: number,
    reason: string,
  ) {
    super(`Phalanx entry ${index}: ${reason}`);
    this.name = 'PhalanxEntryError';
  }
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** Phalanx values are strings: a rale string stays as it is, any other JSON value travels as its JSON text. */
export function phalanxValue(value: unknown): string {
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? 'null');
}

/** The Phalanx Command that best describes a rale command envelope's data (op RALE when Phalanx has no such operation). */
export function phalanxCommandOf(data: Uint8Array): Command {
  let envelope: unknown;
  try {
    envelope = JSON.parse(fromUtf8.decode(data));
  } catch {
    return { op: RALE_OP, key: '', value: '' };
  }
  const command = (envelope as { command?: unknown } | null)?.command as Record<string, unknown> | null | undefined;
  if (command !== null && typeof command === 'object' && typeof command.key === 'string') {
    if (command.op === 'set' && 'value' in command) return { op: CommandOp.Set, key: command.key, value: phalanxValue(command.value) };
    if (command.op === 'delete') return { op: CommandOp.Delete, key: command.key, value: '' };
  }
  return { op: RALE_OP, key: typeof command?.key === 'string' ? command.key : '', value: '' };
}

/** The Data of a rale command entry: the Go JSON of the Phalanx Command with the `rale` key appended. */
export function commandEntryData(data: Uint8Array): Uint8Array {
  const command = encodeCommand(phalanxCommandOf(data));
  return utf8.encode(`${command.slice(0, -1)},"rale":${quoteGoString(encodeBase64(data))}}`);
}

export function toPhalanxEntry(entry: Entry): LogEntry {
  switch (entry.kind) {
    case EntryKind.Noop:
      return { Index: entry.index, Term: entry.term, Data: null, Type: EntryType.Command };
    case EntryKind.Config:
      return { Index: entry.index, Term: entry.term, Data: entry.data.slice(), Type: EntryType.ConfigChange };
    case EntryKind.Normal:
      return { Index: entry.index, Term: entry.term, Data: commandEntryData(entry.data), Type: EntryType.Command };
    default:
      throw new Error(`rale entry ${entry.index} has unknown kind ${String(entry.kind)}`);
  }
}

/** The `rale` key of a command entry's JSON, when present: a string of base64. */
function raleDataOf(index: number, data: Uint8Array): Uint8Array | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fromUtf8.decode(data));
  } catch {
    return null; // decodeCommand below reports the JSON error as Phalanx would
  }
  if (parsed === null || typeof parsed !== 'object' || !('rale' in parsed)) return null;
  const carried = (parsed as { rale: unknown }).rale;
  if (typeof carried !== 'string') throw new PhalanxEntryError(index, 'its "rale" key is not a base64 string');
  const bytes = decodeGoBase64(carried);
  if (bytes === null) throw new PhalanxEntryError(index, 'its "rale" key is not valid base64');
  return bytes;
}

function isConfigChangeJson(data: Uint8Array): boolean {
  try {
    const parsed = JSON.parse(fromUtf8.decode(data)) as { type?: unknown } | null;
    return parsed !== null && typeof parsed === 'object' && typeof parsed.type === 'string';
  } catch {
    return false;
  }
}

export function fromPhalanxEntry(entry: LogEntry): Entry {
  const { Index: index, Term: term } = entry;
  const data = entry.Data ?? new Uint8Array(0);
  if (entry.Type === EntryType.ConfigChange) {
    if (!isConfigChangeJson(data)) {
      throw new PhalanxEntryError(index, 'a Phalanx membership change (an address) has no rale equivalent; rale changes membership through its own config entries');
    }
    return { index, term, kind: EntryKind.Config, data: data.slice() };
  }
  if (entry.Type !== EntryType.Command) throw new PhalanxEntryError(index, `unknown entry Type ${entry.Type} (Phalanx writes 0 and 1)`);
  if (data.length === 0) return { index, term, kind: EntryKind.Noop, data: new Uint8Array(0) };
  const carried = raleDataOf(index, data);
  if (carried !== null) return { index, term, kind: EntryKind.Normal, data: carried };
  let command: Command;
  try {
    command = decodeCommand(data);
  } catch (err) {
    if (err instanceof PhalanxDecodeError) throw new PhalanxEntryError(index, `fsm: decode command: ${err.message}`);
    throw err;
  }
  // A Phalanx node's own command: the id is derived from the position, so every node builds the same entry.
  const id = `phalanx-${term}-${index}`;
  if (command.op === CommandOp.Set) {
    return { index, term, kind: EntryKind.Normal, data: utf8.encode(JSON.stringify({ id, command: { op: 'set', key: command.key, value: command.value } })) };
  }
  if (command.op === CommandOp.Delete) {
    return { index, term, kind: EntryKind.Normal, data: utf8.encode(JSON.stringify({ id, command: { op: 'delete', key: command.key } })) };
  }
  throw new PhalanxEntryError(index, `fsm: unknown op ${JSON.stringify(command.op)}`);
}
