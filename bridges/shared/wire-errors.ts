/**
 * Error types shared by the bridge codecs.
 *
 * A codec throws exactly two kinds of error:
 * - a subclass of {@link WireDecodeError} when the bytes or text it was given
 *   are not a valid message (peer input: never trust it, never crash on it);
 * - {@link WireEncodeError} when a caller hands an encoder a value that cannot
 *   be put on the wire (a programming error on our side, such as a negative
 *   term or a u64 above 2^64 - 1).
 * Anything else escaping a codec is a bug in the codec.
 */

function withPath(path: string, reason: string): string {
  return path === '' ? reason : `${path}: ${reason}`;
}

export class WireDecodeError extends Error {
  /** Where in the message the problem is, such as `AppendEntriesRequest.Entries[2].Term`; '' means the input as a whole. */
  readonly path: string;
  /** What was wrong, without the path. */
  readonly reason: string;

  constructor(reason: string, path = '') {
    super(withPath(path, reason));
    this.name = 'WireDecodeError';
    this.path = path;
    this.reason = reason;
  }
}

export class WireEncodeError extends Error {
  readonly path: string;
  readonly reason: string;

  constructor(reason: string, path = '') {
    super(withPath(path, reason));
    this.name = 'WireEncodeError';
    this.path = path;
    this.reason = reason;
  }
}
