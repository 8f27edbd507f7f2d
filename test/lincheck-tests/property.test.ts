/**
 * Randomised tests: histories built from a real sequential execution are
 * linearizable by construction; corrupting one read makes them not.
 *
 * Construction: run random operations one by one on a real register (or
 * map). Operation i takes effect at time 10*i, its "true linearization
 * point"; its interval is then stretched to [10*i - lead, 10*i + lag] with
 * random lead and lag up to 30, so neighbouring operations overlap and the
 * checker must find the order among several candidates. Some operations are
 * recorded as failed (not applied) or unknown (applied or not, at random).
 */
import test from 'ava';
import fc from 'fast-check';
import {
  UNKNOWN_OUTPUT,
  check,
  formatResult,
  kvModel,
  registerModel,
  verifyWitnesses,
  type KvInput,
  type KvOutput,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  type RegisterValue,
  type Scalar,
} from '../lincheck/index.ts';
import { relaxOutsideCore } from '../lincheck/minimize.ts';
import { searchLinearization, type SearchOperation } from '../lincheck/search.ts';

/** What happened to an operation: recorded ok, failed (not applied), unknown and applied, unknown and not applied. */
type Fate = 'ok' | 'fail' | 'unknown-applied' | 'unknown-dropped';

const fateArb: fc.Arbitrary<Fate> = fc.oneof(
  { arbitrary: fc.constant<Fate>('ok'), weight: 8 },
  { arbitrary: fc.constant<Fate>('fail'), weight: 1 },
  { arbitrary: fc.constant<Fate>('unknown-applied'), weight: 1 },
  { arbitrary: fc.constant<Fate>('unknown-dropped'), weight: 1 },
);

/** A small value domain, so that values repeat and the search faces real ambiguity. */
const valueArb = fc.integer({ min: 0, max: 3 });
/** Never produced by `valueArb`, and not the initial null: a value no one wrote. */
const NEVER_WRITTEN = 99;

interface Planned<Input> {
  client: number;
  input: Input;
  fate: Fate;
  lead: number;
  lag: number;
}

function plannedArb<Input>(inputArb: fc.Arbitrary<Input>): fc.Arbitrary<Planned<Input>> {
  return fc.record({
    client: fc.integer({ min: 0, max: 4 }),
    input: inputArb,
    fate: fateArb,
    lead: fc.integer({ min: 0, max: 30 }),
    lag: fc.integer({ min: 0, max: 30 }),
  });
}

/**
 * Executes the plan sequentially with `apply` (which mutates the real object
 * and returns the output) and records it as a concurrent history.
 */
function record<Input, Output>(plan: Planned<Input>[], apply: (input: Input) => Output): Operation<Input, Output>[] {
  return plan.map(({ client, input, fate, lead, lag }, position) => {
    const linearizationPoint = 10 * position;
    const invoke = linearizationPoint - lead;
    const complete = linearizationPoint + lag;
    switch (fate) {
      case 'ok':
        return { client, input, output: apply(input), outcome: 'ok', invoke, complete };
      case 'fail':
        return { client, input, outcome: 'fail', invoke, complete };
      case 'unknown-applied':
        apply(input);
        return { client, input, outcome: 'info', invoke, complete: Infinity };
      case 'unknown-dropped':
        return { client, input, outcome: 'info', invoke, complete: Infinity };
    }
  });
}

// ---------------------------------------------------------------- register

const registerInputArb: fc.Arbitrary<RegisterInput> = fc.oneof(
  fc.constant<RegisterInput>({ kind: 'read' }),
  valueArb.map((value): RegisterInput => ({ kind: 'write', value })),
  fc.tuple(fc.option(valueArb, { nil: null }), valueArb).map(([expected, value]): RegisterInput => ({ kind: 'cas', expected, value })),
);

/** A plan ending in an ok read, so that every history has at least one read to corrupt. */
const registerPlanArb = fc
  .array(plannedArb(registerInputArb), { minLength: 0, maxLength: 50 })
  .chain((plan) =>
    plannedArb(fc.constant<RegisterInput>({ kind: 'read' })).map((last) => [...plan, { ...last, fate: 'ok' as const }]),
  );

function runRegister(plan: Planned<RegisterInput>[]): Operation<RegisterInput, RegisterOutput>[] {
  let value: RegisterValue = null;
  return record<RegisterInput, RegisterOutput>(plan, (input) => {
    switch (input.kind) {
      case 'read':
        return value;
      case 'write':
        value = input.value;
        return undefined;
      case 'cas': {
        const matches = value === input.expected;
        if (matches) value = input.value;
        return matches;
      }
    }
  });
}

test('register: histories of a real register are linearizable, with a valid witness', (t) => {
  const model = registerModel();
  t.notThrows(() =>
    fc.assert(
      fc.property(registerPlanArb, (plan) => {
        const history = runRegister(plan);
        const result = check(model, history);
        if (result.linearizable !== true) throw new Error(formatResult(model, result));
        const problems = verifyWitnesses(model, history, result);
        if (problems.length > 0) throw new Error(problems.join('\n'));
      }),
      { numRuns: 300 },
    ),
  );
});

test('register: a read corrupted to a never-written value is caught and reported', (t) => {
  const model = registerModel();
  t.notThrows(() =>
    fc.assert(
      fc.property(registerPlanArb, fc.nat(), (plan, pick) => {
        const history = runRegister(plan);
        const reads = history.flatMap((op, index) => (op.outcome === 'ok' && op.input.kind === 'read' ? [index] : []));
        const corrupted = reads[pick % reads.length] as number;
        history[corrupted] = { ...(history[corrupted] as Operation<RegisterInput, RegisterOutput>), output: NEVER_WRITTEN };
        const result = check(model, history);
        const report = formatResult(model, result);
        if (result.linearizable !== false) throw new Error(`expected a violation:\n${report}`);
        const fragment = result.failures[0]?.operations ?? [];
        if (!fragment.some(({ index }) => index === corrupted)) throw new Error(`corrupted read #${corrupted} not in:\n${report}`);
        if (check(model, fragment.map(({ operation }) => operation)).linearizable !== false) {
          throw new Error(`the reported fragment does not fail on its own:\n${report}`);
        }
      }),
      { numRuns: 300 },
    ),
  );
});

// ---------------------------------------------------------------- agreement with brute force

/**
 * Linearizability straight from the definition, by exhaustive search without
 * memoisation: for some choice of which optional operations took effect, the
 * chosen ones and all required ones have an order in which nothing comes
 * after an operation that completed before it was invoked, and that order
 * replays on the model. Exponential: tiny histories only.
 */
function bruteForceLinearizable(ops: readonly SearchOperation<RegisterInput, RegisterOutput>[]): boolean {
  const model = registerModel();
  const someOrderReplays = (remaining: readonly SearchOperation<RegisterInput, RegisterOutput>[], state: RegisterValue): boolean =>
    remaining.length === 0 ||
    remaining.some((next) => {
      if (remaining.some((other) => other.complete < next.invoke)) return false;
      const stepped = model.step(state, next.input, next.output);
      return stepped.ok && someOrderReplays(remaining.filter((op) => op !== next), stepped.newState);
    });
  const optional = ops.filter((op) => op.optional);
  for (let mask = 0; mask < 2 ** optional.length; mask++) {
    const tookEffect = optional.filter((_, bit) => (mask >> bit) & 1);
    if (someOrderReplays([...ops.filter((op) => !op.optional), ...tookEffect], model.init())) return true;
  }
  return false;
}

/** What the checker searches: failed operations dropped, unknown ones optional and open-ended. */
function asSearchOperations(history: readonly Operation<RegisterInput, RegisterOutput>[]): SearchOperation<RegisterInput, RegisterOutput>[] {
  return history.flatMap((op): SearchOperation<RegisterInput, RegisterOutput>[] => {
    if (op.outcome === 'fail') return [];
    if (op.outcome === 'info') return [{ input: op.input, output: UNKNOWN_OUTPUT, invoke: op.invoke, complete: Infinity, optional: true }];
    return [{ input: op.input, output: op.output, invoke: op.invoke, complete: op.complete, optional: false }];
  });
}

/** Arbitrary small histories with arbitrary outputs: mostly not linearizable, some are. */
const tinyHistoryArb: fc.Arbitrary<Operation<RegisterInput, RegisterOutput>[]> = fc.array(
  fc
    .record({
      client: fc.integer({ min: 0, max: 2 }),
      input: fc.oneof(
        fc.constant<RegisterInput>({ kind: 'read' }),
        fc.integer({ min: 0, max: 2 }).map((value): RegisterInput => ({ kind: 'write', value })),
        fc
          .tuple(fc.option(fc.integer({ min: 0, max: 2 }), { nil: null }), fc.integer({ min: 0, max: 2 }))
          .map(([expected, value]): RegisterInput => ({ kind: 'cas', expected, value })),
      ),
      readValue: fc.option(fc.integer({ min: 0, max: 2 }), { nil: null }),
      casResult: fc.boolean(),
      fate: fateArb,
      invoke: fc.integer({ min: 0, max: 12 }),
      duration: fc.integer({ min: 0, max: 6 }),
    })
    .map(({ client, input, readValue, casResult, fate, invoke, duration }): Operation<RegisterInput, RegisterOutput> => {
      const output = input.kind === 'read' ? readValue : input.kind === 'cas' ? casResult : undefined;
      if (fate === 'ok') return { client, input, output, outcome: 'ok', invoke, complete: invoke + duration };
      if (fate === 'fail') return { client, input, outcome: 'fail', invoke, complete: invoke + duration };
      return { client, input, outcome: 'info', invoke, complete: Infinity };
    }),
  { maxLength: 7 },
);

test('register: the checker agrees with brute force on tiny arbitrary histories', (t) => {
  const model = registerModel();
  const seen = { linearizable: 0, not: 0 };
  t.notThrows(() =>
    fc.assert(
      fc.property(tinyHistoryArb, (history) => {
        const expected = bruteForceLinearizable(asSearchOperations(history));
        const result = check(model, history);
        if (result.linearizable !== expected) {
          throw new Error(`brute force says ${expected}, checker says:\n${formatResult(model, result)}`);
        }
        seen[expected ? 'linearizable' : 'not']++;
      }),
      { numRuns: 2000 },
    ),
  );
  // Both answers must be well represented, or the agreement proves little.
  t.true(seen.linearizable > 200 && seen.not > 200, JSON.stringify(seen));
});

test('register: with operations relaxed outside a random core, the search still agrees with brute force', (t) => {
  // The relaxed (bounded optional) operations exist only for shrinking; the
  // soundness of every reported core rests on this search being exact.
  const model = registerModel();
  const seen = { linearizable: 0, not: 0 };
  t.notThrows(() =>
    fc.assert(
      fc.property(tinyHistoryArb, fc.array(fc.boolean(), { minLength: 7, maxLength: 7 }), (history, inCore) => {
        const ops = asSearchOperations(history);
        const core = new Set(ops.flatMap((_, index) => (inCore[index] ? [index] : [])));
        const relaxed = relaxOutsideCore(model, ops, core).ops;
        const expected = bruteForceLinearizable(relaxed);
        const result = searchLinearization(model, relaxed, { maxSteps: 1_000_000, deadline: Infinity, clock: () => 0 });
        if (result.verdict !== expected) throw new Error(`brute force says ${expected}, search says ${result.verdict}`);
        seen[expected ? 'linearizable' : 'not']++;
      }),
      { numRuns: 2000 },
    ),
  );
  t.true(seen.linearizable > 200 && seen.not > 200, JSON.stringify(seen));
});

test('register: every reported core is sound and, when claimed, 1-minimal (checked by brute force)', (t) => {
  const model = registerModel();
  let failuresChecked = 0;
  t.notThrows(() =>
    fc.assert(
      fc.property(tinyHistoryArb, (history) => {
        const result = check(model, history);
        const failure = result.failures[0];
        if (failure === undefined) return;
        failuresChecked++;
        // Positions in the searched operations (failed ones dropped), as the checker numbers them.
        const searched = history.flatMap((op, index) => (op.outcome === 'fail' ? [] : [index]));
        const ops = asSearchOperations(history);
        const core = failure.operations.map(({ index }) => searched.indexOf(index));
        if (bruteForceLinearizable(relaxOutsideCore(model, ops, new Set(core)).ops)) {
          throw new Error(`core ${JSON.stringify(core)} does not fail with the rest relaxed:\n${formatResult(model, result)}`);
        }
        if (failure.minimization.done && failure.minimization.oneMinimal) {
          for (const dropped of core) {
            const smaller = new Set(core.filter((index) => index !== dropped));
            if (!bruteForceLinearizable(relaxOutsideCore(model, ops, smaller).ops)) {
              throw new Error(`claimed 1-minimal, but #${dropped} can be relaxed too:\n${formatResult(model, result)}`);
            }
          }
        }
      }),
      { numRuns: 2000 },
    ),
  );
  t.true(failuresChecked > 200, `only ${failuresChecked} failures seen`);
});

// ---------------------------------------------------------------- key-value map

const KEYS = ['x', 'y', 'z'];
const keyArb = fc.constantFrom(...KEYS);
const kvInputArb: fc.Arbitrary<KvInput> = fc.oneof(
  keyArb.map((key): KvInput => ({ kind: 'get', key })),
  fc.tuple(keyArb, valueArb).map(([key, value]): KvInput => ({ kind: 'put', key, value })),
  keyArb.map((key): KvInput => ({ kind: 'delete', key })),
  fc
    .tuple(keyArb, fc.option(valueArb, { nil: null }), valueArb)
    .map(([key, expected, value]): KvInput => ({ kind: 'cas', key, expected, value })),
);

const kvPlanArb = fc
  .array(plannedArb(kvInputArb), { minLength: 0, maxLength: 60 })
  .chain((plan) =>
    plannedArb(keyArb.map((key): KvInput => ({ kind: 'get', key }))).map((last) => [...plan, { ...last, fate: 'ok' as const }]),
  );

function runKv(plan: Planned<KvInput>[]): Operation<KvInput, KvOutput>[] {
  const map = new Map<string, Scalar>();
  return record<KvInput, KvOutput>(plan, (input) => {
    switch (input.kind) {
      case 'get':
        return map.get(input.key) ?? null;
      case 'put':
        map.set(input.key, input.value);
        return undefined;
      case 'delete':
        map.delete(input.key);
        return undefined;
      case 'cas': {
        const matches = (map.get(input.key) ?? null) === input.expected;
        if (matches) map.set(input.key, input.value);
        return matches;
      }
    }
  });
}

test('kv: histories of a real map are linearizable, with a valid witness per key', (t) => {
  const model = kvModel();
  t.notThrows(() =>
    fc.assert(
      fc.property(kvPlanArb, (plan) => {
        const history = runKv(plan);
        const result = check(model, history);
        if (result.linearizable !== true) throw new Error(formatResult(model, result));
        const problems = verifyWitnesses(model, history, result);
        if (problems.length > 0) throw new Error(problems.join('\n'));
      }),
      { numRuns: 300 },
    ),
  );
});

test('kv: a corrupted get fails exactly its own key', (t) => {
  const model = kvModel();
  t.notThrows(() =>
    fc.assert(
      fc.property(kvPlanArb, fc.nat(), (plan, pick) => {
        const history = runKv(plan);
        const gets = history.flatMap((op, index) => (op.outcome === 'ok' && op.input.kind === 'get' ? [index] : []));
        const corrupted = gets[pick % gets.length] as number;
        const original = history[corrupted] as Operation<KvInput, KvOutput>;
        history[corrupted] = { ...original, output: NEVER_WRITTEN };
        const result = check(model, history);
        const failing = result.partitions.filter((partition) => partition.verdict !== true).map((partition) => partition.partition);
        if (failing.length !== 1 || failing[0] !== original.input.key || result.failures[0]?.partition !== original.input.key) {
          throw new Error(`expected only key ${original.input.key} to fail:\n${formatResult(model, result)}`);
        }
      }),
      { numRuns: 300 },
    ),
  );
});
