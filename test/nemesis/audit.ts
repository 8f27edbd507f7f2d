/**
 * What the nemesis run checks once everything is healed and converged:
 *
 *  1. linearizable: the kv history (every client operation plus a final
 *     linearizable read of every key on every member), per key, by lincheck;
 *  2. durable: every acknowledged write is on every node: the final reads
 *     in (1) pin each key's final value to the history, and every
 *     acknowledged audit-handler call is in every node's audit table;
 *  3. exactly once: the audit handler is deliberately NOT idempotent (each
 *     application inserts a row; no unique constraint): every acknowledged
 *     call's id is there exactly once, at the position its answer named;
 *     an unknown one at most once; a refused one never; no id twice; rale's
 *     own bookkeeping agrees (rale.results has one row per applied proposal,
 *     no log index twice, acknowledged proposals there with the index they
 *     were answered with, an audit row iff its proposal has a result);
 *  4. identical: every member holds the same replicated state (rale.kv with
 *     versions, rale.results, rale.handlers, rale.applied, the audit table)
 *     and the same committed log entries where their logs overlap.
 */
import pg from 'pg';
import { check, formatResult, kvModel, type KvInput, type KvOutput, type Operation } from '../lincheck/index.ts';
import { sleep, type Cluster } from '../cluster/harness.ts';
import { AUDIT_HANDLER, type AckedProposal, type AuditCall } from './workload.ts';

const AUDIT_SETUP = `
  CREATE TABLE IF NOT EXISTS public.nemesis_audit (op_id text NOT NULL, pos bigint NOT NULL);
  CREATE INDEX IF NOT EXISTS nemesis_audit_pos ON public.nemesis_audit (pos);
  -- Deliberately not idempotent: every application appends a row, at the next position.
  CREATE OR REPLACE FUNCTION public.nemesis_audit_apply(p jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO public.nemesis_audit (op_id, pos)
    SELECT p->>'id', coalesce(max(a.pos), 0) + 1 FROM public.nemesis_audit a
    RETURNING jsonb_build_object('pos', pos) $$;`;

/** Creates the audit table and the handler's function in one node's database. */
export async function prepareDatabase(connectionString: string): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await client.query(AUDIT_SETUP);
  } finally {
    await client.end();
  }
}

/** On every member: the table and function; then registers the handler once, through the log. */
export async function installAuditHandler(cluster: Cluster): Promise<void> {
  for (const id of cluster.members) await prepareDatabase(cluster.databaseUrl(id));
  const db = cluster.node(cluster.members[0]!).pool;
  const { rows } = await db.query<{ id: string }>(`SELECT rale.register_handler($1, 'public.nemesis_audit_apply', '{public.nemesis_audit}') AS id`, [AUDIT_HANDLER]);
  const outcome = (await db.query<{ status: string; error: string | null }>('SELECT * FROM rale_wait($1::uuid, 20000)', [rows[0]!.id])).rows[0]!;
  if (outcome.status !== 'applied') throw new Error(`registering the audit handler: ${outcome.status} ${outcome.error ?? ''}`);
}

export interface CheckOutcome {
  name: string;
  ok: boolean;
  /** One line when ok; the evidence when not. */
  detail: string;
}

export interface NodeImage {
  applied: string;
  kv: string;
  results: Map<string, { index: number; term: number; status: string; result: string }>;
  resultsText: string;
  handlers: string;
  audit: Array<{ op_id: string; pos: number }>;
  auditText: string;
  commit: number;
  log: Map<number, string>;
}

async function image(cluster: Cluster, id: string): Promise<NodeImage> {
  const client = new pg.Client({ connectionString: cluster.databaseUrl(id), connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const applied = (await client.query('SELECT index, term FROM rale.applied')).rows[0];
    const kv = (await client.query('SELECT key, value, version FROM rale.kv ORDER BY key')).rows;
    const results = (await client.query<{ proposal_id: string; index: string; term: string; status: string; result: unknown }>('SELECT proposal_id, index, term, status, result FROM rale.results ORDER BY proposal_id')).rows;
    const handlers = (await client.query('SELECT name, function, tables, registered_index FROM rale.handlers ORDER BY name')).rows;
    const audit = (await client.query<{ op_id: string; pos: string }>('SELECT op_id, pos FROM public.nemesis_audit ORDER BY pos, op_id')).rows.map((r) => ({ op_id: r.op_id, pos: Number(r.pos) }));
    const commit = Number((await client.query('SELECT commit FROM rale.hard_state')).rows[0]?.commit ?? 0);
    const log = (await client.query<{ index: string; term: string; h: string }>('SELECT index, term, md5(data) AS h FROM rale.log_entries WHERE index <= $1 ORDER BY index', [commit])).rows;
    await client.query('COMMIT');
    return {
      applied: JSON.stringify(applied),
      kv: JSON.stringify(kv),
      results: new Map(results.map((r) => [r.proposal_id, { index: Number(r.index), term: Number(r.term), status: r.status, result: JSON.stringify(r.result) }])),
      resultsText: JSON.stringify(results),
      handlers: JSON.stringify(handlers),
      audit,
      auditText: JSON.stringify(audit),
      commit,
      log: new Map(log.map((r) => [Number(r.index), `${r.term}:${r.h}`])),
    };
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Waits until every member has applied the same index and holds the same
 * kv state and audit table (the harness's waitConverged, plus the audit table).
 */
export async function waitConverged(cluster: Cluster, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let detail = '';
  while (Date.now() < deadline) {
    try {
      const images = await Promise.all(cluster.members.map((id) => image(cluster, id)));
      const keys = ['applied', 'kv', 'auditText'] as const;
      const different = keys.filter((k) => new Set(images.map((i) => i[k])).size !== 1);
      if (different.length === 0) return;
      detail = `${different.join(', ')} differ; applied: ${cluster.members.map((id, k) => `${id}=${images[k]!.applied}`).join(' ')}`;
    } catch (err) {
      detail = (err as Error).message;
    }
    await sleep(250);
  }
  throw new Error(`the members did not converge within ${timeoutMs} ms: ${detail}`);
}

export interface AuditInput {
  cluster: Cluster;
  history: Operation<KvInput, KvOutput>[];
  audits: AuditCall[];
  acked: AckedProposal[];
  /** Budget of the linearizability check. */
  lincheckTimeoutMs?: number;
}

export async function runChecks({ cluster, history, audits, acked, lincheckTimeoutMs = 60_000 }: AuditInput): Promise<CheckOutcome[]> {
  const images = new Map<string, NodeImage>();
  for (const id of cluster.members) images.set(id, await image(cluster, id));
  return checkRun({ history, images, audits, acked, lincheckTimeoutMs });
}

/** The checks themselves, on what was recorded and what every member holds (pure: unit-tested on made-up images). */
export function checkRun({ history, images, audits, acked, lincheckTimeoutMs = 60_000 }: {
  history: Operation<KvInput, KvOutput>[];
  images: Map<string, NodeImage>;
  audits: AuditCall[];
  acked: AckedProposal[];
  lincheckTimeoutMs?: number;
}): CheckOutcome[] {
  const out: CheckOutcome[] = [];

  // (1) + (2) linearizability, final values included.
  const model = kvModel();
  const result = check(model, history, { timeoutMs: lincheckTimeoutMs });
  const parts = result.partitions?.length ?? 0;
  out.push({
    name: 'linearizable (lincheck, per key; final reads on every member)',
    ok: result.linearizable === true,
    detail: result.linearizable === true ? `${history.length} operations, ${parts} keys: linearizable` : formatResult(model, result),
  });

  const members = [...images.keys()];
  const first = images.get(members[0]!)!;

  // (4) identical replicated state.
  const differences: string[] = [];
  for (const [name, pick] of [
    ['rale.applied', (i: NodeImage) => i.applied],
    ['rale.kv', (i: NodeImage) => i.kv],
    ['rale.results', (i: NodeImage) => i.resultsText],
    ['rale.handlers', (i: NodeImage) => i.handlers],
    ['audit table', (i: NodeImage) => i.auditText],
  ] as const) {
    for (const id of members.slice(1)) if (pick(images.get(id)!) !== pick(first)) differences.push(`${name} differs between ${members[0]} and ${id}`);
  }
  // Committed entries where two logs overlap: same term, same bytes.
  let compared = 0;
  for (const id of members.slice(1)) {
    const log = images.get(id)!.log;
    for (const [index, entry] of first.log) {
      const other = log.get(index);
      if (other === undefined) continue;
      compared++;
      if (other !== entry) differences.push(`committed entry ${index} differs: ${members[0]} has ${entry}, ${id} has ${other}`);
    }
  }
  out.push({
    name: 'identical state on every member (kv, results, handlers, applied, audit table, committed log)',
    ok: differences.length === 0,
    detail: differences.length === 0 ? `${members.length} members at ${first.applied}; ${compared} overlapping committed entries compared` : differences.slice(0, 20).join('\n'),
  });

  // (3) exactly once, from the audit table of every member.
  const problems: string[] = [];
  const calls = new Map(audits.map((a) => [a.opId, a]));
  for (const id of members) {
    const rows = images.get(id)!.audit;
    const count = new Map<string, number>();
    rows.forEach((r, k) => {
      count.set(r.op_id, (count.get(r.op_id) ?? 0) + 1);
      if (r.pos !== k + 1) problems.push(`${id}: audit row ${k + 1} has position ${r.pos} (positions must be 1..n without gaps or repeats)`);
    });
    for (const [opId, n] of count) {
      const call = calls.get(opId);
      if (n > 1) problems.push(`${id}: ${opId} applied ${n} times (${call ? `${call.via}, ${call.outcome}, proposal ${call.proposalId}` : 'never issued'})`);
      if (call === undefined) problems.push(`${id}: ${opId} is in the audit table but was never issued`);
      else if (call.outcome === 'fail') problems.push(`${id}: ${opId} was refused (${call.via}) yet applied`);
    }
    const posOf = new Map(rows.map((r) => [r.op_id, r.pos]));
    for (const call of audits) {
      if (call.outcome !== 'ok') continue;
      if (!count.has(call.opId)) problems.push(`${id}: acknowledged call ${call.opId} (${call.via} on ${call.node}) is missing`);
      else if (call.pos !== null && posOf.get(call.opId) !== call.pos) problems.push(`${id}: ${call.opId} answered position ${call.pos} but sits at ${posOf.get(call.opId)}`);
    }
  }
  const okCalls = audits.filter((a) => a.outcome === 'ok').length;
  const infoCalls = audits.filter((a) => a.outcome === 'info');
  const infoApplied = infoCalls.filter((a) => first.audit.some((r) => r.op_id === a.opId)).length;
  out.push({
    name: 'exactly once: non-idempotent audit handler',
    ok: problems.length === 0,
    detail:
      problems.length === 0
        ? `${audits.length} calls: ${okCalls} acknowledged, each once on every member; ${infoCalls.length} unknown (${infoApplied} applied once, the rest never); ${first.audit.length} rows`
        : problems.slice(0, 30).join('\n'),
  });

  // (3') rale's own bookkeeping.
  const book: string[] = [];
  const byIndex = new Map<number, string>();
  for (const [pid, r] of first.results) {
    const other = byIndex.get(r.index);
    if (other !== undefined) book.push(`rale.results: ${pid} and ${other} both at index ${r.index}`);
    byIndex.set(r.index, pid);
  }
  for (const a of acked) {
    const r = first.results.get(a.proposalId);
    if (r === undefined) book.push(`acknowledged proposal ${a.proposalId} (${a.via} on ${a.node}, index ${a.index}) has no row in rale.results`);
    else if (r.status !== 'applied') book.push(`acknowledged proposal ${a.proposalId} is ${r.status} in rale.results`);
    // SQL answers come from rale.results itself; a REST retry answers with its own (later, duplicate) entry's index.
    else if (a.via === 'sql' ? r.index !== a.index : r.index > a.index) book.push(`proposal ${a.proposalId} answered index ${a.index} (${a.via}) but rale.results says ${r.index}`);
  }
  const auditRows = new Set(first.audit.map((r) => r.op_id));
  for (const call of audits) {
    if (call.proposalId === null) continue;
    const r = first.results.get(call.proposalId);
    const inTable = auditRows.has(call.opId);
    if (r?.status === 'applied' && !inTable) book.push(`${call.opId}: rale.results says ${call.proposalId} applied at ${r.index}, but the audit table lacks it`);
    if (r === undefined && inTable) book.push(`${call.opId}: in the audit table, but rale.results has no row for ${call.proposalId}`);
  }
  out.push({
    name: "rale's bookkeeping (rale.results, rale.applied) agrees",
    ok: book.length === 0,
    detail: book.length === 0 ? `${first.results.size} results, one per index; ${acked.length} acknowledged proposals found at their index` : book.slice(0, 30).join('\n'),
  });
  return out;
}
