import test, { type ExecutionContext } from 'ava';
import {
  cas,
  check,
  failedOp,
  formatResult,
  okOp,
  read,
  registerModel,
  verifyWitnesses,
  write,
  type Model,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  type Verdict,
} from '../lincheck/index.ts';

type RegisterOp = Operation<RegisterInput, RegisterOutput>;

/** Checks against a fresh register; a `true` verdict must come with a valid witness. */
function verdictOf(t: ExecutionContext, history: RegisterOp[]): Verdict {
  const model = registerModel();
  const result = check(model, history);
  t.deepEqual(verifyWitnesses(model, history, result), [], formatResult(model, result));
  return result.linearizable;
}

test('sequential history that follows the register is linearizable', (t) => {
  const history = [
    okOp('a', read(), null, 0, 1),
    okOp('a', write(1), undefined, 2, 3),
    okOp('b', read(), 1, 4, 5),
    okOp('a', write(2), undefined, 6, 7),
    okOp('b', read(), 2, 8, 9),
  ];
  t.is(verdictOf(t, history), true);
});

test('an empty history is linearizable', (t) => {
  t.is(verdictOf(t, []), true);
});

test('sequential stale read after a completed overwrite is not linearizable', (t) => {
  const history = [okOp('a', write(1), undefined, 0, 1), okOp('a', write(2), undefined, 2, 3), okOp('b', read(), 1, 4, 5)];
  t.is(verdictOf(t, history), false);
});

test('reading a value never written is not linearizable', (t) => {
  const history = [okOp('a', write(1), undefined, 0, 10), okOp('b', read(), 7, 2, 8)];
  t.is(verdictOf(t, history), false);
});

test('reading the initial value is fine, and undefined counts as the absent initial value', (t) => {
  t.is(verdictOf(t, [okOp('a', read(), null, 0, 1)]), true);
  t.is(verdictOf(t, [okOp('a', read(), undefined, 0, 1)]), true);
  t.is(verdictOf(t, [okOp('a', read(), 0, 0, 1)]), false, '0 is a value, not absence');
});

test('a configured initial value is what the first read must see', (t) => {
  const model = registerModel({ initial: 5 });
  t.is(check(model, [okOp('a', read(), 5, 0, 1)]).linearizable, true);
  t.is(check(model, [okOp('a', read(), null, 0, 1)]).linearizable, false);
});

test('concurrent writes: either order is valid, but reads must agree on one', (t) => {
  const writes = [okOp('a', write(1), undefined, 0, 10), okOp('b', write(2), undefined, 0, 10)];
  t.is(verdictOf(t, [...writes, okOp('c', read(), 1, 11, 12)]), true);
  t.is(verdictOf(t, [...writes, okOp('c', read(), 2, 11, 12)]), true);
  t.is(verdictOf(t, [...writes, okOp('c', read(), 1, 11, 12), okOp('c', read(), 2, 13, 14)]), false, 'both writes are over: no more changes');
  const readsDuringWrites = [okOp('c', read(), 1, 2, 4), okOp('c', read(), 2, 5, 7)];
  t.is(verdictOf(t, [...writes, ...readsDuringWrites]), true, 'w1, read 1, w2, read 2');
  t.is(verdictOf(t, [...writes, ...readsDuringWrites, okOp('c', read(), 1, 11, 12)]), false, '2 was seen last, so write 2 came last');
});

test('a read overlapping a write may see the old or the new value', (t) => {
  const history = (seen: RegisterOutput): RegisterOp[] => [
    okOp('a', write(1), undefined, 0, 1),
    okOp('a', write(2), undefined, 10, 20),
    okOp('b', read(), seen, 12, 15),
  ];
  t.is(verdictOf(t, history(1)), true);
  t.is(verdictOf(t, history(2)), true);
  t.is(verdictOf(t, history(null)), false, 'the initial value was overwritten before the read began');
});

test('two overlapping reads may not see the new value and then the old one in real-time order', (t) => {
  const history = [
    okOp('a', write(1), undefined, 0, 1),
    okOp('a', write(2), undefined, 10, 100),
    okOp('b', read(), 2, 20, 30),
    okOp('c', read(), 1, 40, 50),
  ];
  t.is(verdictOf(t, history), false);
});

test('intervals are closed: operations that touch at one instant count as concurrent', (t) => {
  const history = [okOp('a', write(1), undefined, 0, 5), okOp('b', read(), null, 5, 6)];
  t.is(verdictOf(t, history), true);
  const separated = [okOp('a', write(1), undefined, 0, 5), okOp('b', read(), null, 5.001, 6)];
  t.is(verdictOf(t, separated), false);
});

test('cas succeeds exactly when the current value equals the expected one', (t) => {
  t.is(verdictOf(t, [okOp('a', write(1), undefined, 0, 1), okOp('a', cas(1, 2), true, 2, 3), okOp('b', read(), 2, 4, 5)]), true);
  t.is(verdictOf(t, [okOp('a', cas(null, 3), true, 0, 1), okOp('b', read(), 3, 2, 3)]), true, 'cas from the initial value');
  t.is(verdictOf(t, [okOp('a', write(1), undefined, 0, 1), okOp('a', cas(0, 2), true, 2, 3)]), false, 'value was 1, not 0');
});

test('a failed cas returns false and changes nothing', (t) => {
  const prefix = [okOp('a', write(0), undefined, 0, 1), okOp('a', cas(1, 2), false, 2, 3)];
  t.is(verdictOf(t, [...prefix, okOp('b', read(), 0, 4, 5)]), true);
  t.is(verdictOf(t, [...prefix, okOp('b', read(), 2, 4, 5)]), false, 'a false cas must not install its value');
  t.is(verdictOf(t, [okOp('a', write(1), undefined, 0, 1), okOp('a', cas(1, 2), false, 2, 3)]), false, 'value was 1: cas had to succeed');
});

test('two concurrent cas from the same value cannot both succeed', (t) => {
  const history = [okOp('a', write(0), undefined, 0, 1), okOp('b', cas(0, 1), true, 2, 10), okOp('c', cas(0, 2), true, 3, 9)];
  t.is(verdictOf(t, history), false);
  const oneWins = [okOp('a', write(0), undefined, 0, 1), okOp('b', cas(0, 1), true, 2, 10), okOp('c', cas(0, 2), false, 3, 9)];
  t.is(verdictOf(t, oneWins), true);
});

test('a cas with a non-boolean output is a harness bug and throws', (t) => {
  t.throws(() => check(registerModel(), [okOp('a', cas(0, 1), 1, 0, 1)]), { message: /true or false/ });
});

test('failed operations never take effect', (t) => {
  const base = [okOp('a', write(1), undefined, 0, 1), failedOp<RegisterInput, RegisterOutput>('b', write(2), 2, 3)];
  t.is(verdictOf(t, [...base, okOp('c', read(), 1, 4, 5)]), true);
  t.is(verdictOf(t, [...base, okOp('c', read(), 2, 4, 5)]), false);
  const result = check(registerModel(), [...base, okOp('c', read(), 1, 4, 5)]);
  t.is(result.counts.failed, 1);
  t.is(result.partitions[0]?.operationCount, 2, 'the failed write is not even searched');
});

test('the model interface is open: a counter model plugs into the same checker', (t) => {
  type CounterInput = { kind: 'add'; amount: number } | { kind: 'get' };
  const counter: Model<number, CounterInput, number | undefined> = {
    name: 'counter',
    init: () => 0,
    step: (state, input, output) => {
      if (input.kind === 'add') return { ok: true, newState: state + input.amount };
      return typeof output !== 'number' || output === state ? { ok: true, newState: state } : { ok: false };
    },
    key: (state) => String(state),
  };
  const add = (amount: number): CounterInput => ({ kind: 'add', amount });
  const getCount: CounterInput = { kind: 'get' };
  const concurrentAdds = [okOp('a', add(1), undefined, 0, 10), okOp('b', add(10), undefined, 0, 10)];
  t.is(check(counter, [...concurrentAdds, okOp('c', getCount, 10, 5, 6)]).linearizable, true, 'b added first');
  t.is(check(counter, [...concurrentAdds, okOp('c', getCount, 11, 11, 12)]).linearizable, true);
  t.is(check(counter, [...concurrentAdds, okOp('c', getCount, 10, 11, 12)]).linearizable, false, 'both adds are over');
  const report = formatResult(counter, check(counter, [...concurrentAdds, okOp('c', getCount, 10, 11, 12)]));
  t.regex(report, /NOT linearizable: whole history/, 'default describe functions work for a model without them');
});
