import test, { type ExecutionContext } from 'ava';
import {
  cas,
  check,
  formatResult,
  okOp,
  read,
  registerModel,
  unknownOp,
  verifyWitnesses,
  write,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  type Verdict,
} from '../lincheck/index.ts';

type RegisterOp = Operation<RegisterInput, RegisterOutput>;

function verdictOf(t: ExecutionContext, history: RegisterOp[]): Verdict {
  const model = registerModel();
  const result = check(model, history);
  t.deepEqual(verifyWitnesses(model, history, result), [], formatResult(model, result));
  return result.linearizable;
}

const before = [okOp<RegisterInput, RegisterOutput>('a', write(1), undefined, 0, 1), unknownOp<RegisterInput, RegisterOutput>('b', write(2), 2)];

test('a later read may see the unknown write (it took effect)', (t) => {
  t.is(verdictOf(t, [...before, okOp('c', read(), 2, 3, 4)]), true);
});

test('a later read may miss the unknown write (not yet, or never)', (t) => {
  t.is(verdictOf(t, [...before, okOp('c', read(), 1, 3, 4)]), true);
});

test('missing it first and seeing it later is fine: it may take effect arbitrarily late', (t) => {
  t.is(verdictOf(t, [...before, okOp('c', read(), 1, 3, 4), okOp('c', read(), 2, 100, 101)]), true);
});

test('seeing the unknown write and then not seeing it, with no other write, is not linearizable', (t) => {
  const history = [...before, okOp('c', read(), 2, 3, 4), okOp('c', read(), 1, 5, 6)];
  t.is(verdictOf(t, history), false);
});

test('an unknown write cannot take effect before it was invoked', (t) => {
  const history = [okOp<RegisterInput, RegisterOutput>('c', read(), 2, 0, 1), unknownOp<RegisterInput, RegisterOutput>('b', write(2), 5)];
  t.is(verdictOf(t, history), false);
});

test('an unknown write may take effect after later completed writes', (t) => {
  const history = [...before, okOp('a', write(3), undefined, 10, 11), okOp('c', read(), 2, 20, 21)];
  t.is(verdictOf(t, history), true, 'order: write 1, write 3, unknown write 2, read 2');
  const thenThree = [...history, okOp('c', read(), 3, 30, 31)];
  t.is(verdictOf(t, thenThree), false, 'write 3 was already before write 2: 3 cannot reappear');
});

test('unknown cas: both branches are explored, but the state dictates what it does', (t) => {
  const start = [okOp<RegisterInput, RegisterOutput>('a', write(0), undefined, 0, 1), unknownOp<RegisterInput, RegisterOutput>('b', cas(0, 1), 2)];
  t.is(verdictOf(t, [...start, okOp('c', read(), 1, 3, 4)]), true, 'it succeeded');
  t.is(verdictOf(t, [...start, okOp('c', read(), 0, 3, 4)]), true, 'not (yet)');
  t.is(verdictOf(t, [...start, okOp('c', read(), 1, 3, 4), okOp('c', read(), 0, 5, 6)]), false);
  const wrongExpectation = [
    okOp<RegisterInput, RegisterOutput>('a', write(5), undefined, 0, 1),
    unknownOp<RegisterInput, RegisterOutput>('b', cas(0, 1), 2),
    okOp<RegisterInput, RegisterOutput>('c', read(), 1, 3, 4),
  ];
  t.is(verdictOf(t, wrongExpectation), false, 'the value was never 0, so the cas could not install 1');
});

test('an unknown write that takes effect is usable only once', (t) => {
  const history = [
    unknownOp<RegisterInput, RegisterOutput>('b', write(2), 0),
    okOp<RegisterInput, RegisterOutput>('a', write(1), undefined, 1, 2),
    okOp<RegisterInput, RegisterOutput>('c', read(), 2, 3, 4),
    okOp<RegisterInput, RegisterOutput>('a', write(1), undefined, 5, 6),
    okOp<RegisterInput, RegisterOutput>('c', read(), 2, 7, 8),
  ];
  t.is(verdictOf(t, history), false);
});

test('unknown reads constrain nothing and are dropped before the search', (t) => {
  const history = [
    okOp<RegisterInput, RegisterOutput>('a', write(1), undefined, 0, 1),
    unknownOp<RegisterInput, RegisterOutput>('b', read(), 2),
    okOp<RegisterInput, RegisterOutput>('c', read(), 1, 3, 4),
  ];
  const result = check(registerModel(), history);
  t.is(result.linearizable, true);
  t.is(result.counts.droppedUnknownReads, 1);
  t.is(result.partitions[0]?.operationCount, 2);
});

test('a history of unknown operations only is linearizable (none need to have happened)', (t) => {
  const history = [unknownOp<RegisterInput, RegisterOutput>('a', write(1), 0), unknownOp<RegisterInput, RegisterOutput>('b', cas(7, 8), 1)];
  t.is(verdictOf(t, history), true);
});
