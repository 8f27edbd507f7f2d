/**
 * Hostile input at the SQL API (sql/migrations/0002_state.sql, hardened by
 * 0004): random JSON commands (deep, huge, wrong types, unknown ops, NUL-ish
 * text, numbers a double cannot hold), bad ids, negative, NULL and huge
 * limits and timeouts. Properties, for every call:
 *  - it succeeds, or fails with a SQLSTATE that is not an internal error
 *    (XX000, P0004 assert, plpgsql's "record not assigned" 55000...) and a
 *    message that says what was wrong;
 *  - a refused call adds no row to rale.proposals, rale.kv or the log;
 *  - an accepted command is stored exactly as sent (what the sidecar will
 *    replicate: nothing rounded, nulled or unencodable);
 *  - afterwards the node still applies a good proposal, and the connections
 *    are back to the baseline.
 * One single-node cluster on embedded PostgreSQL.
 */
import test from 'ava';
import fc from 'fast-check';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../pg/support.ts';
import { fuzz, hostileCommand, hostileJson, nastyNumberText, nastyString, nestedText } from './support.ts';

let cluster: PgCluster;
let sql: pg.Pool;

test.before(async () => {
  cluster = await startPgCluster('hostile-sql', ['solo']);
  await cluster.leader();
  sql = cluster.sql.get('solo')!;
});

test.after.always(async () => {
  await cluster?.stop();
});

interface Outcome {
  ok: boolean;
  code?: string;
  message?: string;
  rows?: Array<Record<string, unknown>>;
}

async function run(text: string, values: unknown[]): Promise<Outcome> {
  try {
    const r = await sql.query(text, values);
    return { ok: true, rows: r.rows };
  } catch (err) {
    const e = err as { code?: string; message: string };
    return { ok: false, code: e.code, message: e.message };
  }
}

/** Errors that mean the function broke rather than refused: internal, assertion, unassigned record, stack overflow... */
const INTERNAL = new Set(['XX000', 'XX001', 'XX002', 'P0004', '55000', '54001', '2F005', '42804', '0A000', '42703']);

function clear(o: Outcome): string[] {
  if (o.ok) return [];
  const out: string[] = [];
  if (o.code === undefined || INTERNAL.has(o.code) || o.code.startsWith('XX') || o.code.startsWith('08')) out.push(`internal error ${o.code}: ${o.message}`);
  if ((o.message ?? '').length < 10) out.push(`no message (${o.code})`);
  return out;
}

const digest = async () =>
  (
    await sql.query<{ d: string }>(
      `SELECT (SELECT count(*) FROM rale.proposals) || '/' || (SELECT count(*) FROM rale.kv) || '/' || (SELECT coalesce(max(index), 0) FROM rale.log_entries) AS d`,
    )
  ).rows[0]!.d;

/**
 * Connections other than this test's own pool (the node's pools, its LISTEN
 * connection), and how many sessions sit inside a transaction: what a leak
 * would show. The test pool may grow up to its max between two counts.
 */
const connections = async () => {
  const r = await sql.query<{ n: string; busy: string }>(
    `SELECT count(*) AS n, count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS busy FROM pg_stat_activity WHERE backend_type = 'client backend'`,
  );
  return { others: Number(r.rows[0]!.n) - sql.totalCount, inTransaction: Number(r.rows[0]!.busy) };
};

async function submitGood(key: string): Promise<string> {
  const r = await sql.query<{ outcome: string }>('CALL rale.submit($1::jsonb, NULL, 5000)', [JSON.stringify({ op: 'set', key, value: 'ok' })]);
  return r.rows[0]!.outcome;
}

/** Proposes inside a transaction that is rolled back: a proposal never reaches the pump, so the state is the same afterwards. */
async function proposeRolledBack(commandText: string | null): Promise<{ outcome: Outcome; stored: string | null }> {
  const client = await sql.connect();
  try {
    await client.query('BEGIN');
    let outcome: Outcome;
    let stored: string | null = null;
    try {
      const r = await client.query<{ id: string }>('SELECT rale_propose($1::jsonb) AS id', [commandText]);
      outcome = { ok: true, rows: r.rows };
      stored = (await client.query<{ c: string }>('SELECT command::text AS c FROM rale.proposals WHERE id = $1', [r.rows[0]!.id])).rows[0]!.c;
    } catch (err) {
      const e = err as { code?: string; message: string };
      outcome = { ok: false, code: e.code, message: e.message };
    }
    await client.query('ROLLBACK');
    return { outcome, stored };
  } finally {
    client.release();
  }
}

/**
 * What the sidecar does with a stored command: reads it as JavaScript (the
 * pg driver's JSON.parse) and writes it back with JSON.stringify. That must
 * not throw, and PostgreSQL must see the same jsonb again (1e400 would come
 * back as null, 12345678901234567891 rounded).
 */
async function survivesTheSidecar(storedText: string): Promise<string | null> {
  let back: string;
  try {
    back = JSON.stringify(JSON.parse(storedText));
  } catch (err) {
    return `the sidecar cannot re-encode it: ${(err as Error).message}`;
  }
  const same = (await sql.query<{ same: boolean }>('SELECT $1::jsonb = $2::jsonb AS same', [storedText, back])).rows[0]!.same;
  return same ? null : `the sidecar would replicate it changed: ${back.slice(0, 200)}`;
}

test.serial('rale_propose: any JSON is refused with a clear error and no row, or stored exactly as the sidecar will replicate it', async (t) => {
  const command = fc.oneof(
    hostileCommand.map((c) => JSON.stringify(c)),
    fc.tuple(fc.constantFrom('set', 'cas', 'call', 'delete'), nastyNumberText).map(([op, n]) => `{"op":"${op}","key":"n","value":${n},"expected":null,"handler":"h"}`),
    fc.integer({ min: 95, max: 6000 }).map((d) => `{"op":"set","key":"deep","value":${nestedText(d)}}`),
    fc.constantFrom('null', '"str"', '[]', '{}', '{"op":"set","key":"a\\u0000b","value":1}', '{"op":"set","key":"\\ud800","value":1}', null),
  );
  const before = await digest();
  await fc.assert(
    fc.asyncProperty(command, async (text) => {
      const { outcome, stored } = await proposeRolledBack(text);
      const bad = clear(outcome);
      if (outcome.ok && stored !== null) {
        const problem = await survivesTheSidecar(stored);
        if (problem !== null) bad.push(`accepted, but ${problem}`);
      }
      if (bad.length > 0) throw new Error(`${bad.join('; ')}\ncommand: ${String(text).slice(0, 300)}`);
    }),
    fuzz(150),
  );
  t.is(await digest(), before, 'rolled-back proposals leave nothing');
});

test.serial('every SQL function with hostile arguments: a clear SQLSTATE error or an answer, never an internal error, never a state change', async (t) => {
  const anyInt = fc.oneof(fc.integer(), fc.constantFrom(null, -1, 0, 2147483647, -2147483648));
  const anyBig = fc.oneof(fc.constantFrom(null, '-1', '0', '9223372036854775807', '-9223372036854775808'), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String));
  const uuidish = fc.oneof(fc.uuid(), fc.constantFrom(null, '00000000-0000-0000-0000-000000000000'), nastyString.map((s) => s.replace(/\u0000/g, '')));
  const jsonText = hostileJson.map((v) => JSON.stringify(v) ?? 'null');
  const text = fc.oneof(nastyString.map((s) => s.replace(/\u0000/g, '')), fc.constant(null));
  const call = fc.oneof(
    fc.tuple(uuidish, fc.constantFrom(0, -5, null, 1)).map(([id, ms]) => ['SELECT * FROM rale_wait($1::uuid, $2)', [id, ms]] as const),
    uuidish.map((id) => ['SELECT * FROM rale.outcome_of($1::uuid)', [id]] as const),
    text.map((k) => ['SELECT rale_get($1)', [k]] as const),
    fc.tuple(text, fc.constantFrom(0, -1, null, 1)).map(([k, ms]) => ['SELECT rale.get_linearizable($1, $2)', [k, ms]] as const),
    fc.constantFrom(-100, null, 0, -2147483648).map((ms) => ['SELECT rale_read_barrier($1)', [ms]] as const),
    fc.tuple(anyBig, anyInt).map(([from, n]) => ['SELECT count(*) FROM rale.log($1, $2)', [from, n]] as const),
    jsonText.map((j) => ['SELECT rale.check_command($1::jsonb)', [j]] as const),
    fc.oneof(jsonText, fc.record({ type: fc.oneof(fc.constantFrom('addLearner', 'remove', 'promote', 'addVoter'), hostileJson), node: fc.oneof(nastyString, hostileJson), context: hostileJson }, { requiredKeys: [] }).map((c) => JSON.stringify(c)))
      .map((j) => ['SELECT rale.change_membership($1::jsonb)', [j]] as const),
    fc.tuple(text, fc.oneof(text, fc.constantFrom('abs', 'pg_catalog.jsonb_typeof', 'rale.get', 'now')), fc.constantFrom(null, '{}', '{nosuch}', '{rale.kv}', 'x'))
      .map(([name, fn, tables]) => ['SELECT rale.register_handler($1, $2, $3)', [name, fn, tables]] as const),
    fc.uint8Array({ maxLength: 64 }).map((b) => ['SELECT rale.bytes_as_json($1)', [Buffer.from(b)]] as const),
    fc.tuple(jsonText, fc.constantFrom(0, -1, null)).map(([j, ms]) => ['CALL rale.submit($1::jsonb, NULL, $2)', [j, ms]] as const),
    // The bulk forms (0007): arrays of hostile commands and ids, NULL elements included.
    fc.oneof(fc.array(fc.oneof(jsonText, fc.constant(null)), { maxLength: 6 }), fc.constant(null)).map((list) => ['SELECT rale_propose_many($1::jsonb[])', [list]] as const),
    fc.tuple(fc.oneof(fc.array(uuidish, { maxLength: 4 }), fc.constant(null)), fc.constantFrom(0, -5, null, 1)).map(([ids, ms]) => ['SELECT * FROM rale_wait_many($1::uuid[], $2)', [ids, ms]] as const),
  );
  const baseline = await connections();
  await fc.assert(
    fc.asyncProperty(call, async ([statement, values]) => {
      // Anything that may legitimately propose runs in a transaction rolled back afterwards (CALL commits by design: it gets invalid commands only).
      const proposes = /change_membership|register_handler|propose_many/.test(statement);
      const client = await sql.connect();
      let outcome: Outcome;
      try {
        if (proposes) await client.query('BEGIN');
        const before = await digest();
        try {
          const r = await client.query(statement, [...values]);
          outcome = { ok: true, rows: r.rows };
        } catch (err) {
          const e = err as { code?: string; message: string };
          outcome = { ok: false, code: e.code, message: e.message };
        }
        if (proposes) await client.query('ROLLBACK');
        const bad = clear(outcome);
        if (statement.startsWith('CALL') && outcome.ok) bad.push('CALL rale.submit accepted a hostile command');
        if (!proposes && !statement.startsWith('CALL') && (await digest()) !== before) bad.push('the state changed');
        if (bad.length > 0) throw new Error(`${bad.join('; ')}\n${statement} ${JSON.stringify(values).slice(0, 300)}`);
      } finally {
        client.release();
      }
    }),
    fuzz(250),
  );
  const after = await connections();
  t.is(after.inTransaction, 0, 'no session left inside a transaction');
  t.true(after.others <= baseline.others + 1, `connections beyond the test's pool: ${after.others}, baseline ${baseline.others} (the node's pool may open one more)`);
  t.is(sql.waitingCount, 0);
  t.regex(await submitGood('after-fuzz'), /^\(applied,/, 'the node still applies a good proposal');
});

// ---------------------------------------------------------------- named regressions (fixed in 0004_hardening.sql)

test.serial('regression: a command nested 5,000 levels deep is refused at propose time (it used to stall the proposal pump for good)', async (t) => {
  const r = await run('SELECT rale_propose($1::jsonb)', [`{"op":"set","key":"deep","value":${nestedText(5000)}}`]);
  t.false(r.ok);
  t.is(r.code, '22023');
  t.regex(r.message!, /nested deeper than 100 levels/);
  // 100 levels exactly is fine (the REST API applies the same rule).
  t.true((await run('SELECT rale.check_command($1::jsonb)', [`{"op":"set","key":"k","value":${nestedText(99)}}`])).ok);
  t.false((await run('SELECT rale.check_command($1::jsonb)', [`{"op":"set","key":"k","value":${nestedText(100)}}`])).ok);
  t.regex(await submitGood('after-deep'), /^\(applied,/);
});

test.serial('regression: a key above 1024 bytes is refused at propose time (it used to stop every node applying: btree row limit)', async (t) => {
  const r = await run('SELECT rale_propose($1::jsonb)', [JSON.stringify({ op: 'set', key: 'ab12'.repeat(1000), value: 1 })]);
  t.is(r.code, '22023');
  t.regex(r.message!, /key is 4000 bytes long, above the limit of 1024 bytes/);
  t.true((await run('SELECT rale.check_command($1::jsonb)', [JSON.stringify({ op: 'set', key: 'k'.repeat(1024), value: 1 })])).ok);
  t.regex(await submitGood('after-long-key'), /^\(applied,/);
});

test.serial('regression: numbers a double cannot hold are refused (they were applied as null, 0 or rounded)', async (t) => {
  for (const n of ['1e400', '-1e400', '1e-400', '12345678901234567891', '9007199254740993']) {
    const r = await run('SELECT rale.check_command($1::jsonb)', [`{"op":"set","key":"k","value":{"n":[${n}]}}`]);
    t.is(r.code, '22023', n);
    t.regex(r.message!, /cannot be carried exactly/, n);
  }
  for (const n of ['0.30000000000000004', '9007199254740992', '1e20', '-0', '1.5e-7', '123456789012345.5']) {
    t.true((await run('SELECT rale.check_command($1::jsonb)', [`{"op":"set","key":"k","value":${n}}`])).ok, n);
  }
});

test.serial('regression: change_membership refuses at call time what used to be queued and refused later (no type, bad ids, non-string addresses)', async (t) => {
  const before = await digest();
  for (const [change, pattern] of [
    ['{"node":"x"}', /not a membership change: unknown type \(none\)/],
    ['{"type":"addLearner","node":"x","context":5}', /"context"/],
    ['{"type":"addLearner","node":"has space"}', /"node" must be a node id/],
    [JSON.stringify({ type: 'remove', node: 'x'.repeat(129) }), /"node" must be a node id/],
    ['{"type":"remove","node":"x","nod":"y"}', /not a membership change: it has no field "nod"/],
    ['[]', /not a membership change: it must be a JSON object, got array/],
  ] as const) {
    const r = await run('SELECT rale.change_membership($1::jsonb)', [change]);
    t.is(r.code, '22023', change);
    t.regex(r.message!, pattern, change);
  }
  t.is(await digest(), before);
});

test.serial('regression: NULL or negative timeouts are clear errors (read_barrier said "not confirmed within <NULL> ms")', async (t) => {
  t.like(await run('SELECT rale_read_barrier($1)', [null]), { code: '22004' });
  t.like(await run('SELECT rale_read_barrier($1)', [-100]), { code: '22023' });
  t.like(await run('SELECT rale.get_linearizable($1, $2)', ['k', null]), { code: '22004' });
  t.like(await run('SELECT * FROM rale_wait($1::uuid, $2)', ['00000000-0000-0000-0000-000000000000', null]), { code: '22004' });
  const ok = await run('SELECT * FROM rale_wait($1::uuid, $2)', ['00000000-0000-0000-0000-000000000000', -5]);
  t.true(ok.ok, 'a negative wait still means "the outcome now"');
});
