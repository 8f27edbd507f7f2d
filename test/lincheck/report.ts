/**
 * Plain-text rendering of a {@link CheckResult}, meant for test failure
 * messages and logs. DESIGN.md explains how to read it.
 */
import { partitionLabel, type CheckResult, type Enabler, type FailureReport, type OperationRef } from './checker.ts';
import type { Operation } from './history.ts';
import { describeOperationOf, describeStateOf, UNKNOWN_OUTPUT, type Model } from './model.ts';

export function formatResult<S, I, O>(model: Model<S, I, O>, result: CheckResult<S, I, O>): string {
  const verdict =
    result.linearizable === true ? 'linearizable' : result.linearizable === false ? 'NOT linearizable' : 'UNKNOWN (budget exhausted)';
  const tally = { linearizable: 0, not: 0, unknown: 0 };
  for (const partition of result.partitions) {
    if (partition.verdict === true) tally.linearizable++;
    else if (partition.verdict === false) tally.not++;
    else tally.unknown++;
  }
  const { counts } = result;
  const lines = [
    `lincheck: ${verdict} (model ${result.model}; ${counts.operations} operations: ${counts.ok} ok, ` +
      `${counts.failed} failed, ${counts.unknown} unknown; ${result.partitions.length} partition(s): ` +
      `${tally.linearizable} linearizable, ${tally.not} not, ${tally.unknown} unknown; ` +
      `${result.steps} steps, ${result.elapsedMs.toFixed(1)} ms)`,
  ];
  for (const reason of result.unknownReasons) lines.push(`  unknown: ${reason}`);
  for (const partition of result.partitions) {
    if (partition.verdict === false && partition.reason) lines.push(`  ${partitionLabel(partition.partition)}: ${partition.reason}`);
  }
  for (const failure of result.failures) lines.push('', formatFailure(model, failure));
  return lines.join('\n');
}

export function formatFailure<S, I, O>(model: Model<S, I, O>, failure: FailureReport<S, I, O>): string {
  const core = failure.operations.length;
  const { minimization } = failure;
  const heading = minimization.done
    ? `${core} of ${failure.partitionOperationCount} operation(s) suffice to show it ` +
      `(${minimization.oneMinimal ? '1-minimal' : 'not proven minimal (budget)'}, ${minimization.attempts} attempts)`
    : `${core} operation(s) (not shrunk: ${minimization.reason})`;
  const lines = [`NOT linearizable: ${partitionLabel(failure.partition)}: ${heading}`];
  lines.push(...formatOperationTable(model, failure.operations, '    '));
  const context: string[] = [];
  if (failure.relaxedCount > 0) {
    context.push(`${failure.relaxedCount} relaxed (each may have taken effect within its interval, with any output, or not at all)`);
  }
  if (failure.unknownCount > 0) {
    context.push(`${failure.unknownCount} of unknown outcome (each may have taken effect any time after its invocation, or not at all)`);
  }
  if (context.length > 0) lines.push(`  This holds whatever the other operations did: ${context.join('; ')}.`);

  if (failure.longestPrefix === undefined || failure.stateAfterPrefix === undefined) {
    lines.push('  (no prefix analysis: the step budget ran out re-checking the fragment)');
    return lines.join('\n');
  }
  const prefix = failure.longestPrefix;
  const corePlaced = prefix.filter(({ role }) => role === 'core').length;
  const start = failure.prefixStart;
  const from =
    start?.kind === 'reachable' && failure.prefixStartState !== undefined
      ? `from state ${describeStateOf(model, failure.prefixStartState)}, one of those reachable before time ` +
        `${formatTime(start.from)}, with only operations overlapping ${formatInterval({ invoke: start.from, complete: start.to })} ` +
        `(searching from the beginning ran out of steps; the core fails from every reachable state)`
      : `from initial state ${describeStateOf(model, model.init())}`;
  lines.push(`  Longest linearizable prefix (${corePlaced} of ${core} operation(s) above placed), ${from}:`);
  if (prefix.length === 0) lines.push('    (none: no operation can be linearized first)');
  const described = prefix.map(
    ({ operation, role }) => `#${operation.index} ${describeRef(model, operation)}${role === 'core' ? '' : ` [${role}]`}`,
  );
  const width = Math.max(0, ...described.map((text) => text.length));
  prefix.forEach(({ stateAfter }, position) => {
    lines.push(`    ${position + 1}. ${(described[position] ?? '').padEnd(width)}  => ${describeStateOf(model, stateAfter)}`);
  });
  lines.push(`  State after the prefix: ${describeStateOf(model, failure.stateAfterPrefix)}`);

  if (failure.mustPrecede && failure.couldNotBePlaced) {
    const deadline = failure.mustPrecede;
    lines.push(
      `  Could not place next (one of these had to be linearized before #${deadline.index} completed at ` +
        `${formatTime(deadline.operation.complete)}):`,
    );
    const rows = formatOperationTable(
      model,
      failure.couldNotBePlaced.map(({ operation }) => operation),
      '    ',
    );
    failure.couldNotBePlaced.forEach(({ acceptedByModel, enablers }, position) => {
      const why = acceptedByModel ? 'accepted by the model, but every continuation fails' : 'rejected by the model in this state';
      lines.push(`${rows[position] ?? ''}  <- ${why}`);
      for (const enabler of enablers) lines.push(`      ${describeEnabler(model, enabler)}`);
    });
  }
  return lines.join('\n');
}

function describeEnabler<S, I, O>(model: Model<S, I, O>, enabler: Enabler<I, O>): string {
  const { operation, role, whyNot } = enabler;
  const what = `#${operation.index} ${describeRef(model, operation)} [${role}, ${formatInterval(operation.operation)}]`;
  const why =
    whyNot.kind === 'completed-before'
      ? `it completed before #${whyNot.other.index} was invoked`
      : whyNot.kind === 'invoked-after'
        ? `it was invoked after #${whyNot.other.index} completed`
        : 'no continuation from there succeeds';
  return `would be accepted after ${what}, but ${why}`;
}

/** One line per operation: index, client, operation, outcome, [invoke, complete]. */
function formatOperationTable<S, I, O>(model: Model<S, I, O>, refs: readonly OperationRef<I, O>[], indent: string): string[] {
  const columns = refs.map((ref) => [
    `#${ref.index}`,
    `client ${String(ref.operation.client)}`,
    describeRef(model, ref),
    ref.operation.outcome === 'info' ? 'unknown' : ref.operation.outcome,
    formatInterval(ref.operation),
  ]);
  const widths = [0, 1, 2, 3].map((column) => Math.max(0, ...columns.map((row) => (row[column] ?? '').length)));
  return columns.map((row) => indent + row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd());
}

function describeRef<S, I, O>(model: Model<S, I, O>, ref: OperationRef<I, O>): string {
  const op = ref.operation;
  return describeOperationOf(model, op.input, op.outcome === 'ok' ? (op.output as O) : UNKNOWN_OUTPUT);
}

function formatInterval(operation: Pick<Operation<unknown, unknown>, 'invoke' | 'complete'>): string {
  return `[${formatTime(operation.invoke)}, ${formatTime(operation.complete)}]`;
}

function formatTime(time: number): string {
  if (time === Infinity) return '+inf';
  return Number.isInteger(time) ? String(time) : time.toFixed(3);
}
