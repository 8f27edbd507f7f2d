import test from 'ava';
import {
  cas,
  check,
  formatResult,
  okOp,
  read,
  registerModel,
  unknownOp,
  write,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
} from '../lincheck/index.ts';

type RegisterOp = Operation<RegisterInput, RegisterOutput>;

/**
 * Twenty rounds of "write i; read -> i", then a stale read (write 100;
 * write 101; read -> 100), then more healthy rounds.
 */
function longHistoryWithOneStaleRead(): { history: RegisterOp[]; staleRound: { write100: number; write101: number; read100: number } } {
  const history: RegisterOp[] = [];
  const round = (value: number, at: number): void => {
    history.push(okOp('a', write(value), undefined, at, at + 1), okOp('b', read(), value, at + 2, at + 3));
  };
  for (let i = 0; i < 20; i++) round(i, 10 * i);
  const staleRound = { write100: history.length, write101: history.length + 1, read100: history.length + 2 };
  history.push(
    okOp('a', write(100), undefined, 300, 301),
    okOp('c', write(101), undefined, 302, 303),
    okOp('b', read(), 100, 304, 305),
  );
  for (let i = 0; i < 20; i++) round(200 + i, 400 + 10 * i);
  return { history, staleRound };
}

test('shrinking a long history to the stale read: overwrite and read in the core, the old write as the enabler', (t) => {
  const { history, staleRound } = longHistoryWithOneStaleRead();
  const model = registerModel();
  const result = check(model, history);
  t.is(result.linearizable, false);
  const failure = result.failures[0];
  if (failure === undefined) return t.fail('no failure report');
  // write(100) is not needed in the core: even relaxed (it may or may not
  // have happened within [300, 301]) it cannot come after write(101).
  t.deepEqual(
    failure.operations.map(({ index }) => index),
    [staleRound.write101, staleRound.read100],
    formatResult(model, result),
  );
  t.is(failure.partitionOperationCount, history.length);
  t.is(failure.relaxedCount, history.length - 2);
  t.is(failure.unknownCount, 0);
  t.like(failure.minimization, { done: true, oneMinimal: true });
  t.deepEqual(
    failure.longestPrefix?.map(({ operation, role, stateAfter }) => [operation.index, role, stateAfter]),
    [[staleRound.write101, 'core', 101]],
  );
  t.is(failure.stateAfterPrefix, 101);
  t.is(failure.mustPrecede?.index, staleRound.read100);
  const stuck = failure.couldNotBePlaced ?? [];
  t.deepEqual(
    stuck.map(({ operation, acceptedByModel }) => [operation.index, acceptedByModel]),
    [[staleRound.read100, false]],
  );
  t.deepEqual(
    stuck[0]?.enablers.map(({ operation, role, whyNot }) => [operation.index, role, whyNot.kind === 'completed-before' && whyNot.other.index]),
    [[staleRound.write100, 'relaxed', staleRound.write101]],
  );
  t.is(check(model, failure.operations.map(({ operation }) => operation)).linearizable, false, 'the core fails on its own');
});

test('the text report reads like the explanation of the bug', (t) => {
  const model = registerModel();
  const history: RegisterOp[] = [
    okOp('a', write(1), undefined, 0, 1),
    unknownOp('b', write(2), 2),
    okOp('c', read(), 2, 3, 4),
    okOp('c', read(), 1, 5, 6.5),
  ];
  const text = formatResult(model, check(model, history, { clock: () => 0 }));
  t.is(
    text,
    [
      'lincheck: NOT linearizable (model register; 4 operations: 3 ok, 0 failed, 1 unknown; 1 partition(s): ' +
        '0 linearizable, 1 not, 0 unknown; 12 steps, 0.0 ms)',
      '',
      'NOT linearizable: whole history: 2 of 4 operation(s) suffice to show it (1-minimal, 4 attempts)',
      '    #2  client c  read() -> 2  ok  [3, 4]',
      '    #3  client c  read() -> 1  ok  [5, 6.500]',
      '  This holds whatever the other operations did: 1 relaxed (each may have taken effect within its interval, ' +
        'with any output, or not at all); 1 of unknown outcome (each may have taken effect any time after its invocation, or not at all).',
      '  Longest linearizable prefix (1 of 2 operation(s) above placed), from initial state null:',
      '    1. #1 write(2) -> ? [unknown]  => 2',
      '    2. #2 read() -> 2              => 2',
      '  State after the prefix: 2',
      '  Could not place next (one of these had to be linearized before #3 completed at 6.500):',
      '    #3  client c  read() -> 1  ok  [5, 6.500]  <- rejected by the model in this state',
      '      would be accepted after #0 write(1) [relaxed, [0, 1]], but it completed before #1 was invoked',
    ].join('\n'),
  );
});

test('a value from nowhere shrinks to the lone read, with an empty prefix', (t) => {
  const model = registerModel();
  const history: RegisterOp[] = [];
  for (let i = 0; i < 10; i++) history.push(okOp('a', write(i), undefined, 10 * i, 10 * i + 1));
  history.push(okOp('b', read(), 999, 55, 56));
  const result = check(model, history);
  const failure = result.failures[0];
  t.deepEqual(
    failure?.operations.map(({ index }) => index),
    [10],
  );
  t.deepEqual(failure?.longestPrefix, []);
  t.is(failure?.stateAfterPrefix, null);
  t.deepEqual(failure?.couldNotBePlaced?.[0]?.enablers, [], 'no write of 999 anywhere');
  const text = formatResult(model, result);
  t.regex(text, /\(none: no operation can be linearized first\)/);
  t.regex(text, /read\(\) -> 999 .* <- rejected by the model in this state/);
});

test('shrinking never swaps the real failure for one it manufactured', (t) => {
  // The corrupted first read is the only problem. Deleting operations could
  // instead "find" {cas(null, 0) -> false, write(0)}: with the earlier writes
  // deleted, that cas would have nothing to fail against. Relaxing keeps them.
  const model = registerModel();
  const history: RegisterOp[] = [
    okOp(0, read(), 99, 0, 0),
    okOp(0, cas(null, 0), true, 10, 10),
    okOp(0, write(0), undefined, 20, 20),
    okOp(0, cas(null, 0), false, 30, 30),
    okOp(0, write(0), undefined, 40, 40),
    okOp(0, read(), 0, 50, 50),
  ];
  const failure = check(model, history).failures[0];
  t.deepEqual(
    failure?.operations.map(({ index }) => index),
    [0],
  );
});

test('with shrinking disabled the whole partition is the core', (t) => {
  const { history } = longHistoryWithOneStaleRead();
  const result = check(registerModel(), history, { minimize: false });
  t.is(result.failures[0]?.operations.length, history.length);
  t.is(result.failures[0]?.relaxedCount, 0);
  t.deepEqual(result.failures[0]?.minimization, { done: false, reason: 'disabled' });
  t.regex(formatResult(registerModel(), result), /not shrunk: disabled/);
});

test('without the window pre-check, plain delta debugging reaches the same core', (t) => {
  const { history, staleRound } = longHistoryWithOneStaleRead();
  const model = registerModel();
  const result = check(model, history, { maxStartStates: 0 });
  const failure = result.failures[0];
  t.deepEqual(
    failure?.operations.map(({ index }) => index),
    [staleRound.write101, staleRound.read100],
  );
  t.like(failure?.minimization, { done: true, oneMinimal: true });
  t.true(failure?.minimization.done === true && failure.minimization.attempts > 10, 'it takes more attempts than with the pre-check');
});

test('a tight shrinking budget still reports a core that fails, marked as not minimal', (t) => {
  const { history } = longHistoryWithOneStaleRead();
  const model = registerModel();
  const result = check(model, history, { minimize: { maxAttempts: 10 }, maxStartStates: 0 });
  const failure = result.failures[0];
  if (failure === undefined) return t.fail('no failure report');
  t.like(failure.minimization, { done: true, attempts: 10, oneMinimal: false });
  t.true(failure.operations.length < history.length, 'ten attempts already relax something');
  t.true(failure.operations.length > 2, 'but do not reach the 2-operation core');
  t.is(check(model, failure.operations.map(({ operation }) => operation)).linearizable, false);
  t.regex(formatResult(model, result), /not proven minimal \(budget\)/);
});

test('a tiny step budget per shrinking attempt keeps everything and does not claim minimality', (t) => {
  const { history } = longHistoryWithOneStaleRead();
  const result = check(registerModel(), history, { minimize: { maxStepsPerAttempt: 1 } });
  const failure = result.failures[0];
  t.is(failure?.operations.length, history.length, 'no attempt could be decided, so nothing was relaxed');
  t.like(failure?.minimization, { done: true, oneMinimal: false });
});
