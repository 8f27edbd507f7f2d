/**
 * Many commands per statement (sql/migrations/0007_bulk_propose.sql):
 * rale_propose_many, rale_wait_many and CALL rale.submit_many on a
 * three-node cluster on real PostgreSQL servers.
 */
import test from 'ava';
import pg from 'pg';
import { startPgCluster, waitFor, type PgCluster } from './support.ts';

let cluster: PgCluster;

test.before(async () => {
  cluster = await startPgCluster('bulk', ['node1', 'node2', 'node3']);
  await cluster.leader();
});

test.after.always(async () => {
  await cluster?.stop();
});

const db = (id: string): pg.Pool => cluster.sql.get(id)!;

interface Outcome {
  status: string;
  index: string | null;
  term: string | null;
  result: unknown;
  error: string | null;
}

/** CALL rale.submit_many, its outcomes array decoded by PostgreSQL itself. */
async function submitMany(pool: pg.Pool, commands: Array<unknown>, timeoutMs = 5000): Promise<Outcome[]> {
  const call = await pool.query<{ outcomes: string }>('CALL rale.submit_many($1::jsonb[], NULL, $2)', [commands.map((c) => (c === null ? null : JSON.stringify(c))), timeoutMs]);
  const { rows } = await pool.query<Outcome>('SELECT status, index, term, result, error FROM unnest($1::rale.outcome[]) WITH ORDINALITY AS u(status, index, term, result, error, pos) ORDER BY pos', [call.rows[0]!.outcomes]);
  return rows;
}

async function sqlError(pool: pg.Pool, text: string, values: unknown[]): Promise<{ code: string; message: string; hint?: string }> {
  try {
    await pool.query(text, values);
  } catch (err) {
    const e = err as { code: string; message: string; hint?: string };
    return { code: e.code, message: e.message, ...(e.hint !== undefined ? { hint: e.hint } : {}) };
  }
  throw new Error(`expected ${text} to fail`);
}

const proposalCount = async (pool: pg.Pool) => Number((await pool.query<{ n: string }>('SELECT count(*) AS n FROM rale.proposals')).rows[0]!.n);

test.serial('CALL rale.submit_many applies every command once, in array order, on every node, and reports each outcome', async (t) => {
  const leader = await cluster.leader();
  const pool = db(leader.id);
  const commands = [
    { op: 'set', key: 'bulk-a', value: 1 },
    { op: 'set', key: 'bulk-b', value: { nested: [1, 2] } },
    // Depends on the first: array order is log order.
    { op: 'cas', key: 'bulk-a', expected: 1, value: 2 },
    // Fails its compare, without undoing the others.
    { op: 'cas', key: 'bulk-b', expected: 'not this', value: 3 },
    { op: 'delete', key: 'bulk-b' },
  ];
  const outcomes = await submitMany(pool, commands);
  t.is(outcomes.length, commands.length);
  t.deepEqual(
    outcomes.map((o) => o.status),
    ['applied', 'applied', 'applied', 'applied', 'applied'],
  );
  const indexes = outcomes.map((o) => Number(o.index));
  for (let i = 1; i < indexes.length; i++) t.true((indexes[i] as number) > (indexes[i - 1] as number), `entries in array order: ${indexes.join(', ')}`);
  t.like(outcomes[2]?.result, { ok: true });
  t.like(outcomes[3]?.result, { ok: false });

  const last = indexes.at(-1) as number;
  for (const id of cluster.ids) {
    await waitFor(`node ${id} to apply ${last}`, async () => Number((await db(id).query<{ index: string }>('SELECT index FROM rale.applied')).rows[0]?.index) >= last);
    const { rows } = await db(id).query<{ key: string; value: unknown }>("SELECT key, value FROM rale.kv WHERE key LIKE 'bulk-%' ORDER BY key");
    t.deepEqual(rows, [{ key: 'bulk-a', value: 2 }], `state on ${id}`);
    // Exactly once: one result per proposal.
    const { rows: applied } = await db(id).query<{ n: string }>('SELECT count(*) AS n FROM rale.results WHERE index = ANY($1::bigint[])', [indexes]);
    t.is(Number(applied[0]?.n), commands.length, `one result per command on ${id}`);
  }
});

test.serial('rale_propose_many then rale_wait_many: ids in order, outcomes in the same order, from a follower too', async (t) => {
  const leader = await cluster.leader();
  const follower = cluster.ids.find((id) => id !== leader.id) as string;
  for (const node of [leader.id, follower]) {
    const pool = db(node);
    const commands = Array.from({ length: 40 }, (_, i) => JSON.stringify({ op: 'set', key: `many-${node}-${i}`, value: i }));
    const { rows } = await pool.query<{ ids: string[] }>('SELECT rale_propose_many($1::jsonb[]) AS ids', [commands]);
    const ids = rows[0]!.ids;
    t.is(ids.length, 40);
    t.is(new Set(ids).size, 40);
    const waited = await pool.query<{ proposal: string; status: string; index: string }>('SELECT * FROM rale_wait_many($1::uuid[], 5000)', [ids]);
    t.deepEqual(
      waited.rows.map((r) => r.proposal),
      ids,
      'one row per id, in the order given',
    );
    t.true(
      waited.rows.every((r) => r.status === 'applied'),
      JSON.stringify(waited.rows.map((r) => r.status)),
    );
    const indexes = waited.rows.map((r) => Number(r.index));
    t.deepEqual([...indexes].sort((a, b) => a - b), indexes, `on ${node}, proposed in array order`);
    const { rows: kv } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM rale.kv WHERE key LIKE $1', [`many-${node}-%`]);
    t.is(Number(kv[0]?.n), 40);
  }
});

test.serial('rale_wait_many with timeout 0 reports the outcomes as they are now; an empty array is an empty answer', async (t) => {
  const pool = db((await cluster.leader()).id);
  const { rows } = await pool.query<{ ids: string[] }>('SELECT rale_propose_many($1::jsonb[]) AS ids', [[JSON.stringify({ op: 'set', key: 'now-1', value: 1 })]]);
  const ids = rows[0]!.ids;
  const now = await pool.query<{ status: string }>('SELECT status FROM rale_wait_many($1::uuid[], 0)', [ids]);
  t.true(['timed_out', 'applied'].includes(now.rows[0]!.status), now.rows[0]!.status);
  const later = await pool.query<{ status: string }>('SELECT status FROM rale_wait_many($1::uuid[], 5000)', [ids]);
  t.is(later.rows[0]!.status, 'applied');
  const unknown = await pool.query<{ status: string }>("SELECT status FROM rale_wait_many(ARRAY['00000000-0000-0000-0000-000000000001']::uuid[], 0)");
  t.is(unknown.rows[0]!.status, 'unknown');

  // An unknown id among real ones is answered as such, without holding the others up until the timeout.
  const mixed = await pool.query<{ ids: string[] }>('SELECT rale_propose_many($1::jsonb[]) AS ids', [[JSON.stringify({ op: 'set', key: 'now-2', value: 2 })]]);
  const started = performance.now();
  const answers = await pool.query<{ status: string }>('SELECT status FROM rale_wait_many($1::uuid[], 10000)', [
    ['00000000-0000-0000-0000-000000000002', ...mixed.rows[0]!.ids, '00000000-0000-0000-0000-000000000002'],
  ]);
  t.deepEqual(
    answers.rows.map((r) => r.status),
    ['unknown', 'applied', 'unknown'],
  );
  t.true(performance.now() - started < 8000, 'an unknown id is not waited for until the deadline');

  t.deepEqual((await pool.query<{ ids: string[] }>("SELECT rale_propose_many('{}'::jsonb[]) AS ids")).rows[0]!.ids, []);
  t.is((await pool.query("SELECT * FROM rale_wait_many('{}'::uuid[])")).rowCount, 0);
  t.deepEqual(await submitMany(pool, []), []);
});

test.serial('bad calls are refused with an error that names what is wrong, and propose nothing', async (t) => {
  const pool = db((await cluster.leader()).id);
  const before = await proposalCount(pool);
  const good = JSON.stringify({ op: 'set', key: 'g', value: 1 });
  const limit = Number((await pool.query<{ n: number }>('SELECT rale.max_commands_per_call() AS n')).rows[0]!.n);
  t.is(limit, 1000);

  const cases: Array<[string, string, unknown[], string, RegExp]> = [
    ['a NULL array', 'SELECT rale_propose_many($1::jsonb[])', [null], '22004', /needs an array of commands, got NULL/],
    ['a NULL element', 'SELECT rale_propose_many($1::jsonb[])', [[good, null, good]], '22023', /command 2 of 3: a command must be a JSON object, got NULL/],
    ['a non-object element', 'SELECT rale_propose_many($1::jsonb[])', [[good, good, '[1]']], '22023', /command 3 of 3: a command must be a JSON object, got array/],
    ['an unknown op', 'SELECT rale_propose_many($1::jsonb[])', [[JSON.stringify({ op: 'explode' })]], '22023', /command 1 of 1: /],
    ['too many commands', 'SELECT rale_propose_many($1::jsonb[])', [Array.from({ length: limit + 1 }, () => good)], '54000', /got 1001 commands, above the limit of 1000 per call/],
    ['a two-dimensional array', `SELECT rale_propose_many(ARRAY[['{}','{}'],['{}','{}']]::jsonb[])`, [], '2202E', /one-dimensional/],
    ['an oversized command', 'SELECT rale_propose_many($1::jsonb[])', [[good, JSON.stringify({ op: 'set', key: 'big', value: 'x'.repeat(70_000) })]], '54000', /command 2 of 2: the command is \d+ bytes, above the limit/],
    ['wait_many on a two-dimensional array', `SELECT * FROM rale_wait_many(ARRAY[['00000000-0000-0000-0000-000000000001']]::uuid[], 10)`, [], '2202E', /one-dimensional/],
    ['wait_many on NULL', 'SELECT * FROM rale_wait_many($1::uuid[], 10)', [null], '22004', /needs an array of proposal ids/],
    ['wait_many with a NULL id', 'SELECT * FROM rale_wait_many($1::uuid[], 10)', [['00000000-0000-0000-0000-000000000001', null]], '22004', /proposal id 2 of 2 is NULL/],
    ['wait_many without a timeout', 'SELECT * FROM rale_wait_many($1::uuid[], NULL)', [[]], '22004', /needs a timeout_ms/],
    ['wait_many over the limit', 'SELECT * FROM rale_wait_many($1::uuid[], 10)', [Array.from({ length: limit + 1 }, () => '00000000-0000-0000-0000-000000000001')], '54000', /above the limit of 1000/],
    ['submit_many with a bad element', 'CALL rale.submit_many($1::jsonb[], NULL, 100)', [[good, '"text"']], '22023', /command 2 of 2: a command must be a JSON object, got string/],
    ['submit_many without a timeout', 'CALL rale.submit_many($1::jsonb[], NULL, NULL)', [[good]], '22004', /needs a timeout_ms/],
  ];
  for (const [what, text, values, code, message] of cases) {
    const err = await sqlError(pool, text, values);
    t.is(err.code, code, `${what}: ${err.message}`);
    t.regex(err.message, message, what);
  }
  const oversized = await sqlError(pool, 'SELECT rale_propose_many($1::jsonb[])', [[JSON.stringify({ op: 'set', key: 'big', value: 'x'.repeat(70_000) })]]);
  t.regex(oversized.hint ?? '', /max_command_bytes/, 'the hint of the element\'s own error is kept');
  t.is(await proposalCount(pool), before, 'nothing was proposed');
});

test.serial('rale_wait_many in the transaction that proposed refuses with the way out', async (t) => {
  const client = await db((await cluster.leader()).id).connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ ids: string[] }>('SELECT rale_propose_many($1::jsonb[]) AS ids', [[JSON.stringify({ op: 'set', key: 'same-tx', value: 1 })]]);
    const err = await client.query('SELECT * FROM rale_wait_many($1::uuid[], 100)', [rows[0]!.ids]).then(
      () => null,
      (e: { code: string; message: string; hint: string }) => e,
    );
    t.is(err?.code, '25000');
    t.regex(err?.hint ?? '', /COMMIT first/);
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
});

test.serial('a client role with only rale_client can use the bulk functions; PUBLIC cannot', async (t) => {
  const pool = db((await cluster.leader()).id);
  await pool.query("DROP ROLE IF EXISTS bulk_app; DROP ROLE IF EXISTS bulk_stranger; CREATE ROLE bulk_app LOGIN; GRANT rale_client TO bulk_app; CREATE ROLE bulk_stranger LOGIN");
  const asRole = async (role: string, text: string, values: unknown[]) => {
    const client = await pool.connect();
    try {
      await client.query(`SET ROLE ${role}`);
      return await client.query(text, values).then(
        (r) => ({ ok: true as const, rows: r.rows }),
        (e: { code: string; message: string }) => ({ ok: false as const, code: e.code, message: e.message }),
      );
    } finally {
      await client.query('RESET ROLE');
      client.release();
    }
  };
  const commands = [JSON.stringify({ op: 'set', key: 'role-1', value: 1 })];
  const app = await asRole('bulk_app', 'SELECT rale_propose_many($1::jsonb[]) AS ids', [commands]);
  t.true(app.ok, JSON.stringify(app));
  const stranger = await asRole('bulk_stranger', 'SELECT rale_propose_many($1::jsonb[]) AS ids', [commands]);
  t.false(stranger.ok);
  t.like(stranger, { code: '42501' });
  if (app.ok) {
    const waited = await asRole('bulk_app', 'SELECT status FROM rale_wait_many($1::uuid[], 5000)', [(app.rows[0] as { ids: string[] }).ids]);
    t.like(waited, { ok: true, rows: [{ status: 'applied' }] });
  }
  await pool.query('DROP ROLE bulk_app; DROP ROLE bulk_stranger');
});
