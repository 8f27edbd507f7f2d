import test from 'ava';
import {
  HistoryRecorder,
  check,
  historyFromEvents,
  okOp,
  read,
  registerModel,
  validateHistory,
  write,
  type HistoryEvent,
  type RegisterInput,
  type RegisterOutput,
} from '../lincheck/index.ts';

/** A clock the test advances by hand. */
function manualClock(): { now: () => number; advance: (by: number) => void } {
  let time = 0;
  return { now: () => time, advance: (by) => void (time += by) };
}

test('recorder stamps invoke and completion with the injected clock', (t) => {
  const clock = manualClock();
  const recorder = new HistoryRecorder<RegisterInput, RegisterOutput>(clock.now);
  const w = recorder.invoke('a', write(1));
  clock.advance(5);
  const r = recorder.invoke('b', read());
  clock.advance(5);
  recorder.ok(w, undefined);
  clock.advance(1);
  recorder.ok(r, 1);
  const f = recorder.invoke('c', write(9));
  clock.advance(1);
  recorder.fail(f);
  const lost = recorder.invoke('d', write(7));
  recorder.info(lost, 50);
  const neverAnswered = recorder.invoke('e', write(8));
  t.deepEqual(recorder.history(), [
    { client: 'a', input: write(1), output: undefined, outcome: 'ok', invoke: 0, complete: 10 },
    { client: 'b', input: read(), output: 1, outcome: 'ok', invoke: 5, complete: 11 },
    { client: 'c', input: write(9), outcome: 'fail', invoke: 11, complete: 12 },
    { client: 'd', input: write(7), outcome: 'info', invoke: 12, complete: Infinity },
    { client: 'e', input: write(8), outcome: 'info', invoke: 12, complete: Infinity },
  ]);
  t.is(neverAnswered, 4);
  t.is(check(registerModel(), recorder.history()).linearizable, true);
});

test('recorder refuses double completion and completion before invocation', (t) => {
  const recorder = new HistoryRecorder<RegisterInput, RegisterOutput>(() => 10);
  const handle = recorder.invoke('a', read());
  t.throws(() => recorder.ok(handle, null, 9), { message: /before its invocation/ });
  recorder.ok(handle, null);
  t.throws(() => recorder.fail(handle), { message: /already completed/ });
  t.throws(() => recorder.ok(42, null), { message: /no operation/ });
});

test('recorder.record classifies resolved, failed and ambiguous requests', async (t) => {
  const recorder = new HistoryRecorder<RegisterInput, RegisterOutput>();
  const definitelyNot = new Error('rejected before proposing');
  const done = await recorder.record('a', write(1), async () => undefined);
  const refused = await recorder.record(
    'b',
    write(2),
    async () => {
      throw definitelyNot;
    },
    (error) => (error === definitelyNot ? 'fail' : 'info'),
  );
  const timedOut = await recorder.record('c', write(3), async () => {
    throw new Error('timeout');
  });
  t.is(done.outcome, 'ok');
  t.is(refused.outcome, 'fail');
  t.is(timedOut.outcome, 'info');
  t.is(timedOut.complete, Infinity);
  const [first] = recorder.history();
  t.true(first !== undefined && first.invoke <= first.complete, 'performance.now is monotonic');
});

test('historyFromEvents matches completions to the client’s open invocation', (t) => {
  const events: HistoryEvent<RegisterInput, RegisterOutput>[] = [
    { type: 'invoke', client: 1, input: write(1), time: 0 },
    { type: 'invoke', client: 2, input: read(), time: 1 },
    { type: 'ok', client: 2, output: null, time: 2 },
    { type: 'info', client: 1, time: 3 },
    { type: 'invoke', client: 1, input: read(), time: 4 },
    { type: 'ok', client: 1, output: 1, time: 5 },
    { type: 'invoke', client: 2, input: write(2), time: 6 },
    { type: 'fail', client: 2, time: 7 },
    { type: 'invoke', client: 3, input: write(3), time: 8 },
  ];
  const history = historyFromEvents(events);
  t.deepEqual(
    history.map((op) => [op.client, op.outcome, op.invoke, op.complete]),
    [
      [1, 'info', 0, Infinity],
      [2, 'ok', 1, 2],
      [1, 'ok', 4, 5],
      [2, 'fail', 6, 7],
      [3, 'info', 8, Infinity],
    ],
  );
  t.is(check(registerModel(), history).linearizable, true);
});

test('historyFromEvents rejects inconsistent streams', (t) => {
  t.throws(() => historyFromEvents<RegisterInput, RegisterOutput>([{ type: 'ok', client: 1, output: 1, time: 0 }]), {
    message: /without an open invocation/,
  });
  t.throws(
    () =>
      historyFromEvents<RegisterInput, RegisterOutput>([
        { type: 'invoke', client: 1, input: read(), time: 0 },
        { type: 'invoke', client: 1, input: read(), time: 1 },
      ]),
    { message: /still open/ },
  );
});

test('validateHistory rejects times the checker cannot interpret', (t) => {
  t.notThrows(() => validateHistory([okOp('a', read(), null, 1, 1)]));
  t.throws(() => validateHistory([okOp('a', read(), null, 2, 1)]), { message: /before its invocation/ });
  t.throws(() => validateHistory([okOp('a', read(), null, Number.NaN, 1)]), { message: /finite/ });
  t.throws(() => validateHistory([okOp('a', read(), null, 0, Infinity)]), { message: /finite completion/ });
  t.throws(() => check(registerModel(), [okOp('a', read(), null, 2, 1)]), { message: /operation #0/ });
});
