/**
 * Shrinks a non-linearizable partition to a small "core" of operations that
 * still cannot be linearized, so that a report shows a handful of operations
 * instead of thousands.
 *
 * Relax, do not delete. Deleting operations is unsound as an explanation: a
 * sub-history of a linearizable history is often not linearizable (delete the
 * write a read observed and the read sees a value from nowhere), so deletion
 * can manufacture a failure the original does not have. Instead, an operation
 * leaving the core is relaxed: it may have taken effect at any instant within
 * its own interval, with any output, or not at all (a read-only one, which
 * then constrains nothing, is dropped). Unknown-outcome operations are always
 * kept as they are (already optional). Every linearization of the original is
 * still a linearization of the relaxed history, so:
 *
 *   if "core + everything else relaxed" is not linearizable, neither is the
 *   original, and the failure lies in the core's outputs and timing; the
 *   other operations cannot explain it away, whatever they did.
 *
 * The core alone is then not linearizable either (fewer options still).
 *
 * Checking a candidate core means searching the whole relaxed history, which
 * is expensive when most operations are relaxed (each may or may not happen).
 * A cheap sufficient test runs first: see `failsInWindow`.
 *
 * Which operations leave the core follows delta debugging: try relaxing large
 * chunks first, halve the chunk size when nothing can go, and finish with
 * single operations until a whole pass relaxes nothing. The core is then
 * "1-minimal": relaxing any one more of its operations makes the history
 * linearizable (reported as not proven when a search in that last pass ran
 * out of budget).
 */
import { UNKNOWN_OUTPUT, type Model } from './model.ts';
import { searchLinearization, type SearchOperation } from './search.ts';

export interface MinimizeBudget {
  /** Candidate cores to check at most. */
  maxAttempts: number;
  /** Search steps per candidate. */
  maxStepsPerAttempt: number;
  /** States the window pre-check may start from; beyond that (or 0) it is skipped. */
  maxStartStates: number;
  deadline: number;
  clock: () => number;
}

export interface MinimizeResult {
  /** Indexes, ascending, of the required operations that stay required. */
  core: number[];
  attempts: number;
  steps: number;
  /** True when a final single-operation pass relaxed nothing and every search in it was decided. */
  oneMinimal: boolean;
}

/** The relaxed form of a required operation outside the core, or undefined when it can be dropped. */
function relaxed<S, I, O>(model: Model<S, I, O>, op: SearchOperation<I, O>): SearchOperation<I, O> | undefined {
  if (op.optional) return op; // unknown outcome: already as loose as it gets
  // Optional and read-only: no effect, no constraint.
  if (model.isReadOnly?.(op.input)) return undefined;
  return { ...op, output: UNKNOWN_OUTPUT, optional: true };
}

/**
 * The history the core is judged in: `ops` with every required operation
 * outside `core` relaxed as described above. `origin[i]` is the index in `ops`
 * of the i-th returned operation.
 */
export function relaxOutsideCore<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  core: ReadonlySet<number>,
): { ops: SearchOperation<I, O>[]; origin: number[] } {
  const result: SearchOperation<I, O>[] = [];
  const origin: number[] = [];
  ops.forEach((op, index) => {
    const kept = core.has(index) ? op : relaxed(model, op);
    if (kept === undefined) return;
    result.push(kept);
    origin.push(index);
  });
  return { ops: result, origin };
}

/**
 * Every state reachable from `init()` by applying any of `ops`, relaxed
 * (output unknown), in any order and any number of times: a superset of the
 * states any relaxed history over these operations can be in at any moment.
 * Undefined when there are more than `limit` or the deadline passes.
 */
export function reachableStates<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  limit: number,
  budget: Pick<MinimizeBudget, 'deadline' | 'clock'>,
): S[] | undefined {
  const initial = model.init();
  const seen = new Set<string>([model.key(initial)]);
  const states: S[] = [initial];
  let steps = 0;
  for (let next = 0; next < states.length; next++) {
    const state = states[next] as S;
    for (const op of ops) {
      if (++steps % 1024 === 0 && budget.clock() > budget.deadline) return undefined;
      const result = model.step(state, op.input, UNKNOWN_OUTPUT);
      if (!result.ok) continue;
      const key = model.key(result.newState);
      if (seen.has(key)) continue;
      if (states.length >= limit) return undefined;
      seen.add(key);
      states.push(result.newState);
    }
  }
  return states;
}

/**
 * Cheap sufficient test that "core + the rest relaxed" is not linearizable.
 *
 * Let [from, to] span the core (earliest invocation, latest completion). In
 * any linearization of the relaxed history, everything placed before the
 * first core operation leaves some state of `startStates`; everything placed
 * between the first and last core operation overlaps [from, to] (operations
 * completed before `from` precede every core operation, operations invoked
 * after `to` follow them). So if, from every start state, the core plus the
 * relaxed operations overlapping [from, to] cannot be linearized, the whole
 * relaxed history cannot be either. The converse does not hold (the start
 * states over-approximate), hence "false" only means "not shown this way".
 */
function failsInWindow<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  core: readonly number[],
  startStates: readonly S[],
  budget: MinimizeBudget,
): { fails: boolean; steps: number } {
  // Letting unknown operations take effect any number of times is one more
  // over-approximation (sound here), and keeps many of them cheap.
  const window = windowAround(model, ops, core, { reuseUnknown: true }).ops;
  let steps = 0;
  for (const initialState of startStates) {
    const result = searchLinearization(
      model,
      window,
      { maxSteps: budget.maxStepsPerAttempt - steps, deadline: budget.deadline, clock: budget.clock },
      { initialState },
    );
    steps += result.steps;
    if (result.verdict !== false) return { fails: false, steps };
  }
  return { fails: true, steps };
}

/**
 * The core plus the relaxed operations overlapping its span [from, to]
 * (see `failsInWindow`); `origin[i]` is the index in `ops` of the i-th one.
 * With `reuseUnknown`, unknown-outcome operations become `reusable` (they may
 * take effect any number of times).
 */
export function windowAround<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  core: readonly number[],
  options: { reuseUnknown: boolean },
): { ops: SearchOperation<I, O>[]; origin: number[]; from: number; to: number } {
  const inCore = new Set(core);
  const coreOps = core.map((index) => at(ops, index));
  const from = Math.min(...coreOps.map((op) => op.invoke));
  const to = Math.max(...coreOps.map((op) => op.complete));
  const window: SearchOperation<I, O>[] = [];
  const origin: number[] = [];
  ops.forEach((op, index) => {
    let kept = inCore.has(index) ? op : op.invoke <= to && op.complete >= from ? relaxed(model, op) : undefined;
    if (kept === undefined) return;
    if (options.reuseUnknown && kept.complete === Infinity) kept = { ...kept, reusable: true };
    window.push(kept);
    origin.push(index);
  });
  return { ops: window, origin, from, to };
}

/**
 * Looks for a small core near `focus`, an operation where the search got
 * stuck (its `blockedBy`): the 1, 2, 4, ... required operations completing
 * closest before it (and it), each tried with the window test only. A small
 * local core is the common case and cheap to confirm this way; a core found
 * here is as sound as any (it fails with everything else relaxed).
 */
function localCoreNear<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  focus: number,
  startStates: readonly S[],
  budget: MinimizeBudget,
): { core: number[] | undefined; attempts: number; steps: number } {
  const focusOp = at(ops, focus);
  const nearest = ops
    .flatMap((op, index) => (!op.optional && (index === focus || op.invoke <= focusOp.complete) ? [index] : []))
    .sort((a, b) => Number(b === focus) - Number(a === focus) || at(ops, b).complete - at(ops, a).complete || a - b);
  let attempts = 0;
  let steps = 0;
  for (let size = 1; size < nearest.length; size *= 2) {
    if (attempts >= budget.maxAttempts || budget.clock() > budget.deadline) break;
    attempts++;
    const candidate = nearest.slice(0, size).sort((a, b) => a - b);
    const quick = failsInWindow(model, ops, candidate, startStates, budget);
    steps += quick.steps;
    if (quick.fails) return { core: candidate, attempts, steps };
  }
  return { core: undefined, attempts, steps };
}

/**
 * Proves a partition non-linearizable when the full search ran out of budget,
 * if a small core near `focus` fails the window test (see `localCoreNear`).
 * Returns that core, or undefined when this cheap attempt shows nothing.
 */
export function refuteNear<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  focus: number,
  budget: MinimizeBudget,
): number[] | undefined {
  if (budget.maxStartStates <= 0) return undefined;
  const startStates = reachableStates(model, ops, budget.maxStartStates, budget);
  if (startStates === undefined) return undefined;
  return localCoreNear(model, ops, focus, startStates, budget).core;
}

/**
 * Shrinks from `start.core` when given (a core already known to fail), else
 * from a local core near `start.focus` (where the search got stuck, see
 * `localCoreNear`) when one is found, else from all required operations.
 */
export function minimizeFailure<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  budget: MinimizeBudget,
  start: { focus?: number | undefined; core?: number[] | undefined } = {},
): MinimizeResult {
  let steps = 0;
  const startStates = budget.maxStartStates > 0 ? reachableStates(model, ops, budget.maxStartStates, budget) : undefined;
  const verdictOf = (candidate: readonly number[]): true | false | 'unknown' => {
    if (candidate.length === 0) return true; // nothing required: trivially linearizable
    if (startStates !== undefined) {
      const quick = failsInWindow(model, ops, candidate, startStates, budget);
      steps += quick.steps;
      if (quick.fails) return false;
    }
    const relaxedHistory = relaxOutsideCore(model, ops, new Set(candidate));
    const result = searchLinearization(model, relaxedHistory.ops, {
      maxSteps: budget.maxStepsPerAttempt,
      deadline: budget.deadline,
      clock: budget.clock,
    });
    steps += result.steps;
    return result.verdict;
  };

  let core = start.core ?? ops.flatMap((op, index) => (op.optional ? [] : [index]));
  let attempts = 0;
  if (start.core === undefined && start.focus !== undefined && startStates !== undefined) {
    const local = localCoreNear(model, ops, start.focus, startStates, budget);
    attempts += local.attempts;
    steps += local.steps;
    if (local.core !== undefined) core = local.core;
  }
  let chunk = Math.max(1, Math.ceil(core.length / 2));
  while (true) {
    let relaxedAny = false;
    let undecidedAny = false;
    let position = 0;
    while (position < core.length) {
      if (attempts >= budget.maxAttempts || budget.clock() > budget.deadline) {
        return { core, attempts, steps, oneMinimal: false };
      }
      attempts++;
      const candidate = [...core.slice(0, position), ...core.slice(position + chunk)];
      const verdict = verdictOf(candidate);
      if (verdict === false) {
        core = candidate;
        relaxedAny = true;
        // The next chunk has moved to `position`: try it without advancing.
      } else {
        // 'unknown' is not known to fail: keep the operations, but remember
        // that minimality is not proven.
        if (verdict === 'unknown') undecidedAny = true;
        position += chunk;
      }
    }
    if (chunk === 1 && !relaxedAny) return { core, attempts, steps, oneMinimal: !undecidedAny };
    // After a success, earlier chunks may have become relaxable: go round
    // again at the same granularity (capped by the new size); otherwise go finer.
    chunk = relaxedAny ? Math.min(chunk, Math.max(1, Math.ceil(core.length / 2))) : Math.ceil(chunk / 2);
  }
}

function at<I, O>(ops: readonly SearchOperation<I, O>[], index: number): SearchOperation<I, O> {
  const op = ops[index];
  if (op === undefined) throw new Error(`internal: no operation ${index}`);
  return op;
}
