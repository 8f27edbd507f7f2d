/**
 * Snapshots on PostgreSQL: a node that joins after the log was compacted
 * catches up from a snapshot of the replicated tables (kv, results,
 * handlers and the tables handlers declared), restored in one transaction.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import pg from 'pg';
import { startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { PgNode } from '../../sidecar/src/pg/node.ts';
import { startPgCluster, waitFor, type PgCluster } from './support.ts';

let cluster: PgCluster;
let extra: PostgresInstance | undefined;
let joiner: PgNode | undefined;
const scratch = path.join(os.tmpdir(), `rale-snapjoin-${process.pid}`);

test.before(async () => {
  cluster = await startPgCluster('snap', ['node1', 'node2', 'node3'], { snapshotEvery: 25 });
});

test.after.always(async () => {
  await joiner?.stop();
  await extra?.stop();
  await cluster?.stop();
  await fs.rm(scratch, { recursive: true, force: true });
});

const TABLE_SQL = `
  CREATE TABLE IF NOT EXISTS visits (who text PRIMARY KEY, n int NOT NULL);
  CREATE OR REPLACE FUNCTION visit(p jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO visits VALUES (p->>'who', 1) ON CONFLICT (who) DO UPDATE SET n = visits.n + 1 RETURNING to_jsonb(n) $$;`;

test.serial('a node joining after compaction is brought up to date from a snapshot', async (t) => {
  for (const id of cluster.ids) await cluster.sql.get(id)!.query(TABLE_SQL);
  const db = cluster.sql.get('node1')!;
  const reg = (await db.query(`SELECT rale.register_handler('visit', 'visit', '{visits}') AS id`)).rows[0].id;
  t.is((await db.query('SELECT (rale.wait($1, 10000)).status', [reg])).rows[0].status, 'applied');
  for (let i = 0; i < 60; i++) {
    const command = i % 2 === 0 ? { op: 'set', key: `k${i}`, value: { i } } : { op: 'call', handler: 'visit', payload: { who: `w${i % 5}` } };
    await db.query('CALL rale.submit($1::jsonb, NULL)', [JSON.stringify(command)]);
  }
  const leader = await cluster.leader();
  await waitFor('the log compacted on the leader', () => leader.raft.status().firstIndex > 25);

  // A fourth node on its own, empty PostgreSQL; it does not bootstrap: it waits to be added.
  await fs.mkdir(scratch, { recursive: true, mode: 0o755 });
  extra = await startPostgres({ dataDir: path.join(scratch, 'node4'), persistent: false });
  const extraDb = new pg.Pool({ connectionString: extra.connectionString, max: 2 });
  t.teardown(() => extraDb.end());
  await extraDb.query(TABLE_SQL);
  joiner = await PgNode.start({ id: 'node4', connectionString: extra.connectionString, transport: cluster.network.transport(), tickMs: 20, core: { electionTicks: 10, heartbeatTicks: 2 } });

  const change = (await db.query(`SELECT rale.change_membership('{"type":"addLearner","node":"node4"}') AS id`)).rows[0].id;
  t.is((await db.query('SELECT (rale.wait($1, 10000)).status', [change])).rows[0].status, 'applied');
  await waitFor('node4 caught up', () => joiner!.raft.status().applied >= leader.raft.status().commit, 20_000);

  const dump = async (p: pg.Pool) => ({
    kv: (await p.query('SELECT key, value, version FROM rale.kv ORDER BY key')).rows,
    visits: (await p.query('SELECT who, n FROM visits ORDER BY who')).rows,
    handlers: (await p.query('SELECT name, function FROM rale.handlers')).rows,
    results: (await p.query('SELECT count(*)::int AS n FROM rale.results')).rows[0].n,
  });
  await waitFor('node1 applied as far', async () => Number((await db.query('SELECT index FROM rale.applied')).rows[0].index) >= joiner!.raft.status().applied);
  const expected = await dump(db);
  t.is(expected.kv.length, 30);
  t.is(expected.visits.length, 5);
  t.deepEqual(await dump(extraDb), expected);
  t.true((await extraDb.query('SELECT index FROM rale.snapshot')).rows.length === 1, 'the joiner stored the snapshot it installed');
  // rale.members is republished every 100 ms: the join may have completed sooner.
  const members = await waitFor('node4 listed in rale.members', async () => {
    const rows = (await db.query(`SELECT node_id, role FROM rale.members ORDER BY node_id`)).rows;
    return rows.some((r) => r.node_id === 'node4') ? rows : null;
  });
  t.deepEqual(members.at(-1), { node_id: 'node4', role: 'learner' });

  // Promote it, write once more, and see it apply there too.
  const promote = (await db.query(`SELECT rale.change_membership('{"type":"promote","node":"node4"}') AS id`)).rows[0].id;
  t.is((await db.query('SELECT (rale.wait($1, 10000)).status', [promote])).rows[0].status, 'applied');
  await db.query(`CALL rale.submit('{"op":"set","key":"after-promote","value":true}', NULL)`);
  await waitFor('node4 has the new write', async () => (await extraDb.query(`SELECT rale.get('after-promote') AS v`)).rows[0].v === true);
  t.deepEqual(joiner.raft.status().config.voters.sort(), ['node1', 'node2', 'node3', 'node4']);
});

test.serial('an invalid membership change is refused and recorded as failed', async (t) => {
  const db = cluster.sql.get('node2')!;
  const id = (await db.query(`SELECT rale.change_membership('{"type":"promote","node":"nobody"}') AS id`)).rows[0].id;
  const outcome = (await db.query('SELECT (rale.wait($1, 10000)).*', [id])).rows[0];
  t.is(outcome.status, 'failed');
  t.regex(outcome.error, /not a learner/);
});
