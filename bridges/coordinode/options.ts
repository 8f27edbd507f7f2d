/**
 * The coordinode bridge's options, validated. Every error names the option
 * and says what to write instead.
 */
import * as zlib from 'node:zlib';
import type { NodeId } from '../../sidecar/src/core/types.ts';
import type { LeaderIdMode } from './codec.ts';

export type VoteRequestFields = 2 | 3;

export interface PeerSettings {
  /** Compress every message body with zstd (CoordiNode's newest, untagged code). */
  zstd: boolean;
  /** VoteRequest with 3 elements (openraft alpha.25+) or 2 (alpha.20, CoordiNode <= v0.4.3). */
  voteRequestFields: VoteRequestFields;
}

export interface CoordinodeOptions {
  /** u64 node id -> rale node id, and back. */
  readonly byU64: ReadonlyMap<bigint, NodeId>;
  readonly byRale: ReadonlyMap<NodeId, bigint>;
  readonly leaderIdMode: LeaderIdMode;
  /** Settings for peers not listed in `peers`. */
  readonly defaults: PeerSettings;
  readonly peers: ReadonlyMap<bigint, PeerSettings>;
  /** Deadline of an outbound unary call. */
  readonly rpcTimeoutMs: number;
  /** How long an inbound call waits for the Raft core's answer before it fails (UNAVAILABLE) or is refused (votes). */
  readonly replyTimeoutMs: number;
  /** Size of the DataChunk frames this bridge sends (at most 2 MiB, as CoordiNode). */
  readonly snapshotChunkBytes: number;
  /** Largest snapshot this bridge accepts (data_size of the header). */
  readonly maxSnapshotBytes: number;
  /** Testing only: the named RaftService handler throws, to show the sidecar contains it. */
  readonly throwInHandler: string | null;
}

export const MAX_CHUNK_BYTES = 2 * 1024 * 1024;
const U64_MAX = (1n << 64n) - 1n;
const KNOWN = ['nodeIds', 'leaderIdMode', 'zstd', 'voteRequestFields', 'peers', 'rpcTimeoutMs', 'replyTimeoutMs', 'snapshotChunkBytes', 'maxSnapshotBytes', 'throwInHandler'];
const METHODS = ['Vote', 'AppendEntries', 'StreamAppend', 'Snapshot', 'TransferLeader'];

/** True when this Node's zlib has zstd (Node >= 22.15 or >= 23.8). */
export function zstdAvailable(): boolean {
  return typeof (zlib as unknown as { zstdCompressSync?: unknown }).zstdCompressSync === 'function';
}

export const ZSTD_UNAVAILABLE = `zstd framing needs Node.js >= 22.15 or >= 23.8 (node:zlib zstdCompressSync); this is Node.js ${process.version}`;

function bad(option: string, message: string): Error {
  return new Error(`bridge coordinode: option ${option}: ${message}`);
}

function parseU64(text: string, option: string): bigint {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) throw bad(option, `${JSON.stringify(text)} is not a u64 node id (decimal digits, e.g. "7")`);
  const value = BigInt(text);
  if (value > U64_MAX) throw bad(option, `${text} is larger than a u64`);
  return value;
}

function positiveInt(raw: unknown, option: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (raw === undefined) return fallback;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw <= 0 || raw > max) throw bad(option, `must be a whole number from 1 to ${max}, got ${JSON.stringify(raw)}`);
  return raw;
}

function peerSettings(raw: Record<string, unknown>, option: string, base: PeerSettings): PeerSettings {
  const settings = { ...base };
  if (raw.zstd !== undefined) {
    if (typeof raw.zstd !== 'boolean') throw bad(join(option, 'zstd'), `must be true or false, got ${JSON.stringify(raw.zstd)}`);
    settings.zstd = raw.zstd;
  }
  if (raw.voteRequestFields !== undefined) {
    if (raw.voteRequestFields !== 2 && raw.voteRequestFields !== 3) {
      throw bad(join(option, 'voteRequestFields'), `must be 3 (openraft alpha.25+, the newest CoordiNode) or 2 (alpha.20, CoordiNode <= v0.4.3), got ${JSON.stringify(raw.voteRequestFields)}`);
    }
    settings.voteRequestFields = raw.voteRequestFields;
  }
  if (settings.zstd && !zstdAvailable()) throw bad(join(option, 'zstd'), `${ZSTD_UNAVAILABLE}; run the sidecar on a newer Node.js or set zstd to false (CoordiNode <= v0.4.3 sends plain frames)`);
  return settings;
}

function join(prefix: string, name: string): string {
  return prefix === '' ? name : `${prefix}.${name}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function parseOptions(raw: Readonly<Record<string, unknown>>, localId: NodeId): CoordinodeOptions {
  for (const key of Object.keys(raw)) {
    if (!KNOWN.includes(key)) throw new Error(`bridge coordinode: unknown option ${JSON.stringify(key)} (known: ${KNOWN.join(', ')})`);
  }
  if (!isObject(raw.nodeIds)) {
    throw bad('nodeIds', `is required: an object mapping each CoordiNode u64 node id to a rale node id, with an entry for every rale member that talks to CoordiNode nodes, e.g. {"1": "node1", "2": "node2", "7": "cn7"}`);
  }
  const byU64 = new Map<bigint, NodeId>();
  const byRale = new Map<NodeId, bigint>();
  for (const [key, value] of Object.entries(raw.nodeIds)) {
    const id = parseU64(key, 'nodeIds');
    if (typeof value !== 'string' || value === '') throw bad(`nodeIds.${key}`, `must be a rale node id (a non-empty string), got ${JSON.stringify(value)}`);
    const other = byRale.get(value);
    if (other !== undefined) throw bad('nodeIds', `${value} is mapped from both ${other} and ${id}; each rale node has one u64 id`);
    byU64.set(id, value);
    byRale.set(value, id);
  }
  if (!byRale.has(localId)) {
    throw bad('nodeIds', `has no entry for this node (${localId}): CoordiNode peers name every node by a u64, so add one, e.g. "${firstFree(byU64)}": "${localId}", on every node`);
  }
  const mode = raw.leaderIdMode ?? 'adv';
  if (mode !== 'adv' && mode !== 'std') throw bad('leaderIdMode', `must be "adv" (openraft's default, CoordiNode's) or "std", got ${JSON.stringify(mode)}`);
  const defaults = peerSettings({ zstd: raw.zstd, voteRequestFields: raw.voteRequestFields }, '', { zstd: false, voteRequestFields: 3 });
  const peers = new Map<bigint, PeerSettings>();
  if (raw.peers !== undefined) {
    if (!isObject(raw.peers)) throw bad('peers', 'must be an object keyed by u64 node id, e.g. {"7": {"zstd": true, "voteRequestFields": 2}}');
    for (const [key, value] of Object.entries(raw.peers)) {
      const id = parseU64(key, 'peers');
      if (!isObject(value)) throw bad(`peers.${key}`, 'must be an object such as {"zstd": false, "voteRequestFields": 2}');
      for (const k of Object.keys(value)) if (k !== 'zstd' && k !== 'voteRequestFields') throw bad(`peers.${key}`, `unknown setting ${JSON.stringify(k)} (known: zstd, voteRequestFields)`);
      if (!byU64.has(id)) throw bad(`peers.${key}`, `node ${key} has no entry in nodeIds; add it there first`);
      peers.set(id, peerSettings(value, `peers.${key}`, defaults));
    }
  }
  const throwIn = raw.throwInHandler ?? null;
  if (throwIn !== null && (typeof throwIn !== 'string' || !METHODS.includes(throwIn))) throw bad('throwInHandler', `must be one of ${METHODS.join(', ')} (testing only)`);
  return {
    byU64,
    byRale,
    leaderIdMode: mode,
    defaults,
    peers,
    rpcTimeoutMs: positiveInt(raw.rpcTimeoutMs, 'rpcTimeoutMs', 2_000),
    replyTimeoutMs: positiveInt(raw.replyTimeoutMs, 'replyTimeoutMs', 1_000),
    snapshotChunkBytes: positiveInt(raw.snapshotChunkBytes, 'snapshotChunkBytes', MAX_CHUNK_BYTES, MAX_CHUNK_BYTES),
    maxSnapshotBytes: positiveInt(raw.maxSnapshotBytes, 'maxSnapshotBytes', 1024 * 1024 * 1024),
    throwInHandler: throwIn as string | null,
  };
}

function firstFree(used: ReadonlyMap<bigint, unknown>): string {
  let n = 1n;
  while (used.has(n)) n++;
  return n.toString();
}
