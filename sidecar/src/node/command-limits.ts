/**
 * Limits on what a command may hold, checked in JavaScript. The same limits
 * are checked in SQL at propose time (rale.check_command, 0004_hardening.sql)
 * for SQL and REST clients; this copy serves the paths that do not go through
 * SQL (bridges, the library, a peer's forwarded proposal) and, above all, the
 * state machine at apply time.
 *
 * Why at apply time too: an entry is in the log forever once committed. If
 * applying it failed with a database error (a key too long for the index, a
 * string jsonb cannot store), every node would retry it forever and apply
 * nothing after it. These checks are pure functions of the entry, so every
 * node reaches the same verdict and records the same failure for it.
 */
export const MAX_KEY_BYTES = 1024;
export const MAX_PROPOSAL_ID_BYTES = 512;
export const MAX_NESTING = 100;

const utf8 = new TextEncoder();
/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why this JSON value cannot be stored as jsonb, or null. */
export function jsonValueProblem(value: unknown, field: string): string | null {
  let problem: string | null = null;
  const visit = (v: unknown, depth: number): void => {
    if (problem !== null) return;
    if (depth > MAX_NESTING) {
      problem = `${field} is nested deeper than ${MAX_NESTING} levels of objects and arrays`;
      return;
    }
    if (typeof v === 'string') {
      problem = stringProblem(v, field);
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v)) problem = `${field} holds a number JSON cannot carry (${v})`;
    } else if (Array.isArray(v)) {
      for (const item of v) visit(item, depth + 1);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) {
        const keyProblem = stringProblem(k, `a field name in ${field}`);
        if (keyProblem !== null) {
          problem = keyProblem;
          return;
        }
        visit(item, depth + 1);
      }
    }
  };
  visit(value, 0);
  return problem;
}

/** PostgreSQL text and jsonb hold neither NUL nor unpaired UTF-16 surrogates. */
function stringProblem(s: string, field: string): string | null {
  if (s.includes('\u0000')) return `${field} contains a NUL character, which PostgreSQL text cannot hold`;
  if (LONE_SURROGATE.test(s)) return `${field} contains an unpaired UTF-16 surrogate, which is not valid Unicode`;
  return null;
}

export function keyProblem(key: string): string | null {
  const bytes = utf8.encode(key).length;
  if (bytes > MAX_KEY_BYTES) return `the key is ${bytes} bytes long, above the limit of ${MAX_KEY_BYTES} bytes`;
  return stringProblem(key, 'the key');
}

export function proposalIdProblem(id: string): string | null {
  const bytes = utf8.encode(id).length;
  if (bytes === 0 || bytes > MAX_PROPOSAL_ID_BYTES) return `a proposal id must be 1 to ${MAX_PROPOSAL_ID_BYTES} bytes long, got ${bytes}`;
  return stringProblem(id, 'the proposal id');
}

/**
 * Why a command (set, delete, cas, call, register_handler) cannot be
 * applied as it is, or null. Shape errors (unknown op, missing key) are left
 * to the state machine, which reports them as that command's failure.
 */
export function commandProblem(command: unknown): string | null {
  if (command === null || typeof command !== 'object' || Array.isArray(command)) return null;
  const c = command as Record<string, unknown>;
  if (typeof c.key === 'string') {
    const problem = keyProblem(c.key);
    if (problem !== null) return problem;
  }
  return jsonValueProblem(command, 'the command');
}
