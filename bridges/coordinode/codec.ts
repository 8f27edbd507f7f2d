/**
 * CoordiNode RaftService wire codec: openraft's types as rmp-serde COMPACT
 * msgpack (`rmp_serde::to_vec`), wrapped in the protobuf `RaftPayload`.
 * See docs/protocols/coordinode-raftservice.md.
 *
 * Representation choices:
 * - Every u64 (terms, node ids, indexes, sizes, timestamps) is a `bigint`,
 *   always, even when small: node ids are arbitrary u64 and may exceed 2^53,
 *   and one type everywhere means no value silently changes type with its
 *   size. Encoders reject `number` for these fields.
 * - BTreeMap<NodeId, BasicNode> is a `Map<bigint, BasicNode>`, written with
 *   INTEGER keys in ascending order (BTreeMap order); a BTreeSet<NodeId> is a
 *   `bigint[]`, written ascending without duplicates.
 * - Vec<u8> is a `Uint8Array`, written as a msgpack array of integers (serde's
 *   default for Vec<u8>; not msgpack bin).
 * - Enums are discriminated unions with a `type` tag (`kind` for entry payloads).
 * - One leader-id type serves both openraft modes (see {@link LeaderIdMode}):
 *   `{ term, nodeId }`, where nodeId is never null in "adv" mode, is the
 *   voted-for node (possibly null) of a std LeaderId, and is always null in a
 *   std CommittedLeaderId (which is the bare term on the wire).
 *
 * Encoding reproduces rmp-serde byte for byte: structs as arrays of their
 * fields in declaration order, unit variants as their name, newtype variants
 * as a one-entry map, every integer in its smallest msgpack form. It uses a
 * small writer of its own, because @msgpack/msgpack 3.1.3 cannot produce
 * rmp-serde's bytes: it writes every bigint as a 9-byte uint64 (0xcf) even
 * when small, writes safe integers >= 2^32 as float64 once useBigInt64 is on,
 * writes a JS Map as an empty map and object keys only as strings.
 *
 * Decoding uses @msgpack/msgpack (useBigInt64, so uint64/int64 arrive as
 * bigint and everything smaller as number) and then checks every value
 * against the expected type, as serde would, throwing
 * {@link CoordinodeDecodeError}:
 * - a struct may come as an array (fields in order; only trailing
 *   `#[serde(default)]` fields may be missing; extra elements are an error,
 *   as in rmp-serde) or as a map keyed by field name (unknown keys ignored,
 *   missing Option or defaulted fields take None/default);
 * - a unit variant may also come as `{ "Name": nil }`;
 * - integers must be whole and in range; a float where an integer is expected
 *   is an error, except that @msgpack/msgpack gives a whole float (1.0) as the
 *   number 1, which is then accepted (rmp-serde would refuse it);
 * - msgpack str with invalid UTF-8 is decoded leniently by @msgpack/msgpack
 *   (rmp-serde would refuse it); a String field also accepts bin holding
 *   valid UTF-8, as serde's String does;
 * - map keys must be strings or integers; extension types are refused;
 * - the input must be exactly one msgpack value (no trailing bytes).
 *
 * Out of scope for now: the zstd body compression of the newest (untagged)
 * CoordiNode code (a bridge needs a per-peer setting for it); the gRPC
 * service itself.
 */

import { Decoder } from '@msgpack/msgpack';
import { WireDecodeError, WireEncodeError } from '../shared/wire-errors.ts';

/** A CoordiNode message could not be decoded; `path` says where, `reason` what was wrong. */
export class CoordinodeDecodeError extends WireDecodeError {
  constructor(reason: string, path = '') {
    super(reason, path);
    this.name = 'CoordinodeDecodeError';
  }
}

// ---------------------------------------------------------------------------
// Msgpack values and the rmp-serde compatible writer
// ---------------------------------------------------------------------------

/**
 * A msgpack value as this codec writes it and as payload codecs see it.
 * Integers are `number` (safe integers) or `bigint`; a non-integer number is
 * a float64; `Uint8Array` is msgpack bin; {@link ByteVec} is a Vec<u8> written
 * as an array of integers; {@link MsgpackMap} keeps entry order and integer keys.
 */
export type MsgpackValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | ByteVec
  | MsgpackMap
  | readonly MsgpackValue[];

/** A msgpack map with its entries in wire order. Keys are strings or integers, the two kinds serde maps use. */
export class MsgpackMap {
  constructor(readonly entries: ReadonlyArray<readonly [string | bigint, MsgpackValue]>) {}
}

/** A Rust Vec<u8> under serde's default: a msgpack array of integers, one per byte. */
export class ByteVec {
  constructor(readonly bytes: Uint8Array) {}
}

const MAX_WRITE_DEPTH = 512;
const UINT64_LIMIT = 1n << 64n;
const INT64_MIN = -(1n << 63n);
const utf8Encoder = new TextEncoder();

class MsgpackWriter {
  private buffer = new Uint8Array(256);
  private view = new DataView(this.buffer.buffer);
  private length = 0;

  result(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }

  private reserve(extra: number): void {
    const needed = this.length + extra;
    if (needed <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < needed) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
    this.view = new DataView(grown.buffer);
  }

  private byte(value: number): void {
    this.reserve(1);
    this.buffer[this.length++] = value;
  }

  private u16(marker: number, value: number): void {
    this.reserve(3);
    this.buffer[this.length] = marker;
    this.view.setUint16(this.length + 1, value);
    this.length += 3;
  }

  private u32(marker: number, value: number): void {
    this.reserve(5);
    this.buffer[this.length] = marker;
    this.view.setUint32(this.length + 1, value);
    this.length += 5;
  }

  private u64(marker: number, value: bigint): void {
    this.reserve(9);
    this.buffer[this.length] = marker;
    if (marker === 0xd3) this.view.setBigInt64(this.length + 1, value);
    else this.view.setBigUint64(this.length + 1, value);
    this.length += 9;
  }

  private raw(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }

  /** Smallest form, as rmp's write_uint / write_sint choose it. */
  integer(value: number | bigint, path: string): void {
    if (typeof value === 'bigint') {
      if (value >= UINT64_LIMIT || value < INT64_MIN) throw new WireEncodeError(`integer ${value} does not fit in 64 bits`, path);
      if (value > BigInt(Number.MAX_SAFE_INTEGER)) return this.u64(0xcf, value);
      if (value < BigInt(Number.MIN_SAFE_INTEGER)) return this.u64(0xd3, value);
      value = Number(value);
    }
    if (value >= 0) {
      if (value < 0x80) return this.byte(value);
      if (value < 0x100) {
        this.byte(0xcc);
        return this.byte(value);
      }
      if (value < 0x10000) return this.u16(0xcd, value);
      if (value < 0x100000000) return this.u32(0xce, value);
      return this.u64(0xcf, BigInt(value));
    }
    if (value >= -32) return this.byte(value & 0xff);
    if (value >= -0x80) {
      this.byte(0xd0);
      return this.byte(value & 0xff);
    }
    if (value >= -0x8000) return this.u16(0xd1, value & 0xffff);
    if (value >= -0x80000000) return this.u32(0xd2, value >>> 0);
    return this.u64(0xd3, BigInt(value));
  }

  private float64(value: number): void {
    this.reserve(9);
    this.buffer[this.length] = 0xcb;
    this.view.setFloat64(this.length + 1, value);
    this.length += 9;
  }

  private string(value: string): void {
    const bytes = utf8Encoder.encode(value);
    const n = bytes.length;
    if (n < 32) this.byte(0xa0 | n);
    else if (n < 0x100) {
      this.byte(0xd9);
      this.byte(n);
    } else if (n < 0x10000) this.u16(0xda, n);
    else this.u32(0xdb, n);
    this.raw(bytes);
  }

  private binary(bytes: Uint8Array): void {
    const n = bytes.length;
    if (n < 0x100) {
      this.byte(0xc4);
      this.byte(n);
    } else if (n < 0x10000) this.u16(0xc5, n);
    else this.u32(0xc6, n);
    this.raw(bytes);
  }

  private arrayHeader(n: number): void {
    if (n < 16) this.byte(0x90 | n);
    else if (n < 0x10000) this.u16(0xdc, n);
    else this.u32(0xdd, n);
  }

  private mapHeader(n: number): void {
    if (n < 16) this.byte(0x80 | n);
    else if (n < 0x10000) this.u16(0xde, n);
    else this.u32(0xdf, n);
  }

  value(value: MsgpackValue, path: string, depth = 0): void {
    if (depth > MAX_WRITE_DEPTH) throw new WireEncodeError(`nesting deeper than ${MAX_WRITE_DEPTH}`, path);
    if (value === null) return this.byte(0xc0);
    switch (typeof value) {
      case 'boolean':
        return this.byte(value ? 0xc3 : 0xc2);
      case 'bigint':
        return this.integer(value, path);
      case 'number':
        return Number.isSafeInteger(value) ? this.integer(value, path) : this.float64(value);
      case 'string':
        return this.string(value);
    }
    if (value instanceof Uint8Array) return this.binary(value);
    if (value instanceof ByteVec) {
      this.arrayHeader(value.bytes.length);
      this.reserve(value.bytes.length * 2);
      for (const byte of value.bytes) {
        if (byte >= 0x80) this.buffer[this.length++] = 0xcc;
        this.buffer[this.length++] = byte;
      }
      return;
    }
    if (value instanceof MsgpackMap) {
      this.mapHeader(value.entries.length);
      for (const [key, entry] of value.entries) {
        if (typeof key === 'bigint') this.integer(key, path);
        else this.string(key);
        this.value(entry, `${path}[${String(key)}]`, depth + 1);
      }
      return;
    }
    if (Array.isArray(value)) {
      this.arrayHeader(value.length);
      value.forEach((item: MsgpackValue, i) => this.value(item, `${path}[${i}]`, depth + 1));
      return;
    }
    throw new WireEncodeError(`cannot write ${Object.prototype.toString.call(value)} as msgpack`, path);
  }
}

/** Writes a msgpack value exactly as rmp-serde would write the Rust value it stands for. */
export function encodeMsgpack(value: MsgpackValue): Uint8Array {
  const writer = new MsgpackWriter();
  writer.value(value, '');
  return writer.result();
}

// ---------------------------------------------------------------------------
// Reading what @msgpack/msgpack decoded
// ---------------------------------------------------------------------------

// Map keys are tagged by kind so that an integer key (a BTreeMap<u64, _>
// node id) can be told from a string key (a struct field name) after
// @msgpack/msgpack has turned the map into a plain object. The tag also keeps
// keys such as "constructor" from meaning anything to the object.
const STRING_KEY_TAG = 's';
const INTEGER_KEY_TAG = 'i';
const FLOAT_KEY_TAG = 'f';

function tagMapKey(key: unknown): string {
  if (typeof key === 'string') return STRING_KEY_TAG + key;
  if (typeof key === 'bigint') return INTEGER_KEY_TAG + key.toString();
  if (typeof key === 'number') return (Number.isSafeInteger(key) ? INTEGER_KEY_TAG : FLOAT_KEY_TAG) + String(key);
  throw new CoordinodeDecodeError(`map key of type ${describeRaw(key)} is not supported (only strings and integers)`);
}

type RawMap = Record<string, unknown>;

function isRawMap(value: unknown): value is RawMap {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

function describeRaw(value: unknown): string {
  if (value === null) return 'nil';
  switch (typeof value) {
    case 'boolean': return 'bool';
    case 'bigint': return 'integer';
    case 'number': return Number.isSafeInteger(value) ? 'integer' : 'float';
    case 'string': return 'string';
  }
  if (value instanceof Uint8Array) return 'bin';
  if (Array.isArray(value)) return 'array';
  if (isRawMap(value)) return 'map';
  return 'extension';
}

function fail(reason: string, path: string): never {
  throw new CoordinodeDecodeError(reason, path);
}

function expected(what: string, value: unknown, path: string): never {
  return fail(`expected ${what}, got ${describeRaw(value)}`, path);
}

/** Decodes one msgpack value, which must fill `bytes` exactly. */
function parseMsgpack(bytes: Uint8Array): unknown {
  if (!(bytes instanceof Uint8Array)) throw new CoordinodeDecodeError('input must be a Uint8Array');
  // No container or string can have more elements than there are bytes, so
  // the input length bounds every declared length before anything is allocated.
  const limit = bytes.length;
  const decoder = new Decoder({
    useBigInt64: true,
    mapKeyConverter: tagMapKey,
    maxStrLength: limit,
    maxBinLength: limit,
    maxArrayLength: limit,
    maxMapLength: limit,
    maxExtLength: limit,
  });
  try {
    return decoder.decode(bytes);
  } catch (error) {
    if (error instanceof CoordinodeDecodeError) throw error;
    // Everything @msgpack/msgpack throws here comes from the input (truncation, bad marker, trailing bytes).
    throw new CoordinodeDecodeError(`malformed msgpack: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function readU64(value: unknown, path: string): bigint {
  if (typeof value === 'bigint') {
    if (value < 0n) fail(`expected u64, got negative integer ${value}`, path);
    return value; // a decoded uint64/int64 is below 2^64 by construction
  }
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) fail(`expected u64, got float ${value}`, path);
    if (value < 0) fail(`expected u64, got negative integer ${value}`, path);
    return BigInt(value);
  }
  return expected('u64', value, path);
}

function readBool(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') expected('bool', value, path);
  return value;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function readString(value: unknown, path: string): string {
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) {
    try {
      return strictUtf8.decode(value);
    } catch {
      return fail('bin is not valid UTF-8 for a String', path);
    }
  }
  return expected('string', value, path);
}

function readArray(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) expected('array', value, path);
  return value;
}

/** Vec<u8>: an array of integers 0..255. */
function readByteVec(value: unknown, path: string): Uint8Array {
  const items = readArray(value, path);
  const bytes = new Uint8Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== 'number' || !Number.isInteger(item) || item < 0 || item > 255) {
      fail(`expected u8, got ${typeof item === 'number' ? String(item) : describeRaw(item)}`, `${path}[${i}]`);
    }
    bytes[i] = item;
  }
  return bytes;
}

function readOption<T>(value: unknown, path: string, read: (value: unknown, path: string) => T): T | null {
  return value === null ? null : read(value, path);
}

/**
 * How a struct field behaves when absent: `required` fields must be there;
 * `option` (Option<T> without a serde default) may be absent only from the
 * map form; `default` (#[serde(default)]) may be absent from both forms, but
 * from the array form only at the end.
 */
type Absence = 'required' | 'option' | 'default';

interface StructField {
  readonly name: string;
  readonly absence: Absence;
}

const required = (name: string): StructField => ({ name, absence: 'required' });
const option = (name: string): StructField => ({ name, absence: 'option' });
const defaulted = (name: string): StructField => ({ name, absence: 'default' });

/** The raw value of each field, in declaration order; `undefined` where an absent field is allowed to be absent. */
function readStruct(value: unknown, path: string, typeName: string, fields: readonly StructField[]): Array<unknown> {
  if (Array.isArray(value)) {
    if (value.length > fields.length) {
      fail(`${typeName} has ${fields.length} fields, got an array of ${value.length}`, path);
    }
    for (let i = value.length; i < fields.length; i++) {
      if (fields[i]?.absence !== 'default') {
        fail(`${typeName} needs at least ${fields.filter((f) => f.absence !== 'default').length} elements, got ${value.length}`, path);
      }
    }
    return fields.map((_, i) => value[i]);
  }
  if (isRawMap(value)) {
    return fields.map((field) => {
      const key = STRING_KEY_TAG + field.name;
      if (Object.hasOwn(value, key)) return value[key];
      if (field.absence === 'required') fail(`${typeName} is missing field ${field.name}`, path);
      return undefined;
    });
  }
  return expected(`${typeName} (array or map)`, value, path);
}

interface RawVariant {
  readonly name: string;
  /** undefined when the variant came as a bare name (the unit form). */
  readonly content: unknown;
}

function readEnum(value: unknown, path: string, typeName: string): RawVariant {
  if (typeof value === 'string') return { name: value, content: undefined };
  if (isRawMap(value)) {
    const entries = Object.entries(value);
    const entry = entries[0];
    if (entries.length !== 1 || entry === undefined) fail(`${typeName} as a map must have exactly one entry, got ${entries.length}`, path);
    const [key, content] = entry;
    if (!key.startsWith(STRING_KEY_TAG)) fail(`${typeName} variant name must be a string`, path);
    return { name: key.slice(STRING_KEY_TAG.length), content };
  }
  return expected(`${typeName} (variant name or one-entry map)`, value, path);
}

function expectUnitVariant(variant: RawVariant, typeName: string, path: string): void {
  if (variant.content !== undefined && variant.content !== null) {
    fail(`${typeName}::${variant.name} carries no value, got ${describeRaw(variant.content)}`, path);
  }
}

function newtypeContent(variant: RawVariant, typeName: string, path: string): unknown {
  if (variant.content === undefined) fail(`${typeName}::${variant.name} needs a value`, path);
  return variant.content;
}

function unknownVariant(variant: RawVariant, typeName: string, known: string[], path: string): never {
  return fail(`unknown ${typeName} variant ${JSON.stringify(variant.name)} (expected one of ${known.join(', ')})`, path);
}

const MAX_PAYLOAD_DEPTH = 512;

/** Turns what @msgpack/msgpack decoded into a {@link MsgpackValue} for a payload codec. */
function toMsgpackValue(value: unknown, path: string, depth = 0): MsgpackValue {
  if (depth > MAX_PAYLOAD_DEPTH) fail(`nesting deeper than ${MAX_PAYLOAD_DEPTH}`, path);
  if (value === null || typeof value === 'boolean' || typeof value === 'number' || typeof value === 'bigint' || typeof value === 'string') {
    return value;
  }
  if (value instanceof Uint8Array) return value.slice();
  if (Array.isArray(value)) return value.map((item, i) => toMsgpackValue(item, `${path}[${i}]`, depth + 1));
  if (isRawMap(value)) {
    return new MsgpackMap(
      Object.entries(value).map(([tagged, entry]): readonly [string | bigint, MsgpackValue] => {
        const body = tagged.slice(1);
        if (tagged.startsWith(FLOAT_KEY_TAG)) fail(`float map key ${body} is not supported`, path);
        const key = tagged.startsWith(INTEGER_KEY_TAG) ? BigInt(body) : body;
        return [key, toMsgpackValue(entry, `${path}[${body}]`, depth + 1)];
      }),
    );
  }
  return fail('msgpack extension types are not supported', path);
}

/**
 * Decodes one whole msgpack value into a {@link MsgpackValue} (integer map
 * keys kept as bigint). The bridge uses it to turn application data it stored
 * as msgpack bytes back into a value {@link encodeMsgpack} writes identically.
 */
export function decodeMsgpackValue(bytes: Uint8Array): MsgpackValue {
  return toMsgpackValue(parseMsgpack(bytes), 'value');
}

// ---------------------------------------------------------------------------
// Entry payload codecs (the application data D of EntryPayload::Normal(D))
// ---------------------------------------------------------------------------

/** How the application data D of a Normal entry maps to msgpack. Supplied by the caller. */
export interface PayloadCodec<D> {
  /** The msgpack value rmp-serde writes for this D. May throw WireEncodeError. */
  toMsgpack(data: D, path: string): MsgpackValue;
  /** The D for a decoded value. Throw {@link payloadDecodeError} when it does not fit. */
  fromMsgpack(value: MsgpackValue, path: string): D;
}

/** The error a {@link PayloadCodec} throws from fromMsgpack for a value that is not a valid D. */
export function payloadDecodeError(reason: string, path: string): CoordinodeDecodeError {
  return new CoordinodeDecodeError(reason, path);
}

/** D = String, as in openraft's examples: a msgpack str. */
export const stringPayload: PayloadCodec<string> = {
  toMsgpack(data, path) {
    if (typeof data !== 'string') throw new WireEncodeError('string payload expected', path);
    return data;
  },
  fromMsgpack: (value, path) => readString(value, path),
};

/** D = Vec<u8>: raw bytes, written as serde writes Vec<u8> (an array of integers). */
export const byteVecPayload: PayloadCodec<Uint8Array> = {
  toMsgpack(data, path) {
    if (!(data instanceof Uint8Array)) throw new WireEncodeError('Uint8Array payload expected', path);
    return new ByteVec(data);
  },
  fromMsgpack: (value, path) => readByteVec(value, path),
};

/**
 * D kept as its msgpack structure, for application data the bridge does not
 * interpret (CoordiNode's own `Request { proposals }`). Re-encoding gives the
 * same bytes rmp-serde wrote, except where D holds f32 floats (read as
 * numbers, written back as f64) or whole floats (read as integers).
 */
export const msgpackValuePayload: PayloadCodec<MsgpackValue> = {
  toMsgpack: (data) => data,
  fromMsgpack: (value) => value,
};

// ---------------------------------------------------------------------------
// openraft types
// ---------------------------------------------------------------------------

/**
 * openraft's two leader-id implementations, which serialise differently.
 * - "adv" (openraft's default, used by CoordiNode): LeaderId = [term, node_id]
 *   and the CommittedLeaderId in log ids is the same pair. Two leaders may
 *   exist in one term (the leader id is term AND node).
 * - "std": LeaderId = [term, voted_for | nil], and CommittedLeaderId is the
 *   bare term, so LogId = [term, index]. At most one leader per term.
 */
export type LeaderIdMode = 'adv' | 'std';

export interface LeaderId {
  term: bigint;
  /** adv: the leader's node id (never null). std: the node voted for, or null. */
  nodeId: bigint | null;
}

/** The leader id stored in log ids. adv: term and node (nodeId never null). std: the term alone (nodeId always null). */
export interface CommittedLeaderId {
  term: bigint;
  nodeId: bigint | null;
}

export interface Vote {
  leaderId: LeaderId;
  /** True once a quorum granted this vote (the leader is established). */
  committed: boolean;
}

export interface LogId {
  leaderId: CommittedLeaderId;
  index: bigint;
}

export interface BasicNode {
  /** A URI such as `http://host:port`. */
  addr: string;
}

export interface Membership {
  /** Joint configurations: one set of voter ids each (ascending, no duplicates). Usually one. */
  configs: bigint[][];
  /** Every member, voter or learner, by node id. */
  nodes: Map<bigint, BasicNode>;
}

export type EntryPayload<D> =
  | { kind: 'blank' }
  | { kind: 'normal'; data: D }
  | { kind: 'membership'; membership: Membership };

export interface Entry<D> {
  logId: LogId;
  payload: EntryPayload<D>;
}

export interface VoteRequest {
  vote: Vote;
  lastLogId: LogId | null;
  /** Only carried in the 3-element layout (openraft alpha.25+), see {@link VoteRequestLayout}. */
  leadershipTransfer: boolean;
}

export interface VoteResponse {
  vote: Vote;
  voteGranted: boolean;
  lastLogId: LogId | null;
}

export interface AppendEntriesRequest<D> {
  vote: Vote;
  prevLogId: LogId | null;
  entries: Array<Entry<D>>;
  leaderCommit: LogId | null;
}

export type AppendEntriesResponse =
  | { type: 'success' }
  | { type: 'conflict' }
  /** Matched up to `matching` (null: nothing); the rest was not accepted. */
  | { type: 'partialSuccess'; matching: LogId | null }
  | { type: 'higherVote'; vote: Vote };

/** Why a StreamAppend ended: the follower's log conflicts at `logId`, or it has seen a higher vote. */
export type StreamAppendError = { type: 'conflict'; logId: LogId } | { type: 'higherVote'; vote: Vote };

/** One StreamAppend result frame: Result<Option<LogId>, StreamAppendError>. */
export type StreamAppendResult =
  | { ok: true; matching: LogId | null }
  | { ok: false; error: StreamAppendError };

export interface TransferLeaderRequest {
  fromLeader: Vote;
  toNodeId: bigint;
  lastLogId: LogId | null;
}

export interface SnapshotResponse {
  vote: Vote;
}

export interface StoredMembership {
  logId: LogId | null;
  membership: Membership;
}

export interface SnapshotMeta {
  lastLogId: LogId | null;
  lastMembership: StoredMembership;
  snapshotId: string;
}

/** CoordiNode's SnapshotTransferHeader: the first frame of a Snapshot stream. */
export interface SnapshotTransferHeader {
  vote: Vote;
  meta: SnapshotMeta;
  /** Total bytes of the DataChunk frames that follow. */
  dataSize: bigint;
  /** Set for an incremental snapshot (changes after this timestamp); null for a full one. */
  sinceTs: bigint | null;
}

/** CoordiNode's SnapshotChunkMessage: `{"Header": [...]}` then `{"DataChunk": [ints]}` frames. */
export type SnapshotChunkMessage =
  | { type: 'header'; header: SnapshotTransferHeader }
  | { type: 'dataChunk'; data: Uint8Array };

/**
 * VoteRequest has 3 elements from openraft alpha.25 on (leadership_transfer),
 * 2 before. Alpha.20 peers (CoordiNode up to v0.4.3) reject 3 elements;
 * alpha.25 accepts both. Decoding accepts both.
 */
export type VoteRequestLayout = 'with-leadership-transfer' | 'without-leadership-transfer';

/**
 * The SnapshotTransferHeader with since_ts (4 elements, what the protocol
 * notes describe) or without it (3 elements, as in the CoordiNode versions
 * whose header has no since_ts field). A full snapshot (sinceTs null) in
 * the 3-element layout is read by both kinds, since since_ts is
 * #[serde(default)] where it exists. Decoding accepts both.
 */
export type SnapshotHeaderLayout = 'with-since-ts' | 'without-since-ts';

// ---------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------

export interface CoordinodeCodec<D> {
  readonly leaderIdMode: LeaderIdMode;

  encodeLeaderId(value: LeaderId): Uint8Array;
  decodeLeaderId(bytes: Uint8Array): LeaderId;
  encodeVote(value: Vote): Uint8Array;
  decodeVote(bytes: Uint8Array): Vote;
  encodeLogId(value: LogId): Uint8Array;
  decodeLogId(bytes: Uint8Array): LogId;
  encodeEntry(value: Entry<D>): Uint8Array;
  decodeEntry(bytes: Uint8Array): Entry<D>;
  encodeMembership(value: Membership): Uint8Array;
  decodeMembership(bytes: Uint8Array): Membership;
  encodeBasicNode(value: BasicNode): Uint8Array;
  decodeBasicNode(bytes: Uint8Array): BasicNode;

  /** Default layout: with leadership_transfer (3 elements). */
  encodeVoteRequest(value: VoteRequest, options?: { layout?: VoteRequestLayout }): Uint8Array;
  /** Accepts 2 or 3 elements; leadershipTransfer is false when absent. */
  decodeVoteRequest(bytes: Uint8Array): VoteRequest;
  encodeVoteResponse(value: VoteResponse): Uint8Array;
  decodeVoteResponse(bytes: Uint8Array): VoteResponse;
  encodeAppendEntriesRequest(value: AppendEntriesRequest<D>): Uint8Array;
  decodeAppendEntriesRequest(bytes: Uint8Array): AppendEntriesRequest<D>;
  encodeAppendEntriesResponse(value: AppendEntriesResponse): Uint8Array;
  decodeAppendEntriesResponse(bytes: Uint8Array): AppendEntriesResponse;
  encodeStreamAppendResult(value: StreamAppendResult): Uint8Array;
  decodeStreamAppendResult(bytes: Uint8Array): StreamAppendResult;
  encodeTransferLeaderRequest(value: TransferLeaderRequest): Uint8Array;
  decodeTransferLeaderRequest(bytes: Uint8Array): TransferLeaderRequest;
  encodeSnapshotResponse(value: SnapshotResponse): Uint8Array;
  decodeSnapshotResponse(bytes: Uint8Array): SnapshotResponse;
  encodeStoredMembership(value: StoredMembership): Uint8Array;
  decodeStoredMembership(bytes: Uint8Array): StoredMembership;
  encodeSnapshotMeta(value: SnapshotMeta): Uint8Array;
  decodeSnapshotMeta(bytes: Uint8Array): SnapshotMeta;
  /** Default header layout: with since_ts (4 elements). */
  encodeSnapshotChunkMessage(value: SnapshotChunkMessage, options?: { headerLayout?: SnapshotHeaderLayout }): Uint8Array;
  /** Accepts a header of 3 or 4 elements. */
  decodeSnapshotChunkMessage(bytes: Uint8Array): SnapshotChunkMessage;
}

export interface CoordinodeCodecOptions<D> {
  leaderIdMode: LeaderIdMode;
  /** How Normal entries' data D is written; defaults to {@link stringPayload}. */
  payload?: PayloadCodec<D>;
}

/** Encoders throw WireEncodeError for values that cannot be written; decoders throw CoordinodeDecodeError. */
export function createCoordinodeCodec(options: { leaderIdMode: LeaderIdMode }): CoordinodeCodec<string>;
export function createCoordinodeCodec<D>(options: { leaderIdMode: LeaderIdMode; payload: PayloadCodec<D> }): CoordinodeCodec<D>;
export function createCoordinodeCodec<D>(options: CoordinodeCodecOptions<D>): CoordinodeCodec<D> {
  const mode = options.leaderIdMode;
  if (mode !== 'adv' && mode !== 'std') throw new TypeError(`leaderIdMode must be "adv" or "std", got ${String(mode)}`);
  const payload = options.payload ?? (stringPayload as unknown as PayloadCodec<D>);

  // ----- writing: typed value -> MsgpackValue -----

  function u64(value: bigint, path: string): bigint {
    if (typeof value !== 'bigint') throw new WireEncodeError(`u64 must be a bigint, got ${typeof value}`, path);
    if (value < 0n || value >= UINT64_LIMIT) throw new WireEncodeError(`u64 out of range: ${value}`, path);
    return value;
  }

  function object<T>(value: T, what: string, path: string): T {
    if (typeof value !== 'object' || value === null) throw new WireEncodeError(`${what} expected`, path);
    return value;
  }

  function bool(value: boolean, path: string): boolean {
    if (typeof value !== 'boolean') throw new WireEncodeError(`bool expected, got ${typeof value}`, path);
    return value;
  }

  function leaderIdOut(value: LeaderId, path: string): MsgpackValue {
    object(value, 'LeaderId', path);
    if (mode === 'adv') {
      if (value.nodeId === null) throw new WireEncodeError('an adv-mode LeaderId needs a nodeId', path);
      return [u64(value.term, `${path}.term`), u64(value.nodeId, `${path}.nodeId`)];
    }
    return [u64(value.term, `${path}.term`), value.nodeId === null ? null : u64(value.nodeId, `${path}.nodeId`)];
  }

  function committedLeaderIdOut(value: CommittedLeaderId, path: string): MsgpackValue {
    object(value, 'CommittedLeaderId', path);
    if (mode === 'adv') return leaderIdOut(value, path);
    // std: serde(transparent) over the term; a node id here would be silently lost.
    if (value.nodeId !== null) throw new WireEncodeError('a std-mode CommittedLeaderId is the term alone; nodeId must be null', path);
    return u64(value.term, `${path}.term`);
  }

  function voteOut(value: Vote, path: string): MsgpackValue {
    object(value, 'Vote', path);
    return [leaderIdOut(value.leaderId, `${path}.leaderId`), bool(value.committed, `${path}.committed`)];
  }

  function logIdOut(value: LogId, path: string): MsgpackValue {
    object(value, 'LogId', path);
    return [committedLeaderIdOut(value.leaderId, `${path}.leaderId`), u64(value.index, `${path}.index`)];
  }

  function optionalLogIdOut(value: LogId | null, path: string): MsgpackValue {
    return value === null ? null : logIdOut(value, path);
  }

  function basicNodeOut(value: BasicNode, path: string): MsgpackValue {
    object(value, 'BasicNode', path);
    if (typeof value.addr !== 'string') throw new WireEncodeError('BasicNode.addr must be a string', `${path}.addr`);
    return [value.addr];
  }

  /** BTreeSet<u64>: ascending, without duplicates. */
  function nodeSetOut(ids: bigint[], path: string): MsgpackValue {
    if (!Array.isArray(ids)) throw new WireEncodeError('array of node ids expected', path);
    const sorted = ids.map((id, i) => u64(id, `${path}[${i}]`)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return sorted.filter((id, i) => i === 0 || id !== sorted[i - 1]);
  }

  function membershipOut(value: Membership, path: string): MsgpackValue {
    object(value, 'Membership', path);
    if (!Array.isArray(value.configs)) throw new WireEncodeError('Membership.configs must be an array', `${path}.configs`);
    if (!(value.nodes instanceof Map)) throw new WireEncodeError('Membership.nodes must be a Map<bigint, BasicNode>', `${path}.nodes`);
    const configs = value.configs.map((config, i) => nodeSetOut(config, `${path}.configs[${i}]`));
    const nodes = [...value.nodes.entries()]
      .map(([id, node]): readonly [bigint, MsgpackValue] => [u64(id, `${path}.nodes`), basicNodeOut(node, `${path}.nodes[${String(id)}]`)])
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return [configs, new MsgpackMap(nodes)];
  }

  function entryOut(value: Entry<D>, path: string): MsgpackValue {
    object(value, 'Entry', path);
    const payloadPath = `${path}.payload`;
    const entryPayload = object(value.payload, 'EntryPayload', payloadPath);
    let payloadValue: MsgpackValue;
    switch (entryPayload.kind) {
      case 'blank':
        payloadValue = 'Blank';
        break;
      case 'normal':
        payloadValue = new MsgpackMap([['Normal', payload.toMsgpack(entryPayload.data, `${payloadPath}.data`)]]);
        break;
      case 'membership':
        payloadValue = new MsgpackMap([['Membership', membershipOut(entryPayload.membership, `${payloadPath}.membership`)]]);
        break;
      default:
        throw new WireEncodeError(`unknown EntryPayload kind ${String((entryPayload as { kind: unknown }).kind)}`, payloadPath);
    }
    return [logIdOut(value.logId, `${path}.logId`), payloadValue];
  }

  function storedMembershipOut(value: StoredMembership, path: string): MsgpackValue {
    object(value, 'StoredMembership', path);
    return [optionalLogIdOut(value.logId, `${path}.logId`), membershipOut(value.membership, `${path}.membership`)];
  }

  function snapshotMetaOut(value: SnapshotMeta, path: string): MsgpackValue {
    object(value, 'SnapshotMeta', path);
    if (typeof value.snapshotId !== 'string') throw new WireEncodeError('snapshotId must be a string', `${path}.snapshotId`);
    return [
      optionalLogIdOut(value.lastLogId, `${path}.lastLogId`),
      storedMembershipOut(value.lastMembership, `${path}.lastMembership`),
      value.snapshotId,
    ];
  }

  // ----- reading: raw decoded value -> typed value -----

  function leaderIdIn(raw: unknown, path: string): LeaderId {
    if (mode === 'adv') {
      const fields = readStruct(raw, path, 'LeaderId', [required('term'), required('node_id')]);
      return { term: readU64(fields[0], `${path}.term`), nodeId: readU64(fields[1], `${path}.node_id`) };
    }
    const fields = readStruct(raw, path, 'LeaderId', [required('term'), option('voted_for')]);
    return {
      term: readU64(fields[0], `${path}.term`),
      nodeId: readOption(fields[1] ?? null, `${path}.voted_for`, readU64),
    };
  }

  function committedLeaderIdIn(raw: unknown, path: string): CommittedLeaderId {
    if (mode === 'adv') return leaderIdIn(raw, path);
    return { term: readU64(raw, path), nodeId: null };
  }

  function voteIn(raw: unknown, path: string): Vote {
    const fields = readStruct(raw, path, 'Vote', [required('leader_id'), required('committed')]);
    return {
      leaderId: leaderIdIn(fields[0], `${path}.leader_id`),
      committed: readBool(fields[1], `${path}.committed`),
    };
  }

  function logIdIn(raw: unknown, path: string): LogId {
    const fields = readStruct(raw, path, 'LogId', [required('leader_id'), required('index')]);
    return {
      leaderId: committedLeaderIdIn(fields[0], `${path}.leader_id`),
      index: readU64(fields[1], `${path}.index`),
    };
  }

  /** An Option<LogId> field: absent (map form) or nil is None. */
  function optionalLogIdIn(raw: unknown, path: string): LogId | null {
    return readOption(raw ?? null, path, logIdIn);
  }

  function basicNodeIn(raw: unknown, path: string): BasicNode {
    const fields = readStruct(raw, path, 'BasicNode', [required('addr')]);
    return { addr: readString(fields[0], `${path}.addr`) };
  }

  /** BTreeSet<u64> from a sequence in any order; duplicates collapse, as inserting into a BTreeSet does. */
  function nodeSetIn(raw: unknown, path: string): bigint[] {
    const ids = readArray(raw, path).map((id, i) => readU64(id, `${path}[${i}]`));
    ids.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return ids.filter((id, i) => i === 0 || id !== ids[i - 1]);
  }

  function membershipIn(raw: unknown, path: string): Membership {
    const fields = readStruct(raw, path, 'Membership', [required('configs'), required('nodes')]);
    const configs = readArray(fields[0], `${path}.configs`).map((config, i) => nodeSetIn(config, `${path}.configs[${i}]`));
    const rawNodes = fields[1];
    const nodesPath = `${path}.nodes`;
    if (!isRawMap(rawNodes)) expected('map of node id to BasicNode', rawNodes, nodesPath);
    const entries = Object.entries(rawNodes).map(([tagged, node]): [bigint, BasicNode] => {
      if (!tagged.startsWith(INTEGER_KEY_TAG)) {
        fail(`node id keys must be integers, got ${tagged.startsWith(STRING_KEY_TAG) ? 'string' : 'float'} key ${tagged.slice(1)}`, nodesPath);
      }
      const id = BigInt(tagged.slice(INTEGER_KEY_TAG.length));
      if (id < 0n) fail(`node id key must be a u64, got ${id}`, nodesPath);
      return [id, basicNodeIn(node, `${nodesPath}[${id}]`)];
    });
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return { configs, nodes: new Map(entries) };
  }

  function entryIn(raw: unknown, path: string): Entry<D> {
    const fields = readStruct(raw, path, 'Entry', [required('log_id'), required('payload')]);
    const logId = logIdIn(fields[0], `${path}.log_id`);
    const payloadPath = `${path}.payload`;
    const variant = readEnum(fields[1], payloadPath, 'EntryPayload');
    let entryPayload: EntryPayload<D>;
    switch (variant.name) {
      case 'Blank':
        expectUnitVariant(variant, 'EntryPayload', payloadPath);
        entryPayload = { kind: 'blank' };
        break;
      case 'Normal': {
        const content = newtypeContent(variant, 'EntryPayload', payloadPath);
        entryPayload = { kind: 'normal', data: payload.fromMsgpack(toMsgpackValue(content, `${payloadPath}.Normal`), `${payloadPath}.Normal`) };
        break;
      }
      case 'Membership':
        entryPayload = { kind: 'membership', membership: membershipIn(newtypeContent(variant, 'EntryPayload', payloadPath), `${payloadPath}.Membership`) };
        break;
      default:
        return unknownVariant(variant, 'EntryPayload', ['Blank', 'Normal', 'Membership'], payloadPath);
    }
    return { logId, payload: entryPayload };
  }

  function storedMembershipIn(raw: unknown, path: string): StoredMembership {
    const fields = readStruct(raw, path, 'StoredMembership', [option('log_id'), required('membership')]);
    return {
      logId: optionalLogIdIn(fields[0], `${path}.log_id`),
      membership: membershipIn(fields[1], `${path}.membership`),
    };
  }

  function snapshotMetaIn(raw: unknown, path: string): SnapshotMeta {
    const fields = readStruct(raw, path, 'SnapshotMeta', [option('last_log_id'), required('last_membership'), required('snapshot_id')]);
    return {
      lastLogId: optionalLogIdIn(fields[0], `${path}.last_log_id`),
      lastMembership: storedMembershipIn(fields[1], `${path}.last_membership`),
      snapshotId: readString(fields[2], `${path}.snapshot_id`),
    };
  }

  // ----- top level -----

  function encodeWith<T>(rootName: string, write: (value: T, path: string) => MsgpackValue): (value: T) => Uint8Array {
    return (value) => encodeMsgpack(write(value, rootName));
  }

  function decodeWith<T>(rootName: string, read: (raw: unknown, path: string) => T): (bytes: Uint8Array) => T {
    return (bytes) => read(parseMsgpack(bytes), rootName);
  }

  function voteRequestOut(value: VoteRequest, layout: VoteRequestLayout): MsgpackValue {
    const path = 'VoteRequest';
    object(value, 'VoteRequest', path);
    const fields = [voteOut(value.vote, `${path}.vote`), optionalLogIdOut(value.lastLogId, `${path}.lastLogId`)];
    const transfer = bool(value.leadershipTransfer, `${path}.leadershipTransfer`);
    if (layout === 'with-leadership-transfer') return [...fields, transfer];
    if (layout !== 'without-leadership-transfer') throw new WireEncodeError(`unknown VoteRequest layout ${String(layout)}`, path);
    // Dropping a true flag would change what the receiver does (it would honour its leader lease).
    if (transfer) throw new WireEncodeError('leadershipTransfer cannot be sent in the 2-element layout (openraft alpha.20)', path);
    return fields;
  }

  function snapshotChunkOut(value: SnapshotChunkMessage, layout: SnapshotHeaderLayout): MsgpackValue {
    const path = 'SnapshotChunkMessage';
    object(value, 'SnapshotChunkMessage', path);
    if (value.type === 'dataChunk') {
      if (!(value.data instanceof Uint8Array)) throw new WireEncodeError('DataChunk data must be a Uint8Array', `${path}.data`);
      return new MsgpackMap([['DataChunk', new ByteVec(value.data)]]);
    }
    if (value.type !== 'header') throw new WireEncodeError(`unknown SnapshotChunkMessage type ${String((value as { type: unknown }).type)}`, path);
    const headerPath = `${path}.header`;
    const header = object(value.header, 'SnapshotTransferHeader', headerPath);
    const fields: MsgpackValue[] = [
      voteOut(header.vote, `${headerPath}.vote`),
      snapshotMetaOut(header.meta, `${headerPath}.meta`),
      u64(header.dataSize, `${headerPath}.dataSize`),
    ];
    const sinceTs = header.sinceTs === null ? null : u64(header.sinceTs, `${headerPath}.sinceTs`);
    if (layout === 'with-since-ts') fields.push(sinceTs);
    else if (layout !== 'without-since-ts') throw new WireEncodeError(`unknown snapshot header layout ${String(layout)}`, headerPath);
    else if (sinceTs !== null) throw new WireEncodeError('sinceTs (an incremental snapshot) needs the with-since-ts layout', headerPath);
    return new MsgpackMap([['Header', fields]]);
  }

  return {
    leaderIdMode: mode,

    encodeLeaderId: encodeWith('LeaderId', leaderIdOut),
    decodeLeaderId: decodeWith('LeaderId', leaderIdIn),
    encodeVote: encodeWith('Vote', voteOut),
    decodeVote: decodeWith('Vote', voteIn),
    encodeLogId: encodeWith('LogId', logIdOut),
    decodeLogId: decodeWith('LogId', logIdIn),
    encodeEntry: encodeWith('Entry', entryOut),
    decodeEntry: decodeWith('Entry', entryIn),
    encodeMembership: encodeWith('Membership', membershipOut),
    decodeMembership: decodeWith('Membership', membershipIn),
    encodeBasicNode: encodeWith('BasicNode', basicNodeOut),
    decodeBasicNode: decodeWith('BasicNode', basicNodeIn),

    encodeVoteRequest: (value, requestOptions) =>
      encodeMsgpack(voteRequestOut(value, requestOptions?.layout ?? 'with-leadership-transfer')),
    decodeVoteRequest: decodeWith('VoteRequest', (raw, path) => {
      const fields = readStruct(raw, path, 'VoteRequest', [required('vote'), option('last_log_id'), defaulted('leadership_transfer')]);
      const transfer = fields[2];
      return {
        vote: voteIn(fields[0], `${path}.vote`),
        lastLogId: optionalLogIdIn(fields[1], `${path}.last_log_id`),
        leadershipTransfer: transfer === undefined ? false : readBool(transfer, `${path}.leadership_transfer`),
      };
    }),

    encodeVoteResponse: encodeWith('VoteResponse', (value, path) => {
      object(value, 'VoteResponse', path);
      return [
        voteOut(value.vote, `${path}.vote`),
        bool(value.voteGranted, `${path}.voteGranted`),
        optionalLogIdOut(value.lastLogId, `${path}.lastLogId`),
      ];
    }),
    decodeVoteResponse: decodeWith('VoteResponse', (raw, path) => {
      const fields = readStruct(raw, path, 'VoteResponse', [required('vote'), required('vote_granted'), option('last_log_id')]);
      return {
        vote: voteIn(fields[0], `${path}.vote`),
        voteGranted: readBool(fields[1], `${path}.vote_granted`),
        lastLogId: optionalLogIdIn(fields[2], `${path}.last_log_id`),
      };
    }),

    encodeAppendEntriesRequest: encodeWith('AppendEntriesRequest', (value, path) => {
      object(value, 'AppendEntriesRequest', path);
      if (!Array.isArray(value.entries)) throw new WireEncodeError('entries must be an array', `${path}.entries`);
      return [
        voteOut(value.vote, `${path}.vote`),
        optionalLogIdOut(value.prevLogId, `${path}.prevLogId`),
        value.entries.map((entry, i) => entryOut(entry, `${path}.entries[${i}]`)),
        optionalLogIdOut(value.leaderCommit, `${path}.leaderCommit`),
      ];
    }),
    decodeAppendEntriesRequest: decodeWith('AppendEntriesRequest', (raw, path) => {
      const fields = readStruct(raw, path, 'AppendEntriesRequest', [
        required('vote'),
        option('prev_log_id'),
        required('entries'),
        option('leader_commit'),
      ]);
      return {
        vote: voteIn(fields[0], `${path}.vote`),
        prevLogId: optionalLogIdIn(fields[1], `${path}.prev_log_id`),
        entries: readArray(fields[2], `${path}.entries`).map((entry, i) => entryIn(entry, `${path}.entries[${i}]`)),
        leaderCommit: optionalLogIdIn(fields[3], `${path}.leader_commit`),
      };
    }),

    encodeAppendEntriesResponse: encodeWith('AppendEntriesResponse', (value, path) => {
      object(value, 'AppendEntriesResponse', path);
      switch (value.type) {
        case 'success': return 'Success';
        case 'conflict': return 'Conflict';
        case 'partialSuccess': return new MsgpackMap([['PartialSuccess', optionalLogIdOut(value.matching, `${path}.matching`)]]);
        case 'higherVote': return new MsgpackMap([['HigherVote', voteOut(value.vote, `${path}.vote`)]]);
        default: throw new WireEncodeError(`unknown AppendEntriesResponse type ${String((value as { type: unknown }).type)}`, path);
      }
    }),
    decodeAppendEntriesResponse: decodeWith('AppendEntriesResponse', (raw, path): AppendEntriesResponse => {
      const typeName = 'AppendEntriesResponse';
      const variant = readEnum(raw, path, typeName);
      switch (variant.name) {
        case 'Success':
          expectUnitVariant(variant, typeName, path);
          return { type: 'success' };
        case 'Conflict':
          expectUnitVariant(variant, typeName, path);
          return { type: 'conflict' };
        case 'PartialSuccess':
          return { type: 'partialSuccess', matching: optionalLogIdIn(newtypeContent(variant, typeName, path), `${path}.PartialSuccess`) };
        case 'HigherVote':
          return { type: 'higherVote', vote: voteIn(newtypeContent(variant, typeName, path), `${path}.HigherVote`) };
        default:
          return unknownVariant(variant, typeName, ['Success', 'Conflict', 'PartialSuccess', 'HigherVote'], path);
      }
    }),

    encodeStreamAppendResult: encodeWith('StreamAppendResult', (value, path) => {
      object(value, 'StreamAppendResult', path);
      if (value.ok === true) return new MsgpackMap([['Ok', optionalLogIdOut(value.matching, `${path}.matching`)]]);
      if (value.ok !== false) throw new WireEncodeError('StreamAppendResult.ok must be a boolean', path);
      const error = object(value.error, 'StreamAppendError', `${path}.error`);
      switch (error.type) {
        case 'conflict': return new MsgpackMap([['Err', new MsgpackMap([['Conflict', logIdOut(error.logId, `${path}.error.logId`)]])]]);
        case 'higherVote': return new MsgpackMap([['Err', new MsgpackMap([['HigherVote', voteOut(error.vote, `${path}.error.vote`)]])]]);
        default: throw new WireEncodeError(`unknown StreamAppendError type ${String((error as { type: unknown }).type)}`, `${path}.error`);
      }
    }),
    decodeStreamAppendResult: decodeWith('StreamAppendResult', (raw, path): StreamAppendResult => {
      const result = readEnum(raw, path, 'Result');
      if (result.name === 'Ok') {
        return { ok: true, matching: optionalLogIdIn(newtypeContent(result, 'Result', path), `${path}.Ok`) };
      }
      if (result.name !== 'Err') return unknownVariant(result, 'Result', ['Ok', 'Err'], path);
      const errorPath = `${path}.Err`;
      const error = readEnum(newtypeContent(result, 'Result', path), errorPath, 'StreamAppendError');
      switch (error.name) {
        case 'Conflict':
          return { ok: false, error: { type: 'conflict', logId: logIdIn(newtypeContent(error, 'StreamAppendError', errorPath), `${errorPath}.Conflict`) } };
        case 'HigherVote':
          return { ok: false, error: { type: 'higherVote', vote: voteIn(newtypeContent(error, 'StreamAppendError', errorPath), `${errorPath}.HigherVote`) } };
        default:
          return unknownVariant(error, 'StreamAppendError', ['Conflict', 'HigherVote'], errorPath);
      }
    }),

    encodeTransferLeaderRequest: encodeWith('TransferLeaderRequest', (value, path) => {
      object(value, 'TransferLeaderRequest', path);
      return [
        voteOut(value.fromLeader, `${path}.fromLeader`),
        u64(value.toNodeId, `${path}.toNodeId`),
        optionalLogIdOut(value.lastLogId, `${path}.lastLogId`),
      ];
    }),
    decodeTransferLeaderRequest: decodeWith('TransferLeaderRequest', (raw, path) => {
      const fields = readStruct(raw, path, 'TransferLeaderRequest', [required('from_leader'), required('to_node_id'), option('last_log_id')]);
      return {
        fromLeader: voteIn(fields[0], `${path}.from_leader`),
        toNodeId: readU64(fields[1], `${path}.to_node_id`),
        lastLogId: optionalLogIdIn(fields[2], `${path}.last_log_id`),
      };
    }),

    encodeSnapshotResponse: encodeWith('SnapshotResponse', (value, path) => {
      object(value, 'SnapshotResponse', path);
      return [voteOut(value.vote, `${path}.vote`)];
    }),
    decodeSnapshotResponse: decodeWith('SnapshotResponse', (raw, path) => {
      const fields = readStruct(raw, path, 'SnapshotResponse', [required('vote')]);
      return { vote: voteIn(fields[0], `${path}.vote`) };
    }),

    encodeStoredMembership: encodeWith('StoredMembership', storedMembershipOut),
    decodeStoredMembership: decodeWith('StoredMembership', storedMembershipIn),
    encodeSnapshotMeta: encodeWith('SnapshotMeta', snapshotMetaOut),
    decodeSnapshotMeta: decodeWith('SnapshotMeta', snapshotMetaIn),

    encodeSnapshotChunkMessage: (value, chunkOptions) =>
      encodeMsgpack(snapshotChunkOut(value, chunkOptions?.headerLayout ?? 'with-since-ts')),
    decodeSnapshotChunkMessage: decodeWith('SnapshotChunkMessage', (raw, path): SnapshotChunkMessage => {
      const typeName = 'SnapshotChunkMessage';
      const variant = readEnum(raw, path, typeName);
      if (variant.name === 'DataChunk') {
        return { type: 'dataChunk', data: readByteVec(newtypeContent(variant, typeName, path), `${path}.DataChunk`) };
      }
      if (variant.name !== 'Header') return unknownVariant(variant, typeName, ['Header', 'DataChunk'], path);
      const headerPath = `${path}.Header`;
      const fields = readStruct(newtypeContent(variant, typeName, path), headerPath, 'SnapshotTransferHeader', [
        required('vote'),
        required('meta'),
        required('data_size'),
        defaulted('since_ts'),
      ]);
      return {
        type: 'header',
        header: {
          vote: voteIn(fields[0], `${headerPath}.vote`),
          meta: snapshotMetaIn(fields[1], `${headerPath}.meta`),
          dataSize: readU64(fields[2], `${headerPath}.data_size`),
          sinceTs: readOption(fields[3] ?? null, `${headerPath}.since_ts`, readU64),
        },
      };
    }),
  };
}

// ---------------------------------------------------------------------------
// RaftPayload / RaftEmpty protobuf wrappers
// ---------------------------------------------------------------------------

/**
 * protobuf `RaftPayload { bytes data = 1; }`: 0x0a, varint length, the bytes;
 * an empty payload is zero bytes (proto3 omits default values).
 */
export function encodeRaftPayload(data: Uint8Array): Uint8Array {
  if (!(data instanceof Uint8Array)) throw new WireEncodeError('RaftPayload data must be a Uint8Array', 'RaftPayload');
  if (data.length === 0) return new Uint8Array(0);
  const header: number[] = [0x0a];
  let length = data.length;
  while (length >= 0x80) {
    header.push((length & 0x7f) | 0x80);
    length = Math.floor(length / 128);
  }
  header.push(length);
  const out = new Uint8Array(header.length + data.length);
  out.set(header);
  out.set(data, header.length);
  return out;
}

/** RaftEmpty has no fields: zero bytes. */
export function encodeRaftEmpty(): Uint8Array {
  return new Uint8Array(0);
}

interface ProtobufField {
  readonly fieldNumber: number;
  readonly wireType: number;
  /** For length-delimited fields, the field's bytes. */
  readonly bytes: Uint8Array | null;
}

/** Reads a varint at `pos` and returns [value, next position]. Values up to 2^64 - 1; longer or truncated varints are errors. */
function readVarint(bytes: Uint8Array, pos: number, path: string): [bigint, number] {
  let value = 0n;
  for (let i = 0; i < 10; i++) {
    const byte = bytes[pos + i];
    if (byte === undefined) fail('truncated varint', path);
    if (i === 9 && byte > 1) fail('varint overflows 64 bits', path);
    value |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if (byte < 0x80) return [value, pos + i + 1];
  }
  return fail('varint longer than 10 bytes', path);
}

/**
 * Splits a protobuf message into fields, skipping the contents of varint,
 * fixed64 and fixed32 fields. Groups (wire types 3 and 4, never produced by
 * proto3) are refused.
 */
function readProtobufFields(bytes: Uint8Array, path: string): ProtobufField[] {
  if (!(bytes instanceof Uint8Array)) fail('input must be a Uint8Array', path);
  const fields: ProtobufField[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const [key, afterKey] = readVarint(bytes, pos, path);
    const fieldNumber = Number(key >> 3n);
    const wireType = Number(key & 7n);
    if (fieldNumber === 0 || key >> 3n > 0x1fffffffn) fail(`invalid field number ${key >> 3n}`, path);
    pos = afterKey;
    switch (wireType) {
      case 0:
        pos = readVarint(bytes, pos, path)[1];
        fields.push({ fieldNumber, wireType, bytes: null });
        break;
      case 1:
        if (pos + 8 > bytes.length) fail('truncated fixed64 field', path);
        pos += 8;
        fields.push({ fieldNumber, wireType, bytes: null });
        break;
      case 2: {
        const [length, afterLength] = readVarint(bytes, pos, path);
        if (length > BigInt(bytes.length - afterLength)) fail(`field ${fieldNumber} claims ${length} bytes, ${bytes.length - afterLength} left`, path);
        pos = afterLength + Number(length);
        fields.push({ fieldNumber, wireType, bytes: bytes.slice(afterLength, pos) });
        break;
      }
      case 5:
        if (pos + 4 > bytes.length) fail('truncated fixed32 field', path);
        pos += 4;
        fields.push({ fieldNumber, wireType, bytes: null });
        break;
      default:
        fail(`unsupported protobuf wire type ${wireType}`, path);
    }
  }
  return fields;
}

/** The `data` of a RaftPayload. Unknown fields are skipped; if `data` repeats, the last one wins, as in protobuf. */
export function decodeRaftPayload(bytes: Uint8Array): Uint8Array {
  const path = 'RaftPayload';
  let data: Uint8Array = new Uint8Array(0);
  for (const field of readProtobufFields(bytes, path)) {
    if (field.fieldNumber !== 1) continue;
    if (field.wireType !== 2 || field.bytes === null) fail(`field data (1) must be length-delimited, got wire type ${field.wireType}`, path);
    data = field.bytes;
  }
  return data;
}

/** Checks that `bytes` is a well-formed RaftEmpty (no known fields; unknown ones are skipped). */
export function decodeRaftEmpty(bytes: Uint8Array): void {
  readProtobufFields(bytes, 'RaftEmpty');
}
