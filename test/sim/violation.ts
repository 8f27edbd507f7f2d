/** The names of everything the simulator checks, and the error a failed check throws. */

export type InvariantName =
  /** At most one leader per term, over the whole history. */
  | 'election-safety'
  /** Same index and term imply the same entry and the same preceding log. */
  | 'log-matching'
  /** A leader never overwrites or deletes entries of its own log during its term. */
  | 'leader-append-only'
  /** Every committed entry is in the log of every leader of a later term. */
  | 'leader-completeness'
  /** No two nodes apply (or hold as committed) different entries at one index. */
  | 'state-machine-safety'
  /** A node's commit index never decreases while it runs. */
  | 'monotonic-commit'
  /** applied <= commit <= lastIndex on every node, and unpersisted entries are in memory. */
  | 'index-order'
  /** A node's applied index never decreases, across restarts too. */
  | 'monotonic-applied'
  /** A proposal id takes effect at most once in each state machine. */
  | 'at-most-once'
  /** A ReadIndex answer is at least the commit index known when the read was asked. */
  | 'read-linearizability'
  /** After the faults heal, the cluster elects a leader, commits and converges in bounded time. */
  | 'liveness'
  /** The core asked its driver for something the Ready contract forbids (a log hole, a stale ack...). */
  | 'ready-contract'
  /** The core threw an unexpected error (it refuses to continue: its own assertions fired). */
  | 'core-exception';

export class InvariantViolation extends Error {
  readonly invariant: InvariantName;

  constructor(invariant: InvariantName, message: string) {
    super(`[${invariant}] ${message}`);
    this.name = 'InvariantViolation';
    this.invariant = invariant;
  }
}

export function violation(invariant: InvariantName, message: string): never {
  throw new InvariantViolation(invariant, message);
}
