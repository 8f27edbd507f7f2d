/**
 * What goes on the wire between rale sidecars (see proto/rale_peer.proto):
 * every gRPC message is a protobuf message with a single `bytes` field 1
 * whose content is msgpack. This module holds the protobuf framing of that
 * one field (written by hand: a tag byte, a varint length, the bytes), the
 * msgpack encoding, the service definition for grpc-js, the metadata keys,
 * and how errors travel.
 *
 * Decoding never throws into grpc-js: a deserializer that throws makes
 * grpc-js answer INTERNAL, and a peer's garbage must get INVALID_ARGUMENT.
 * So the deserializer returns BROKEN_FRAME for broken framing and the
 * handlers decide.
 */
import * as grpc from '@grpc/grpc-js';
import { Decoder, Encoder } from '@msgpack/msgpack';
import { ErrorCodes, RaleError, type ErrorCode } from '../errors.ts';
import type { NodeId } from '../core/types.ts';

export const SERVICE_NAME = 'rale.peer.v1.RalePeer';
export const PROTOCOL_VERSION = '1';

export const METHOD = {
  raftStream: `/${SERVICE_NAME}/RaftStream`,
  call: `/${SERVICE_NAME}/Call`,
  chunkedCall: `/${SERVICE_NAME}/ChunkedCall`,
} as const;

/** Request metadata every call carries, and the trailer that carries a remote error. */
export const MD = {
  secret: 'rale-cluster-secret',
  nodeId: 'rale-node-id',
  target: 'rale-target-id',
  protocol: 'rale-peer-protocol',
  /** The caller's cluster id (node/cluster-id.ts), when it has one. */
  clusterId: 'rale-cluster-id',
  error: 'rale-error-bin',
} as const;

// ---------------------------------------------------------------- protobuf framing of field 1

/** An outgoing frame: pieces concatenated into the one bytes field (saves a copy when wrapping pre-encoded msgpack). */
export type OutFrame = readonly Uint8Array[];
/**
 * Stands for a message whose protobuf framing is broken. Not null: grpc-js
 * takes a null request for a missing one (UNIMPLEMENTED), and a null pushed
 * into a stream for its end.
 */
export const BROKEN_FRAME: unique symbol = Symbol('broken protobuf frame');
/** An incoming frame: the bytes of field 1, or BROKEN_FRAME. */
export type InFrame = Uint8Array | typeof BROKEN_FRAME;

/** Room for the protobuf tag and length and the msgpack wrapping around a payload. */
export const FRAME_OVERHEAD = 1024;

function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** `{ bytes msgpack = 1; }`: 0x0a, varint length, the bytes. Proto3 omits an empty field, hence the empty message for no bytes. */
export function encodeFrame(parts: OutFrame): Buffer {
  let length = 0;
  for (const p of parts) length += p.length;
  if (length === 0) return Buffer.alloc(0);
  const out = Buffer.allocUnsafe(1 + varintLength(length) + length);
  let pos = 0;
  out[pos++] = 0x0a;
  let n = length;
  while (n >= 0x80) {
    out[pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[pos++] = n;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Reads a varint as a number (exact to 2^53); null when truncated or longer than 8 bytes (no valid length needs more). */
function readVarint(bytes: Uint8Array, pos: number): [number, number] | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 8; i++) {
    const b = bytes[pos + i];
    if (b === undefined) return null;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos + i + 1];
    scale *= 128;
  }
  return null;
}

/**
 * Field 1 of a protobuf message, as a plain Uint8Array view (not a Buffer, so
 * that msgpack bins decoded from it are plain Uint8Arrays too). As protobuf
 * does: unknown fields are skipped, a repeated field 1 keeps the last value,
 * a missing one is empty. BROKEN_FRAME when the framing is broken.
 */
export function decodeFrame(buffer: Uint8Array): InFrame {
  return fieldOne(new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)) ?? BROKEN_FRAME;
}

function fieldOne(bytes: Uint8Array): Uint8Array | null {
  let payload: Uint8Array = new Uint8Array(0);
  let pos = 0;
  while (pos < bytes.length) {
    const key = readVarint(bytes, pos);
    if (key === null) return null;
    const [tag, afterKey] = key;
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (field === 0) return null;
    pos = afterKey;
    switch (wireType) {
      case 0: {
        // varint: skip up to 10 bytes
        let i = 0;
        while (i < 10 && (bytes[pos + i] ?? 0) >= 0x80) i++;
        if (i === 10 || pos + i >= bytes.length) return null;
        pos += i + 1;
        break;
      }
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2: {
        const len = readVarint(bytes, pos);
        if (len === null || len[1] + len[0] > bytes.length) return null;
        if (field === 1) payload = bytes.subarray(len[1], len[1] + len[0]);
        pos = len[1] + len[0];
        break;
      }
      default:
        return null;
    }
    if (pos > bytes.length) return null;
    if (field === 1 && wireType !== 2) return null;
  }
  return payload;
}

/** A method of the peer service: frames are written as pieces and read as the field's bytes (or BROKEN_FRAME). */
export interface PeerMethod {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize: (value: OutFrame) => Buffer;
  requestDeserialize: (bytes: Buffer) => InFrame;
  responseSerialize: (value: OutFrame) => Buffer;
  responseDeserialize: (bytes: Buffer) => InFrame;
}

function definition(path: string, requestStream: boolean, responseStream: boolean): PeerMethod {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: encodeFrame,
    requestDeserialize: decodeFrame,
    responseSerialize: encodeFrame,
    responseDeserialize: decodeFrame,
  };
}

/** The peer service for grpc-js: same framing both ways, msgpack inside. */
export const PEER_SERVICE = {
  RaftStream: definition(METHOD.raftStream, true, true),
  Call: definition(METHOD.call, false, false),
  ChunkedCall: definition(METHOD.chunkedCall, true, false),
} satisfies grpc.ServiceDefinition;

// ---------------------------------------------------------------- msgpack

/** `ignoreUndefined`: an optional field left undefined is absent on the other side, not null. */
const encoder = new Encoder({ ignoreUndefined: true });

/** msgpack of `value`. Throws for what msgpack cannot carry (functions, symbols, bigints beyond 64 bits). */
export function pack(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/** A value already encoded as msgpack, to splice into a map without decoding and re-encoding it. */
export class Packed {
  constructor(readonly parts: readonly Uint8Array[]) {}
}

/** msgpack bin header + the bytes, without copying them. */
export function packedBin(data: Uint8Array): Packed {
  const n = data.length;
  let header: Uint8Array;
  if (n < 0x100) header = Uint8Array.of(0xc4, n);
  else if (n < 0x10000) header = Uint8Array.of(0xc5, n >> 8, n & 0xff);
  else header = Uint8Array.of(0xc6, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  return new Packed([header, data]);
}

/** A msgpack map of at most 15 string keys as frame pieces; `Packed` values are spliced in as they are. */
export function packMap(entries: ReadonlyArray<readonly [string, unknown]>): Uint8Array[] {
  if (entries.length > 15) throw new Error('packMap writes fixmaps only');
  const parts: Uint8Array[] = [Uint8Array.of(0x80 | entries.length)];
  for (const [key, value] of entries) {
    parts.push(encoder.encode(key));
    if (value instanceof Packed) parts.push(...value.parts);
    else parts.push(encoder.encode(value));
  }
  return parts;
}

/**
 * A msgpack decoder bounded by `maxBytes`: no string, bin, array or map may
 * claim more elements than the limit, so a forged length cannot make it
 * allocate. Throws on anything that is not exactly one msgpack value.
 */
export function makeUnpacker(maxBytes: number): (bytes: Uint8Array) => unknown {
  const limit = Math.min(maxBytes, 0xffffffff);
  const decoder = new Decoder({ maxStrLength: limit, maxBinLength: limit, maxArrayLength: limit, maxMapLength: limit, maxExtLength: limit });
  return (bytes) => decoder.decode(bytes);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

// ---------------------------------------------------------------- errors on the wire

/** The gRPC status a RaleError travels under (for gRPC-level observers; the trailer carries the exact error). */
const STATUS_OF: Record<ErrorCode, grpc.status> = {
  NOT_LEADER: grpc.status.FAILED_PRECONDITION,
  NO_LEADER: grpc.status.UNAVAILABLE,
  TRANSFER_IN_PROGRESS: grpc.status.UNAVAILABLE,
  ENTRY_TOO_LARGE: grpc.status.INVALID_ARGUMENT,
  CONFIG_CHANGE_PENDING: grpc.status.FAILED_PRECONDITION,
  INVALID_CONFIG_CHANGE: grpc.status.FAILED_PRECONDITION,
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  PROPOSAL_DROPPED: grpc.status.ABORTED,
  APPLY_FAILED: grpc.status.FAILED_PRECONDITION,
  TIMEOUT: grpc.status.DEADLINE_EXCEEDED,
  STOPPED: grpc.status.UNAVAILABLE,
  STORAGE: grpc.status.INTERNAL,
};

/** The status for an error thrown by the local handler: the error itself rides in the `rale-error-bin` trailer. */
export function handlerErrorStatus(err: unknown): grpc.StatusObject {
  const metadata = new grpc.Metadata();
  const error = err instanceof Error ? err : new Error(String(err));
  let body: Uint8Array;
  if (error instanceof RaleError) {
    try {
      body = pack({ code: error.code, message: error.message, details: error.details });
    } catch {
      body = pack({ code: error.code, message: error.message });
    }
  } else {
    body = pack({ name: error.name, message: error.message });
  }
  metadata.set(MD.error, Buffer.from(body.buffer, body.byteOffset, body.byteLength));
  const code = error instanceof RaleError ? STATUS_OF[error.code] : grpc.status.UNKNOWN;
  return { code, details: error.message, metadata };
}

/** The same error as a plain msgpack value (for the acknowledgement frames of the raft stream). */
export function errorBody(err: unknown): Record<string, unknown> {
  if (err instanceof RaleError) return { code: err.code, message: err.message, details: err.details };
  const error = err instanceof Error ? err : new Error(String(err));
  return { name: error.name, message: error.message };
}

/**
 * A gRPC-level failure that is not one of rale's errors: the peer refused
 * the call (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...), or
 * its handler threw something other than a RaleError (`remoteName` set).
 */
export class GrpcPeerError extends Error {
  readonly grpcCode: grpc.status;
  readonly peer: NodeId;
  readonly remoteName: string | undefined;

  constructor(grpcCode: grpc.status, peer: NodeId, message: string, remoteName?: string) {
    super(message);
    this.name = 'GrpcPeerError';
    this.grpcCode = grpcCode;
    this.peer = peer;
    this.remoteName = remoteName;
  }

  get grpcStatus(): string {
    return grpc.status[this.grpcCode] ?? String(this.grpcCode);
  }
}

const unpackError = makeUnpacker(1 << 20);

/** Rebuilds an error from the body written by handlerErrorStatus/errorBody; null if it is not one. */
export function errorFromBody(body: unknown, peer: NodeId, grpcCode: grpc.status): Error | null {
  if (!isPlainObject(body) || typeof body.message !== 'string') return null;
  if (typeof body.code === 'string' && Object.hasOwn(ErrorCodes, body.code)) {
    const details = isPlainObject(body.details) ? body.details : {};
    return new RaleError(body.code as ErrorCode, body.message, details);
  }
  const name = typeof body.name === 'string' ? body.name : 'Error';
  return new GrpcPeerError(grpcCode, peer, `node ${peer}: ${body.message}`, name);
}

/** The remote error carried by a failed call's trailer, or null when the failure is the transport's own. */
export function errorFromTrailer(err: grpc.ServiceError, peer: NodeId): Error | null {
  const raw = err.metadata?.get(MD.error)[0];
  if (!(raw instanceof Uint8Array)) return null;
  try {
    return errorFromBody(unpackError(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)), peer, err.code);
  } catch {
    return null;
  }
}
