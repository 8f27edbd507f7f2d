/**
 * rale.pump_take and rale.pump_let_go (0005_batch_wait.sql) on their own,
 * without a sidecar: what a take marks and locks, and a take that cannot
 * have its batch's lock.
 */
import test from 'ava';
import pg from 'pg';
import { migrate } from '../../sidecar/src/pg/migrate.ts';
import { useScratchServer } from './support.ts';

const scratch = useScratchServer(test, 'pumptake');
const BATCH_CLASS = 1918987362;

async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

async function batchLocks(c: pg.Client): Promise<Array<{ objid: number; pid: number }>> {
  const { rows } = await c.query(`SELECT objid::int AS objid, pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND granted ORDER BY objid`, [BATCH_CLASS]);
  return rows;
}

test.serial('a take marks its rows submitted in the batch and holds the batch lock until let go; an empty take takes no lock', async (t) => {
  const url = await scratch().createDatabase('take_ok');
  await migrate(url);
  const pump = await connect(url);
  const other = await connect(url);
  try {
    const empty = await pump.query('SELECT * FROM rale.pump_take(11, 10, NULL)');
    t.is(empty.rows.length, 0);
    t.deepEqual(await batchLocks(other), [], 'no rows, no lock');

    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await other.query(`SELECT rale.propose('{"op":"set","key":"k","value":1}') AS id`)).rows[0].id);
    const taken = await pump.query('SELECT * FROM rale.pump_take(12, 2, NULL)');
    t.deepEqual(taken.rows.map((r) => r.id), ids.slice(0, 2), 'the oldest first, at most the limit');
    const states = await other.query(`SELECT id, state, batch, attempts FROM rale.proposals ORDER BY created_at`);
    t.deepEqual(states.rows.map((r) => [r.state, r.batch, r.attempts]), [['submitted', 12, 1], ['submitted', 12, 1], ['pending', null, 0]]);
    const pumpPid = (await pump.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    t.deepEqual(await batchLocks(other), [{ objid: 12, pid: pumpPid }], 'the batch lock is held by the taking session, after its commit');

    // The first one was applied here (it has a result), the second not yet (its holder stopped waiting).
    await other.query(`INSERT INTO rale.results (proposal_id, index, term, status, result) VALUES ($1, 7, 1, 'applied', '{"ok":true}')`, [ids[0]]);
    await pump.query('SELECT rale.pump_let_go(12, $1::uuid[], $2::bigint[], $3::bigint[])', [ids.slice(0, 2), [7, 8], [1, 1]]);
    t.deepEqual(await batchLocks(other), [], 'let go: the lock is released');
    const recorded = await other.query(`SELECT index FROM rale.proposals WHERE batch = 12 ORDER BY created_at`);
    t.deepEqual(
      recorded.rows.map((r) => (r.index === null ? null : Number(r.index))),
      [null, 8],
      'the position is written only where no result tells it (0008: one row write less per proposal)',
    );
    const outcomes = await other.query(`SELECT (rale.outcome_of(id)).status FROM unnest($1::uuid[]) AS id`, [ids.slice(0, 2)]);
    t.deepEqual(outcomes.rows.map((r) => r.status), ['applied', 'pending'], 'outcome_of reads the result first; without a commit index here the second is pending');
  } finally {
    await pump.end();
    await other.end();
  }
});

test.serial('a take whose batch lock another session holds fails at once, takes nothing and keeps no lock', async (t) => {
  const url = await scratch().createDatabase('take_held');
  await migrate(url);
  const pump = await connect(url);
  const squatter = await connect(url);
  try {
    const id = (await squatter.query(`SELECT rale.propose('{"op":"set","key":"k","value":1}') AS id`)).rows[0].id;
    await squatter.query('SELECT pg_advisory_lock($1, 5)', [BATCH_CLASS]);
    const from = Date.now();
    const err = await t.throwsAsync(pump.query('SELECT * FROM rale.pump_take(5, 10, NULL)'));
    t.true(Date.now() - from < 5_000, 'it does not wait for the lock');
    t.is((err as { code?: string }).code, '55P03');
    t.regex(err!.message, /the lock of batch 5 \("ralb", 5\) is held by another session/);
    const row = (await squatter.query('SELECT state, batch FROM rale.proposals WHERE id = $1', [id])).rows[0];
    t.deepEqual([row.state, row.batch], ['pending', null], 'the take rolled back');
    const pumpPid = (await pump.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    t.false((await batchLocks(squatter)).some((l) => l.pid === pumpPid), 'the failed take keeps no lock');
    // Under the next number it works.
    t.is((await pump.query('SELECT * FROM rale.pump_take(6, 10, NULL)')).rows.length, 1);
  } finally {
    await pump.end();
    await squatter.end();
  }
});
