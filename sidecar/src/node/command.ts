/**
 * The envelope of a client command inside a Normal log entry. Every command
 * carries a unique id: state machines record the ids they applied, atomically
 * with their effects, so that a command retried after a timeout or a leader
 * change is applied once, however many times it reaches the log.
 */
import { RaleError } from '../errors.ts';

export interface CommandEnvelope {
  /** Unique per command (a UUID by default). */
  id: string;
  command: unknown;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(envelope: CommandEnvelope): Uint8Array {
  return encoder.encode(JSON.stringify(envelope));
}

export function decodeCommand(data: Uint8Array): CommandEnvelope {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(data));
  } catch {
    throw new RaleError('INVALID_ARGUMENT', 'a log entry does not hold a JSON command envelope');
  }
  if (parsed === null || typeof parsed !== 'object' || typeof (parsed as CommandEnvelope).id !== 'string' || !('command' in parsed)) {
    throw new RaleError('INVALID_ARGUMENT', 'a log entry does not hold a command envelope {id, command}');
  }
  return parsed as CommandEnvelope;
}

/** The built-in key-value commands. */
export type KvCommand =
  | { op: 'set'; key: string; value: unknown }
  | { op: 'delete'; key: string }
  | { op: 'cas'; key: string; expected: unknown; value: unknown };

export function isKvCommand(c: unknown): c is KvCommand {
  if (c === null || typeof c !== 'object') return false;
  const cmd = c as Record<string, unknown>;
  if (typeof cmd.key !== 'string') return false;
  return cmd.op === 'set' || cmd.op === 'delete' || cmd.op === 'cas';
}
