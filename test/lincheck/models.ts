/**
 * Ready-made models: a single register and a key-value map.
 *
 * Values are scalars compared with ===. `null` means "no value": the initial
 * value of a register (unless configured otherwise) and an absent map key.
 * Clients often report an absent value as `undefined`; reads accept both.
 */
import { UNKNOWN_OUTPUT, type Model, type StepResult, type UnknownOutput } from './model.ts';

export type Scalar = string | number | boolean;
export type RegisterValue = Scalar | null;

// ---------------------------------------------------------------- register

export type RegisterInput =
  | { kind: 'read' }
  | { kind: 'write'; value: RegisterValue }
  /** Sets `value` iff the current value is `expected`; output says whether it did. */
  | { kind: 'cas'; expected: RegisterValue; value: RegisterValue };

/** read: the value seen; write: ignored (usually undefined); cas: true/false. */
export type RegisterOutput = RegisterValue | undefined;

export const read = (): RegisterInput => ({ kind: 'read' });
export const write = (value: RegisterValue): RegisterInput => ({ kind: 'write', value });
export const cas = (expected: RegisterValue, value: RegisterValue): RegisterInput => ({ kind: 'cas', expected, value });

export function registerModel(options: { initial?: RegisterValue } = {}): Model<RegisterValue, RegisterInput, RegisterOutput> {
  const initial = options.initial ?? null;
  return {
    name: 'register',
    init: () => initial,
    step: (state, input, output) => stepValue(state, registerAsValueOp(input), output),
    key: valueKey,
    isReadOnly: (input) => input.kind === 'read',
    describeOperation: (input, output) => describeValueOp(registerAsValueOp(input), output, undefined),
    describeState: describeValue,
  };
}

// ---------------------------------------------------------------- key-value map

export type KvInput =
  | { kind: 'get'; key: string }
  | { kind: 'put'; key: string; value: Scalar }
  | { kind: 'delete'; key: string }
  /** Sets `value` iff the key's current value is `expected` (null: iff absent); output says whether it did. */
  | { kind: 'cas'; key: string; expected: Scalar | null; value: Scalar };

/** get: the value, or null/undefined when absent; put/delete: ignored; cas: true/false. */
export type KvOutput = Scalar | null | undefined;

/** Absent keys are simply not in the map. */
export type KvState = ReadonlyMap<string, Scalar>;

export const get = (key: string): KvInput => ({ kind: 'get', key });
export const put = (key: string, value: Scalar): KvInput => ({ kind: 'put', key, value });
export const del = (key: string): KvInput => ({ kind: 'delete', key });
export const casKey = (key: string, expected: Scalar | null, value: Scalar): KvInput => ({ kind: 'cas', key, expected, value });

/**
 * A map whose keys are independent registers. The state is the whole map, so
 * the model is correct on an unpartitioned history too; `partition` lets the
 * checker split by key (P-compositionality), after which each search only
 * ever holds one key.
 */
export function kvModel(): Model<KvState, KvInput, KvOutput> {
  return {
    name: 'kv',
    init: () => new Map(),
    step(state, input, output): StepResult<KvState> {
      const result = stepValue(state.get(input.key) ?? null, kvAsValueOp(input), output);
      if (!result.ok) return result;
      const before = state.get(input.key) ?? null;
      if (result.newState === before) return { ok: true, newState: state };
      const newState = new Map(state);
      if (result.newState === null) newState.delete(input.key);
      else newState.set(input.key, result.newState);
      return { ok: true, newState };
    },
    key(state) {
      // After partitioning by key the map holds at most one entry, so the
      // sort below only runs on unpartitioned use.
      if (state.size <= 1) return [...state].map(([key, value]) => `${JSON.stringify(key)}=${valueKey(value)}`).join('');
      return [...state]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([key, value]) => `${JSON.stringify(key)}=${valueKey(value)}`)
        .join(',');
    },
    partition: (input) => input.key,
    isReadOnly: (input) => input.kind === 'get',
    describeOperation: (input, output) => describeValueOp(kvAsValueOp(input), output, input.key),
    describeState(state) {
      if (state.size === 0) return '{}';
      return `{${[...state].map(([key, value]) => `${JSON.stringify(key)}: ${describeValue(value)}`).join(', ')}}`;
    },
  };
}

// ---------------------------------------------------------------- shared single-value semantics

/** The four things one can do to one value; both models reduce to these. */
type ValueOp =
  | { kind: 'read'; name: string }
  | { kind: 'write'; name: string; value: RegisterValue }
  | { kind: 'cas'; name: string; expected: RegisterValue; value: RegisterValue };

function registerAsValueOp(input: RegisterInput): ValueOp {
  switch (input.kind) {
    case 'read':
      return { kind: 'read', name: 'read' };
    case 'write':
      return { kind: 'write', name: 'write', value: input.value };
    case 'cas':
      return { kind: 'cas', name: 'cas', expected: input.expected, value: input.value };
    default:
      throw new TypeError(`register: unknown operation ${JSON.stringify(input)}`);
  }
}

function kvAsValueOp(input: KvInput): ValueOp {
  switch (input.kind) {
    case 'get':
      return { kind: 'read', name: 'get' };
    case 'put':
      return { kind: 'write', name: 'put', value: input.value };
    case 'delete':
      return { kind: 'write', name: 'delete', value: null };
    case 'cas':
      return { kind: 'cas', name: 'cas', expected: input.expected, value: input.value };
    default:
      throw new TypeError(`kv: unknown operation ${JSON.stringify(input)}`);
  }
}

function stepValue(
  state: RegisterValue,
  op: ValueOp,
  output: RegisterValue | undefined | UnknownOutput,
): StepResult<RegisterValue> {
  switch (op.kind) {
    case 'read':
      // An unknown read could have returned anything; it never changes the state.
      if (output === UNKNOWN_OUTPUT) return { ok: true, newState: state };
      return (output ?? null) === state ? { ok: true, newState: state } : { ok: false };
    case 'write':
      // Whatever a write returned, its effect is the same.
      return { ok: true, newState: op.value };
    case 'cas': {
      const matches = state === op.expected;
      // An unknown cas that took effect did whatever the state dictates.
      if (output === UNKNOWN_OUTPUT) return { ok: true, newState: matches ? op.value : state };
      if (typeof output !== 'boolean') {
        throw new TypeError(`${op.name}: output must be true or false, got ${JSON.stringify(output)}`);
      }
      if (output !== matches) return { ok: false };
      return { ok: true, newState: matches ? op.value : state };
    }
  }
}

/** Distinguishes 1 from "1" and true from "true"; null has its own key. */
function valueKey(value: RegisterValue): string {
  if (value === null) return 'null';
  return `${typeof value}:${String(value)}`;
}

function describeValue(value: RegisterValue): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function describeValueOp(op: ValueOp, output: RegisterValue | undefined | UnknownOutput, key: string | undefined): string {
  const args: string[] = key === undefined ? [] : [JSON.stringify(key)];
  if (op.kind === 'cas') args.push(describeValue(op.expected));
  if (op.kind !== 'read' && op.name !== 'delete') args.push(describeValue(op.value));
  const call = `${op.name}(${args.join(', ')})`;
  if (output === UNKNOWN_OUTPUT) return `${call} -> ?`;
  if (op.kind === 'write') return call;
  return `${call} -> ${describeValue(output ?? null)}`;
}
