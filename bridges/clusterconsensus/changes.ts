/**
 * How clusterconsensus changes and snapshots map onto rale's replicated state.
 *
 * A clusterconsensus change is opaque bytes. rale's state machine is a
 * key-value store driven by JSON commands, so:
 *
 * - submit (foreign client -> rale): a change whose bytes are the UTF-8 JSON
 *   of a rale kv command (`{"op":"set","key":"k","value":1}`, `delete`,
 *   `cas`) is proposed as that command. Any other change is stored as
 *   `set clusterc/<clusterId>/<sha256 of the bytes, hex> = "<base64 of the bytes>"`,
 *   so nothing a client submits is lost or reinterpreted.
 * - accept (rale master -> participant): each committed Normal entry becomes
 *   one change: the UTF-8 JSON of the entry's command (what the submit above
 *   produced, or what a SQL/REST client proposed). Noop entries carry nothing.
 *   An entry that is not a command envelope goes as its raw bytes.
 * - start: the participant's snapshot is {@link encodeStateSnapshot}: the JSON
 *   of the whole kv state at a rale index.
 *
 * A participant following rale therefore runs a state machine whose Apply
 * takes a rale command and whose Install takes that snapshot: the kv state.
 */
import { createHash } from 'node:crypto';
import { decodeCommand, isKvCommand } from '../../sidecar/src/node/command.ts';
import type { Entry } from '../../sidecar/src/core/types.ts';
import { EntryKind } from '../../sidecar/src/core/types.ts';
import type { BridgeCommand } from '../../sidecar/src/plugins/bridge-api.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

/** The key an opaque change is stored under. */
export function opaqueChangeKey(clusterId: string, change: Uint8Array): string {
  return `clusterc/${clusterId}/${createHash('sha256').update(change).digest('hex')}`;
}

/** The rale command a submitted change becomes (see the module comment). */
export function changeToCommand(change: Uint8Array | null, clusterId: string): BridgeCommand {
  const bytes = change ?? new Uint8Array(0);
  try {
    const parsed: unknown = JSON.parse(utf8.decode(bytes));
    if (isKvCommand(parsed)) {
      // Only the fields of the command: a client's extra fields must not reach the log.
      if (parsed.op === 'set') return { op: 'set', key: parsed.key, value: parsed.value };
      if (parsed.op === 'delete') return { op: 'delete', key: parsed.key };
      return { op: 'cas', key: parsed.key, expected: parsed.expected, value: parsed.value };
    }
  } catch {
    // not UTF-8 JSON: an opaque change
  }
  return { op: 'set', key: opaqueChangeKey(clusterId, bytes), value: Buffer.from(bytes).toString('base64') };
}

/** The change a committed entry becomes for participants; null for entries that carry no change (Noop, Config). */
export function entryToChange(entry: Entry): Uint8Array | null {
  if (entry.kind !== EntryKind.Normal) return null;
  try {
    return encoder.encode(JSON.stringify(decodeCommand(entry.data).command));
  } catch {
    return entry.data;
  }
}

export interface StateSnapshot {
  /** The rale log index (and its term) the state corresponds to. */
  index: number;
  term: number;
  kv: Array<{ key: string; value: unknown; version: number }>;
}

/** The Snapshot bytes of a start: `{"format":"rale-kv/1","index":..,"term":..,"kv":[{"key","value","version"}...]}`. */
export function encodeStateSnapshot(snapshot: StateSnapshot): Uint8Array {
  return encoder.encode(JSON.stringify({ format: 'rale-kv/1', index: snapshot.index, term: snapshot.term, kv: snapshot.kv }));
}

export function decodeStateSnapshot(bytes: Uint8Array): StateSnapshot {
  const parsed = JSON.parse(utf8.decode(bytes)) as { format?: unknown } & StateSnapshot;
  if (parsed.format !== 'rale-kv/1') throw new Error(`not a rale-kv/1 snapshot (format ${JSON.stringify(parsed.format)})`);
  return { index: parsed.index, term: parsed.term, kv: parsed.kv };
}

export const PARTICIPANT_SCHEME = 'clusterc';

/**
 * The HTTP base URL of a participant from its member address:
 * `clusterc://host:port[/prefix]` -> `http://host:port[/prefix]`. Throws with
 * what is wrong for anything else.
 */
export function participantUrl(address: string): string {
  const prefix = `${PARTICIPANT_SCHEME}://`;
  if (!address.startsWith(prefix)) throw new Error(`${JSON.stringify(address)} is not a clusterconsensus participant address (clusterc://host:port)`);
  let url: URL;
  try {
    url = new URL(`http://${address.slice(prefix.length)}`);
  } catch {
    throw new Error(`${JSON.stringify(address)} is not a valid address: write clusterc://host:port (the participant's HTTP server)`);
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new Error(`${JSON.stringify(address)}: a participant address takes no query, fragment or credentials`);
  }
  return `http://${url.host}${url.pathname.replace(/\/+$/, '')}`;
}
