/**
 * How rale's log entries, terms and node ids travel as openraft values, and
 * back, without loss (pure functions, no I/O). See docs/bridges/coordinode.md.
 *
 * Entries. openraft has Blank, Normal(D) and Membership; rale has Noop,
 * Normal and Config (one-at-a-time ConfigChange, which a joint-consensus
 * Membership cannot express exactly). The mapping is a bijection between the
 * two sets of entries, so that every member holds identical entries at each
 * (index, term) and an entry re-sent by another leader is byte-identical:
 *
 *   rale Noop                       <-> Blank
 *   rale Normal, data d (d[0] != 0) <-> Normal(Vec<u8> d)
 *   rale Normal, d[0] == 0          <-> Normal(Vec<u8> MARK_NORMAL + d)
 *   rale Config, data c             <-> Normal(Vec<u8> MARK_CONFIG + c)
 *   rale Normal MARK_MEMBERSHIP + m <-> Membership (m: its msgpack bytes)
 *   rale Normal MARK_VALUE + v      <-> Normal(any other msgpack value v)
 *
 * rale's own data (a JSON command envelope, a JSON ConfigChange) never starts
 * with a zero byte, so the markers (which do) cannot be confused with it.
 * Foreign entries that rale cannot interpret (a CoordiNode Request, an
 * openraft Membership) become Normal entries that rale's state machine
 * records as failed commands, the same way on every node.
 */
import { EntryKind, type Entry, type NodeId } from '../../sidecar/src/core/types.ts';
import {
  ByteVec,
  CoordinodeDecodeError,
  decodeMsgpackValue,
  encodeMsgpack,
  type CommittedLeaderId,
  type CoordinodeCodec,
  type Entry as WireEntry,
  type LeaderIdMode,
  type LogId,
  type MsgpackValue,
} from './codec.ts';

const utf8 = new TextEncoder();
export const MARK_CONFIG = utf8.encode('\0rale:config\0');
export const MARK_NORMAL = utf8.encode('\0rale:normal\0');
export const MARK_MEMBERSHIP = utf8.encode('\0rale:openraft-membership\0');
export const MARK_VALUE = utf8.encode('\0rale:openraft-value\0');

/** The node id written into adv-mode log ids of entries no leader wrote (the bootstrap entry at index 1, term 1). */
export const NO_LEADER = 0n;

function startsWith(data: Uint8Array, prefix: Uint8Array): boolean {
  if (data.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (data[i] !== prefix[i]) return false;
  return true;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** u64 <-> rale node ids, from the nodeIds option. */
export class IdMap {
  constructor(
    private readonly byU64: ReadonlyMap<bigint, NodeId>,
    private readonly byRale: ReadonlyMap<NodeId, bigint>,
  ) {}

  u64(id: NodeId): bigint {
    const value = this.byRale.get(id);
    if (value === undefined) throw new Error(`rale node ${id} has no CoordiNode u64 id: add it to the coordinode bridge's nodeIds option on every node (e.g. "${id.replace(/\D/g, '') || '9'}": "${id}")`);
    return value;
  }

  rale(id: bigint): NodeId {
    const value = this.byU64.get(id);
    if (value === undefined) throw new CoordinodeDecodeError(`node id ${id} is not in the coordinode bridge's nodeIds option`, 'nodeId');
    return value;
  }

  knows(id: bigint): boolean {
    return this.byU64.has(id);
  }
}

/** Where mapping needs the leader that wrote a term's entries (adv mode). */
export type LeaderOfTerm = (term: number) => NodeId | null | undefined;

export class EntryMapper {
  constructor(
    readonly mode: LeaderIdMode,
    private readonly ids: IdMap,
    private readonly codec: CoordinodeCodec<MsgpackValue>,
  ) {}

  /** openraft's CommittedLeaderId of an entry of `term` written by `leader` (adv: [term, node]; std: the term). */
  committedLeaderId(term: number, leader: NodeId | null | undefined): CommittedLeaderId {
    if (this.mode === 'std') return { term: BigInt(term), nodeId: null };
    return { term: BigInt(term), nodeId: leader === null || leader === undefined ? NO_LEADER : this.ids.u64(leader) };
  }

  logId(index: number, term: number, leader: NodeId | null | undefined): LogId | null {
    if (index === 0) return null;
    return { leaderId: this.committedLeaderId(term, leader), index: BigInt(index) };
  }

  /** A rale entry as openraft's Entry<D>, D being a msgpack value. */
  toWire(entry: Entry): WireEntry<MsgpackValue> {
    const logId = this.logId(entry.index, entry.term, entry.leader) as LogId;
    const data = entry.data;
    switch (entry.kind) {
      case EntryKind.Noop:
        return { logId, payload: { kind: 'blank' } };
      case EntryKind.Config:
        return { logId, payload: { kind: 'normal', data: new ByteVec(concat(MARK_CONFIG, data)) } };
      default:
        if (startsWith(data, MARK_MEMBERSHIP)) {
          return { logId, payload: { kind: 'membership', membership: this.codec.decodeMembership(data.subarray(MARK_MEMBERSHIP.length)) } };
        }
        if (startsWith(data, MARK_VALUE)) return { logId, payload: { kind: 'normal', data: decodeMsgpackValue(data.subarray(MARK_VALUE.length)) } };
        if (data[0] === 0) return { logId, payload: { kind: 'normal', data: new ByteVec(concat(MARK_NORMAL, data)) } };
        return { logId, payload: { kind: 'normal', data: new ByteVec(data) } };
    }
  }

  /**
   * An openraft entry as a rale entry. `leader` is the node that wrote it:
   * in adv mode the log id names it; in std mode it is not on the wire (rale
   * records none).
   */
  fromWire(entry: WireEntry<MsgpackValue>): Entry {
    const index = toNumber(entry.logId.index, 'logId.index');
    const term = toNumber(entry.logId.leaderId.term, 'logId.leaderId.term');
    const out: Entry = { index, term, kind: EntryKind.Normal, data: new Uint8Array(0) };
    const node = entry.logId.leaderId.nodeId;
    if (this.mode === 'adv' && node !== null && node !== NO_LEADER) out.leader = this.ids.rale(node);
    const payload = entry.payload;
    if (payload.kind === 'blank') {
      out.kind = EntryKind.Noop;
      return out;
    }
    if (payload.kind === 'membership') {
      out.data = concat(MARK_MEMBERSHIP, this.codec.encodeMembership(payload.membership));
      return out;
    }
    const bytes = byteVecOf(payload.data);
    if (bytes !== null) {
      if (startsWith(bytes, MARK_CONFIG)) {
        out.kind = EntryKind.Config;
        out.data = bytes.slice(MARK_CONFIG.length);
        return out;
      }
      if (startsWith(bytes, MARK_NORMAL)) {
        const rest = bytes.slice(MARK_NORMAL.length);
        // Only what toWire would have written this way maps back: d[0] == 0 and not one of the other markers.
        if (rest[0] === 0 && !startsWith(rest, MARK_MEMBERSHIP) && !startsWith(rest, MARK_VALUE)) {
          out.data = rest;
          return out;
        }
      } else if (bytes[0] !== 0) {
        out.data = bytes;
        return out;
      }
    }
    out.data = concat(MARK_VALUE, encodeMsgpack(payload.data));
    return out;
  }
}

/** The bytes of a D that is a Vec<u8> (an array of integers 0..255), else null. */
function byteVecOf(value: MsgpackValue): Uint8Array | null {
  if (value instanceof ByteVec) return value.bytes;
  if (!Array.isArray(value)) return null;
  const items = value as readonly MsgpackValue[];
  const bytes = new Uint8Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== 'number' || !Number.isInteger(item) || item < 0 || item > 255) return null;
    bytes[i] = item;
  }
  return bytes;
}

/** A u64 from the wire as a rale number (terms, indexes); beyond 2^53 - 1 it is refused, never rounded. */
export function toNumber(value: bigint, path: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new CoordinodeDecodeError(`${value} is beyond what rale's terms and indexes hold (2^53 - 1)`, path);
  return Number(value);
}
