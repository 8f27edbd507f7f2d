/**
 * The contract between the checker and a sequential specification ("model").
 *
 * A model describes what a single, correct, non-concurrent object would do.
 * The checker searches for an order of the recorded operations that this
 * sequential object could have produced, so the model must be:
 *
 * - pure: `step` never mutates `state`; it returns a new state (or the same
 *   object when nothing changed);
 * - deterministic: the same (state, input, output) always gives the same answer;
 * - keyed: `key(a) === key(b)` exactly when `a` and `b` behave identically
 *   from now on. The checker memoises on this key, so two different states
 *   with one key would make it skip work it must do (wrong answers), and one
 *   state with two keys only costs time.
 */

/**
 * Stands in for the output of an operation whose outcome is unknown (timed
 * out, connection dropped): the checker passes it to `step` when it tries the
 * hypothesis "this operation took effect here". The model must then accept any
 * output the operation could have produced and return the state it leaves.
 */
export const UNKNOWN_OUTPUT: unique symbol = Symbol('lincheck.unknown-output');
export type UnknownOutput = typeof UNKNOWN_OUTPUT;

export type StepResult<State> =
  /** The operation, with this output, is legal in `state` and leaves `newState`. */
  | { ok: true; newState: State }
  /** The sequential object could not have produced this output in `state`. */
  | { ok: false };

export interface Model<State, Input, Output> {
  /** Short name used in reports ("register", "kv"). */
  readonly name: string;

  /** State before any operation. */
  init(): State;

  /**
   * Applies one operation. `output` is what the client observed, or
   * {@link UNKNOWN_OUTPUT} when the outcome is unknown. May throw for an
   * input or output the model cannot interpret (a harness bug, not a
   * linearizability violation); the checker lets the exception through.
   */
  step(state: State, input: Input, output: Output | UnknownOutput): StepResult<State>;

  /** Memoisation key: equal keys must mean interchangeable states (see above). */
  key(state: State): string;

  /**
   * Optional P-compositionality hook: the name of the independent part of
   * the object an operation touches (for a map, its key). When present, the
   * checker splits the history by this name and checks each part alone,
   * starting from `init()`. Only correct if operations on different parts
   * never influence each other's outputs, and `init()` restricted to one part
   * is the initial state of that part.
   */
  partition?(input: Input): string;

  /**
   * Optional: true when the operation never changes the state (a read). An
   * unknown-outcome read-only operation constrains nothing and is dropped
   * before the search, which keeps the search small.
   */
  isReadOnly?(input: Input): boolean;

  /** Human-readable operation for reports, e.g. `cas(1, 2) -> true`. */
  describeOperation?(input: Input, output: Output | UnknownOutput): string;

  /** Human-readable state for reports. */
  describeState?(state: State): string;
}

/** Fallbacks used by reports when a model does not describe itself. */
export function describeOperationOf<S, I, O>(model: Model<S, I, O>, input: I, output: O | UnknownOutput): string {
  if (model.describeOperation) return model.describeOperation(input, output);
  const shownOutput = output === UNKNOWN_OUTPUT ? '?' : jsonish(output);
  return `${jsonish(input)} -> ${shownOutput}`;
}

export function describeStateOf<S, I, O>(model: Model<S, I, O>, state: S): string {
  return model.describeState ? model.describeState(state) : jsonish(state);
}

/** JSON when possible, String() otherwise (bigint, symbols, cycles). */
export function jsonish(value: unknown): string {
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
