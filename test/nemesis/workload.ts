/**
 * The nemesis run's clients: concurrent reads, writes, compare-and-sets and
 * deletes on a few keys, through SQL (rale_propose + COMMIT + rale_wait,
 * CALL rale.submit, rale_read_barrier + rale_get, rale.get_linearizable) and
 * through the REST API (POST /consensus/propose, GET /kv?consistency=
 * linearizable), each recorded in one lincheck history; plus calls of the
 * deliberately non-idempotent audit handler (see audit.ts), whose ids are
 * kept for the exactly-once audit.
 *
 * Outcomes (see DESIGN.md for why each is safe):
 *  - ok: an answer that says the command was applied (a cas that ran and
 *    did not match is ok with output false);
 *  - fail: the command provably never took effect: refused before it was
 *    proposed (SQL error inside the proposing transaction, REST 4xx refusals,
 *    NOT_LEADER, TRANSFER_IN_PROGRESS, "found no leader", connection refused),
 *    or applied and failed (no effect);
 *  - info: anything else once the operation's deadline passed.
 * Writes try hard to learn their outcome before giving up: SQL waits again
 * on the same proposal id (reconnecting after a database restart), REST
 * retries with the same Idempotency-Key (the state machine applies an id once).
 */
import pg from 'pg';
import { HistoryRecorder, type KvInput, type KvOutput, type OperationHandle } from '../lincheck/index.ts';
import type { Cluster } from '../cluster/harness.ts';
import { Rng } from '../sim/rng.ts';

export const AUDIT_HANDLER = 'nemesis_audit';

export type Via = 'sql' | 'rest';
export type OpKind = 'get' | 'put' | 'cas' | 'delete' | 'audit';
/** How an operation went in, e.g. "sql:propose-wait", "sql:submit", "sql:barrier-get", "rest:propose". */
export type Path = string;

export interface AuditCall {
  /** Our id, in the payload (and the row the handler inserts). */
  opId: string;
  via: Via;
  /** rale's proposal id: the outbox uuid (SQL) or http:<Idempotency-Key> (REST); null when never learnt. */
  proposalId: string | null;
  outcome: 'ok' | 'fail' | 'info';
  /** The handler's answer: the row's position in the audit table. */
  pos: number | null;
  node: string;
}

/** A write rale acknowledged, with its proposal id, for the bookkeeping cross-check. */
export interface AckedProposal {
  proposalId: string;
  index: number;
  via: Via;
  node: string;
}

export interface WorkloadOptions {
  seed: number;
  clients: number;
  /** Keys per generation. */
  keys: number;
  /** A new generation of keys every this many ms (bounds each key's history for the checker). */
  keyEpochMs: number;
  /** How long a write may try to learn its outcome before it is recorded as unknown. */
  writeDeadlineMs: number;
  /** Share of operations that are audit-handler calls. */
  auditShare?: number;
  /** Pause between one client's operations. */
  thinkMs?: number;
}

export interface Tally {
  ok: number;
  fail: number;
  info: number;
}

class OpFailed extends Error {
  constructor(
    message: string,
    /** true: provably no effect. */
    readonly definite: boolean,
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Errors of a connection that never reached the server: nothing was sent. */
function neverConnected(err: unknown): boolean {
  const code = (err as { code?: string; cause?: { code?: string } }).code ?? (err as { cause?: { code?: string } }).cause?.code;
  return code === 'ECONNREFUSED';
}

/** Parses PostgreSQL's text form of a composite value: (a,b,"c ""d""",) -> ['a','b','c "d"',null]. */
export function parseRecord(text: string): (string | null)[] {
  if (!text.startsWith('(') || !text.endsWith(')')) throw new Error(`not a record: ${text}`);
  const body = text.slice(1, -1);
  const out: (string | null)[] = [];
  let i = 0;
  for (;;) {
    if (i >= body.length || body[i] === ',') {
      out.push(null);
    } else if (body[i] === '"') {
      let value = '';
      i++;
      for (;;) {
        const c = body[i];
        if (c === undefined) throw new Error(`unterminated quote in record: ${text}`);
        if (c === '"' && body[i + 1] === '"') {
          value += '"';
          i += 2;
        } else if (c === '\\') {
          value += body[i + 1] ?? '';
          i += 2;
        } else if (c === '"') {
          i++;
          break;
        } else {
          value += c;
          i++;
        }
      }
      out.push(value);
    } else {
      let value = '';
      while (i < body.length && body[i] !== ',') value += body[i++];
      out.push(value);
    }
    if (i >= body.length) break;
    i++; // the comma
    if (i === body.length) {
      out.push(null);
      break;
    }
  }
  return out;
}

interface Outcome {
  status: string;
  index: number | null;
  result: unknown;
  error: string | null;
}

/** One client's SQL connections, one per node, opened on demand and dropped on any error. */
class SqlConnections {
  private readonly clients = new Map<string, pg.Client>();
  constructor(private readonly cluster: Cluster) {}

  async get(id: string): Promise<pg.Client> {
    const existing = this.clients.get(id);
    if (existing !== undefined) return existing;
    const client = new pg.Client({
      connectionString: this.cluster.databaseUrl(id),
      connectionTimeoutMillis: 3_000,
      query_timeout: 10_000,
      application_name: 'nemesis',
    });
    client.on('error', () => this.drop(id, client));
    await client.connect();
    this.clients.set(id, client);
    return client;
  }

  drop(id: string, client?: pg.Client): void {
    const current = this.clients.get(id);
    if (current === undefined || (client !== undefined && current !== client)) return;
    this.clients.delete(id);
    current.end().catch(() => {});
  }

  async closeAll(): Promise<void> {
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(all.map((c) => c.end().catch(() => {})));
  }
}

export class Workload {
  readonly recorder = new HistoryRecorder<KvInput, KvOutput>();
  readonly audits: AuditCall[] = [];
  readonly acked: AckedProposal[] = [];
  /** Per path and kind: outcomes. */
  readonly tallies = new Map<string, Tally>();
  /** Things that should not happen and are not verdicts by themselves (apply failures of kv commands...). */
  readonly anomalies: string[] = [];
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly started = Date.now();
  private nextValue = 1;
  private nextAudit = 1;
  private readonly connections: SqlConnections[] = [];
  /** Key -> last value a client saw (any client): a good guess for a cas' expected value. */
  private readonly lastSeen = new Map<string, number | null>();

  constructor(
    private readonly cluster: Cluster,
    private readonly options: WorkloadOptions,
  ) {}

  start(): void {
    this.running = true;
    for (let c = 0; c < this.options.clients; c++) {
      const conns = new SqlConnections(this.cluster);
      this.connections.push(conns);
      this.loops.push(this.client(`c${c + 1}`, new Rng(this.options.seed + 7919 * (c + 1)), conns));
    }
  }

  /** Stops issuing operations and waits for those in flight (each bounded by its own deadline). */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    await Promise.all(this.connections.map((c) => c.closeAll()));
  }

  /** Keys of the generation in force now, and all generations so far. */
  keysNow(): string[] {
    const epoch = Math.floor((Date.now() - this.started) / this.options.keyEpochMs);
    return Array.from({ length: this.options.keys }, (_, k) => `k${epoch}.${k}`);
  }

  allKeys(): string[] {
    const keys = new Set<string>();
    for (const op of this.recorder.history()) keys.add(op.input.key);
    return [...keys].sort();
  }

  private tally(path: Path, kind: OpKind, outcome: keyof Tally): void {
    const name = `${path} ${kind}`;
    const t = this.tallies.get(name) ?? { ok: 0, fail: 0, info: 0 };
    t[outcome]++;
    this.tallies.set(name, t);
  }

  /** Members a client may address: every member, running or not (clients do not know). */
  private targets(): string[] {
    return this.cluster.members;
  }

  private async client(name: string, rng: Rng, conns: SqlConnections): Promise<void> {
    const auditShare = this.options.auditShare ?? 0.12;
    while (this.running) {
      const node = rng.pick(this.targets());
      const via: Via = rng.chance(0.5) ? 'sql' : 'rest';
      const key = rng.pick(this.keysNow());
      const roll = rng.float();
      try {
        if (roll < auditShare) await this.audit(name, rng, conns, node, via);
        else if (roll < auditShare + 0.38) await this.read(name, rng, conns, node, via, key);
        else if (roll < auditShare + 0.63) await this.write(name, rng, conns, node, via, { kind: 'put', key, value: this.nextValue++ });
        else if (roll < auditShare + 0.83) {
          const seen = this.lastSeen.get(key) ?? null;
          const expected = rng.chance(0.8) ? seen : rng.chance(0.5) ? null : Math.max(1, this.nextValue - rng.int(1, 20));
          await this.write(name, rng, conns, node, via, { kind: 'cas', key, expected, value: this.nextValue++ });
        } else await this.write(name, rng, conns, node, via, { kind: 'delete', key });
      } catch (err) {
        this.anomalies.push(`client ${name}: unexpected error ${(err as Error).stack ?? String(err)}`);
      }
      await sleep(this.options.thinkMs ?? rng.int(0, 30));
    }
  }

  // ---------------------------------------------------------------- reads

  private async read(name: string, rng: Rng, conns: SqlConnections, node: string, via: Via, key: string): Promise<void> {
    const input: KvInput = { kind: 'get', key };
    let path: Path | undefined;
    const handle = this.recorder.invoke(name, input);
    try {
      let value: unknown;
      if (via === 'sql') {
        const client = await conns.get(node).catch((err) => {
          throw new OpFailed((err as Error).message, true);
        });
        try {
          if (rng.chance(0.7)) {
            path = 'sql:barrier+get';
            await client.query('SELECT rale_read_barrier(3000)');
            value = (await client.query<{ v: unknown }>('SELECT rale_get($1) AS v', [key])).rows[0]?.v;
          } else {
            path = 'sql:get_linearizable';
            value = (await client.query<{ v: unknown }>('SELECT rale.get_linearizable($1, 3000) AS v', [key])).rows[0]?.v;
          }
        } catch (err) {
          if ((err as { code?: string }).code === undefined) conns.drop(node, client);
          throw err;
        }
      } else {
        path = 'rest:kv';
        const answer = await this.cluster.api(node, 'GET', `/kv/${encodeURIComponent(key)}?consistency=linearizable`, undefined, 6_000);
        if (answer.status === 200) value = answer.body.value;
        else if (answer.status === 404 && answer.body?.error?.code === 'UNKNOWN_KEY') value = null;
        else throw new Error(`GET /kv answered ${answer.status} ${JSON.stringify(answer.body)}`);
      }
      const output = value === undefined ? null : value;
      if (output !== null && typeof output !== 'number') throw new Error(`read a value that is not a number: ${JSON.stringify(output)}`);
      this.recorder.ok(handle, output);
      this.lastSeen.set(key, output);
      this.tally(path, 'get', 'ok');
    } catch (err) {
      path ??= via === 'sql' ? 'sql:read' : 'rest:kv';
      // A read that failed constrains nothing either way.
      if (err instanceof OpFailed && err.definite) {
        this.recorder.fail(handle);
        this.tally(path, 'get', 'fail');
      } else {
        this.recorder.info(handle);
        this.tally(path, 'get', 'info');
      }
    }
  }

  // ---------------------------------------------------------------- writes

  private command(input: KvInput): Record<string, unknown> {
    switch (input.kind) {
      case 'put':
        return { op: 'set', key: input.key, value: input.value };
      case 'delete':
        return { op: 'delete', key: input.key };
      case 'cas':
        return { op: 'cas', key: input.key, expected: input.expected, value: input.value };
      default:
        throw new Error(`not a write: ${input.kind}`);
    }
  }

  /** The lincheck output of an applied kv command's result. */
  private output(input: KvInput, result: unknown): KvOutput {
    if (input.kind !== 'cas') return undefined;
    const ok = (result as { ok?: unknown } | null)?.ok;
    if (typeof ok !== 'boolean') throw new Error(`a cas answered a result without a boolean ok: ${JSON.stringify(result)}`);
    return ok;
  }

  private async write(name: string, rng: Rng, conns: SqlConnections, node: string, via: Via, input: KvInput): Promise<void> {
    const handle = this.recorder.invoke(name, input);
    const command = this.command(input);
    let path: Path = 'rest:propose';
    let outcome: { kind: 'ok'; result: unknown } | { kind: 'fail' | 'info'; why: string };
    if (via === 'sql') {
      path = rng.chance(0.7) ? 'sql:propose+wait' : 'sql:submit';
      outcome = path === 'sql:submit' ? await this.sqlSubmit(conns, node, command) : await this.sqlProposeWait(conns, node, command);
    } else {
      outcome = await this.restPropose(rng, node, command, `nemesis-${this.options.seed}-${name}-${handle}`);
    }
    this.settle(handle, path, input, outcome);
  }

  private settle(handle: OperationHandle, path: Path, input: KvInput, outcome: { kind: 'ok'; result: unknown } | { kind: 'fail' | 'info'; why: string }): void {
    if (outcome.kind === 'ok') {
      let output: KvOutput;
      try {
        output = this.output(input, outcome.result);
      } catch (err) {
        this.anomalies.push((err as Error).message);
        this.recorder.info(handle);
        this.tally(path, input.kind, 'info');
        return;
      }
      this.recorder.ok(handle, output);
      this.tally(path, input.kind, 'ok');
      if (input.kind === 'put') this.lastSeen.set(input.key, input.value as number);
      else if (input.kind === 'delete') this.lastSeen.set(input.key, null);
      else if (input.kind === 'cas') {
        const r = outcome.result as { ok: boolean; current?: unknown };
        this.lastSeen.set(input.key, r.ok ? (input.value as number) : typeof r.current === 'number' ? r.current : null);
      }
    } else if (outcome.kind === 'fail') {
      this.recorder.fail(handle);
      this.tally(path, input.kind, 'fail');
    } else {
      this.recorder.info(handle);
      this.tally(path, input.kind, 'info');
    }
  }

  /**
   * BEGIN; rale_propose; COMMIT; then rale_wait until a final status or the
   * deadline, reconnecting (to the same node: the proposal lives in its
   * outbox) after errors.
   */
  private async sqlProposeWait(conns: SqlConnections, node: string, command: unknown): Promise<{ kind: 'ok'; result: unknown; id?: string } | { kind: 'fail' | 'info'; why: string; id?: string }> {
    const deadline = Date.now() + this.options.writeDeadlineMs;
    let client: pg.Client;
    try {
      client = await conns.get(node);
    } catch (err) {
      return { kind: 'fail', why: `could not connect: ${(err as Error).message}` };
    }
    let id: string;
    try {
      await client.query('BEGIN');
      id = (await client.query<{ id: string }>('SELECT rale_propose($1::jsonb) AS id', [JSON.stringify(command)])).rows[0]!.id;
    } catch (err) {
      // Nothing committed: the transaction dies with its statement or its connection.
      conns.drop(node, client);
      return { kind: 'fail', why: `propose refused: ${(err as Error).message}` };
    }
    try {
      await client.query('COMMIT');
    } catch {
      // The COMMIT may or may not have happened: the id tells, once the node answers again.
      conns.drop(node, client);
    }
    return this.waitFor(conns, node, id, deadline);
  }

  private async waitFor(conns: SqlConnections, node: string, id: string, deadline: number): Promise<{ kind: 'ok'; result: unknown; id: string } | { kind: 'fail' | 'info'; why: string; id: string }> {
    let last = 'no answer';
    while (Date.now() < deadline) {
      let client: pg.Client;
      try {
        client = await conns.get(node);
      } catch (err) {
        last = `reconnect: ${(err as Error).message}`;
        await sleep(300);
        continue;
      }
      try {
        const waitMs = Math.max(100, Math.min(3_000, deadline - Date.now()));
        const row = (await client.query<{ status: string; index: string | null; result: unknown; error: string | null }>('SELECT * FROM rale_wait($1::uuid, $2)', [id, waitMs])).rows[0]!;
        const outcome: Outcome = { status: row.status, index: row.index === null ? null : Number(row.index), result: row.result, error: row.error };
        const final = this.finalOutcome(outcome, 'sql', node, id);
        if (final !== null) return { ...final, id };
        last = outcome.status;
      } catch (err) {
        conns.drop(node, client);
        last = (err as Error).message;
        await sleep(200);
      }
    }
    return { kind: 'info', why: `no final outcome before the deadline (last: ${last})`, id };
  }

  /** Maps a final rale.outcome to ok/fail; null for pending, committed, timed_out. */
  private finalOutcome(o: Outcome, via: Via, node: string, proposalId: string | null): { kind: 'ok'; result: unknown } | { kind: 'fail' | 'info'; why: string } | null {
    switch (o.status) {
      case 'applied':
        if (proposalId !== null && o.index !== null) this.acked.push({ proposalId, index: o.index, via, node });
        return { kind: 'ok', result: o.result };
      case 'failed':
        // Refused before the log (no index), or applied and failed identically everywhere: no effect either way.
        return { kind: 'fail', why: `failed: ${o.error}` };
      case 'unknown':
        // No row in the outbox and no result: the proposing transaction never committed here (or, for
        // submit's asynchronous commit, was lost in a crash before the pump took it).
        return { kind: 'info', why: 'unknown to the node' };
      default:
        return null;
    }
  }

  /** CALL rale.submit: one statement; on a timeout the id is not known, so the outcome is unknown. */
  private async sqlSubmit(conns: SqlConnections, node: string, command: unknown): Promise<{ kind: 'ok'; result: unknown } | { kind: 'fail' | 'info'; why: string }> {
    let client: pg.Client;
    try {
      client = await conns.get(node);
    } catch (err) {
      return { kind: 'fail', why: `could not connect: ${(err as Error).message}` };
    }
    try {
      const text = (await client.query<{ outcome: string }>('CALL rale.submit($1::jsonb, NULL, 8000)', [JSON.stringify(command)])).rows[0]!.outcome;
      const [status, index, , result, error] = parseRecord(text);
      const outcome: Outcome = { status: status ?? '', index: index === null || index === undefined ? null : Number(index), result: result === null || result === undefined ? null : JSON.parse(result), error: error ?? null };
      if (outcome.status === 'failed' && outcome.index === null) return { kind: 'fail', why: `refused: ${outcome.error}` };
      return this.finalOutcome(outcome, 'sql', node, null) ?? { kind: 'info', why: `submit answered ${outcome.status}` };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === undefined) conns.drop(node, client);
      // A SQL error raised by rale.propose (check_command) comes before anything committed.
      if (code !== undefined && /^(22|23|42|P0)/.test(code)) return { kind: 'fail', why: (err as Error).message };
      return { kind: 'info', why: (err as Error).message };
    }
  }

  /**
   * POST /consensus/propose with an Idempotency-Key, retried with the same
   * key (on any node) until an answer says what happened or the deadline.
   */
  private async restPropose(rng: Rng, first: string, command: unknown, key: string): Promise<{ kind: 'ok'; result: unknown } | { kind: 'fail' | 'info'; why: string }> {
    const deadline = Date.now() + this.options.writeDeadlineMs;
    let ambiguous = false;
    let last = '';
    let node = first;
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      if (attempt > 0) {
        await sleep(Math.min(1_000, 100 * attempt));
        node = rng.pick(this.targets());
      }
      let answer;
      try {
        answer = await this.cluster.restPropose(node, command, key, Math.max(500, Math.min(8_000, deadline - Date.now())));
      } catch (err) {
        if (!neverConnected(err)) ambiguous = true;
        last = `${node}: ${(err as Error).message}`;
        continue;
      }
      const code = answer.body?.error?.code as string | undefined;
      if (answer.status === 200) {
        if (answer.body.proposal_id !== `http:${key}`) this.anomalies.push(`REST propose answered proposal_id ${answer.body.proposal_id}, expected http:${key}`);
        this.acked.push({ proposalId: `http:${key}`, index: Number(answer.body.index), via: 'rest', node });
        return { kind: 'ok', result: answer.body.result };
      }
      last = `${node}: ${answer.status} ${code} ${answer.body?.error?.message ?? ''}`;
      if (answer.status === 422 && code === 'APPLY_FAILED') return { kind: 'fail', why: last };
      if ([400, 401, 413, 415].includes(answer.status)) {
        this.anomalies.push(`REST propose refused a valid command: ${last}`);
        return ambiguous ? { kind: 'info', why: last } : { kind: 'fail', why: last };
      }
      const definite = code === 'NOT_LEADER' || code === 'TRANSFER_IN_PROGRESS' || (code === 'NO_LEADER' && /found no leader within/.test(answer.body?.error?.message ?? ''));
      if (!definite) ambiguous = true;
    }
    return ambiguous ? { kind: 'info', why: `deadline passed; last: ${last}` } : { kind: 'fail', why: `refused every time; last: ${last}` };
  }

  // ---------------------------------------------------------------- audit calls

  private async audit(name: string, rng: Rng, conns: SqlConnections, node: string, via: Via): Promise<void> {
    const opId = `a${this.options.seed}-${this.nextAudit++}`;
    const command = { op: 'call', handler: AUDIT_HANDLER, payload: { id: opId } };
    const record: AuditCall = { opId, via, proposalId: null, outcome: 'info', pos: null, node };
    this.audits.push(record);
    let outcome: { kind: 'ok'; result: unknown; id?: string } | { kind: 'fail' | 'info'; why: string; id?: string };
    let path: Path;
    if (via === 'sql') {
      path = 'sql:propose+wait';
      outcome = await this.sqlProposeWait(conns, node, command);
      record.proposalId = outcome.id ?? null;
    } else {
      path = 'rest:propose';
      record.proposalId = `http:${opId}`;
      outcome = await this.restPropose(rng, node, command, opId);
    }
    record.outcome = outcome.kind;
    if (outcome.kind === 'ok') {
      const pos = (outcome.result as { pos?: unknown } | null)?.pos;
      if (typeof pos !== 'number') this.anomalies.push(`audit call ${opId} answered ${JSON.stringify(outcome.result)}, not {"pos": n}`);
      else record.pos = pos;
    }
    this.tally(path, 'audit', outcome.kind);
    void name;
  }

  /** Final reads after the run, through SQL on every member: recorded in the history like any read. */
  async finalReads(node: string): Promise<void> {
    const conns = new SqlConnections(this.cluster);
    try {
      const client = await conns.get(node);
      for (const key of this.allKeys()) {
        const handle = this.recorder.invoke(`final-${node}`, { kind: 'get', key });
        const v = (await client.query<{ v: unknown }>('SELECT rale.get_linearizable($1, 10000) AS v', [key])).rows[0]?.v ?? null;
        this.recorder.ok(handle, v as KvOutput);
      }
    } finally {
      await conns.closeAll();
    }
  }
}
