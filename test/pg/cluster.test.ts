/**
 * A three-node rale cluster on three real PostgreSQL servers, driven from SQL.
 */
import test from 'ava';
import pg from 'pg';
import { startPgCluster, waitFor, type PgCluster } from './support.ts';

let cluster: PgCluster;

test.before(async () => {
  cluster = await startPgCluster('sqlapi');
  await cluster.leader();
});

test.after.always(async () => {
  await cluster?.stop();
});

const db = (id: string): pg.Pool => cluster.sql.get(id)!;

async function kvOn(id: string): Promise<Record<string, unknown>> {
  const { rows } = await db(id).query<{ key: string; value: unknown }>('SELECT key, value FROM rale.kv ORDER BY key');
  return Object.fromEntries(rows.map((r) => [r.key, r.value]));
}

async function allApplied(): Promise<number> {
  const leader = await cluster.leader();
  const commit = leader.raft.status().commit;
  await waitFor('every node applied', async () => {
    for (const id of cluster.ids) {
      const { rows } = await db(id).query<{ index: string }>('SELECT index FROM rale.applied');
      if (Number(rows[0]?.index) < commit) return false;
    }
    return true;
  });
  return commit;
}

test.serial('proposals from SQL on any node commit and apply identically on every node', async (t) => {
  const ids: string[] = [];
  for (const [k, id] of cluster.ids.entries()) {
    const { rows } = await db(id).query<{ id: string }>('SELECT rale_propose($1::jsonb) AS id', [JSON.stringify({ op: 'set', key: `from-${id}`, value: k })]);
    ids.push(rows[0]!.id);
  }
  for (const [k, id] of cluster.ids.entries()) {
    const { rows } = await db(id).query('SELECT (rale_wait($1, 10000)).*', [ids[k]]);
    t.is(rows[0].status, 'applied');
    t.deepEqual(rows[0].result, { ok: true });
    t.true(Number(rows[0].index) > 0);
  }
  await allApplied();
  const expected = await kvOn('node1');
  t.deepEqual(Object.keys(expected).filter((k) => k.startsWith('from-')).sort(), ['from-node1', 'from-node2', 'from-node3']);
  for (const id of cluster.ids) t.deepEqual(await kvOn(id), expected);
  // The replicated results are identical too.
  const results = await Promise.all(cluster.ids.map((id) => db(id).query('SELECT proposal_id, index, status, result FROM rale.results ORDER BY index')));
  for (const r of results) t.deepEqual(r.rows, results[0]!.rows);
});

test.serial('at light load the pump takes once per proposal: no empty looks, no flag writes between proposals', async (t) => {
  const leader = await cluster.leader();
  const node = cluster.nodes.get(leader.id)!;
  const client = new pg.Client({ connectionString: cluster.servers.get(leader.id)!.connectionString });
  await client.connect();
  try {
    // Warm up: the first proposal after a busy spell goes through the pump's
    // "going quiet" path (set the flag, look, look again).
    await client.query('CALL rale.submit($1::jsonb, NULL)', [JSON.stringify({ op: 'set', key: 'light-0', value: 0 })]);
    const before = node.pump.looks;
    const count = 30;
    for (let k = 1; k <= count; k++) {
      const { rows } = await client.query('CALL rale.submit($1::jsonb, NULL)', [JSON.stringify({ op: 'set', key: `light-${k}`, value: k })]);
      t.is(rows[0].outcome.split(',')[0], '(applied');
    }
    const looks = node.pump.looks - before;
    // One take per proposal, plus a few the idle timeout (1 s) may add; the
    // pump used to look three times per proposal (take and clear the flag,
    // set it and look, look again).
    t.true(looks >= count && looks <= count + 5, `${looks} looks for ${count} proposals`);
  } finally {
    await client.end();
  }
});

test.serial('a rolled-back transaction proposes nothing', async (t) => {
  const client = await db('node2').connect();
  let id = '';
  try {
    await client.query('BEGIN');
    id = (await client.query<{ id: string }>(`SELECT rale_propose('{"op":"set","key":"ghost","value":1}') AS id`)).rows[0]!.id;
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
  const { rows } = await db('node2').query('SELECT (rale_wait($1, 200)).*', [id]);
  t.is(rows[0].status, 'unknown');
  const next = (await db('node1').query<{ id: string }>('SELECT rale.propose($1::jsonb) AS id', [JSON.stringify({ op: 'set', key: 'after-ghost', value: 1 })])).rows[0]!.id;
  t.is((await db('node1').query('SELECT (rale.wait($1, 10000)).status', [next])).rows[0].status, 'applied');
  await allApplied();
  for (const id of cluster.ids) t.false('ghost' in (await kvOn(id)));
});

test.serial('CALL rale.submit proposes and waits in one statement; compare-and-set works', async (t) => {
  const r1 = await db('node3').query(`CALL rale.submit('{"op":"cas","key":"counter","expected":null,"value":1}', NULL)`);
  t.regex(r1.rows[0].outcome, /^\(applied,\d+,\d+,"{""ok"": true}",\)$/);
  // Waiting inside the transaction that proposed can never succeed: a clear error says so.
  await t.throwsAsync(db('node3').query(`SELECT rale.wait(rale_propose('{"op":"cas","key":"counter","expected":5,"value":6}'))`), {
    message: /made in this same transaction/,
  });
  const client = await db('node3').connect();
  try {
    const id = (await client.query<{ id: string }>(`SELECT rale_propose('{"op":"cas","key":"counter","expected":1,"value":2}') AS id`)).rows[0]!.id;
    const outcome = (await client.query('SELECT (rale_wait($1)).*', [id])).rows[0];
    t.is(outcome.status, 'applied');
    t.deepEqual(outcome.result, { ok: true });
  } finally {
    client.release();
  }
  t.is((await db('node3').query(`SELECT rale_get('counter') AS v`)).rows[0].v, 2);
});

test.serial('a handler runs in the apply transaction; its failure is recorded on every node and later entries still apply', async (t) => {
  for (const id of cluster.ids) {
    await db(id).query(`
      CREATE SCHEMA IF NOT EXISTS bank;
      CREATE TABLE IF NOT EXISTS bank.accounts (name text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
      CREATE OR REPLACE FUNCTION bank.apply_transfer(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO bank.accounts VALUES (payload->>'to', 0) ON CONFLICT DO NOTHING;
        INSERT INTO bank.accounts VALUES (payload->>'from', 0) ON CONFLICT DO NOTHING;
        UPDATE bank.accounts SET balance = balance + (payload->>'amount')::bigint WHERE name = payload->>'to';
        UPDATE bank.accounts SET balance = balance - (payload->>'amount')::bigint WHERE name = payload->>'from';
        RETURN jsonb_build_object('moved', (payload->>'amount')::bigint);
      END $$;`);
  }
  const reg = (await db('node1').query<{ id: string }>(`SELECT rale.register_handler('transfer', 'bank.apply_transfer', '{bank.accounts}') AS id`)).rows[0]!.id;
  t.is((await db('node1').query('SELECT (rale.wait($1, 10000)).status', [reg])).rows[0].status, 'applied');
  await waitFor('handler registered everywhere', async () => {
    for (const id of cluster.ids) if ((await db(id).query(`SELECT 1 FROM rale.handlers WHERE name = 'transfer'`)).rowCount === 0) return false;
    return true;
  });
  const propose = async (payload: object) => {
    const { rows } = await db('node2').query<{ id: string }>('SELECT rale_propose($1::jsonb) AS id', [JSON.stringify({ op: 'call', handler: 'transfer', payload })]);
    return (await db('node2').query('SELECT (rale_wait($1, 10000)).*', [rows[0]!.id])).rows[0];
  };
  // from 'mint' to alice: mint's balance would go negative -> the CHECK fails -> the handler fails.
  const failed = await propose({ from: 'mint', to: 'alice', amount: 5 });
  t.is(failed.status, 'failed');
  t.regex(failed.error, /check constraint/);
  await db('node2').query(`SELECT 1`);
  const ok = await propose({ from: 'alice', to: 'bob', amount: 0 });
  t.is(ok.status, 'applied');
  t.deepEqual(ok.result, { moved: 0 });
  await allApplied();
  for (const id of cluster.ids) {
    const { rows } = await db(id).query('SELECT name, balance FROM bank.accounts ORDER BY name');
    t.deepEqual(rows, [
      { name: 'alice', balance: '0' },
      { name: 'bob', balance: '0' },
    ], `the failed transfer left no trace on ${id}`);
    const r = await db(id).query(`SELECT status, error FROM rale.results WHERE status = 'failed'`);
    t.is(r.rowCount, 1);
  }
});

test.serial('bad input is refused at propose time with a clear SQL error, and nothing is queued', async (t) => {
  const start = (await db('node1').query(`SELECT clock_timestamp() AS t, coalesce(max(index), 0) AS last FROM rale.log_entries`)).rows[0];
  const cases: Array<[string, RegExp]> = [
    [`SELECT rale_propose('{"op":"set"')`, /invalid input syntax for type json/],
    [`SELECT rale_propose('[1,2]')`, /must be a JSON object/],
    [`SELECT rale_propose('{"key":"k"}')`, /no "op" field/],
    [`SELECT rale_propose('{"op":"drop","key":"k"}')`, /unknown command op "drop"/],
    [`SELECT rale_propose('{"op":"set","key":"k"}')`, /needs a "value"/],
    [`SELECT rale_propose('{"op":"set","key":"","value":1}')`, /non-empty string "key"/],
    [`SELECT rale_propose('{"op":"call","handler":"nope","payload":{}}')`, /no handler is registered under the name "nope"/],
    [`SELECT rale_propose(jsonb_build_object('op','set','key','big','value',repeat('x', 70000)))`, /above the limit of 65536 bytes/],
    [`SELECT rale_propose('{"op":"register_handler","name":"x","function":"pg_sleep(double precision)"}')`, /unknown command op "register_handler"/],
    [`SELECT rale.change_membership('{"type":"explode","node":"x"}')`, /not a membership change/],
    [`SELECT rale.register_handler('bad name!', 'bank.apply_transfer')`, /handler name 'bad name!' is not valid/],
  ];
  for (const [statement, message] of cases) {
    const err = await t.throwsAsync(db('node1').query(statement), undefined, statement);
    t.regex(err!.message, message, statement);
  }
  const queued = (await db('node1').query('SELECT count(*)::int AS n FROM rale.proposals WHERE created_at >= $1', [start.t])).rows[0].n;
  t.is(queued, 0, 'nothing was half-queued');
  const logged = (await db('node1').query('SELECT count(*)::int AS n FROM rale.log_entries WHERE index > $1 AND kind = 0', [start.last])).rows[0].n;
  t.is(logged, 0, 'nothing reached the log');
});

test.serial('privileges: rale_client proposes and reads, only rale_admin registers handlers, PUBLIC gets nothing', async (t) => {
  const admin = db('node1');
  await admin.query(`DROP ROLE IF EXISTS app_user; DROP ROLE IF EXISTS nobody; CREATE ROLE app_user LOGIN PASSWORD 'x' IN ROLE rale_client; CREATE ROLE nobody LOGIN PASSWORD 'x'`);
  const url = new URL(cluster.servers.get('node1')!.connectionString);
  const as = (user: string) => {
    const u = new URL(url);
    u.username = user;
    u.password = 'x';
    return new pg.Client({ connectionString: u.toString() });
  };
  const app = as('app_user');
  const nobody = as('nobody');
  await app.connect();
  await nobody.connect();
  try {
    const id = (await app.query(`SELECT rale_propose('{"op":"set","key":"by-app","value":true}') AS id`)).rows[0].id;
    t.is((await app.query('SELECT (rale_wait($1, 10000)).status', [id])).rows[0].status, 'applied');
    t.is((await app.query(`SELECT rale_get('by-app') AS v`)).rows[0].v, true);
    t.is((await app.query(`SELECT role FROM rale_status()`)).rowCount, 1);
    await t.throwsAsync(app.query(`SELECT rale.register_handler('h', 'bank.apply_transfer')`), { message: /permission denied/ });
    await t.throwsAsync(app.query(`INSERT INTO rale.proposals (command) VALUES ('{}')`), { message: /permission denied/ });
    await t.throwsAsync(nobody.query(`SELECT rale_propose('{"op":"set","key":"x","value":1}')`), { message: /permission denied/ });
    await t.throwsAsync(nobody.query(`SELECT * FROM rale.kv`), { message: /permission denied/ });
  } finally {
    await app.end();
    await nobody.end();
  }
});

test.serial('status, members, log inspection and the read barrier from SQL', async (t) => {
  const leader = await cluster.leader();
  const status = (await db('node2').query('SELECT * FROM rale_status()')).rows[0];
  t.is(status.node_id, 'node2');
  t.is(status.leader, leader.id);
  const members = (await db('node2').query('SELECT node_id, role FROM rale.members ORDER BY node_id')).rows;
  t.deepEqual(members, cluster.ids.map((id) => ({ node_id: id, role: 'voter' })));
  const log = (await db('node2').query(`SELECT index, kind, payload FROM rale.log(1, 5)`)).rows;
  t.is(log[0].kind, 'config', 'the log starts with the founding voters');
  t.deepEqual(log[0].payload, { type: 'bootstrap', voters: cluster.ids });
  t.is(log[1].kind, 'noop', 'then the first leader\'s no-op');
  await db('node1').query(`SELECT rale_propose('{"op":"set","key":"fresh","value":42}')`);
  // A read barrier on node3 followed by a local read sees every write acknowledged before it began.
  const id = (await db('node1').query(`SELECT rale_propose('{"op":"set","key":"acked","value":7}') AS id`)).rows[0].id;
  t.is((await db('node1').query('SELECT (rale_wait($1, 10000)).status', [id])).rows[0].status, 'applied');
  const client = await db('node3').connect();
  try {
    const barrier = (await client.query('SELECT rale_read_barrier(10000) AS idx')).rows[0].idx;
    t.true(Number(barrier) > 0);
    t.is((await client.query(`SELECT rale_get('acked') AS v`)).rows[0].v, 7);
    t.is((await client.query(`SELECT rale.get_linearizable('acked') AS v`)).rows[0].v, 7);
  } finally {
    client.release();
  }
});

test.serial('proposals queued while a sidecar is down are picked up when it returns, applied once', async (t) => {
  const node = cluster.nodes.get('node3')!;
  await node.stop();
  cluster.nodes.delete('node3');
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push((await db('node3').query(`SELECT rale_propose(jsonb_build_object('op','set','key','offline-' || $1::text,'value',$1::int)) AS id`, [i])).rows[0].id);
  }
  t.is((await db('node3').query('SELECT (rale_wait($1, 300)).status', [ids[0]])).rows[0].status, 'timed_out');
  // A pick gate left held (a pump that hangs, or anyone holding its advisory
  // lock): rale_wait still returns timed_out on time, and keeps no lock.
  const holder = await db('node3').connect();
  try {
    await holder.query('SELECT pg_advisory_lock(1918987365, 3)');
    const from = Date.now();
    t.is((await db('node3').query('SELECT (rale_wait($1, 300)).status', [ids[1]])).rows[0].status, 'timed_out');
    const took = Date.now() - from;
    t.true(took >= 290 && took < 2000, `rale_wait(300) with the gate held took ${took} ms`);
  } finally {
    await holder.query('SELECT pg_advisory_unlock_all()');
    holder.release();
  }
  t.is((await db('node3').query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 3`)).rows[0].n, 0);
  // Two of them as a pump that crashed after handing them to Raft leaves them
  // (submitted in its batch, no result): the returning pump resubmits them at
  // its first look, not after its resubmission timeout (a minute here).
  await db('node3').query(`UPDATE rale.proposals SET state = 'submitted', batch = 77, submitted_at = clock_timestamp(), attempts = 1 WHERE id = ANY($1::uuid[])`, [ids.slice(3)]);
  await cluster.startNode('node3', { resubmitAfterMs: 60_000 });
  for (const id of ids) t.is((await db('node3').query('SELECT (rale_wait($1, 15000)).status', [id])).rows[0].status, 'applied');
  await allApplied();
  for (const id of cluster.ids) {
    const { rows } = await db(id).query(`SELECT count(*)::int AS n FROM rale.results WHERE proposal_id = ANY($1::text[])`, [ids]);
    t.is(rows[0].n, 5, `each offline proposal applied once on ${id}`);
    t.is((await kvOn(id))['offline-4'], 4);
  }
});

test.serial('the pick gate: many waiters on a leader and a follower, none keeps the gate; a session keeping it only slows them down', async (t) => {
  const leaderId = (await cluster.leader()).id;
  const submitMany = async (id: string, clients: number, per: number): Promise<string[]> => {
    const statuses: string[] = [];
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        for (let n = 0; n < per; n++) {
          const { rows } = await db(id).query(`CALL rale.submit(jsonb_build_object('op','set','key','gate-' || $1::text,'value',$2::int), NULL, 10000)`, [c, n]);
          statuses.push(String(rows[0].outcome).slice(1).split(',')[0]!);
        }
      }),
    );
    return statuses;
  };
  for (const id of [leaderId, cluster.ids.find((i) => i !== leaderId)!]) {
    const statuses = await submitMany(id, 6, 5);
    t.deepEqual([...new Set(statuses)], ['applied'], `every proposal on ${id} applied`);
    // Waiters never keep the gate (they take it shared, in a subtransaction rolled back at once).
    t.is((await db(id).query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 3 AND mode = 'ShareLock'`)).rows[0].n, 0);
  }
  // Someone else keeps the gate shared (the pump holds it while it runs, so no one else can take it
  // exclusively): the pump's cycles time out (the gate counts as open), waiters poll as before.
  const holder = await db(leaderId).connect();
  try {
    await holder.query(`SET lock_timeout = '5s'`);
    // It gets the gate at one of the pump's cycles, under load.
    const [first] = await Promise.all([submitMany(leaderId, 3, 5), holder.query('SELECT pg_advisory_lock_shared(1918987365, 3)')]);
    const second = await submitMany(leaderId, 3, 3);
    t.deepEqual([...new Set([...first, ...second])], ['applied']);
  } finally {
    await holder.query('SELECT pg_advisory_unlock_all()');
    holder.release();
  }
});

test.serial('batch locks: a waiter blocks on its batch\'s advisory lock while the batch applies; the pump keeps no transaction open and no lock after', async (t) => {
  const leaderId = (await cluster.leader()).id;
  // A handler slow enough to watch its batch while it applies (it runs on every node).
  for (const id of cluster.ids) {
    await db(id).query(`CREATE OR REPLACE FUNCTION public.rale_test_slow(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT pg_sleep(0.8); SELECT payload $$`);
  }
  const reg = (await db(leaderId).query<{ id: string }>(`SELECT rale.register_handler('slow', 'public.rale_test_slow') AS id`)).rows[0]!.id;
  t.is((await db(leaderId).query('SELECT (rale_wait($1, 10000)).status', [reg])).rows[0].status, 'applied');

  const client = await db(leaderId).connect();
  try {
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const submitted = client.query(`CALL rale.submit('{"op":"call","handler":"slow","payload":{"n":7}}', NULL, 15000)`);
    const row = await waitFor('the proposal in a batch', async () => {
      const { rows } = await db(leaderId).query<{ batch: number }>(
        `SELECT batch FROM rale.proposals WHERE command->>'handler' = 'slow' AND state = 'submitted' AND batch IS NOT NULL`,
      );
      return rows[0];
    });
    // The waiter queues for the batch's lock, which a pump connection holds (session level, not in a transaction).
    const locks = await waitFor('the waiter queued on the batch lock', async () => {
      const { rows } = await db(leaderId).query<{ pid: number; granted: boolean; mode: string; app: string }>(
        `SELECT l.pid, l.granted, l.mode, a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE l.locktype = 'advisory' AND l.classid = 1918987362 AND l.objid = $1`,
        [row.batch],
      );
      return rows.some((r) => r.pid === pid && !r.granted) ? rows : undefined;
    });
    const holder = locks.find((l) => l.granted);
    t.truthy(holder, 'someone holds the batch lock');
    t.regex(holder!.app, /^rale node\d pump$/);
    t.is(holder!.mode, 'ExclusiveLock');
    const open = await db(leaderId).query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'rale % pump' AND state LIKE 'idle in transaction%'`);
    t.is(open.rows[0].n, 0, 'no pump connection sits in an open transaction');

    const outcome = String((await submitted).rows[0].outcome);
    t.regex(outcome, /^\(applied,\d+,\d+,"{""n"": 7}",\)$/);
    // Let go: no batch lock outlives its batch.
    await waitFor('no batch lock left', async () => {
      const { rows } = await db(leaderId).query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = 1918987362`);
      return rows[0].n === 0;
    });

    // The connection holding a batch is killed while the batch applies (a DBA's
    // pg_terminate_backend): its lock goes with it, the waiter still gets the
    // outcome, and the pump drops that connection once (a second release used
    // to throw out of the holder: an unhandled rejection, which fails this test).
    const again = client.query(`CALL rale.submit('{"op":"call","handler":"slow","payload":{"n":8}}', NULL, 15000)`);
    const holderPid = await waitFor('a pump connection holding the batch', async () => {
      const { rows } = await db(leaderId).query<{ pid: number }>(
        `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE l.locktype = 'advisory' AND l.classid = 1918987362 AND l.granted AND a.application_name LIKE 'rale % pump'`,
      );
      return rows[0]?.pid;
    });
    await db(leaderId).query('SELECT pg_terminate_backend($1)', [holderPid]);
    t.regex(String((await again).rows[0].outcome), /^\(applied,\d+,\d+,"{""n"": 8}",\)$/);
    // The pump goes on.
    t.regex(String((await client.query(`CALL rale.submit('{"op":"set","key":"after-kill","value":1}', NULL, 15000)`)).rows[0].outcome), /^\(applied,/);
  } finally {
    client.release();
  }
});
