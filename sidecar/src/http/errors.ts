/**
 * The REST API's one error envelope and its HTTP status codes.
 *
 * Every error answer, whatever produced it (a RaleError from the engine, a
 * bad body, the router, the body parser, an unexpected exception), has the
 * body
 *
 *   {"error": {"code": "...", "message": "...", "hint": "...", ...details}}
 *
 * `code` is stable (programs branch on it), `message` says what went wrong
 * for this request, `hint` says what to do. Engine errors keep their
 * catalogue code (sidecar/src/errors.ts); the codes below exist only at the
 * HTTP layer.
 */
import { ErrorCodes, isRaleError, type ErrorCode } from '../errors.ts';

export const HttpErrorCodes = {
  UNAUTHORIZED: 'Send the API token as `Authorization: Bearer <token>`.',
  NOT_FOUND: 'No such endpoint; the API lives under /api/v1 (see the OpenAPI document).',
  METHOD_NOT_ALLOWED: 'The endpoint exists but not with this method; the `Allow` header lists the methods it accepts.',
  UNKNOWN_NODE: 'No member of the cluster has this id; list members with GET /api/v1/cluster/status.',
  UNKNOWN_KEY: 'The key is not in the replicated key-value state (it was never set, or it was deleted).',
  NOT_A_VOTER: 'Leadership can only go to a voter; a joining node becomes one when its join completes.',
  WRONG_NODE: 'This node cannot answer for another node: ask that node directly, or configure peerApiUrl so that it can relay.',
  PEER_UNREACHABLE: "The node this request was relayed to did not answer; check that node's API, or retry.",
  PAYLOAD_TOO_LARGE: 'The request body exceeds the size limit of the API; send less.',
  UNSUPPORTED_MEDIA_TYPE: 'Send the body as JSON with `Content-Type: application/json`.',
  UNHEALTHY: 'This node cannot serve right now; `reasons` says why. Send requests to a healthy node.',
  INTERNAL: 'An unexpected error; the node logs have the details. Report it if it persists.',
} as const;

export type HttpErrorCode = keyof typeof HttpErrorCodes;
export type ApiErrorCode = ErrorCode | HttpErrorCode;

/** HTTP status of each engine error code. */
const STATUS_OF: Record<ErrorCode, number> = {
  // Misdirected Request: this node cannot do it and could not forward it; the
  // envelope names the leader (and its address) to send it to.
  NOT_LEADER: 421,
  NO_LEADER: 503,
  TRANSFER_IN_PROGRESS: 409,
  ENTRY_TOO_LARGE: 413,
  CONFIG_CHANGE_PENDING: 409,
  INVALID_CONFIG_CHANGE: 409,
  INVALID_ARGUMENT: 400,
  // The entry did not take effect and may be retried: a transient condition.
  PROPOSAL_DROPPED: 503,
  // Committed and applied, but the state machine refused it (identically on every node).
  APPLY_FAILED: 422,
  TIMEOUT: 504,
  STOPPED: 503,
  STORAGE: 503,
};

/** Codes for which retrying the same request shortly is the right move: answered with Retry-After. */
const RETRY_LATER = new Set<ApiErrorCode>(['NO_LEADER', 'TRANSFER_IN_PROGRESS', 'CONFIG_CHANGE_PENDING', 'PROPOSAL_DROPPED', 'UNHEALTHY']);

/** Keys of the envelope that details may not overwrite. */
const RESERVED = new Set(['code', 'message', 'hint']);

/** An error answered with a specific status and code. Handlers and bridges throw it. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: ApiErrorCode;
  readonly hint: string;
  readonly details: Record<string, unknown>;

  constructor(status: number, code: ApiErrorCode, message: string, details: Record<string, unknown> = {}, hint?: string) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.hint = hint ?? hintOf(code);
    this.details = details;
  }

  /** An engine error code with its usual status. */
  static of(code: ErrorCode, message: string, details: Record<string, unknown> = {}, hint?: string): HttpError {
    return new HttpError(STATUS_OF[code], code, message, details, hint);
  }
}

function hintOf(code: ApiErrorCode): string {
  return code in HttpErrorCodes ? HttpErrorCodes[code as HttpErrorCode] : ErrorCodes[code as ErrorCode];
}

/** A 400 that names the offending field (a dotted path such as `value.key`, or a query parameter). */
export function badField(field: string, message: string): HttpError {
  return new HttpError(400, 'INVALID_ARGUMENT', message, { field });
}

/**
 * Turns anything thrown into an HttpError. Body-parser errors carry `type`;
 * unknown errors become INTERNAL without leaking their message, which may
 * hold connection strings or SQL.
 */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (isRaleError(err)) return HttpError.of(err.code, err.message, err.details);
  const e = err as { type?: unknown; status?: unknown; expose?: unknown; limit?: unknown; length?: unknown; message?: unknown };
  switch (e?.type) {
    case 'entity.parse.failed':
      return new HttpError(400, 'INVALID_ARGUMENT', `the request body is not valid JSON: ${String(e.message)}`, { field: 'body' });
    case 'entity.too.large':
      return new HttpError(413, 'PAYLOAD_TOO_LARGE', `the request body is larger than the limit of ${String(e.limit)} bytes`, { limit: e.limit });
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', String(e.message));
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
      return new HttpError(400, 'INVALID_ARGUMENT', String(e.message), { field: 'body' });
  }
  // Any other client error the body parser marks safe to show (`expose`), e.g. a
  // Content-Encoding whose data does not decompress (a zlib error with status 400).
  if (e?.expose === true && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    if (e.status === 413) return new HttpError(413, 'PAYLOAD_TOO_LARGE', String(e.message), { limit: e.limit });
    if (e.status === 415) return new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', String(e.message));
    const zlib = typeof (e as { errno?: unknown }).errno === 'number';
    return new HttpError(400, 'INVALID_ARGUMENT', zlib ? `the request body does not decompress as its Content-Encoding says: ${String(e.message)}` : String(e.message), { field: 'body' });
  }
  // The router's own refusal: a path parameter that does not percent-decode (a URIError it marks 400).
  if (err instanceof URIError && e.status === 400) {
    return new HttpError(400, 'INVALID_ARGUMENT', `the path is not valid percent-encoding: ${String(e.message).slice(0, 200)}`, { field: 'path' });
  }
  return new HttpError(500, 'INTERNAL', 'internal error');
}

export interface ErrorEnvelope {
  error: { code: ApiErrorCode; message: string; hint: string } & Record<string, unknown>;
}

export function envelopeOf(err: HttpError): ErrorEnvelope {
  const details = Object.fromEntries(Object.entries(err.details).filter(([k, v]) => !RESERVED.has(k) && v !== undefined));
  return { error: { code: err.code, message: err.message, hint: err.hint, ...details } };
}

/** Extra headers the status implies. */
export function headersOf(err: HttpError): Record<string, string> {
  const headers: Record<string, string> = {};
  if (RETRY_LATER.has(err.code)) headers['Retry-After'] = '1';
  if (err.status === 401) headers['WWW-Authenticate'] = 'Bearer realm="rale"';
  return headers;
}
