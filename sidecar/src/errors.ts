/**
 * The one catalogue of rale's error codes. Every error a user can meet is a
 * RaleError with a stable `code` (for programs), a message that says what went
 * wrong, and a `hint` that says what to do about it.
 *
 * Pure module: the Raft core imports it too.
 */

export const ErrorCodes = {
  NOT_LEADER: 'Only the leader accepts this; send it to the leader (its id, when known, is in `leader`).',
  NO_LEADER: 'No leader is known right now (an election is under way or a quorum is unreachable); retry shortly.',
  TRANSFER_IN_PROGRESS: 'A leadership transfer is under way; retry once it completes.',
  ENTRY_TOO_LARGE: 'The payload exceeds the configured maximum entry size; split it or raise maxEntryBytes.',
  CONFIG_CHANGE_PENDING: 'Another membership change is not yet committed, or the new leader has not committed an entry of its term yet; retry shortly.',
  INVALID_CONFIG_CHANGE: 'The membership change does not fit the current configuration; check `rale members` and retry with a valid change.',
  INVALID_ARGUMENT: 'An argument is malformed; fix the request as the message says.',
  PROPOSAL_DROPPED: 'The entry was overwritten by a new leader before it committed; it did not take effect, and it is safe to retry.',
  APPLY_FAILED: 'The command reached the log and was applied, but the state machine rejected it (the same way on every node); fix the command.',
  TIMEOUT: 'The operation did not complete in time; its outcome is unknown unless it is idempotent or tracked by id.',
  STOPPED: 'The node has been stopped.',
  STORAGE: 'The storage layer failed; check the database connection and the node logs.',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** Marks RaleErrors from any copy of this module (see Symbol.hasInstance below). */
const RALE_ERROR_BRAND = Symbol.for('rale.RaleError');

export class RaleError extends Error {
  /**
   * `err instanceof RaleError` holds for a RaleError made by any copy of this
   * module: the sidecar runs as a bundle while a bridge loaded from its own
   * path or package brings its own copy, and their errors must still be
   * recognised (codes, hints, HTTP and gRPC statuses).
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[RALE_ERROR_BRAND] === true;
  }

  readonly code: ErrorCode;
  readonly hint: string;
  /** Extra structured facts, e.g. `{ leader: 'node2' }` for NOT_LEADER. */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'RaleError';
    this.code = code;
    this.hint = ErrorCodes[code];
    this.details = details;
    Object.defineProperty(this, RALE_ERROR_BRAND, { value: true });
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, hint: this.hint, ...this.details };
  }
}

export function isRaleError(err: unknown, code?: ErrorCode): err is RaleError {
  return err instanceof RaleError && (code === undefined || err.code === code);
}
