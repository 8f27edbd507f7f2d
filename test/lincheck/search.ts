/**
 * The core search on one partition: Wing & Gong's backtracking search for a
 * linearization, with Lowe's memoisation of (linearized set, model state).
 *
 * The history is laid out as a doubly linked list of events sorted by time:
 * a "call" event at each invocation and a "return" event at each completion.
 * At any point the list holds exactly the operations not yet resolved
 * (linearized, or for optional ones possibly skipped). Scanning from the head,
 * every call met before the first return belongs to an operation that may be
 * linearized next (it was invoked before any pending operation had to be
 * finished); the first return met marks an operation that must be resolved
 * before anything invoked later. So:
 *
 * - at a call whose operation the model accepts from the current state, and
 *   whose (resolved set + it, new state) was never seen before, resolve it:
 *   push it on the stack, unlink its call and return, restart from the head;
 * - otherwise go to the next event;
 * - at a return (or the end), no remaining candidate works: pop the last
 *   resolved operation, put its events back and try its next alternative,
 *   then the next candidate.
 *
 * Memoisation (Lowe): the future of the search depends only on which
 * operations are resolved and on the model state, not on their order, so a
 * configuration seen once never needs a second visit. The cache key is the
 * bitset key (fixed length per partition) followed by `model.key(state)`.
 *
 * Three kinds of operations:
 * - required (an 'ok' operation): must take effect within [invoke, complete];
 * - open optional (an unknown outcome): no return event, so it never forces
 *   anything; it may take effect any time after its invocation or stay
 *   unresolved forever ("never took effect");
 * - bounded optional (used only when shrinking a failure, see minimize.ts):
 *   may take effect within [invoke, complete] or not at all. Its alternatives
 *   are "skip" (resolve with no effect) first, then "take effect", so that the
 *   first prefixes found use as few of them as possible.
 * (Plus `reusable` open optional ones, an over-approximation for minimize.ts.)
 * The search succeeds once every operation with a return event is resolved.
 */
import { Bitset } from './bitset.ts';
import type { Model, UnknownOutput } from './model.ts';

/** One operation as the search sees it (failed operations never get here). */
export interface SearchOperation<Input, Output> {
  input: Input;
  output: Output | UnknownOutput;
  invoke: number;
  /** +Infinity for an open-ended unknown outcome; finite otherwise. */
  complete: number;
  /** False for 'ok' operations (they must take effect); true when leaving it out is allowed. */
  optional: boolean;
  /**
   * Only for open optional operations, and only in minimize.ts's window test,
   * which may over-approximate: the operation may take effect any number of
   * times after its invocation. It is never resolved, so it adds nothing to
   * the memoisation key (no 2^k blow-up over k unknown operations).
   */
  reusable?: boolean;
}

export interface SearchBudget {
  /** Upper bound on loop iterations (one per event visited). */
  maxSteps: number;
  /** Absolute time, on `clock`, after which the search gives up. */
  deadline: number;
  clock: () => number;
}

/** One entry of a linearization: the operation and whether it took effect (optional ones may be skipped). */
export interface Placement {
  op: number;
  tookEffect: boolean;
}

export type SearchResult<State> =
  | {
      verdict: true;
      steps: number;
      /** A witness: the resolved operations in linearization order. */
      linearization: Placement[];
    }
  | {
      verdict: false;
      steps: number;
      /**
       * Present when requested: a prefix that places as many required
       * operations as possible (the first such found), and the state after it.
       */
      longestPrefix?: { placements: Placement[]; state: State };
      /**
       * The operation whose deadline (return event) stopped the search when
       * it had placed the most required operations: where the trouble is.
       */
      blockedBy?: number;
    }
  | {
      verdict: 'unknown';
      steps: number;
      exhausted: 'steps' | 'time';
      /** As for `false`: where the deepest attempt so far was stopped. */
      blockedBy?: number;
    };

interface EventNode {
  /** Index of the operation in the partition; -1 for the list head. */
  readonly op: number;
  readonly isCall: boolean;
  readonly time: number;
  /** For a call: its return event, or null for an open-ended unknown outcome. */
  returnEvent: EventNode | null;
  prev: EventNode;
  next: EventNode | null;
}

/** Ways to resolve an operation, in the order they are tried. */
type Alternative = 'effect' | 'skip';
const EFFECT_ONLY: readonly Alternative[] = ['effect'];
const SKIP_THEN_EFFECT: readonly Alternative[] = ['skip', 'effect'];

/** How often (in steps) the clock is read: reading it every step would dominate. */
const CLOCK_CHECK_INTERVAL = 1024;

export function searchLinearization<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  budget: SearchBudget,
  options: {
    trackLongestPrefix?: boolean;
    /** Start from this state instead of `model.init()` (used by minimize.ts). */
    initialState?: S;
  } = {},
): SearchResult<S> {
  const head = buildEventList(ops);
  const resolved = new Bitset(ops.length);
  const seen = new Set<string>();
  const stack: { call: EventNode; stateBefore: S; alternative: number }[] = [];
  const alternativesOf = ops.map((op) =>
    op.optional && Number.isFinite(op.complete) ? SKIP_THEN_EFFECT : EFFECT_ONLY,
  );
  let state = 'initialState' in options ? (options.initialState as S) : model.init();
  /** Operations with a return event not yet resolved; zero means success. */
  let unresolvedWithDeadline = ops.filter((op) => Number.isFinite(op.complete)).length;
  let requiredPlaced = 0;
  let mostRequiredPlaced = -1;
  let blockedBy: number | undefined;
  let longestPrefix: { placements: Placement[]; state: S } | undefined;
  let steps = 0;
  let event = head.next;
  let firstAlternative = 0;

  const placementsOnStack = (): Placement[] =>
    stack.map((frame) => ({ op: frame.call.op, tookEffect: alternativesOf[frame.call.op]?.[frame.alternative] === 'effect' }));

  while (unresolvedWithDeadline > 0) {
    const exhausted =
      steps >= budget.maxSteps
        ? 'steps'
        : steps % CLOCK_CHECK_INTERVAL === 0 && budget.clock() > budget.deadline
          ? 'time'
          : undefined;
    if (exhausted !== undefined) {
      return blockedBy === undefined ? { verdict: 'unknown', steps, exhausted } : { verdict: 'unknown', steps, exhausted, blockedBy };
    }
    steps++;

    if (event !== null && event.isCall) {
      const call = event;
      const op = operationAt(ops, call.op);
      const alternatives = alternativesOf[call.op] ?? EFFECT_ONLY;
      let moved = false;
      for (let alternative = firstAlternative; alternative < alternatives.length && !moved; alternative++) {
        let newState = state;
        if (alternatives[alternative] === 'effect') {
          const result = model.step(state, op.input, op.output);
          if (!result.ok) continue;
          newState = result.newState;
        }
        if (!op.reusable) resolved.set(call.op);
        const configuration = resolved.key() + model.key(newState);
        if (seen.has(configuration)) {
          if (!op.reusable) resolved.clear(call.op);
          continue;
        }
        seen.add(configuration);
        stack.push({ call, stateBefore: state, alternative });
        state = newState;
        moved = true;
        if (op.reusable) continue; // stays in the list, unresolved
        unlink(call);
        if (Number.isFinite(op.complete)) unresolvedWithDeadline--;
        if (!op.optional) requiredPlaced++;
      }
      event = moved ? head.next : call.next;
      firstAlternative = 0;
      continue;
    }

    // Dead end: an operation's deadline (its return) or the end of the list
    // was reached with no candidate that leads anywhere new.
    if (requiredPlaced > mostRequiredPlaced) {
      mostRequiredPlaced = requiredPlaced;
      blockedBy = event?.op;
      if (options.trackLongestPrefix) longestPrefix = { placements: placementsOnStack(), state };
    }
    const frame = stack.pop();
    if (frame === undefined) {
      const failure: SearchResult<S> = { verdict: false, steps };
      if (blockedBy !== undefined) failure.blockedBy = blockedBy;
      if (longestPrefix !== undefined) failure.longestPrefix = longestPrefix;
      return failure;
    }
    state = frame.stateBefore;
    const op = operationAt(ops, frame.call.op);
    if (!op.reusable) {
      relink(frame.call);
      resolved.clear(frame.call.op);
      if (Number.isFinite(op.complete)) unresolvedWithDeadline++;
      if (!op.optional) requiredPlaced--;
    }
    // Retry the same operation with its next alternative, if any.
    event = frame.call;
    firstAlternative = frame.alternative + 1;
  }
  return { verdict: true, steps, linearization: placementsOnStack() };
}

function operationAt<I, O>(ops: readonly SearchOperation<I, O>[], index: number): SearchOperation<I, O> {
  const op = ops[index];
  if (op === undefined) throw new Error(`internal: no operation ${index}`);
  return op;
}

/**
 * Events sorted by time. At equal times calls come before returns: an
 * operation invoked at the very instant another completed is treated as
 * concurrent with it (intervals are closed), the permissive reading when
 * a clock cannot order the two.
 */
function buildEventList<I, O>(ops: readonly SearchOperation<I, O>[]): EventNode {
  // The head is its own prev, so every node's prev is non-null.
  const head: EventNode = { op: -1, isCall: false, time: -Infinity, returnEvent: null, prev: undefined as never, next: null };
  head.prev = head;
  const events: EventNode[] = [];
  ops.forEach((op, index) => {
    const call: EventNode = { op: index, isCall: true, time: op.invoke, returnEvent: null, prev: head, next: null };
    events.push(call);
    if (Number.isFinite(op.complete)) {
      const ret: EventNode = { op: index, isCall: false, time: op.complete, returnEvent: null, prev: head, next: null };
      call.returnEvent = ret;
      events.push(ret);
    }
  });
  events.sort((a, b) => a.time - b.time || Number(b.isCall) - Number(a.isCall) || a.op - b.op);
  let last = head;
  for (const event of events) {
    last.next = event;
    event.prev = last;
    last = event;
  }
  return head;
}

/** Removes an operation (its call, then its return) from the list. */
function unlink(call: EventNode): void {
  call.prev.next = call.next;
  if (call.next !== null) call.next.prev = call.prev;
  const ret = call.returnEvent;
  if (ret !== null) {
    ret.prev.next = ret.next;
    if (ret.next !== null) ret.next.prev = ret.prev;
  }
}

/**
 * Undoes the matching unlink. Removed nodes keep their own prev/next, so
 * re-inserting in reverse order (return, then call) restores the list
 * exactly, provided unlinks and relinks nest like a stack, which the search
 * guarantees.
 */
function relink(call: EventNode): void {
  const ret = call.returnEvent;
  if (ret !== null) {
    ret.prev.next = ret;
    if (ret.next !== null) ret.next.prev = ret;
  }
  call.prev.next = call;
  if (call.next !== null) call.next.prev = call;
}
