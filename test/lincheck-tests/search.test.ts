import test from 'ava';
import {
  Bitset,
  check,
  formatResult,
  get,
  kvModel,
  okOp,
  put,
  read,
  registerModel,
  write,
  type KvInput,
  type KvOutput,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
} from '../lincheck/index.ts';

test('bitset: set, clear, has and count', (t) => {
  const bits = new Bitset(40);
  bits.set(0);
  bits.set(15);
  bits.set(16);
  bits.set(39);
  t.true(bits.has(15) && bits.has(16) && bits.has(39));
  t.false(bits.has(1));
  t.is(bits.count(), 4);
  bits.clear(16);
  t.false(bits.has(16));
  t.is(bits.count(), 3);
  t.throws(() => bits.set(40), { instanceOf: RangeError });
  t.throws(() => bits.has(-1), { instanceOf: RangeError });
});

test('bitset keys: equal contents give equal keys, any difference gives a different key of the same length', (t) => {
  const size = 100;
  const a = new Bitset(size);
  const b = new Bitset(size);
  t.is(a.key(), b.key());
  const keys = new Set<string>([a.key()]);
  for (let index = 0; index < size; index++) {
    const single = new Bitset(size);
    single.set(index);
    keys.add(single.key());
    t.is(single.key().length, a.key().length);
  }
  t.is(keys.size, size + 1, 'every singleton differs from every other and from the empty set');
  a.set(3);
  a.set(70);
  b.set(70);
  b.set(3);
  t.is(a.key(), b.key(), 'order of insertion does not matter');
  a.clear(70);
  t.not(a.key(), b.key());
});

test('bitset keys: every byte value maps to its own character (no decoding collisions)', (t) => {
  // Bytes 0x80-0xff are where a lossy decoding (UTF-8, windows-1252) would
  // collide; latin1 maps each byte to one distinct character.
  const keys = new Set<string>();
  for (let value = 0; value < 256; value++) {
    const bits = new Bitset(8);
    for (let bit = 0; bit < 8; bit++) if ((value >> bit) & 1) bits.set(bit);
    keys.add(bits.key());
    t.is(bits.key().length, 1);
  }
  t.is(keys.size, 256);
});

test('bitset keys of large sets', (t) => {
  const size = 100_003;
  const a = new Bitset(size);
  const b = new Bitset(size);
  a.set(size - 1);
  t.is(a.key().length, Math.ceil(size / 8));
  t.not(a.key(), b.key());
  b.set(size - 1);
  t.is(a.key(), b.key());
});

/** Many fully concurrent writes of one value, then an impossible read: 12! orders, but only 2^12 configurations. */
function concurrentWritesThenBadRead(writers: number): Operation<RegisterInput, RegisterOutput>[] {
  const history: Operation<RegisterInput, RegisterOutput>[] = [];
  for (let client = 0; client < writers; client++) history.push(okOp(client, write(1), undefined, 0, 10));
  history.push(okOp('reader', read(), 2, 11, 12));
  return history;
}

test('memoisation makes an exponential-looking refutation cheap', (t) => {
  const result = check(registerModel(), concurrentWritesThenBadRead(12), { maxSteps: 500_000 });
  t.is(result.linearizable, false, formatResult(registerModel(), result));
  // Without memoisation the search would visit at least 12! (479 001 600) orders.
  t.true(result.steps < 500_000);
});

test('an exhausted step budget answers unknown and says why', (t) => {
  // maxStartStates 0: no local refutation, so running out of steps is final.
  const result = check(registerModel(), concurrentWritesThenBadRead(12), { maxSteps: 100, maxStartStates: 0 });
  t.is(result.linearizable, 'unknown');
  t.is(result.steps, 100);
  t.is(result.partitions[0]?.verdict, 'unknown');
  t.regex(result.unknownReasons.join('\n'), /step budget of 100 exhausted/);
  t.regex(formatResult(registerModel(), result), /UNKNOWN \(budget exhausted\)/);
});

test('an exhausted time budget answers unknown, including for partitions not reached', (t) => {
  let fakeTime = 0;
  const clock = (): number => ++fakeTime;
  const model = kvModel();
  const history: Operation<KvInput, KvOutput>[] = [];
  for (let client = 0; client < 12; client++) history.push(okOp(client, put('slow', 1), undefined, 0, 10));
  history.push(okOp('reader', get('slow'), 2, 11, 12), okOp('reader', get('later'), null, 13, 14));
  const result = check(model, history, { timeoutMs: 5, clock });
  t.is(result.linearizable, 'unknown');
  t.deepEqual(
    result.partitions.map((partition) => [partition.partition, partition.verdict, partition.reason]),
    [
      ['slow', 'unknown', 'time budget of 5 ms exhausted'],
      ['later', 'unknown', 'time budget of 5 ms exhausted'],
    ],
  );
});

test('a definite violation in one partition wins over unknown in another', (t) => {
  const model = kvModel();
  const history: Operation<KvInput, KvOutput>[] = [];
  for (let client = 0; client < 12; client++) history.push(okOp(client, put('hard', 1), undefined, 0, 10));
  history.push(okOp('reader', get('hard'), 2, 11, 12), okOp('reader', get('easy'), 5, 13, 14));
  const result = check(model, history, { maxSteps: 1000, maxStartStates: 0 });
  t.is(result.linearizable, false);
  t.deepEqual(
    result.partitions.map((partition) => partition.verdict),
    ['unknown', false],
  );
  t.is(result.failures[0]?.partition, 'easy');
});

/** Sixteen fully concurrent writes (2^16 subsets to refute from the start), then a stale read. */
function manyConcurrentWritesThenStaleRead(): Operation<RegisterInput, RegisterOutput>[] {
  const history: Operation<RegisterInput, RegisterOutput>[] = [];
  for (let client = 0; client < 16; client++) history.push(okOp(client, write(client), undefined, 0, 10));
  history.push(
    okOp('a', write(100), undefined, 20, 21),
    okOp('b', write(101), undefined, 22, 23),
    okOp('c', read(), 100, 24, 25),
  );
  return history;
}

test('out of steps, a violation near where the search got stuck is still proven, and explained in its window', (t) => {
  const model = registerModel();
  const result = check(model, manyConcurrentWritesThenStaleRead(), { maxSteps: 200_000 });
  t.is(result.linearizable, false, formatResult(model, result));
  t.regex(result.partitions[0]?.reason ?? '', /step budget of 200000 exhausted; refuted by a local core of 2 operation\(s\)/);
  const failure = result.failures[0];
  t.deepEqual(
    failure?.operations.map(({ index }) => index),
    [17, 18],
  );
  t.deepEqual(failure?.prefixStart, { kind: 'reachable', from: 22, to: 25 });
  t.regex(formatResult(model, result), /one of those reachable before time 22, with only operations overlapping \[22, 25\]/);
});

test('without the window test, the same history stays unknown', (t) => {
  const result = check(registerModel(), manyConcurrentWritesThenStaleRead(), {
    maxSteps: 200_000,
    maxStartStates: 0,
  });
  t.is(result.linearizable, 'unknown');
});

test('with shrinking disabled, a partition refuted after running out of steps reports the proven local core', (t) => {
  const result = check(registerModel(), manyConcurrentWritesThenStaleRead(), { maxSteps: 200_000, minimize: false });
  const failure = result.failures[0];
  t.is(result.linearizable, false);
  t.deepEqual(
    failure?.operations.map(({ index }) => index),
    [17, 18],
  );
  t.deepEqual(failure?.minimization, { done: false, reason: 'disabled' });
  t.is(failure?.couldNotBePlaced?.[0]?.operation.index, 18, 'the explanation is still there');
});
