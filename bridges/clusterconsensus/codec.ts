/**
 * clusterconsensus wire codec: the JSON bodies of its HTTP transport
 * (`POST /_clusterc/<clusterId>/<op>`), see docs/protocols/clusterconsensus.md.
 *
 * The Go structs have no json tags, so the keys (and the property names here)
 * are the Go field names, in Go declaration order. The seed README's names
 * (`seq`, `chg`, `snap`, `acceptedInstance`, `fail`, `mem: {addr}`) are NOT
 * what the code reads or writes; decoding ignores them like the real server.
 *
 * Representation:
 * - Instance, Sequence and PrepareResponse.Accepted (u64) are JS numbers;
 *   decoding rejects negatives, fractions, exponents and values above 2^53 - 1.
 * - Go []byte is `Uint8Array | null` (null = nil slice, written `null`).
 * - Go [][]byte (Changes) is `Array<Uint8Array | null> | null`.
 *
 * Decoding follows Go's json.Unmarshal (../shared/go-json.ts): keys match
 * case-insensitively, unknown keys are ignored, missing fields are zero,
 * wrong JSON types are a {@link ClusterConsensusDecodeError}.
 */

import {
  decodeGoJson,
  encodeGoJson,
  GoJsonDecodeFailure,
  goBool,
  goBytes,
  goField,
  goSlice,
  goString,
  goStruct,
  goUint64,
  type GoType,
} from '../shared/go-json.ts';
import { WireDecodeError } from '../shared/wire-errors.ts';

/** A clusterconsensus body could not be decoded; `path` says which field, `reason` what was wrong. */
export class ClusterConsensusDecodeError extends WireDecodeError {
  constructor(reason: string, path = '') {
    super(reason, path);
    this.name = 'ClusterConsensusDecodeError';
  }
}

// ---------------------------------------------------------------------------
// Errors carried in bodies
// ---------------------------------------------------------------------------

/** Every ERR_* code of clusterconsensus. */
export const ERROR_CODES = [
  'ERR_CALL',
  'ERR_IO',
  'ERR_ENCODING',
  'ERR_STATE',
  'ERR_MAJORITY',
  'ERR_DENIED',
  'ERR_SEQUENCE',
  'ERR_GAP',
  'ERR_CONNECT',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The codes for which retrying later makes sense (ConsensusError.Retryable). */
export const RETRYABLE_ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_STATE', 'ERR_CALL', 'ERR_MAJORITY']);

export function isErrorCode(code: string): code is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code);
}

/** True for ERR_STATE, ERR_CALL and ERR_MAJORITY; false for every other code, known or not. */
export function isRetryable(code: string): boolean {
  return isErrorCode(code) && RETRYABLE_ERROR_CODES.has(code);
}

/** JSONAddress: a member's base URL, e.g. `http://127.0.0.1:9001`. */
export interface Address {
  Addr: string;
}

/**
 * JSONErr. `Code` is an ERR_* code or "" for no error; `Err` is the Go
 * error's text, `<CODE>: <description>`. Unknown codes decode as they are.
 */
export interface Err {
  Code: string;
  Err: string;
}

/** The Err of a successful answer (Go's zero JSONErr). */
export const NO_ERR: Readonly<Err> = Object.freeze({ Code: '', Err: '' });

/** An Err as the reference builds it: `Err` is the code, a colon, then the description. */
export function makeErr(code: ErrorCode, description: string): Err {
  return { Code: code, Err: `${code}: ${description}` };
}

export function isNoErr(err: Err): boolean {
  return err.Code === '' && err.Err === '';
}

// ---------------------------------------------------------------------------
// Messages (Go field names, Go declaration order)
// ---------------------------------------------------------------------------

export interface PrepareRequest {
  Instance: number;
  /** The candidate master. */
  Master: Address;
}

export interface PrepareResponse {
  /** The instance the participant now holds; above the requested one means denied. */
  Accepted: number;
  Err: Err;
}

export interface AcceptRequest {
  Instance: number;
  Sequence: number;
  /** Opaque changes; an accept with none is a pure commit. */
  Changes: Array<Uint8Array | null> | null;
}

/** Body of both addmember and rmmember. */
export interface ChangeMemberRequest {
  Instance: number;
  Sequence: number;
  Mem: Address;
}

export interface StartParticipationRequest {
  Instance: number;
  Sequence: number;
  Cluster: string;
  /** The new participant (not the sender). */
  Self: Address;
  Master: Address;
  Participants: Address[] | null;
  /** State machine snapshot, opaque. */
  Snapshot: Uint8Array | null;
}

export interface SubmitRequest {
  Changes: Array<Uint8Array | null> | null;
}

/** Answer of accept, addmember, rmmember, start and submit. */
export interface GenericResponse {
  Accepted: boolean;
  Err: Err;
}

const addressType = goStruct<Address>('JSONAddress', { Addr: goField(goString) });

const errType = goStruct<Err>('JSONErr', {
  Code: goField(goString),
  Err: goField(goString),
});

const changesType = goSlice(goBytes);

const prepareRequestType = goStruct<PrepareRequest>('PrepareRequest', {
  Instance: goField(goUint64),
  Master: goField(addressType),
});

const prepareResponseType = goStruct<PrepareResponse>('PrepareResponse', {
  Accepted: goField(goUint64),
  Err: goField(errType),
});

const acceptRequestType = goStruct<AcceptRequest>('AcceptRequest', {
  Instance: goField(goUint64),
  Sequence: goField(goUint64),
  Changes: goField(changesType),
});

const changeMemberRequestType = goStruct<ChangeMemberRequest>('ChangeMemberRequest', {
  Instance: goField(goUint64),
  Sequence: goField(goUint64),
  Mem: goField(addressType),
});

const startParticipationRequestType = goStruct<StartParticipationRequest>('StartParticipationRequest', {
  Instance: goField(goUint64),
  Sequence: goField(goUint64),
  Cluster: goField(goString),
  Self: goField(addressType),
  Master: goField(addressType),
  Participants: goField(goSlice(addressType)),
  Snapshot: goField(goBytes),
});

const submitRequestType = goStruct<SubmitRequest>('SubmitRequest', {
  Changes: goField(changesType),
});

const genericResponseType = goStruct<GenericResponse>('GenericResponse', {
  Accepted: goField(goBool),
  Err: goField(errType),
});

function decodeWith<T>(type: GoType<T>, input: string | Uint8Array): T {
  try {
    return decodeGoJson(type, input);
  } catch (error) {
    if (error instanceof GoJsonDecodeFailure) throw new ClusterConsensusDecodeError(error.reason, error.path);
    throw error;
  }
}

// Encoders throw WireEncodeError for values Go could not hold.

export const encodeAddress = (value: Address): string => encodeGoJson(addressType, value);
export const decodeAddress = (input: string | Uint8Array): Address => decodeWith(addressType, input);

export const encodeErr = (value: Err): string => encodeGoJson(errType, value);
export const decodeErr = (input: string | Uint8Array): Err => decodeWith(errType, input);

export const encodePrepareRequest = (value: PrepareRequest): string => encodeGoJson(prepareRequestType, value);
export const decodePrepareRequest = (input: string | Uint8Array): PrepareRequest => decodeWith(prepareRequestType, input);

export const encodePrepareResponse = (value: PrepareResponse): string => encodeGoJson(prepareResponseType, value);
export const decodePrepareResponse = (input: string | Uint8Array): PrepareResponse => decodeWith(prepareResponseType, input);

export const encodeAcceptRequest = (value: AcceptRequest): string => encodeGoJson(acceptRequestType, value);
export const decodeAcceptRequest = (input: string | Uint8Array): AcceptRequest => decodeWith(acceptRequestType, input);

export const encodeChangeMemberRequest = (value: ChangeMemberRequest): string => encodeGoJson(changeMemberRequestType, value);
export const decodeChangeMemberRequest = (input: string | Uint8Array): ChangeMemberRequest => decodeWith(changeMemberRequestType, input);

export const encodeStartParticipationRequest = (value: StartParticipationRequest): string =>
  encodeGoJson(startParticipationRequestType, value);
export const decodeStartParticipationRequest = (input: string | Uint8Array): StartParticipationRequest =>
  decodeWith(startParticipationRequestType, input);

export const encodeSubmitRequest = (value: SubmitRequest): string => encodeGoJson(submitRequestType, value);
export const decodeSubmitRequest = (input: string | Uint8Array): SubmitRequest => decodeWith(submitRequestType, input);

export const encodeGenericResponse = (value: GenericResponse): string => encodeGoJson(genericResponseType, value);
export const decodeGenericResponse = (input: string | Uint8Array): GenericResponse => decodeWith(genericResponseType, input);

// ---------------------------------------------------------------------------
// Request bodies by operation, and the bare Err of an HTTP 500
// ---------------------------------------------------------------------------

/** The last path segment of `POST /_clusterc/<clusterId>/<op>`. */
export type Operation = 'prepare' | 'accept' | 'addmember' | 'rmmember' | 'start' | 'submit';

export type OperationRequest =
  | { op: 'prepare'; request: PrepareRequest }
  | { op: 'accept'; request: AcceptRequest }
  | { op: 'addmember'; request: ChangeMemberRequest }
  | { op: 'rmmember'; request: ChangeMemberRequest }
  | { op: 'start'; request: StartParticipationRequest }
  | { op: 'submit'; request: SubmitRequest };

/** Decodes the request body of `op`. Throws {@link ClusterConsensusDecodeError}. */
export function decodeOperationRequest(op: Operation, body: string | Uint8Array): OperationRequest {
  switch (op) {
    case 'prepare': return { op, request: decodePrepareRequest(body) };
    case 'accept': return { op, request: decodeAcceptRequest(body) };
    case 'addmember': return { op, request: decodeChangeMemberRequest(body) };
    case 'rmmember': return { op, request: decodeChangeMemberRequest(body) };
    case 'start': return { op, request: decodeStartParticipationRequest(body) };
    case 'submit': return { op, request: decodeSubmitRequest(body) };
  }
}

/** HTTP status the reference server answers an unreadable or undecodable body with; every other answer is 200. */
export const UNDECODABLE_BODY_HTTP_STATUS = 500;

export type RequestBodyResult =
  | { ok: true; value: OperationRequest }
  | { ok: false; httpStatus: typeof UNDECODABLE_BODY_HTTP_STATUS; err: Err; cause: ClusterConsensusDecodeError | null };

/**
 * What the reference server does with a request body: decode it, or answer
 * HTTP 500 with a bare Err (not wrapped in a response struct): ERR_IO for an
 * empty body (it reads zero bytes and gives up before decoding), ERR_ENCODING
 * for a body json.Unmarshal rejects. The reference appends the Go error's
 * text to the description; that text is Go-specific and clients never read
 * it (any non-200 is ERR_CALL to them), so it is left out here.
 */
export function readOperationRequest(op: Operation, body: string | Uint8Array): RequestBodyResult {
  if (body.length === 0) {
    return { ok: false, httpStatus: UNDECODABLE_BODY_HTTP_STATUS, err: makeErr('ERR_IO', "Couldn't read request"), cause: null };
  }
  try {
    return { ok: true, value: decodeOperationRequest(op, body) };
  } catch (error) {
    if (!(error instanceof ClusterConsensusDecodeError)) throw error;
    return { ok: false, httpStatus: UNDECODABLE_BODY_HTTP_STATUS, err: makeErr('ERR_ENCODING', "Couldn't decode body"), cause: error };
  }
}

/**
 * How a reference client reads an HTTP answer's status: any status but 200
 * is ERR_CALL (the body is not looked at); null means "decode the body".
 */
export function errForHttpStatus(status: number): Err | null {
  return status === 200 ? null : makeErr('ERR_CALL', `Received HTTP code ${status}`);
}
