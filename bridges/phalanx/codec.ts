/**
 * Phalanx wire codec: the JSON that Phalanx's gRPC services carry (Go structs
 * marshalled by encoding/json through a grpc codec named `json`), see
 * docs/protocols/phalanx.md.
 *
 * Property names are the JSON keys on the wire: Go field names for the
 * consensus messages (which have no json tags), snake_case tag names for the
 * client messages. Properties are declared in Go declaration order, which is
 * the order encoding writes them in.
 *
 * Representation:
 * - u64 (terms, indexes) are JS numbers; decoding rejects negatives,
 *   fractions, exponents and values above 2^53 - 1 (Go would accept up to
 *   2^64 - 1; no Phalanx term or index gets near 2^53).
 * - Go []byte is `Uint8Array | null`: null is the nil slice and travels as
 *   `null`, an empty Uint8Array travels as `""`.
 * - Go's nil []*LogEntry (a heartbeat) is `Entries: null`, `[]` stays `[]`.
 *
 * Decoding follows Go's json.Unmarshal (see ../shared/go-json.ts): keys match
 * case-insensitively, unknown keys are ignored, missing fields are zero,
 * wrong JSON types are a {@link PhalanxDecodeError}.
 *
 * Pure functions: no I/O. Encoders return the JSON text; the transport sends
 * its UTF-8 bytes as the gRPC message.
 */

import {
  decodeGoJson,
  encodeGoJson,
  GoJsonDecodeFailure,
  goBool,
  goBytes,
  goField,
  goNonNilPointer,
  goSlice,
  goString,
  goStruct,
  goUint64,
  goUint8,
  type GoType,
} from '../shared/go-json.ts';
import { WireDecodeError } from '../shared/wire-errors.ts';

/** A Phalanx message (or Command) could not be decoded; `path` says which field, `reason` what was wrong. */
export class PhalanxDecodeError extends WireDecodeError {
  constructor(reason: string, path = '') {
    super(reason, path);
    this.name = 'PhalanxDecodeError';
  }
}

// ---------------------------------------------------------------------------
// Consensus service (/phalanx.Consensus/*): Go field names, no tags
// ---------------------------------------------------------------------------

/** pb.EntryType (uint8). Other values decode as they are; Phalanx itself only writes these. */
export const EntryType = {
  /** Client state-machine command: Data is the JSON of a {@link Command}. */
  Command: 0,
  /** Membership change: Data is the raw address bytes. */
  ConfigChange: 1,
} as const;

export interface LogEntry {
  Index: number;
  Term: number;
  Data: Uint8Array | null;
  /** uint8, see {@link EntryType}. */
  Type: number;
}

export interface AppendEntriesRequest {
  Term: number;
  /** The leader's node id (a string such as "node-0"). */
  LeaderID: string;
  PrevLogIndex: number;
  PrevLogTerm: number;
  /** null (Go nil) in a heartbeat. */
  Entries: LogEntry[] | null;
  LeaderCommit: number;
}

export interface AppendEntriesResponse {
  Term: number;
  Success: boolean;
  /** On success the follower's last index; on rejection a hint: the leader retries at hint + 1. */
  LastLogIndex: number;
}

export interface RequestVoteRequest {
  Term: number;
  CandidateID: string;
  LastLogIndex: number;
  LastLogTerm: number;
  /** A pre-vote changes neither the receiver's term nor its vote. */
  IsPreVote: boolean;
}

export interface RequestVoteResponse {
  Term: number;
  VoteGranted: boolean;
  /** Echoes the request's IsPreVote. */
  IsPreVote: boolean;
}

// ---------------------------------------------------------------------------
// KV service (/phalanx.KV/*) and fsm.Command: snake_case json tags
// ---------------------------------------------------------------------------

/** fsm.Command operations. */
export const CommandOp = { Set: 'SET', Delete: 'DELETE' } as const;

/** fsm.Command: what a ProposeRequest's `data` holds (as JSON) and what a command entry's Data holds. */
export interface Command {
  /** "SET" or "DELETE" (see {@link CommandOp}); other strings decode but Phalanx refuses to apply them. */
  op: string;
  key: string;
  /** Omitted from the JSON when empty (`omitempty`); only SET uses it. */
  value: string;
}

export interface ProposeRequest {
  /** The JSON of a {@link Command}, see {@link encodeCommandBytes}. */
  data: Uint8Array | null;
}

export interface ProposeResponse {
  success: boolean;
  /** Omitted when empty. Set on a redirect from a non-leader. */
  leader_addr: string;
  /** Omitted when empty. E.g. "not leader", "proposal timed out". */
  error: string;
}

export interface ReadRequest {
  key: string;
}

export interface ReadResponse {
  value: string;
  found: boolean;
  /** Omitted when empty. */
  leader_addr: string;
  /** Omitted when empty. */
  error: string;
}

// ---------------------------------------------------------------------------
// Go type descriptions (declaration order = wire order)
// ---------------------------------------------------------------------------

const logEntryType = goStruct<LogEntry>('LogEntry', {
  Index: goField(goUint64),
  Term: goField(goUint64),
  Data: goField(goBytes),
  Type: goField(goUint8),
});

const appendEntriesRequestType = goStruct<AppendEntriesRequest>('AppendEntriesRequest', {
  Term: goField(goUint64),
  LeaderID: goField(goString),
  PrevLogIndex: goField(goUint64),
  PrevLogTerm: goField(goUint64),
  // []*LogEntry: a null element would be a nil pointer in Phalanx; refused.
  Entries: goField(goSlice(goNonNilPointer(logEntryType))),
  LeaderCommit: goField(goUint64),
});

const appendEntriesResponseType = goStruct<AppendEntriesResponse>('AppendEntriesResponse', {
  Term: goField(goUint64),
  Success: goField(goBool),
  LastLogIndex: goField(goUint64),
});

const requestVoteRequestType = goStruct<RequestVoteRequest>('RequestVoteRequest', {
  Term: goField(goUint64),
  CandidateID: goField(goString),
  LastLogIndex: goField(goUint64),
  LastLogTerm: goField(goUint64),
  IsPreVote: goField(goBool),
});

const requestVoteResponseType = goStruct<RequestVoteResponse>('RequestVoteResponse', {
  Term: goField(goUint64),
  VoteGranted: goField(goBool),
  IsPreVote: goField(goBool),
});

const commandType = goStruct<Command>('Command', {
  op: goField(goString),
  key: goField(goString),
  value: goField(goString, { omitEmpty: true }),
});

const proposeRequestType = goStruct<ProposeRequest>('ProposeRequest', {
  data: goField(goBytes),
});

const proposeResponseType = goStruct<ProposeResponse>('ProposeResponse', {
  success: goField(goBool),
  leader_addr: goField(goString, { omitEmpty: true }),
  error: goField(goString, { omitEmpty: true }),
});

const readRequestType = goStruct<ReadRequest>('ReadRequest', {
  key: goField(goString),
});

const readResponseType = goStruct<ReadResponse>('ReadResponse', {
  value: goField(goString),
  found: goField(goBool),
  leader_addr: goField(goString, { omitEmpty: true }),
  error: goField(goString, { omitEmpty: true }),
});

function decodeWith<T>(type: GoType<T>, input: string | Uint8Array): T {
  try {
    return decodeGoJson(type, input);
  } catch (error) {
    if (error instanceof GoJsonDecodeFailure) throw new PhalanxDecodeError(error.reason, error.path);
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Public encode/decode. Encoders throw WireEncodeError for values Go could
// not hold (negative or fractional u64, Type above 255, wrong JS types).
// ---------------------------------------------------------------------------

export const encodeLogEntry = (entry: LogEntry): string => encodeGoJson(logEntryType, entry);
export const decodeLogEntry = (input: string | Uint8Array): LogEntry => decodeWith(logEntryType, input);

export const encodeAppendEntriesRequest = (message: AppendEntriesRequest): string => encodeGoJson(appendEntriesRequestType, message);
export const decodeAppendEntriesRequest = (input: string | Uint8Array): AppendEntriesRequest => decodeWith(appendEntriesRequestType, input);

export const encodeAppendEntriesResponse = (message: AppendEntriesResponse): string => encodeGoJson(appendEntriesResponseType, message);
export const decodeAppendEntriesResponse = (input: string | Uint8Array): AppendEntriesResponse => decodeWith(appendEntriesResponseType, input);

export const encodeRequestVoteRequest = (message: RequestVoteRequest): string => encodeGoJson(requestVoteRequestType, message);
export const decodeRequestVoteRequest = (input: string | Uint8Array): RequestVoteRequest => decodeWith(requestVoteRequestType, input);

export const encodeRequestVoteResponse = (message: RequestVoteResponse): string => encodeGoJson(requestVoteResponseType, message);
export const decodeRequestVoteResponse = (input: string | Uint8Array): RequestVoteResponse => decodeWith(requestVoteResponseType, input);

export const encodeCommand = (command: Command): string => encodeGoJson(commandType, command);
export const decodeCommand = (input: string | Uint8Array): Command => decodeWith(commandType, input);

/** The bytes Phalanx puts in ProposeRequest.data and in a command entry's Data: the UTF-8 JSON of the command. */
export function encodeCommandBytes(command: Command): Uint8Array {
  return new TextEncoder().encode(encodeCommand(command));
}

export const encodeProposeRequest = (message: ProposeRequest): string => encodeGoJson(proposeRequestType, message);
export const decodeProposeRequest = (input: string | Uint8Array): ProposeRequest => decodeWith(proposeRequestType, input);

export const encodeProposeResponse = (message: ProposeResponse): string => encodeGoJson(proposeResponseType, message);
export const decodeProposeResponse = (input: string | Uint8Array): ProposeResponse => decodeWith(proposeResponseType, input);

export const encodeReadRequest = (message: ReadRequest): string => encodeGoJson(readRequestType, message);
export const decodeReadRequest = (input: string | Uint8Array): ReadRequest => decodeWith(readRequestType, input);

export const encodeReadResponse = (message: ReadResponse): string => encodeGoJson(readResponseType, message);
export const decodeReadResponse = (input: string | Uint8Array): ReadResponse => decodeWith(readResponseType, input);
