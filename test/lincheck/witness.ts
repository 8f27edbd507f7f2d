/**
 * Independent validation of the checker's "linearizable" answers: every
 * linearizable partition comes with a witness order, and this re-checks it
 * from the definition, sharing no code with the search. Tests use it so
 * that a `true` verdict is trusted only when its evidence holds up.
 */
import type { CheckResult } from './checker.ts';
import type { Operation } from './history.ts';
import { UNKNOWN_OUTPUT, type Model } from './model.ts';

/**
 * Returns the problems found (empty when every witness is valid). A witness
 * is valid when it contains every 'ok' operation of its partition exactly
 * once, no failed operation, unknown ones at most once; never puts an
 * operation before one that completed before it was invoked; and replays on
 * the model from `init()`.
 */
export function verifyWitnesses<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  result: CheckResult<S, I, O>,
): string[] {
  const problems: string[] = [];
  for (const partition of result.partitions) {
    if (partition.verdict !== true) continue;
    const label = partition.partition ?? 'whole history';
    const order = partition.linearization;
    if (order === undefined) {
      problems.push(`${label}: linearizable but no witness`);
      continue;
    }
    const inOrder = new Set(order);
    if (inOrder.size !== order.length) problems.push(`${label}: an operation appears twice`);

    history.forEach((op, index) => {
      const name = model.partition ? model.partition(op.input) : null;
      if (name !== partition.partition) return;
      if (op.outcome === 'ok' && !inOrder.has(index)) problems.push(`${label}: ok operation #${index} missing`);
      if (op.outcome === 'fail' && inOrder.has(index)) problems.push(`${label}: failed operation #${index} took effect`);
    });

    for (let later = 0; later < order.length; later++) {
      const laterOp = history[order[later] ?? -1];
      if (laterOp === undefined) {
        problems.push(`${label}: witness names a non-existent operation`);
        continue;
      }
      if (model.partition && model.partition(laterOp.input) !== partition.partition) {
        problems.push(`${label}: operation #${order[later]} belongs to another partition`);
      }
      for (let earlier = 0; earlier < later; earlier++) {
        const earlierOp = history[order[earlier] ?? -1];
        // Real-time order: if `laterOp` finished before `earlierOp` began, it must come first.
        if (earlierOp !== undefined && laterOp.complete < earlierOp.invoke) {
          problems.push(`${label}: #${order[later]} completed before #${order[earlier]} was invoked but is placed after it`);
        }
      }
    }

    let state = model.init();
    for (const index of order) {
      const op = history[index];
      if (op === undefined) continue;
      const step = model.step(state, op.input, op.outcome === 'ok' ? (op.output as O) : UNKNOWN_OUTPUT);
      if (!step.ok) {
        problems.push(`${label}: model rejects #${index} at its place in the witness`);
        break;
      }
      state = step.newState;
    }
  }
  return problems;
}
