/**
 * Histories: what clients did and saw, with real (monotonic) times.
 *
 * An operation is one client request: invoked at `invoke`, answered at
 * `complete`. The checker only compares times with each other, so any
 * monotonic clock works (performance.now(), a simulated clock, a counter)
 * as long as every operation of one history uses the same clock.
 *
 * Outcomes:
 * - `ok`: the client got an answer (`output`); the operation took effect
 *   exactly once, at some instant within [invoke, complete].
 * - `fail`: the system says it definitely did not take effect (e.g. rejected
 *   before being proposed). The checker ignores it entirely. A compare-and-set
 *   that ran and returned false is NOT a failure: it is `ok` with output false.
 * - `info`: unknown (timeout, lost connection). It may have taken effect at
 *   any instant after `invoke`, or never; its `complete` is +Infinity.
 */

export type ClientId = string | number;

export type Outcome = 'ok' | 'fail' | 'info';

export interface Operation<Input, Output> {
  client: ClientId;
  input: Input;
  /** Meaningful only when outcome is 'ok'. */
  output?: Output;
  outcome: Outcome;
  invoke: number;
  /** +Infinity when outcome is 'info'. */
  complete: number;
}

/** A completed operation with a known answer. */
export function okOp<I, O>(client: ClientId, input: I, output: O, invoke: number, complete: number): Operation<I, O> {
  return { client, input, output, outcome: 'ok', invoke, complete };
}

/** An operation that definitely did not take effect. */
export function failedOp<I, O>(client: ClientId, input: I, invoke: number, complete: number): Operation<I, O> {
  return { client, input, outcome: 'fail', invoke, complete };
}

/** An operation whose effect is unknown: it may take effect any time after `invoke`, or never. */
export function unknownOp<I, O>(client: ClientId, input: I, invoke: number): Operation<I, O> {
  return { client, input, outcome: 'info', invoke, complete: Infinity };
}

/**
 * Throws on a history the checker cannot interpret: non-numeric times, an
 * answered operation that completes before it was invoked. Does not require
 * each client to be sequential: real-time order alone defines the problem.
 */
export function validateHistory<I, O>(history: readonly Operation<I, O>[]): void {
  history.forEach((op, index) => {
    const where = `operation #${index} (client ${String(op.client)})`;
    if (op.outcome !== 'ok' && op.outcome !== 'fail' && op.outcome !== 'info') {
      throw new Error(`${where}: unknown outcome ${String(op.outcome)}`);
    }
    if (!Number.isFinite(op.invoke)) throw new Error(`${where}: invoke time must be a finite number, got ${op.invoke}`);
    if (op.outcome === 'info') return;
    if (!Number.isFinite(op.complete)) {
      throw new Error(`${where}: an '${op.outcome}' operation needs a finite completion time, got ${op.complete}`);
    }
    if (op.complete < op.invoke) {
      throw new Error(`${where}: completes at ${op.complete}, before its invocation at ${op.invoke}`);
    }
  });
}

/** Handle of an invoked operation inside a {@link HistoryRecorder}. */
export type OperationHandle = number;

/**
 * Records a history as it happens. Times come from the clock given to the
 * constructor (performance.now by default) unless passed explicitly.
 *
 *   const rec = new HistoryRecorder<RegisterInput, RegisterOutput>();
 *   const h = rec.invoke('c1', write(3));
 *   ... await the request ...
 *   rec.ok(h, undefined);            // or rec.fail(h) / rec.info(h)
 *   check(registerModel(), rec.history());
 */
export class HistoryRecorder<Input, Output> {
  private readonly operations: Operation<Input, Output>[] = [];
  private readonly pending = new Set<OperationHandle>();

  constructor(private readonly clock: () => number = () => performance.now()) {}

  invoke(client: ClientId, input: Input, at: number = this.clock()): OperationHandle {
    const handle = this.operations.length;
    // Until answered the operation is unknown; history() reports it that way.
    this.operations.push({ client, input, outcome: 'info', invoke: at, complete: Infinity });
    this.pending.add(handle);
    return handle;
  }

  ok(handle: OperationHandle, output: Output, at: number = this.clock()): void {
    const op = this.settle(handle, at);
    op.outcome = 'ok';
    op.output = output;
    op.complete = at;
  }

  fail(handle: OperationHandle, at: number = this.clock()): void {
    const op = this.settle(handle, at);
    op.outcome = 'fail';
    op.complete = at;
  }

  /** The outcome will never be known: the operation stays open-ended (complete = +Infinity). */
  info(handle: OperationHandle, at: number = this.clock()): void {
    this.settle(handle, at);
  }

  /**
   * Runs `action` as one operation. A resolved promise is `ok` with its value.
   * A rejection is classified by `classifyError`: 'fail' only when the error
   * proves the operation did not take effect; the default, 'info', is the
   * safe choice for anything else. Resolves to the recorded operation.
   */
  async record(
    client: ClientId,
    input: Input,
    action: () => Promise<Output>,
    classifyError: (error: unknown) => 'fail' | 'info' = () => 'info',
  ): Promise<Operation<Input, Output>> {
    const handle = this.invoke(client, input);
    try {
      const output = await action();
      this.ok(handle, output);
    } catch (error) {
      if (classifyError(error) === 'fail') this.fail(handle);
      else this.info(handle);
    }
    return { ...this.at(handle) };
  }

  /** Snapshot of everything recorded; operations still waiting for an answer are unknown ('info'). */
  history(): Operation<Input, Output>[] {
    return this.operations.map((op) => ({ ...op }));
  }

  private at(handle: OperationHandle): Operation<Input, Output> {
    const op = this.operations[handle];
    if (op === undefined) throw new Error(`no operation with handle ${handle}`);
    return op;
  }

  private settle(handle: OperationHandle, at: number): Operation<Input, Output> {
    const op = this.at(handle);
    if (!this.pending.has(handle)) throw new Error(`operation ${handle} was already completed`);
    if (at < op.invoke) throw new Error(`operation ${handle} completes at ${at}, before its invocation at ${op.invoke}`);
    this.pending.delete(handle);
    return op;
  }
}

/** Jepsen-style event stream: an invocation, later closed by the same client's completion. */
export type HistoryEvent<Input, Output> =
  | { type: 'invoke'; client: ClientId; input: Input; time: number }
  | { type: 'ok'; client: ClientId; output: Output; time: number }
  | { type: 'fail'; client: ClientId; time: number }
  | { type: 'info'; client: ClientId; time: number };

/**
 * Builds a history from events in the order they happened. Each completion
 * closes its client's outstanding invocation, so a client has at most one
 * operation in flight (after an 'info', the client may invoke again: the
 * unknown operation stays open-ended in the history). Invocations never
 * closed become 'info'.
 */
export function historyFromEvents<I, O>(events: Iterable<HistoryEvent<I, O>>): Operation<I, O>[] {
  const recorder = new HistoryRecorder<I, O>(() => {
    throw new Error('historyFromEvents always passes explicit times');
  });
  const open = new Map<ClientId, OperationHandle>();
  let position = 0;
  for (const event of events) {
    const where = `event #${position++} (client ${String(event.client)})`;
    if (event.type === 'invoke') {
      if (open.has(event.client)) throw new Error(`${where}: invoke while the client's previous operation is still open`);
      open.set(event.client, recorder.invoke(event.client, event.input, event.time));
      continue;
    }
    const handle = open.get(event.client);
    if (handle === undefined) throw new Error(`${where}: '${event.type}' without an open invocation`);
    open.delete(event.client);
    if (event.type === 'ok') recorder.ok(handle, event.output, event.time);
    else if (event.type === 'fail') recorder.fail(handle, event.time);
    else recorder.info(handle, event.time);
  }
  return recorder.history();
}
