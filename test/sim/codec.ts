/** Client commands as log payloads, and entry digests for the invariant checks. */
import { EntryKind, type Entry } from '../../sidecar/src/core/index.ts';

/** A client write: set `key` to `value`. `id` identifies the proposal across retries. */
export interface Command {
  id: string;
  key: string;
  value: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Payloads are immutable once proposed, so their text is cached by buffer identity. */
const textCache = new WeakMap<Uint8Array, string>();

export function encodeCommand(command: Command): Uint8Array {
  return encoder.encode(JSON.stringify(command));
}

export function payloadText(data: Uint8Array): string {
  let text = textCache.get(data);
  if (text === undefined) {
    text = decoder.decode(data);
    textCache.set(data, text);
  }
  return text;
}

export function decodeCommand(data: Uint8Array): Command {
  const parsed = JSON.parse(payloadText(data)) as Partial<Command>;
  if (typeof parsed.id !== 'string' || typeof parsed.key !== 'string' || typeof parsed.value !== 'string') {
    throw new Error(`not a client command: ${payloadText(data)}`);
  }
  return { id: parsed.id, key: parsed.key, value: parsed.value };
}

/** Everything that identifies an entry's content (index and term are compared separately). */
export function entryDigest(entry: Entry): string {
  return `${entry.kind}|${entry.leader ?? ''}|${payloadText(entry.data)}`;
}

export function describeEntry(entry: Entry): string {
  const kind = entry.kind === EntryKind.Normal ? 'cmd' : entry.kind === EntryKind.Noop ? 'noop' : 'config';
  return `${entry.index}@${entry.term} ${kind} ${payloadText(entry.data)}`;
}
