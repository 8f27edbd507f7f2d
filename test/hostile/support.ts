/**
 * Shared by the hostile-input tests (sql, rest, peer): how many runs, which
 * seed, hostile JSON arbitraries, and an in-memory ApiBackend for running the
 * REST API many times without a cluster.
 *
 *   RALE_FUZZ_RUNS=2000 npx ava test/hostile/   # more iterations (scales every property)
 *   RALE_FUZZ_SEED=123 npx ava test/hostile/    # another seed (default: fixed, so CI is repeatable)
 */
import { EventEmitter } from 'node:events';
import fc from 'fast-check';
import { RaleError } from '../../sidecar/src/errors.ts';
import { Role, type ConfigChange, type NodeId } from '../../sidecar/src/core/types.ts';
import type { CoreStatus } from '../../sidecar/src/core/raft.ts';
import type { ApiBackend, LogEntryView } from '../../sidecar/src/http/api.ts';
import type { ProposalOutcome } from '../../sidecar/src/node/raft-node.ts';
import type { ProposableCommand } from '../../sidecar/src/http/validate.ts';

const scale = Number(process.env.RALE_FUZZ_RUNS ?? '') || 0;
const seed = Number(process.env.RALE_FUZZ_SEED ?? '') || 0x5eed;

/**
 * fast-check parameters: `base` runs by default (what CI can afford), or
 * RALE_FUZZ_RUNS times base/100 when set (RALE_FUZZ_RUNS=100 is the default
 * budget of a 100-run property). A failure prints the seed and the path to replay it.
 */
export function fuzz(base: number): fc.Parameters<unknown> {
  const numRuns = scale > 0 ? Math.max(1, Math.round((base * scale) / 100)) : base;
  return { numRuns, seed, endOnFailure: true, includeErrorInReport: true };
}

/** The JSON text of `depth` nested arrays (or objects) around `leaf`: JSON.stringify cannot write it beyond ~4,000 levels. */
export function nestedText(depth: number, leaf = '1', kind: 'array' | 'object' = 'array'): string {
  return kind === 'array' ? '['.repeat(depth) + leaf + ']'.repeat(depth) : '{"a":'.repeat(depth) + leaf + '}'.repeat(depth);
}

/** Nested arrays/objects `depth` levels deep around `leaf`. */
export function nested(depth: number, leaf: unknown = 1, kind: 'array' | 'object' = 'array'): unknown {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = kind === 'array' ? [v] : { a: v };
  return v;
}

/** Strings that break naive code: control characters, lone surrogates, RTL marks, SQL and path syntax, long runs. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    'a\u0000b',
    '\ud800',
    '\udfff',
    '\u202e',
    '\ufeff',
    "'; DROP TABLE rale.kv; --",
    '../../etc/passwd',
    '%00',
    '%2F',
    'null',
    '{"op":"set"}',
    '__proto__',
    'constructor',
    'x'.repeat(1025),
    '中'.repeat(400),
    '😀'.repeat(300),
  ),
  fc.integer({ min: 1, max: 70_000 }).map((n) => 'k'.repeat(n)),
);

/** Numbers JSON can spell but a double cannot hold, or that are edge cases. */
export const nastyNumberText: fc.Arbitrary<string> = fc.constantFrom(
  '1e400',
  '-1e400',
  '1e-400',
  '12345678901234567891',
  '-9223372036854775809',
  '9007199254740993',
  '0.30000000000000004',
  '-0',
  '1E2',
  '1.5e-7',
);

/** Any JSON value, with hostile leaves and occasionally very deep nesting. */
export const hostileJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  { weight: 2, arbitrary: nastyString },
  { weight: 1, arbitrary: fc.oneof(fc.double(), fc.integer(), fc.bigInt().map((b) => Number(b))) },
  { weight: 1, arbitrary: fc.integer({ min: 90, max: 1500 }).chain((d) => fc.constantFrom(nested(d), nested(d, 'x', 'object'))) },
  { weight: 1, arbitrary: fc.dictionary(nastyString, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }) },
);

/** Commands that look almost right: a known or unknown op with fields of any type. */
export const hostileCommand: fc.Arbitrary<unknown> = fc.oneof(
  hostileJson,
  fc.record(
    {
      op: fc.oneof(fc.constantFrom('set', 'delete', 'cas', 'call', 'register_handler', 'SET', '', 'get'), hostileJson),
      key: fc.oneof(nastyString, hostileJson),
      value: hostileJson,
      expected: hostileJson,
      handler: fc.oneof(nastyString, hostileJson),
      payload: hostileJson,
      extra: hostileJson,
    },
    { requiredKeys: [] },
  ),
);

// ---------------------------------------------------------------- an in-memory backend for the REST API

export interface FakeBackendState {
  kv: Map<string, { value: unknown; version: number }>;
  log: LogEntryView[];
  voters: NodeId[];
  learners: NodeId[];
  term: number;
}

/**
 * A single-node "cluster" in memory: applies set/delete/cas at once, keeps a
 * log, answers reads. Encodes commands with JSON.stringify as the real
 * backend does (node-api.ts), so what breaks there breaks here too.
 */
export class FakeBackend extends EventEmitter implements ApiBackend {
  readonly id = 'n1';
  readonly state: FakeBackendState = { kv: new Map(), log: [], voters: ['n1', 'n2', 'n3'], learners: [], term: 2 };
  readonly addresses: Record<string, string> = { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' };

  status(): CoreStatus {
    const last = this.state.log.length;
    return {
      id: this.id,
      role: Role.Leader,
      term: this.state.term,
      vote: this.id,
      leader: this.id,
      commit: last,
      applied: last,
      firstIndex: 1,
      lastIndex: last,
      lastTerm: this.state.term,
      persisted: last,
      config: { voters: [...this.state.voters], learners: [...this.state.learners] },
      progress: {},
      transferTarget: null,
    };
  }

  addressOf(id: NodeId): string | undefined {
    return this.addresses[id];
  }

  async waitForLeader(): Promise<NodeId> {
    return this.id;
  }

  async checkCommand(command: ProposableCommand): Promise<void> {
    const text = JSON.stringify(command); // as node-api.ts sends it to rale.check_command
    if (Buffer.byteLength(text) > 65536) throw new RaleError('ENTRY_TOO_LARGE', `the command is ${Buffer.byteLength(text)} bytes`);
  }

  async propose(command: ProposableCommand, id: string): Promise<ProposalOutcome> {
    const index = this.append({ id, command: JSON.parse(JSON.stringify(command)) as unknown });
    const c = command as Record<string, unknown>;
    const key = c.key as string;
    let result: unknown = { ok: true };
    if (c.op === 'set') this.state.kv.set(key, { value: c.value, version: index });
    else if (c.op === 'delete') result = { ok: true, existed: this.state.kv.delete(key) };
    else if (c.op === 'cas') {
      const current = this.state.kv.get(key);
      const matches = c.expected === null ? current === undefined : current !== undefined && JSON.stringify(current.value) === JSON.stringify(c.expected);
      if (matches) this.state.kv.set(key, { value: c.value, version: index });
      else result = { ok: false, current: current?.value ?? null };
    } else return { index, term: this.state.term, status: 'failed', error: 'no such handler' };
    this.emit('applied');
    return { index, term: this.state.term, status: 'ok', result };
  }

  async changeMembership(change: ConfigChange): Promise<ProposalOutcome> {
    const index = this.append(change);
    if (change.type === 'remove') {
      this.state.voters = this.state.voters.filter((v) => v !== change.node);
      this.state.learners = this.state.learners.filter((v) => v !== change.node);
    } else if (change.type === 'addLearner') this.state.learners.push(change.node);
    else if (change.type === 'promote' || change.type === 'addVoter') {
      this.state.learners = this.state.learners.filter((v) => v !== change.node);
      this.state.voters.push(change.node);
    }
    return { index, term: this.state.term, status: 'ok' };
  }

  async readIndex(): Promise<number> {
    return this.state.log.length;
  }

  async readBarrier(): Promise<number> {
    return this.state.log.length;
  }

  transferLeadership(): void {}

  async readKey(key: string) {
    return { applied: this.state.log.length, entry: this.state.kv.get(key) ?? null };
  }

  async logEntries(from: number, limit: number): Promise<LogEntryView[]> {
    return this.state.log.slice(from - 1, from - 1 + limit);
  }

  async pingDatabase(): Promise<void> {}

  /** A digest of everything a request could change. */
  snapshot(): string {
    return JSON.stringify({ kv: [...this.state.kv], log: this.state.log.length, voters: this.state.voters, learners: this.state.learners });
  }

  private append(payload: unknown): number {
    const index = this.state.log.length + 1;
    this.state.log.push({ index, term: this.state.term, kind: 'normal', leader: this.id, payload });
    return index;
  }
}
