/**
 * Validation of request bodies, path parameters and query parameters. Every
 * failure is a 400 INVALID_ARGUMENT whose `field` names the offending part
 * (`node_id`, `value.key`, `limit`, ...), so a client can point at it.
 *
 * Bodies are exactly the seed's: unknown top-level fields are refused, which
 * catches misspelt field names instead of ignoring them.
 */
import { badField } from './errors.ts';

/** Node ids: what the engine and SQL accept without quoting, and short enough for a label. */
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const MAX_KEY_LENGTH = 1024;
/** Bytes of a key in UTF-8, as rale.check_command counts them (a btree index row must hold the key). */
const MAX_KEY_BYTES = 1024;
/**
 * Levels of nested objects and arrays in a proposed value, as rale.check_command
 * counts them (the command itself is level 0). Deeper values cannot be
 * re-encoded by JSON.stringify (it overflows its stack near 5,000 levels).
 */
export const MAX_COMMAND_DEPTH = 100;
const MAX_ADDRESS_LENGTH = 255;

/**
 * The kv key a bare proposed value is stored under (see proposeCommand): the
 * cluster's "current consensus value", readable with GET /kv/consensus.value.
 */
export const CONSENSUS_VALUE_KEY = 'consensus.value';

/** The commands a REST client may propose: rale's built-in kv commands and handler calls. */
export type ProposableCommand =
  | { op: 'set'; key: string; value: unknown }
  | { op: 'delete'; key: string }
  | { op: 'cas'; key: string; expected: unknown; value: unknown }
  | { op: 'call'; handler: string; payload?: unknown };

const OPS = ['set', 'delete', 'cas', 'call'] as const;

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** The body as an object with only `allowed` fields, every `required` one present. */
export function objectBody(body: unknown, allowed: string[], required: string[] = allowed): Record<string, unknown> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw badField('body', `the request body must be a JSON object, got ${body === undefined ? 'nothing' : typeName(body)}`);
  }
  const object = body as Record<string, unknown>;
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) throw badField(key, `unknown field "${key}"; the body has ${allowed.map((k) => `"${k}"`).join(', ')}`);
  }
  for (const key of required) {
    if (!(key in object)) throw badField(key, `the field "${key}" is required`);
  }
  return object;
}

export function nodeId(value: unknown, field: string): string {
  if (typeof value !== 'string') throw badField(field, `"${field}" must be a string, got ${typeName(value)}`);
  if (!NODE_ID.test(value)) {
    throw badField(field, `"${field}" must be 1-128 letters, digits, "_", ".", ":" or "-", starting with a letter or digit; got ${JSON.stringify(value.slice(0, 140))}`);
  }
  return value;
}

export function address(value: unknown, field: string): string {
  if (typeof value !== 'string') throw badField(field, `"${field}" must be a string, got ${typeName(value)}`);
  if (value.length === 0 || value.length > MAX_ADDRESS_LENGTH || /[\s\p{Cc}]/u.test(value)) {
    throw badField(field, `"${field}" must be 1-${MAX_ADDRESS_LENGTH} characters without spaces, e.g. "192.168.1.10:8080"`);
  }
  return value;
}

export function key(value: unknown, field: string): string {
  if (typeof value !== 'string') throw badField(field, `"${field}" must be a string, got ${typeName(value)}`);
  if (value.length === 0 || value.length > MAX_KEY_LENGTH || Buffer.byteLength(value, 'utf8') > MAX_KEY_BYTES) {
    throw badField(field, `"${field}" must be 1-${MAX_KEY_LENGTH} characters and at most ${MAX_KEY_BYTES} bytes in UTF-8`);
  }
  checkText(value, field);
  return value;
}

/**
 * What POST /consensus/propose `{"value": V}` proposes:
 *  - V is an object with an `op` field: V is a rale command and is proposed
 *    as is, after checking its shape (set, delete, cas, call);
 *  - anything else (a string, number, boolean, null, array, or an object
 *    without `op`) is a bare consensus value: it is proposed as
 *    `{"op":"set","key":"consensus.value","value":V}`, so the cluster agrees
 *    on it, the log records it, and the latest decided value can be read back.
 * An object whose `op` is not a known command is refused rather than stored:
 * it is far more likely a mistyped command than a value.
 */
export function proposeCommand(body: unknown): { command: ProposableCommand; mapping: 'command' | 'value' } {
  const { value } = objectBody(body, ['value']);
  // A bare value becomes the `value` of a set command: one level deeper.
  const isCommand = value !== null && typeof value === 'object' && !Array.isArray(value) && 'op' in value;
  checkJsonValue(value, 'value', isCommand ? 0 : 1);
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !('op' in value)) {
    return { command: { op: 'set', key: CONSENSUS_VALUE_KEY, value }, mapping: 'value' };
  }
  const c = value as Record<string, unknown>;
  if (typeof c.op !== 'string' || !(OPS as readonly string[]).includes(c.op)) {
    const hint = c.op === 'register_handler' ? ' (handlers are registered from SQL by an admin: rale.register_handler)' : '';
    throw badField('value.op', `unknown command op ${JSON.stringify(c.op)}; use one of ${OPS.join(', ')}${hint}`);
  }
  const need = (field: string) => {
    if (!(field in c)) throw badField(`value.${field}`, `"${String(c.op)}" needs "${field}"`);
  };
  switch (c.op) {
    case 'set':
      key(c.key, 'value.key');
      need('value');
      break;
    case 'delete':
      key(c.key, 'value.key');
      break;
    case 'cas':
      key(c.key, 'value.key');
      need('expected');
      need('value');
      break;
    case 'call':
      if (typeof c.handler !== 'string' || c.handler.length === 0) throw badField('value.handler', '"call" needs a non-empty string "handler"');
      break;
  }
  return { command: c as ProposableCommand, mapping: 'command' };
}

/**
 * Text PostgreSQL's jsonb can store: JSON.parse accepts "\u0000" and lone
 * surrogates ("\ud800"), which jsonb refuses (and which used to surface as
 * a 503 STORAGE error from rale.check_command).
 */
function checkText(s: string, field: string): void {
  if (/\u0000|\p{Cs}/u.test(s)) throw badField(field.replace(/ \(a key\)$/, ''), `"${field}" holds a NUL character or an unpaired UTF-16 surrogate, which rale cannot store`);
}

/**
 * What JSON.parse produced and JSON.stringify must carry back unchanged:
 * no number that is not finite (JSON.parse reads 1e400 as Infinity, which
 * JSON.stringify writes as null) and at most MAX_COMMAND_DEPTH levels of
 * nesting. Walks at most that deep, so a hostile body cannot overflow the
 * stack here either.
 */
function checkJsonValue(root: unknown, rootField: string, rootLevel: number): void {
  const walk = (v: unknown, field: string, level: number): void => {
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw badField(field, `"${field}" is a number out of range (rale carries numbers as 64-bit floats); send it as a string`);
      return;
    }
    if (typeof v === 'string') {
      checkText(v, field);
      return;
    }
    if (v === null || typeof v !== 'object') return;
    const children = Array.isArray(v) ? v.map((c, i) => [`${field}[${i}]`, c] as const) : Object.entries(v).map(([k, c]) => [`${field}.${k}`, c] as const);
    if (children.length > 0 && level + 1 > MAX_COMMAND_DEPTH) {
      throw badField(rootField, `"${rootField}" is nested deeper than ${MAX_COMMAND_DEPTH} levels of objects and arrays; flatten it, or send it as a JSON string`);
    }
    if (!Array.isArray(v)) for (const k of Object.keys(v)) checkText(k, `${field} (a key)`);
    for (const [f, c] of children) walk(c, f.length > 200 ? rootField : f, level + 1);
  };
  walk(root, rootField, rootLevel);
}

/** An integer query parameter within [min, max], or its default when absent. */
export function intQuery(query: Record<string, unknown>, name: string, fallback: number, min: number, max: number): number {
  const raw = query[name];
  if (raw === undefined) return fallback;
  if (typeof raw !== 'string' || !/^-?\d{1,16}$/.test(raw)) throw badField(name, `query parameter "${name}" must be an integer between ${min} and ${max}`);
  const n = Number(raw);
  if (n < min || n > max) throw badField(name, `query parameter "${name}" must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function enumQuery<T extends string>(query: Record<string, unknown>, name: string, values: readonly T[], fallback: T): T {
  const raw = query[name];
  if (raw === undefined) return fallback;
  if (typeof raw !== 'string' || !(values as readonly string[]).includes(raw)) {
    throw badField(name, `query parameter "${name}" must be one of ${values.join(', ')}`);
  }
  return raw as T;
}

/** Query parameters must be known ones: a misspelt `consistency` must not silently mean the default. */
export function onlyQuery(query: Record<string, unknown>, allowed: string[]): void {
  for (const name of Object.keys(query)) {
    if (!allowed.includes(name)) {
      throw badField(name, allowed.length === 0 ? `this endpoint takes no query parameters, got "${name}"` : `unknown query parameter "${name}"; use ${allowed.join(', ')}`);
    }
  }
}

/** The Idempotency-Key header, when given: it becomes the proposal id, so a retry applies once. */
export function idempotencyKey(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (Array.isArray(header) || !/^[\x21-\x7e]{1,128}$/.test(header)) {
    throw badField('Idempotency-Key', 'the Idempotency-Key header must be 1-128 visible ASCII characters, sent once');
  }
  return header;
}
