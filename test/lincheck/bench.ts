/**
 * Times the checker on generated key-value histories and prints the figures.
 * Not a test (no timing assertions anywhere): run it by hand.
 *
 *   npx tsx test/lincheck/bench.ts
 *
 * Histories come from a simulated correct store: each client issues one
 * operation at a time with a random duration; each operation takes effect at
 * a random instant inside its interval, in which order they are applied to a
 * real Map to get the outputs. So every generated history is linearizable,
 * with as much overlap as the client count allows. 2% of operations end
 * with an unknown outcome (half of them applied), 1% fail (not applied).
 */
import { check } from './checker.ts';
import type { Operation } from './history.ts';
import { kvModel, type KvInput, type KvOutput, type Scalar } from './models.ts';
import { formatResult } from './report.ts';

/** xorshift32: a small deterministic generator, so runs are comparable. */
function randomSource(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 0x1_0000_0000;
  };
}

interface Shape {
  operations: number;
  clients: number;
  keys: number;
  seed: number;
}

function generateHistory({ operations, clients, keys, seed }: Shape): Operation<KvInput, KvOutput>[] {
  const random = randomSource(seed);
  const pick = (count: number): number => Math.floor(random() * count);
  const clientClock = new Array<number>(clients).fill(0);
  const planned: { op: Operation<KvInput, KvOutput>; effectAt: number; applied: boolean }[] = [];
  for (let n = 0; n < operations; n++) {
    const client = pick(clients);
    const key = `k${pick(keys)}`;
    const value = pick(5);
    const roll = random();
    const input: KvInput =
      roll < 0.4
        ? { kind: 'get', key }
        : roll < 0.7
          ? { kind: 'put', key, value }
          : roll < 0.9
            ? { kind: 'cas', key, expected: pick(2) === 0 ? null : pick(5), value }
            : { kind: 'delete', key };
    const invoke = (clientClock[client] ?? 0) + random() * 2;
    const complete = invoke + 1 + random() * 9;
    clientClock[client] = complete;
    const fate = random();
    const outcome = fate < 0.02 ? 'info' : fate < 0.03 ? 'fail' : 'ok';
    const applied = outcome === 'ok' || (outcome === 'info' && pick(2) === 0);
    planned.push({
      op: { client, input, outcome, invoke, complete: outcome === 'info' ? Infinity : complete },
      effectAt: invoke + random() * (complete - invoke),
      applied,
    });
  }
  const store = new Map<string, Scalar>();
  for (const { op, applied } of [...planned].sort((a, b) => a.effectAt - b.effectAt)) {
    if (!applied) continue;
    const input = op.input;
    const current = store.get(input.key) ?? null;
    let output: KvOutput = undefined;
    if (input.kind === 'get') output = current;
    else if (input.kind === 'put') store.set(input.key, input.value);
    else if (input.kind === 'delete') store.delete(input.key);
    else {
      output = current === input.expected;
      if (output) store.set(input.key, input.value);
    }
    if (op.outcome === 'ok') op.output = output;
  }
  return planned.map(({ op }) => op);
}

/** Replaces the output of the last successful get with a value nobody wrote. */
function corruptLastGet(history: Operation<KvInput, KvOutput>[]): string {
  for (let index = history.length - 1; index >= 0; index--) {
    const op = history[index];
    if (op !== undefined && op.outcome === 'ok' && op.input.kind === 'get') {
      history[index] = { ...op, output: 'never-written' };
      return op.input.key;
    }
  }
  throw new Error('no get to corrupt');
}

function time<T>(run: () => T): { result: T; ms: number } {
  const start = performance.now();
  const result = run();
  return { result, ms: performance.now() - start };
}

const REPEATS = 5;
const model = kvModel();
for (const shape of [
  { operations: 1000, clients: 5, keys: 10, seed: 1 },
  { operations: 1000, clients: 5, keys: 1, seed: 2 },
  { operations: 10_000, clients: 10, keys: 10, seed: 3 },
]) {
  const label = `${shape.operations} ops, ${shape.clients} clients, ${shape.keys} key(s)`;
  const history = generateHistory(shape);
  const runs = Array.from({ length: REPEATS }, () => time(() => check(model, history)));
  const verdicts = new Set(runs.map((run) => run.result.linearizable));
  const times = runs.map((run) => run.ms).sort((a, b) => a - b);
  const steps = runs[0]?.result.steps ?? 0;
  console.log(
    `${label}: linearizable=${[...verdicts].join('/')}; ` +
      `median ${times[Math.floor(REPEATS / 2)]?.toFixed(1)} ms, min ${times[0]?.toFixed(1)} ms over ${REPEATS} runs; ${steps} steps`,
  );

  const corrupted = [...history];
  const badKey = corruptLastGet(corrupted);
  const failing = time(() => check(model, corrupted));
  const failure = failing.result.failures[0];
  console.log(
    `  one get corrupted (key ${badKey}): linearizable=${failing.result.linearizable}; ` +
      `${failing.ms.toFixed(1)} ms including shrinking; core ${failure?.operations.length} of ` +
      `${failure?.partitionOperationCount} operations in partition ${JSON.stringify(failure?.partition)}`,
  );
  if (process.argv.includes('--verbose')) console.log(formatResult(model, failing.result));
}
