import test from 'ava';
import {
  UNKNOWN_OUTPUT,
  casKey,
  check,
  del,
  formatResult,
  get,
  kvModel,
  okOp,
  put,
  unknownOp,
  verifyWitnesses,
  type KvInput,
  type KvOutput,
  type Operation,
} from '../lincheck/index.ts';

type KvOp = Operation<KvInput, KvOutput>;

test('absent keys read as null or undefined; delete makes a key absent again', (t) => {
  const model = kvModel();
  const history: KvOp[] = [
    okOp('a', get('x'), null, 0, 1),
    okOp('a', get('x'), undefined, 2, 3),
    okOp('a', put('x', 1), undefined, 4, 5),
    okOp('b', get('x'), 1, 6, 7),
    okOp('a', del('x'), undefined, 8, 9),
    okOp('b', get('x'), null, 10, 11),
  ];
  const result = check(model, history);
  t.is(result.linearizable, true, formatResult(model, result));
  t.deepEqual(verifyWitnesses(model, history, result), []);
  t.is(check(model, [...history, okOp('b', get('x'), 1, 12, 13)]).linearizable, false, 'deleted value came back');
});

test('cas on a key: expected null means "only if absent"', (t) => {
  const model = kvModel();
  const created: KvOp[] = [okOp('a', casKey('x', null, 1), true, 0, 1), okOp('b', get('x'), 1, 2, 3)];
  t.is(check(model, created).linearizable, true);
  const twice: KvOp[] = [okOp('a', casKey('x', null, 1), true, 0, 1), okOp('b', casKey('x', null, 2), true, 2, 3)];
  t.is(check(model, twice).linearizable, false, 'the key existed at the second cas');
  const refused: KvOp[] = [okOp('a', put('x', 5), undefined, 0, 1), okOp('b', casKey('x', 4, 6), false, 2, 3), okOp('b', get('x'), 5, 4, 5)];
  t.is(check(model, refused).linearizable, true);
});

test('keys are independent partitions: operations on one key never justify another', (t) => {
  const model = kvModel();
  const history: KvOp[] = [okOp('a', put('x', 1), undefined, 0, 1), okOp('b', get('y'), 1, 2, 3)];
  const result = check(model, history);
  t.is(result.linearizable, false);
  t.deepEqual(
    result.partitions.map((partition) => [partition.partition, partition.verdict]),
    [
      ['x', true],
      ['y', false],
    ],
  );
});

test('multi-key history with one bad key: the report names that key and only its operations', (t) => {
  const model = kvModel();
  const history: KvOp[] = [];
  // Three healthy keys with concurrent traffic.
  for (const key of ['a', 'b', 'd']) {
    history.push(
      okOp('c1', put(key, 1), undefined, 0, 10),
      okOp('c2', put(key, 2), undefined, 5, 15),
      okOp('c3', get(key), 2, 20, 21),
      okOp('c1', casKey(key, 2, 3), true, 22, 30),
      okOp('c2', get(key), 3, 31, 32),
    );
  }
  // Key "c": a stale read after a completed overwrite.
  history.push(
    okOp('c1', put('c', 1), undefined, 0, 1),
    okOp('c2', put('c', 2), undefined, 2, 3),
    okOp('c3', get('c'), 1, 4, 5),
  );
  const result = check(model, history);
  t.is(result.linearizable, false);
  t.is(result.failures.length, 1);
  const failure = result.failures[0];
  t.is(failure?.partition, 'c');
  t.true(failure?.operations.every(({ operation }) => operation.input.key === 'c'));
  t.is(result.partitions.filter((partition) => partition.verdict === true).length, 3);
  const report = formatResult(model, result);
  t.regex(report, /NOT linearizable: partition "c"/);
  t.regex(report, /get\("c"\) -> 1/);
  t.notRegex(report, /put\("a"/, 'healthy keys stay out of the failure report');
});

test('unknown puts per key behave like unknown register writes', (t) => {
  const model = kvModel();
  const history: KvOp[] = [
    okOp('a', put('k', 1), undefined, 0, 1),
    unknownOp('b', put('k', 2), 2),
    okOp('c', get('k'), 2, 3, 4),
    okOp('c', get('k'), 1, 5, 6),
  ];
  const result = check(model, history);
  t.is(result.linearizable, false);
  t.is(result.failures[0]?.partition, 'k');
});

test('the kv model is also correct without partitioning (state is the whole map)', (t) => {
  const model = kvModel();
  const whole = { ...model, partition: undefined };
  let state = whole.init();
  for (const [input, output] of [
    [put('x', 1), undefined],
    [put('y', 2), undefined],
    [casKey('x', 1, 3), true],
    [del('y'), undefined],
  ] as const) {
    const stepped = whole.step(state, input, output);
    if (!stepped.ok) return t.fail(`rejected ${JSON.stringify(input)}`);
    state = stepped.newState;
  }
  t.deepEqual([...state], [['x', 3]]);
  t.is(whole.key(state), model.key(new Map([['x', 3]])));
  t.not(whole.key(new Map([['x', 1]])), whole.key(new Map([['x', '1']])), 'number 1 and string "1" are different values');
  t.is(whole.key(new Map<string, number>([['a', 1], ['b', 2]])), whole.key(new Map<string, number>([['b', 2], ['a', 1]])), 'key ignores insertion order');
  t.true(whole.step(state, get('x'), UNKNOWN_OUTPUT).ok);
  const history: KvOp[] = [okOp('a', put('x', 1), undefined, 0, 1), okOp('b', get('y'), 1, 2, 3)];
  t.is(check(whole, history).linearizable, false);
  t.is(check(whole, history).partitions[0]?.partition, null);
});
