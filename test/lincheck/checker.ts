/**
 * Entry point: checks a whole history against a model.
 *
 * 1. Validate; drop failed operations (they did not happen) and unknown
 *    outcomes of read-only operations (they constrain nothing).
 * 2. Split by `model.partition` when the model has it (P-compositionality:
 *    a history of independent objects is linearizable iff each object's
 *    sub-history is), and search each partition within the step budget.
 * 3. For each non-linearizable partition, shrink it to a small core of
 *    operations that cannot be linearized whatever the others did
 *    (minimize.ts), and explain it: a longest linearizable prefix and the
 *    operations that could not be placed after it.
 *
 * Every loop is bounded by `maxSteps` and/or `timeoutMs`; running out makes
 * the answer 'unknown' (with the reason), never a hang and never a guess.
 */
import { validateHistory, type Operation } from './history.ts';
import { minimizeFailure, reachableStates, refuteNear, relaxOutsideCore, windowAround } from './minimize.ts';
import { UNKNOWN_OUTPUT, type Model } from './model.ts';
import { searchLinearization, type Placement, type SearchOperation } from './search.ts';

export type Verdict = true | false | 'unknown';

export interface MinimizeOptions {
  /** Candidate cores tried per failing partition (default 2000). */
  maxAttempts?: number;
  /**
   * Search steps per candidate (default: ten times what the partition's own
   * search took, and at least 100 000).
   */
  maxStepsPerAttempt?: number;
  /** Wall-clock budget for shrinking one partition (default 10 000 ms; the overall timeout still applies). */
  timeoutMs?: number;
}

export interface CheckOptions {
  /** Search steps per partition (default 1 000 000). A step visits one event. */
  maxSteps?: number;
  /** Wall-clock budget for the whole check, minimisation included (default 60 000 ms). */
  timeoutMs?: number;
  /** Shrink failing partitions (default true). */
  minimize?: boolean | MinimizeOptions;
  /**
   * Reachable states the window test may start from (default 1000; 0
   * disables it). The window test (minimize.ts) proves a small core fails
   * cheaply; it speeds up shrinking, explains failures whose whole-history
   * search is too expensive, and can still refute a partition whose search
   * ran out of steps. Beyond this many states it is skipped.
   */
  maxStartStates?: number;
  /** Clock for the time budget (default performance.now). */
  clock?: () => number;
}

export const DEFAULT_MAX_STEPS = 1_000_000;
export const DEFAULT_TIMEOUT_MS = 60_000;
const DEFAULT_MINIMIZE: Required<Omit<MinimizeOptions, 'maxStepsPerAttempt'>> = {
  maxAttempts: 2000,
  timeoutMs: 10_000,
};
const DEFAULT_MAX_START_STATES = 1000;
const MIN_STEPS_PER_ATTEMPT = 100_000;

/** An operation of the input history together with its position in it. */
export interface OperationRef<Input, Output> {
  /** Index in the history passed to `check` (reports print it as #index). */
  index: number;
  operation: Operation<Input, Output>;
}

export interface PartitionResult {
  /** The partition name (`model.partition`), or null when the model is not partitioned. */
  partition: string | null;
  /** Operations searched: failed ones and unknown read-only ones are excluded. */
  operationCount: number;
  verdict: Verdict;
  steps: number;
  /**
   * Why the verdict is 'unknown'; or, for a 'false' reached after the search
   * ran out of budget, how it was refuted anyway.
   */
  reason?: string;
  /**
   * When linearizable, a witness: history indexes in linearization order.
   * Unknown-outcome operations not listed never took effect.
   */
  linearization?: number[];
}

/** Role of an operation in a failure explanation. */
export type Role =
  /** In the core: its output and interval are taken as recorded. */
  | 'core'
  /** Relaxed by shrinking: may have taken effect within its interval, with any output, or not at all. */
  | 'relaxed'
  /** Unknown outcome in the history: may have taken effect any time after invocation, or not at all. */
  | 'unknown';

export interface FailureReport<State, Input, Output> {
  partition: string | null;
  /** Operations in the partition (failed and unknown reads excluded). */
  partitionOperationCount: number;
  /**
   * The core, in invocation order: 'ok' operations whose outputs and timing
   * cannot be reconciled, whatever the rest of the partition did (see
   * `relaxedCount`, `unknownCount`). Not linearizable on its own either.
   */
  operations: OperationRef<Input, Output>[];
  /** Other 'ok' operations of the partition, relaxed by shrinking (read-only ones dropped). */
  relaxedCount: number;
  /** Unknown-outcome operations of the partition, always kept as they are. */
  unknownCount: number;
  minimization: { done: true; attempts: number; oneMinimal: boolean } | { done: false; reason: string };
  /**
   * A prefix placing as many core operations as possible, in linearization
   * order. Lists only operations that took effect; relaxed and unknown ones
   * appear when the prefix needs them. Undefined only if re-running the
   * search ran out of steps.
   */
  longestPrefix?: { operation: OperationRef<Input, Output>; role: Role; stateAfter: State }[];
  /** Model state after the longest prefix. */
  stateAfterPrefix?: State;
  /**
   * Where the prefix starts: from `model.init()` at the beginning of the
   * partition; or, when that search was too expensive, from
   * `prefixStartState`, a state the partition could be in at time `from`
   * (reachable by its operations), considering only operations overlapping
   * [from, to]: shrinking proved the core fails from every such state.
   */
  prefixStart?: { kind: 'initial' } | { kind: 'reachable'; from: number; to: number };
  prefixStartState?: State;
  /**
   * The remaining core operation that completes first: one of the candidates
   * had to be linearized before it completed.
   */
  mustPrecede?: OperationRef<Input, Output>;
  /**
   * The core operations that could come next after the prefix (invoked before
   * `mustPrecede` completed). None can be placed: the model rejects them from
   * `stateAfterPrefix` (`acceptedByModel` false), or accepts but every
   * continuation was already explored and failed.
   */
  couldNotBePlaced?: {
    operation: OperationRef<Input, Output>;
    acceptedByModel: boolean;
    /** Relaxed or unknown operations that, taking effect right here, would make the model accept it. */
    enablers: Enabler<Input, Output>[];
  }[];
}

/**
 * An operation outside the core whose effect, right after the prefix, would
 * let a stuck core operation be placed; and why it cannot be used there.
 */
export interface Enabler<Input, Output> {
  operation: OperationRef<Input, Output>;
  role: Role;
  whyNot:
    /** It completed before `other`, which is in the prefix, was invoked: it must precede it. */
    | { kind: 'completed-before'; other: OperationRef<Input, Output> }
    /** It was invoked only after `other` completed, and `other` is what must be placed now. */
    | { kind: 'invoked-after'; other: OperationRef<Input, Output> }
    /** Timing allows it, but the search found no way to finish from there. */
    | { kind: 'dead-end' };
}

/** Step budget for explaining a failure from the start of its partition before falling back to its time window. */
const EXPLAIN_FROM_START_STEPS = 200_000;

/** At most this many enablers are reported per stuck operation. */
const MAX_ENABLERS = 5;

export interface CheckResult<State, Input, Output> {
  linearizable: Verdict;
  model: string;
  partitions: PartitionResult[];
  /** One report per non-linearizable partition, in partition order. */
  failures: FailureReport<State, Input, Output>[];
  /** Why the verdict (or a partition's) is 'unknown'. */
  unknownReasons: string[];
  counts: { operations: number; ok: number; failed: number; unknown: number; droppedUnknownReads: number };
  /** Search steps over all partitions (minimisation not included). */
  steps: number;
  elapsedMs: number;
}

export function check<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  options: CheckOptions = {},
): CheckResult<S, I, O> {
  validateHistory(history);
  const clock = options.clock ?? (() => performance.now());
  const maxSteps = options.maxSteps ?? DEFAULT_MAX_STEPS;
  const maxStartStates = options.maxStartStates ?? DEFAULT_MAX_START_STATES;
  const startedAt = clock();
  const deadline = startedAt + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);

  const counts = { operations: history.length, ok: 0, failed: 0, unknown: 0, droppedUnknownReads: 0 };
  const partitions = new Map<string | null, number[]>();
  history.forEach((op, index) => {
    if (op.outcome === 'ok') counts.ok++;
    else if (op.outcome === 'fail') counts.failed++;
    else counts.unknown++;
    if (op.outcome === 'fail') return;
    if (op.outcome === 'info' && model.isReadOnly?.(op.input)) {
      counts.droppedUnknownReads++;
      return;
    }
    const name = model.partition ? model.partition(op.input) : null;
    let members = partitions.get(name);
    if (members === undefined) partitions.set(name, (members = []));
    members.push(index);
  });

  const toSearchOperation = (index: number): SearchOperation<I, O> => {
    const op = at(history, index);
    const known = op.outcome === 'ok';
    return {
      input: op.input,
      output: known ? (op.output as O) : UNKNOWN_OUTPUT,
      invoke: op.invoke,
      complete: known ? op.complete : Infinity,
      optional: !known,
    };
  };

  const results: PartitionResult[] = [];
  const unknownReasons: string[] = [];
  const failing: {
    name: string | null;
    members: number[];
    ops: SearchOperation<I, O>[];
    steps: number;
    blockedBy: number | undefined;
    /** A core already proven to fail (when the search ran out and the window test refuted it). */
    provenCore?: number[];
  }[] = [];
  let steps = 0;
  for (const [name, members] of partitions) {
    const ops = members.map(toSearchOperation);
    const search = searchLinearization(model, ops, { maxSteps, deadline, clock });
    steps += search.steps;
    const base = { partition: name, operationCount: ops.length, steps: search.steps };
    if (search.verdict === true) {
      const tookEffect = search.linearization.filter((placement) => placement.tookEffect);
      results.push({ ...base, verdict: true, linearization: tookEffect.map((placement) => at(members, placement.op)) });
    } else if (search.verdict === false) {
      results.push({ ...base, verdict: false });
      failing.push({ name, members, ops, steps: search.steps, blockedBy: search.blockedBy });
    } else {
      const reason =
        search.exhausted === 'steps'
          ? `step budget of ${maxSteps} exhausted`
          : `time budget of ${options.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms exhausted`;
      // Out of budget, but a small core near where the search kept getting
      // stuck may still prove a violation cheaply (minimize.ts).
      const localCore =
        search.blockedBy === undefined
          ? undefined
          : refuteNear(model, ops, search.blockedBy, {
              maxAttempts: DEFAULT_MINIMIZE.maxAttempts,
              maxStepsPerAttempt: MIN_STEPS_PER_ATTEMPT,
              maxStartStates,
              deadline,
              clock,
            });
      if (localCore !== undefined) {
        results.push({ ...base, verdict: false, reason: `${reason}; refuted by a local core of ${localCore.length} operation(s)` });
        failing.push({ name, members, ops, steps: search.steps, blockedBy: search.blockedBy, provenCore: localCore });
        continue;
      }
      results.push({ ...base, verdict: 'unknown', reason });
      unknownReasons.push(`${partitionLabel(name)}: ${reason} after ${search.steps} steps on ${ops.length} operations`);
    }
  }

  const minimize = options.minimize ?? true;
  const failures = failing.map(({ name, members, ops, steps: searchSteps, blockedBy, provenCore }) => {
    const chosen = minimize === true ? {} : minimize;
    return explainFailure(model, history, name, members, ops, blockedBy, provenCore, {
      minimize:
        chosen === false
          ? undefined
          : {
              ...DEFAULT_MINIMIZE,
              ...chosen,
              maxStepsPerAttempt: chosen.maxStepsPerAttempt ?? Math.max(MIN_STEPS_PER_ATTEMPT, 10 * searchSteps),
            },
      maxSteps,
      maxStartStates,
      deadline,
      clock,
    });
  });

  const verdict: Verdict = failing.length > 0 ? false : unknownReasons.length > 0 ? 'unknown' : true;
  return {
    linearizable: verdict,
    model: model.name,
    partitions: results,
    failures,
    unknownReasons,
    counts,
    steps,
    elapsedMs: clock() - startedAt,
  };
}

export function partitionLabel(name: string | null): string {
  return name === null ? 'whole history' : `partition ${JSON.stringify(name)}`;
}

function explainFailure<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  name: string | null,
  members: readonly number[],
  ops: readonly SearchOperation<I, O>[],
  blockedBy: number | undefined,
  provenCore: number[] | undefined,
  settings: {
    minimize: Required<MinimizeOptions> | undefined;
    maxSteps: number;
    maxStartStates: number;
    deadline: number;
    clock: () => number;
  },
): FailureReport<S, I, O> {
  let core = provenCore ?? ops.flatMap((op, local) => (op.optional ? [] : [local]));
  let minimization: FailureReport<S, I, O>['minimization'] = { done: false, reason: 'disabled' };
  if (settings.minimize) {
    const { timeoutMs, ...limits } = settings.minimize;
    const deadline = Math.min(settings.deadline, settings.clock() + timeoutMs);
    const shrunk = minimizeFailure(
      model,
      ops,
      { ...limits, maxStartStates: settings.maxStartStates, deadline, clock: settings.clock },
      { focus: blockedBy, core: provenCore },
    );
    core = shrunk.core;
    minimization = { done: true, attempts: shrunk.attempts, oneMinimal: shrunk.oneMinimal };
  }
  const inCore = new Set(core);
  const refOf = (local: number): OperationRef<I, O> => ({ index: at(members, local), operation: at(history, at(members, local)) });
  const roleOf = (local: number): Role => (inCore.has(local) ? 'core' : at(ops, local).optional ? 'unknown' : 'relaxed');

  const requiredCount = ops.filter((op) => !op.optional).length;
  const report: FailureReport<S, I, O> = {
    partition: name,
    partitionOperationCount: ops.length,
    operations: [...core].sort((a, b) => at(ops, a).invoke - at(ops, b).invoke || a - b).map(refOf),
    relaxedCount: requiredCount - core.length,
    unknownCount: ops.length - requiredCount,
    minimization,
  };

  const found = findLongestPrefix(model, ops, core, settings);
  if (found === undefined) return report;
  const { view, start, placements, state } = found;
  report.prefixStart = found.prefixStart;
  if (found.prefixStart.kind === 'reachable') report.prefixStartState = start;

  // Replay to show the state after each operation that took effect.
  const prefix: NonNullable<FailureReport<S, I, O>['longestPrefix']> = [];
  let replayed = start;
  for (const { op: position, tookEffect } of placements) {
    if (!tookEffect) continue;
    const op = at(view.ops, position);
    const stepped = model.step(replayed, op.input, op.output);
    if (!stepped.ok) throw new Error('internal: the longest prefix does not replay on the model');
    replayed = stepped.newState;
    const local = at(view.origin, position);
    prefix.push({ operation: refOf(local), role: roleOf(local), stateAfter: replayed });
  }
  report.longestPrefix = prefix;
  report.stateAfterPrefix = state;

  // Candidates for the next core position: remaining core operations invoked
  // no later than the earliest completion among them.
  const placed = new Set(placements.map((placement) => placement.op));
  const remainingCore = view.ops.flatMap((op, position) => (!op.optional && !placed.has(position) ? [position] : []));
  let closing: number | undefined;
  for (const position of remainingCore) {
    if (closing === undefined || at(view.ops, position).complete < at(view.ops, closing).complete) closing = position;
  }
  if (closing === undefined) return report;
  const closingOp = at(view.ops, closing);
  report.mustPrecede = refOf(at(view.origin, closing));

  const tookEffect = placements.filter((placement) => placement.tookEffect).map((placement) => placement.op);
  const unusedOutsideCore = view.ops.flatMap((op, position) => (op.optional && !tookEffect.includes(position) ? [position] : []));
  /** Operations outside the core that would let `stuck` be placed right after the prefix, and why they cannot. */
  const enablersOf = (stuck: SearchOperation<I, O>): Enabler<I, O>[] => {
    const enablers: Enabler<I, O>[] = [];
    for (const position of unusedOutsideCore) {
      if (enablers.length >= MAX_ENABLERS) break;
      const op = at(view.ops, position);
      const afterIt = model.step(state, op.input, op.output);
      if (!afterIt.ok || !model.step(afterIt.newState, stuck.input, stuck.output).ok) continue;
      const mustComeFirst = tookEffect.find((placedPosition) => op.complete < at(view.ops, placedPosition).invoke);
      const local = at(view.origin, position);
      enablers.push({
        operation: refOf(local),
        role: roleOf(local),
        whyNot:
          mustComeFirst !== undefined
            ? { kind: 'completed-before', other: refOf(at(view.origin, mustComeFirst)) }
            : op.invoke > closingOp.complete
              ? { kind: 'invoked-after', other: refOf(at(view.origin, closing)) }
              : { kind: 'dead-end' },
      });
    }
    return enablers;
  };
  report.couldNotBePlaced = remainingCore
    .filter((position) => at(view.ops, position).invoke <= closingOp.complete)
    .sort((a, b) => at(view.ops, a).invoke - at(view.ops, b).invoke || a - b)
    .map((position) => {
      const stuck = at(view.ops, position);
      const acceptedByModel = model.step(state, stuck.input, stuck.output).ok;
      return { operation: refOf(at(view.origin, position)), acceptedByModel, enablers: acceptedByModel ? [] : enablersOf(stuck) };
    });
  return report;
}

/**
 * A longest prefix for the report: searched over the whole relaxed partition
 * from the initial state; if that runs out of steps, over the core's time
 * window (minimize.ts, `windowAround`) from the reachable start state that
 * places the most core operations. Bounded by steps only: a report is worth
 * finishing even when the time budget ran out. Undefined if neither works.
 */
function findLongestPrefix<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly SearchOperation<I, O>[],
  core: readonly number[],
  settings: { minimize: Required<MinimizeOptions> | undefined; maxSteps: number; maxStartStates: number; clock: () => number },
):
  | {
      view: { ops: SearchOperation<I, O>[]; origin: number[] };
      start: S;
      prefixStart: NonNullable<FailureReport<S, I, O>['prefixStart']>;
      placements: Placement[];
      state: S;
    }
  | undefined {
  const budget = { maxSteps: settings.minimize?.maxStepsPerAttempt ?? settings.maxSteps, deadline: Infinity, clock: settings.clock };
  const whole = relaxOutsideCore(model, ops, new Set(core));
  // With the window to fall back on, do not spend long on the whole history.
  const windowPossible = settings.maxStartStates > 0;
  const wholeBudget = windowPossible ? { ...budget, maxSteps: Math.min(budget.maxSteps, EXPLAIN_FROM_START_STEPS) } : budget;
  const wholeSearch = searchLinearization(model, whole.ops, wholeBudget, { trackLongestPrefix: true });
  if (wholeSearch.verdict === false && wholeSearch.longestPrefix) {
    return { view: whole, start: model.init(), prefixStart: { kind: 'initial' }, ...wholeSearch.longestPrefix };
  }
  if (!windowPossible) return undefined;
  const startStates = reachableStates(model, ops, settings.maxStartStates, budget);
  if (startStates === undefined) return undefined;
  // The same window as the proof (minimize.ts): unknown operations reusable,
  // so one may appear more than once in the prefix.
  const window = windowAround(model, ops, core, { reuseUnknown: true });
  let stepsLeft = budget.maxSteps;
  let best: { start: S; corePlaced: number; prefix: { placements: Placement[]; state: S } } | undefined;
  for (const start of startStates) {
    const search = searchLinearization(model, window.ops, { ...budget, maxSteps: stepsLeft }, { trackLongestPrefix: true, initialState: start });
    stepsLeft -= search.steps;
    // The window must fail from every start state, or it explains nothing.
    if (search.verdict !== false || search.longestPrefix === undefined) return undefined;
    const corePlaced = search.longestPrefix.placements.filter((placement) => !at(window.ops, placement.op).optional).length;
    if (best === undefined || corePlaced > best.corePlaced) best = { start, corePlaced, prefix: search.longestPrefix };
  }
  if (best === undefined) return undefined;
  return {
    view: window,
    start: best.start,
    prefixStart: { kind: 'reachable', from: window.from, to: window.to },
    ...best.prefix,
  };
}

function at<T>(items: readonly T[], index: number): T {
  if (index < 0 || index >= items.length) throw new Error(`internal: index ${index} out of range`);
  return items[index] as T;
}
