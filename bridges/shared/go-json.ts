/**
 * Go's encoding/json, reproduced for the struct shapes our Go-speaking peers
 * (Phalanx, clusterconsensus) marshal with `json.Marshal` / `json.Unmarshal`.
 *
 * Why not JSON.parse / JSON.stringify:
 * - JSON.parse turns `1.0`, `1e2` and `18446744073709551615` into JS numbers,
 *   so a u64 field could not tell an integer from a float or detect a value
 *   that lost precision; Go rejects the first two and keeps the third exact.
 *   The parser here keeps every number's source text.
 * - json.Marshal escapes `<`, `>`, `&`, U+2028 and U+2029, JSON.stringify
 *   does not; peers compare nothing byte-wise, but our test vectors do.
 *
 * What is reproduced (the Go 1.22+ behaviour):
 * - decoding: object keys match struct fields exactly or, failing that, by
 *   Go's case folding (ASCII letters, plus U+017F ſ ~ s and U+212A K ~ k);
 *   unknown keys are ignored; missing fields keep their zero value; `null`
 *   leaves a non-slice field unchanged and makes a slice nil; a repeated key
 *   decodes INTO the value the earlier one produced (a nested struct merges,
 *   a slice reuses its elements), as Go does; a JSON value of the wrong type
 *   is an error; a []byte field takes padded standard base64 (CR and LF
 *   ignored) or a JSON array of bytes; invalid UTF-8 and lone surrogate
 *   escapes become U+FFFD; the input must be exactly one JSON value.
 * - encoding: fields in declaration order, `omitempty`, Go's string escaping
 *   with HTML escaping on (json.Marshal's default), []byte as padded standard
 *   base64, a nil slice as `null`.
 *
 * Deliberate differences, all on inputs no real peer sends:
 * - nesting deeper than {@link MAX_NESTING_DEPTH} is rejected (Go allows
 *   10000) so that the recursive parser cannot exhaust the JS stack;
 * - u64 fields are JS numbers, so integers above 2^53 - 1 are rejected
 *   rather than rounded (see {@link goUint64});
 * - a `null` element in a slice of pointers is rejected (Go stores a nil
 *   pointer, which the peer would then dereference), see {@link goNonNilPointer}.
 */

import { WireDecodeError, WireEncodeError } from './wire-errors.ts';

/** Deepest nesting of arrays and objects the parser accepts. Our messages nest at most 4 levels. */
export const MAX_NESTING_DEPTH = 512;

/**
 * Thrown by everything in this module while decoding. Each codec catches it
 * at its public boundary and rethrows it as its own decode error type.
 */
export class GoJsonDecodeFailure extends WireDecodeError {
  constructor(reason: string, path = '') {
    super(reason, path);
    this.name = 'GoJsonDecodeFailure';
  }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/** A parsed JSON value that keeps what JSON.parse throws away: number text and duplicate keys in order. */
export type JsonNode =
  | { readonly kind: 'null' }
  | { readonly kind: 'bool'; readonly value: boolean }
  | { readonly kind: 'number'; readonly text: string }
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'array'; readonly items: readonly JsonNode[] }
  | { readonly kind: 'object'; readonly members: ReadonlyArray<{ readonly key: string; readonly value: JsonNode }> };

const NULL_NODE: JsonNode = { kind: 'null' };
const TRUE_NODE: JsonNode = { kind: 'bool', value: true };
const FALSE_NODE: JsonNode = { kind: 'bool', value: false };

// ignoreBOM: keep a leading BOM as a character so that it is rejected, as Go
// rejects it; fatal stays false so that invalid UTF-8 becomes U+FFFD, as Go does.
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });

function describeChar(text: string, pos: number): string {
  const code = text.codePointAt(pos);
  if (code === undefined) return 'end of input';
  return code >= 0x20 && code < 0x7f ? `'${String.fromCodePoint(code)}'` : `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
}

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  return -1;
}

class JsonParser {
  private pos = 0;

  constructor(private readonly text: string) {}

  parseDocument(): JsonNode {
    this.skipWhitespace();
    const value = this.parseValue(0);
    this.skipWhitespace();
    if (this.pos !== this.text.length) {
      this.fail(`invalid character ${describeChar(this.text, this.pos)} after top-level value`);
    }
    return value;
  }

  private fail(reason: string): never {
    throw new GoJsonDecodeFailure(`${reason} (offset ${this.pos})`);
  }

  private skipWhitespace(): void {
    const text = this.text;
    while (this.pos < text.length) {
      const code = text.charCodeAt(this.pos);
      // JSON whitespace is exactly these four; Go rejects any other space character.
      if (code !== 0x20 && code !== 0x09 && code !== 0x0a && code !== 0x0d) return;
      this.pos++;
    }
  }

  private parseValue(depth: number): JsonNode {
    if (this.pos >= this.text.length) this.fail('unexpected end of JSON input');
    const code = this.text.charCodeAt(this.pos);
    switch (code) {
      case 0x7b: // {
        return this.parseObject(depth + 1);
      case 0x5b: // [
        return this.parseArray(depth + 1);
      case 0x22: // "
        return { kind: 'string', value: this.parseString() };
      case 0x74: // t
        this.expectLiteral('true');
        return TRUE_NODE;
      case 0x66: // f
        this.expectLiteral('false');
        return FALSE_NODE;
      case 0x6e: // n
        this.expectLiteral('null');
        return NULL_NODE;
      default:
        if (code === 0x2d || isDigit(code)) return this.parseNumber();
        return this.fail(`invalid character ${describeChar(this.text, this.pos)} looking for beginning of value`);
    }
  }

  private expectLiteral(literal: string): void {
    if (this.text.startsWith(literal, this.pos)) {
      this.pos += literal.length;
      return;
    }
    for (let i = 0; i < literal.length; i++) {
      if (this.pos + i >= this.text.length) {
        this.pos += i;
        this.fail('unexpected end of JSON input');
      }
      if (this.text[this.pos + i] !== literal[i]) {
        this.pos += i;
        this.fail(`invalid character ${describeChar(this.text, this.pos)} in literal ${literal}`);
      }
    }
  }

  private parseNumber(): JsonNode {
    const text = this.text;
    const start = this.pos;
    if (text.charCodeAt(this.pos) === 0x2d) this.pos++;
    const firstDigit = text.charCodeAt(this.pos);
    if (firstDigit === 0x30) {
      this.pos++;
    } else if (isDigit(firstDigit)) {
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    } else {
      this.fail(`invalid character ${describeChar(text, this.pos)} in numeric literal`);
    }
    if (text.charCodeAt(this.pos) === 0x2e) {
      this.pos++;
      if (!isDigit(text.charCodeAt(this.pos))) this.fail(`invalid character ${describeChar(text, this.pos)} after decimal point in numeric literal`);
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    }
    const exponent = text.charCodeAt(this.pos);
    if (exponent === 0x65 || exponent === 0x45) {
      this.pos++;
      const sign = text.charCodeAt(this.pos);
      if (sign === 0x2b || sign === 0x2d) this.pos++;
      if (!isDigit(text.charCodeAt(this.pos))) this.fail(`invalid character ${describeChar(text, this.pos)} in exponent of numeric literal`);
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    }
    return { kind: 'number', text: text.slice(start, this.pos) };
  }

  /** Parses a string literal at `pos` (which holds the opening quote) and returns its value. */
  private parseString(): string {
    const text = this.text;
    this.pos++; // opening quote
    let value = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= text.length) this.fail('unexpected end of JSON input in string literal');
      const code = text.charCodeAt(this.pos);
      if (code === 0x22) {
        value += text.slice(runStart, this.pos);
        this.pos++;
        return value;
      }
      if (code < 0x20) this.fail(`invalid character ${describeChar(text, this.pos)} in string literal`);
      if (code === 0x5c) {
        value += text.slice(runStart, this.pos);
        value += this.parseEscape();
        runStart = this.pos;
        continue;
      }
      if (code >= 0xd800 && code <= 0xdfff) {
        // Only reachable for string input (TextDecoder never yields lone
        // surrogates): keep a proper pair, turn a lone half into U+FFFD as Go
        // would turn the equivalent invalid UTF-8 into U+FFFD.
        const next = text.charCodeAt(this.pos + 1);
        if (code <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
          this.pos += 2;
          continue;
        }
        value += text.slice(runStart, this.pos) + '\ufffd';
        this.pos++;
        runStart = this.pos;
        continue;
      }
      this.pos++;
    }
  }

  /** Parses one escape sequence at `pos` (the backslash) and returns the text it stands for. */
  private parseEscape(): string {
    const text = this.text;
    const escaped = text.charCodeAt(this.pos + 1);
    switch (escaped) {
      case 0x22: this.pos += 2; return '"';
      case 0x5c: this.pos += 2; return '\\';
      case 0x2f: this.pos += 2; return '/';
      case 0x62: this.pos += 2; return '\b';
      case 0x66: this.pos += 2; return '\f';
      case 0x6e: this.pos += 2; return '\n';
      case 0x72: this.pos += 2; return '\r';
      case 0x74: this.pos += 2; return '\t';
      case 0x75: { // u
        const unit = this.readHex4(this.pos + 2);
        this.pos += 6;
        if (unit < 0xd800 || unit > 0xdfff) return String.fromCharCode(unit);
        // Go pairs a high surrogate with an immediately following \u low
        // surrogate; anything else (lone high, lone low) becomes U+FFFD and
        // the following escape, if any, is read on its own.
        if (unit <= 0xdbff && text.charCodeAt(this.pos) === 0x5c && text.charCodeAt(this.pos + 1) === 0x75) {
          const low = this.readHex4(this.pos + 2);
          if (low >= 0xdc00 && low <= 0xdfff) {
            this.pos += 6;
            return String.fromCharCode(unit, low);
          }
        }
        return '\ufffd';
      }
      default:
        this.pos++;
        return this.fail(`invalid character ${describeChar(text, this.pos)} in string escape code`);
    }
  }

  private readHex4(at: number): number {
    let unit = 0;
    for (let i = 0; i < 4; i++) {
      if (at + i >= this.text.length) {
        this.pos = at + i;
        this.fail('unexpected end of JSON input in \\u escape');
      }
      const digit = hexValue(this.text.charCodeAt(at + i));
      if (digit < 0) {
        this.pos = at + i;
        this.fail(`invalid character ${describeChar(this.text, this.pos)} in \\u hexadecimal character escape`);
      }
      unit = unit * 16 + digit;
    }
    return unit;
  }

  private parseArray(depth: number): JsonNode {
    if (depth > MAX_NESTING_DEPTH) this.fail(`nesting deeper than ${MAX_NESTING_DEPTH}`);
    this.pos++; // [
    const items: JsonNode[] = [];
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      return { kind: 'array', items };
    }
    for (;;) {
      this.skipWhitespace();
      items.push(this.parseValue(depth));
      this.skipWhitespace();
      const code = this.text.charCodeAt(this.pos);
      if (code === 0x2c) {
        this.pos++;
        continue;
      }
      if (code === 0x5d) {
        this.pos++;
        return { kind: 'array', items };
      }
      if (this.pos >= this.text.length) this.fail('unexpected end of JSON input');
      this.fail(`invalid character ${describeChar(this.text, this.pos)} after array element`);
    }
  }

  private parseObject(depth: number): JsonNode {
    if (depth > MAX_NESTING_DEPTH) this.fail(`nesting deeper than ${MAX_NESTING_DEPTH}`);
    this.pos++; // {
    const members: Array<{ key: string; value: JsonNode }> = [];
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      return { kind: 'object', members };
    }
    for (;;) {
      this.skipWhitespace();
      if (this.pos >= this.text.length) this.fail('unexpected end of JSON input');
      if (this.text.charCodeAt(this.pos) !== 0x22) {
        this.fail(`invalid character ${describeChar(this.text, this.pos)} looking for beginning of object key string`);
      }
      const key = this.parseString();
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== 0x3a) {
        if (this.pos >= this.text.length) this.fail('unexpected end of JSON input');
        this.fail(`invalid character ${describeChar(this.text, this.pos)} after object key`);
      }
      this.pos++;
      this.skipWhitespace();
      members.push({ key, value: this.parseValue(depth) });
      this.skipWhitespace();
      const code = this.text.charCodeAt(this.pos);
      if (code === 0x2c) {
        this.pos++;
        continue;
      }
      if (code === 0x7d) {
        this.pos++;
        return { kind: 'object', members };
      }
      if (this.pos >= this.text.length) this.fail('unexpected end of JSON input');
      this.fail(`invalid character ${describeChar(this.text, this.pos)} after object key:value pair`);
    }
  }
}

/** Parses one JSON document. Bytes are read as UTF-8 the way Go reads them. Throws {@link GoJsonDecodeFailure}. */
export function parseGoJson(input: string | Uint8Array): JsonNode {
  const text = typeof input === 'string' ? input : utf8Decoder.decode(input);
  return new JsonParser(text).parseDocument();
}

// ---------------------------------------------------------------------------
// Encoding primitives
// ---------------------------------------------------------------------------

const HEX_DIGITS = '0123456789abcdef';

function unicodeEscape(code: number): string {
  return '\\u' + HEX_DIGITS[(code >> 12) & 0xf] + HEX_DIGITS[(code >> 8) & 0xf] + HEX_DIGITS[(code >> 4) & 0xf] + HEX_DIGITS[code & 0xf];
}

/**
 * Quotes a string exactly as json.Marshal does (Go 1.22+, HTML escaping on).
 * A lone surrogate cannot exist in a Go string; it is written as U+FFFD, the
 * character it becomes when the string is converted to UTF-8.
 */
export function quoteGoString(value: string): string {
  let out = '"';
  let runStart = 0;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code >= 0x20 && code < 0x7f) {
      if (code !== 0x22 && code !== 0x5c && code !== 0x3c && code !== 0x3e && code !== 0x26) continue;
    } else if (code >= 0x7f && code < 0xd800 && code !== 0x2028 && code !== 0x2029) {
      continue;
    } else if (code > 0xdfff) {
      continue;
    } else if (code >= 0xd800 && code <= 0xdbff) {
      const next = value.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
    }
    out += value.slice(runStart, i);
    runStart = i + 1;
    switch (code) {
      case 0x22: out += '\\"'; break;
      case 0x5c: out += '\\\\'; break;
      case 0x08: out += '\\b'; break;
      case 0x0c: out += '\\f'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0d: out += '\\r'; break;
      case 0x09: out += '\\t'; break;
      default:
        // Control characters, <, >, &, U+2028, U+2029 get \u escapes; a lone surrogate becomes U+FFFD.
        out += code >= 0xd800 && code <= 0xdfff ? '\ufffd' : unicodeEscape(code);
    }
  }
  return out + value.slice(runStart) + '"';
}

const GO_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes base64 as Go's base64.StdEncoding does: padding required, CR and LF
 * ignored anywhere, non-zero trailing bits tolerated. Returns null when invalid.
 */
export function decodeGoBase64(text: string): Uint8Array | null {
  const compact = text.includes('\r') || text.includes('\n') ? text.replace(/[\r\n]/g, '') : text;
  if (!GO_BASE64.test(compact)) return null;
  return new Uint8Array(Buffer.from(compact, 'base64'));
}

export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

// ---------------------------------------------------------------------------
// Go types
// ---------------------------------------------------------------------------

/**
 * How one Go type decodes from and encodes to JSON.
 * `decode` receives the value already in place (the zero value, or what an
 * earlier duplicate key produced) because Go decodes into it rather than
 * replacing it.
 */
export interface GoType<T> {
  /** The Go type, for messages: `uint64`, `[]uint8`, `pb.LogEntry`. */
  readonly goName: string;
  zero(): T;
  decode(node: JsonNode, previous: T, path: string): T;
  encode(value: T, path: string): string;
  /** Go's omitempty test: false, 0, "", nil or empty slice. Structs are never empty. */
  isEmpty(value: T): boolean;
}

function describeNode(node: JsonNode): string {
  switch (node.kind) {
    case 'number': return `number ${node.text}`;
    case 'bool': return 'bool';
    case 'null': return 'null';
    default: return node.kind;
  }
}

function typeMismatch(node: JsonNode, goName: string, path: string): GoJsonDecodeFailure {
  return new GoJsonDecodeFailure(`cannot unmarshal ${describeNode(node)} into Go value of type ${goName}`, path);
}

const UINT64_MAX = (1n << 64n) - 1n;

/**
 * Reads a JSON number as Go's strconv.ParseUint does: decimal digits only,
 * so `-1`, `1.0` and `1e2` are type errors, not values.
 */
function decodeUnsigned(node: JsonNode, previous: number, goName: string, max: bigint, path: string): number {
  if (node.kind === 'null') return previous;
  if (node.kind !== 'number') throw typeMismatch(node, goName, path);
  if (!/^[0-9]+$/.test(node.text)) {
    throw new GoJsonDecodeFailure(`cannot unmarshal number ${node.text} into Go value of type ${goName}: not an unsigned integer`, path);
  }
  const value = BigInt(node.text);
  if (value > max) {
    throw new GoJsonDecodeFailure(`number ${node.text} overflows ${goName}`, path);
  }
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new GoJsonDecodeFailure(
      `number ${node.text} is above 2^53 - 1, the largest ${goName} this codec represents exactly (u64 fields are JS numbers)`,
      path,
    );
  }
  return Number(value);
}

function encodeUnsigned(value: number, goName: string, max: number, path: string): string {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new WireEncodeError(`${goName} must be an integer in [0, ${max}], got ${String(value)}`, path);
  }
  return String(value);
}

/**
 * Go uint64 carried as a JS number. Decoding rejects negatives, fractions,
 * exponents and anything above Number.MAX_SAFE_INTEGER (2^53 - 1) with an
 * error rather than rounding: terms and indexes never get near it, and rale's
 * core uses numbers for them too.
 */
export const goUint64: GoType<number> = {
  goName: 'uint64',
  zero: () => 0,
  decode: (node, previous, path) => decodeUnsigned(node, previous, 'uint64', UINT64_MAX, path),
  encode: (value, path) => encodeUnsigned(value, 'uint64', Number.MAX_SAFE_INTEGER, path),
  isEmpty: (value) => value === 0,
};

export const goUint8: GoType<number> = {
  goName: 'uint8',
  zero: () => 0,
  decode: (node, previous, path) => decodeUnsigned(node, previous, 'uint8', 255n, path),
  encode: (value, path) => encodeUnsigned(value, 'uint8', 255, path),
  isEmpty: (value) => value === 0,
};

export const goBool: GoType<boolean> = {
  goName: 'bool',
  zero: () => false,
  decode(node, previous, path) {
    if (node.kind === 'null') return previous;
    if (node.kind !== 'bool') throw typeMismatch(node, 'bool', path);
    return node.value;
  },
  encode(value, path) {
    if (typeof value !== 'boolean') throw new WireEncodeError(`bool expected, got ${typeof value}`, path);
    return value ? 'true' : 'false';
  },
  isEmpty: (value) => !value,
};

export const goString: GoType<string> = {
  goName: 'string',
  zero: () => '',
  decode(node, previous, path) {
    if (node.kind === 'null') return previous;
    if (node.kind !== 'string') throw typeMismatch(node, 'string', path);
    return node.value;
  },
  encode(value, path) {
    if (typeof value !== 'string') throw new WireEncodeError(`string expected, got ${typeof value}`, path);
    return quoteGoString(value);
  },
  isEmpty: (value) => value === '',
};

/**
 * Go []byte. `null` is Go's nil slice and encodes as `null`; an empty
 * Uint8Array is a non-nil empty slice and encodes as `""`. Decoding accepts a
 * base64 string, or a JSON array of numbers, which Go also accepts for []byte.
 */
export const goBytes: GoType<Uint8Array | null> = {
  goName: '[]uint8',
  zero: () => null,
  decode(node, previous, path) {
    if (node.kind === 'null') return null;
    if (node.kind === 'string') {
      const bytes = decodeGoBase64(node.value);
      if (bytes === null) throw new GoJsonDecodeFailure('invalid base64 for []byte: standard alphabet with = padding expected', path);
      return bytes;
    }
    if (node.kind === 'array') {
      const bytes = new Uint8Array(node.items.length);
      node.items.forEach((item, i) => {
        bytes[i] = decodeUnsigned(item, previous?.[i] ?? 0, 'uint8', 255n, `${path}[${i}]`);
      });
      return bytes;
    }
    throw typeMismatch(node, '[]uint8', path);
  },
  encode(value, path) {
    if (value === null) return 'null';
    if (!(value instanceof Uint8Array)) throw new WireEncodeError('Uint8Array or null expected for []byte', path);
    return `"${encodeBase64(value)}"`;
  },
  isEmpty: (value) => value === null || value.length === 0,
};

/** Go slice of `element`; `null` is the nil slice. */
export function goSlice<E>(element: GoType<E>): GoType<E[] | null> {
  return {
    goName: `[]${element.goName}`,
    zero: () => null,
    decode(node, previous, path) {
      if (node.kind === 'null') return null;
      if (node.kind !== 'array') throw typeMismatch(node, `[]${element.goName}`, path);
      // Go reuses the elements already in the slice (decoding into them) and
      // starts from zero values past its end; decoding `[]` gives an empty,
      // non-nil slice.
      return node.items.map((item, i) => {
        const prior = previous !== null && i < previous.length ? (previous[i] as E) : element.zero();
        return element.decode(item, prior, `${path}[${i}]`);
      });
    },
    encode(value, path) {
      if (value === null) return 'null';
      if (!Array.isArray(value)) throw new WireEncodeError(`array or null expected for []${element.goName}`, path);
      return `[${value.map((item, i) => element.encode(item, `${path}[${i}]`)).join(',')}]`;
    },
    isEmpty: (value) => value === null || value.length === 0,
  };
}

/**
 * A Go pointer to `target` that must not be nil. Go would store a nil pointer
 * for `null` (and the peer would crash on it); we reject it instead, so
 * callers always get a value.
 */
export function goNonNilPointer<T>(target: GoType<T>): GoType<T> {
  return {
    goName: `*${target.goName}`,
    zero: () => target.zero(),
    decode(node, previous, path) {
      if (node.kind === 'null') throw new GoJsonDecodeFailure(`null *${target.goName} is not accepted (it would be a nil pointer)`, path);
      return target.decode(node, previous, path);
    },
    encode: (value, path) => target.encode(value, path),
    isEmpty: () => false,
  };
}

export interface GoField<V> {
  readonly type: GoType<V>;
  readonly omitEmpty: boolean;
}

export function goField<V>(type: GoType<V>, options: { omitEmpty?: boolean } = {}): GoField<V> {
  return { type, omitEmpty: options.omitEmpty ?? false };
}

/**
 * One field spec per property of T, keyed by the JSON key, listed in Go
 * declaration order (JS keeps string keys in insertion order, which is why
 * integer-like keys are refused).
 */
export type GoStructFields<T> = { readonly [K in keyof T]-?: GoField<T[K]> };

/**
 * Go's key folding (encoding/json foldName): ASCII letters fold to upper
 * case, and the only non-ASCII characters whose case-fold class contains an
 * ASCII letter, U+017F (long s) and U+212A (Kelvin sign), fold to S and K.
 * Every other character stays as it is and so can never match our ASCII names.
 */
export function foldGoKey(key: string): string {
  let folded = '';
  for (let i = 0; i < key.length; i++) {
    const code = key.charCodeAt(i);
    if (code >= 0x61 && code <= 0x7a) folded += String.fromCharCode(code - 0x20);
    else if (code === 0x17f) folded += 'S';
    else if (code === 0x212a) folded += 'K';
    else folded += key[i];
  }
  return folded;
}

/** A Go struct whose JSON keys are the property names of T (Go field names, or the json tag names). */
export function goStruct<T extends object>(goName: string, fields: GoStructFields<T>): GoType<T> {
  const keys = Object.keys(fields) as Array<keyof T & string>;
  const byExactKey = new Map<string, keyof T & string>();
  const byFoldedKey = new Map<string, keyof T & string>();
  for (const key of keys) {
    if (/^[0-9]+$/.test(key)) throw new Error(`goStruct ${goName}: integer-like key ${key} would lose its declaration order`);
    byExactKey.set(key, key);
    byFoldedKey.set(foldGoKey(key), key);
  }
  const fieldOf = <K extends keyof T>(key: K): GoField<T[K]> => fields[key] as GoField<T[K]>;

  return {
    goName,
    zero() {
      const value = {} as T;
      for (const key of keys) value[key] = fieldOf(key).type.zero();
      return value;
    },
    decode(node, previous, path) {
      if (node.kind === 'null') return previous;
      if (node.kind !== 'object') throw typeMismatch(node, goName, path);
      const value = { ...previous };
      for (const member of node.members) {
        const key = byExactKey.get(member.key) ?? byFoldedKey.get(foldGoKey(member.key));
        if (key === undefined) continue; // Go ignores unknown keys
        value[key] = fieldOf(key).type.decode(member.value, value[key], `${path}.${key}`);
      }
      return value;
    },
    encode(value, path) {
      if (typeof value !== 'object' || value === null) throw new WireEncodeError(`object expected for ${goName}`, path);
      const parts: string[] = [];
      for (const key of keys) {
        const field = fieldOf(key);
        const fieldValue = value[key];
        if (field.omitEmpty && field.type.isEmpty(fieldValue)) continue;
        parts.push(`${quoteGoString(key)}:${field.type.encode(fieldValue, `${path}.${key}`)}`);
      }
      return `{${parts.join(',')}}`;
    },
    isEmpty: () => false,
  };
}

/**
 * json.Unmarshal(input, &value) for a value starting at its zero value.
 * A top-level `null` leaves it at zero, as in Go. Throws {@link GoJsonDecodeFailure}.
 */
export function decodeGoJson<T>(type: GoType<T>, input: string | Uint8Array): T {
  if (typeof input !== 'string' && !(input instanceof Uint8Array)) {
    throw new GoJsonDecodeFailure('input must be a string or a Uint8Array');
  }
  return type.decode(parseGoJson(input), type.zero(), type.goName);
}

/** json.Marshal(value). Throws {@link WireEncodeError} for values Go could not hold. */
export function encodeGoJson<T>(type: GoType<T>, value: T): string {
  return type.encode(value, type.goName);
}
