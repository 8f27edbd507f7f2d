/**
 * A strict parser for the small subset of YAML that docker/compose.yaml is
 * written in (there is no YAML library in the project, and the compose test
 * must not depend on a Docker engine):
 *
 *  - block mappings (`key: value`, or `key:` then a more indented block;
 *    `key:` with nothing under it is null), keys plain or double-quoted;
 *  - block sequences whose items are scalars (`- value`);
 *  - scalars: double-quoted (JSON escapes), single-quoted (`''` for `'`),
 *    flow sequences written as JSON arrays, and plain scalars resolved as
 *    YAML 1.2's core schema does (null, booleans, integers, floats, else a
 *    string);
 *  - whole-line comments and blank lines.
 *
 * Anything else (anchors, aliases, tags, block scalars, flow mappings,
 * mappings inside sequences, trailing comments, tabs, documents, duplicate
 * keys, odd indentation) is an error naming the line, never silently read
 * another way than YAML would: what this parser accepts, it reads as Docker
 * Compose's YAML parser does.
 */

export type Yaml = null | boolean | number | string | Yaml[] | { [key: string]: Yaml };

interface Line {
  no: number;
  indent: number;
  text: string;
}

export class YamlSubsetError extends Error {
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`);
    this.name = 'YamlSubsetError';
  }
}

export function parseYamlSubset(source: string): Yaml {
  const lines: Line[] = [];
  source.split('\n').forEach((raw, k) => {
    const no = k + 1;
    const text = raw.replace(/\r$/, '');
    if (/^\s*(#|$)/.test(text)) return;
    const indent = /^ */.exec(text)?.[0].length ?? 0;
    if (text[indent] === '\t') throw new YamlSubsetError(no, 'tabs are not allowed in indentation');
    if (/^(---|\.\.\.)(\s|$)/.test(text)) throw new YamlSubsetError(no, 'document markers are not supported');
    lines.push({ no, indent, text: text.slice(indent).replace(/\s+$/, '') });
  });
  if (lines.length === 0) return null;
  const first = lines[0] as Line;
  if (first.indent !== 0) throw new YamlSubsetError(first.no, 'the document must start at column 1');
  const [value, next] = parseBlock(lines, 0, 0);
  if (next < lines.length) throw new YamlSubsetError((lines[next] as Line).no, 'unexpected indentation');
  return value;
}

/** Parses the block starting at lines[at], whose lines are indented by exactly `indent`. */
function parseBlock(lines: Line[], at: number, indent: number): [Yaml, number] {
  const head = lines[at] as Line;
  return head.text === '-' || head.text.startsWith('- ') ? parseSequence(lines, at, indent) : parseMapping(lines, at, indent);
}

function parseSequence(lines: Line[], at: number, indent: number): [Yaml[], number] {
  const items: Yaml[] = [];
  let k = at;
  while (k < lines.length && (lines[k] as Line).indent === indent) {
    const line = lines[k] as Line;
    if (!line.text.startsWith('- ')) throw new YamlSubsetError(line.no, `expected a list item ("- value") at this indentation, got ${JSON.stringify(line.text)}`);
    const rest = line.text.slice(2).trim();
    if (rest === '' || /^[^"'[][^:]*:( |$)/.test(rest)) throw new YamlSubsetError(line.no, 'only scalar list items are supported (no mappings or nested lists in lists)');
    items.push(parseScalar(rest, line.no));
    k++;
  }
  if (k < lines.length && (lines[k] as Line).indent > indent) throw new YamlSubsetError((lines[k] as Line).no, 'unexpected indentation after a list item');
  return [items, k];
}

const KEY = /^([A-Za-z0-9_][A-Za-z0-9_.\-/]*|"(?:[^"\\]|\\.)*"):(?: +(.*))?$/;

function parseMapping(lines: Line[], at: number, indent: number): [{ [key: string]: Yaml }, number] {
  const map: { [key: string]: Yaml } = {};
  let k = at;
  while (k < lines.length && (lines[k] as Line).indent === indent) {
    const line = lines[k] as Line;
    const match = KEY.exec(line.text);
    if (match === null) throw new YamlSubsetError(line.no, `expected "key: value" or "key:", got ${JSON.stringify(line.text)}`);
    const key = (match[1] as string).startsWith('"') ? (JSON.parse(match[1] as string) as string) : (match[1] as string);
    if (Object.hasOwn(map, key)) throw new YamlSubsetError(line.no, `duplicate key ${JSON.stringify(key)}`);
    const rest = match[2];
    k++;
    if (rest !== undefined && rest !== '') {
      map[key] = parseScalar(rest, line.no);
      if (k < lines.length && (lines[k] as Line).indent > indent) throw new YamlSubsetError((lines[k] as Line).no, `unexpected indentation under ${JSON.stringify(key)}, which has a value on its line`);
      continue;
    }
    const child = lines[k];
    if (child === undefined || child.indent <= indent) {
      map[key] = null;
      continue;
    }
    const [value, next] = parseBlock(lines, k, child.indent);
    map[key] = value;
    k = next;
  }
  if (k < lines.length && (lines[k] as Line).indent > indent) throw new YamlSubsetError((lines[k] as Line).no, 'unexpected indentation');
  return [map, k];
}

function parseScalar(text: string, no: number): Yaml {
  const c = text[0];
  if (c === '"') {
    const end = closingDoubleQuote(text);
    if (end !== text.length - 1) throw new YamlSubsetError(no, `text after a double-quoted string (trailing comments are not supported): ${text}`);
    try {
      return JSON.parse(text) as string;
    } catch {
      throw new YamlSubsetError(no, `unsupported escape in ${text}: use JSON escapes`);
    }
  }
  if (c === "'") {
    const inner = /^'((?:[^']|'')*)'$/.exec(text);
    if (inner === null) throw new YamlSubsetError(no, `malformed single-quoted string (trailing comments are not supported): ${text}`);
    return (inner[1] as string).replace(/''/g, "'");
  }
  if (c === '[') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new YamlSubsetError(no, `flow lists must be written as JSON arrays (double-quoted strings, no trailing comment): ${text}`);
    }
    if (!Array.isArray(parsed) || parsed.some((v) => typeof v === 'object' && v !== null)) throw new YamlSubsetError(no, 'flow lists may hold scalars only');
    return parsed as Yaml[];
  }
  if (c !== undefined && '{&*!|>%@`,]}#?:'.includes(c)) {
    throw new YamlSubsetError(no, `unsupported YAML construct (${JSON.stringify(c)}) in ${text}: quote the value`);
  }
  if (text.includes(' #')) throw new YamlSubsetError(no, `trailing comments are not supported: ${text}`);
  if (text.includes(': ')) throw new YamlSubsetError(no, `": " in a plain value is ambiguous: quote it: ${text}`);
  // YAML 1.2 core schema.
  if (/^(null|Null|NULL|~)$/.test(text)) return null;
  if (/^(true|True|TRUE)$/.test(text)) return true;
  if (/^(false|False|FALSE)$/.test(text)) return false;
  if (/^[-+]?[0-9]+$/.test(text)) return Number(text);
  if (/^0o[0-7]+$/.test(text) || /^0x[0-9a-fA-F]+$/.test(text)) return Number(text);
  if (/^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$/.test(text)) return Number(text);
  if (/^[-+]?\.(inf|Inf|INF)$/.test(text) || /^\.(nan|NaN|NAN)$/.test(text)) throw new YamlSubsetError(no, `special floats are not supported: ${text}`);
  return text;
}

/** Index of the quote closing the double-quoted string that starts `text`, or -1. */
function closingDoubleQuote(text: string): number {
  for (let k = 1; k < text.length; k++) {
    if (text[k] === '\\') k++;
    else if (text[k] === '"') return k;
  }
  return -1;
}

/**
 * Compose's variable interpolation, applied to every string value:
 * `$$` is a literal `$`; `${NAME}`, `$NAME`; `${NAME:-default}` and
 * `${NAME-default}`; `${NAME:?message}` and `${NAME?message}` (an error);
 * `${NAME:+alt}` and `${NAME+alt}`. The colon forms treat an empty value as
 * unset. Stricter than compose in one way: a variable used without a default
 * that is not set is an error here (compose substitutes "" with a warning).
 */
export function interpolate(value: Yaml, env: Record<string, string | undefined>): Yaml {
  if (typeof value === 'string') return interpolateString(value, env);
  if (Array.isArray(value)) return value.map((v) => interpolate(v, env));
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env)]));
  return value;
}

function interpolateString(text: string, env: Record<string, string | undefined>): string {
  return text.replace(/\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?+])((?:[^}])*))?\}|([A-Za-z_][A-Za-z0-9_]*)|)/g, (whole, _all, braced?: string, colon?: string, op?: string, arg?: string, bare?: string) => {
    if (whole === '$$') return '$';
    const name = braced ?? bare;
    if (name === undefined) throw new Error(`a lone "$" in ${JSON.stringify(text)}: write $$ for a literal dollar sign`);
    const value = env[name];
    const unset = value === undefined || (colon === ':' && value === '');
    switch (op) {
      case '-':
        return unset ? (arg as string) : (value as string);
      case '?':
        if (unset) throw new Error(`required variable ${name} is missing a value: ${arg}`);
        return value as string;
      case '+':
        return unset ? '' : (arg as string);
      default:
        if (value === undefined) throw new Error(`variable ${name} is not set and has no default`);
        return value;
    }
  });
}
