/**
 * One database, one node (PgNode's owner lock, in-process on embedded
 * PostgreSQL): a second sidecar pointed at a database another node uses is
 * refused at start with an error that names the holder; it starts once the
 * first has stopped. A node whose lock connection is killed stops, and the
 * sidecar restarts it, claiming the database again.
 */
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import pg from 'pg';
import { startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { createLogger } from '../../sidecar/src/process/logger.ts';
import { Sidecar } from '../../sidecar/src/process/sidecar.ts';
import { soloSidecarConfig, waitFor } from './support.ts';

let server: PostgresInstance;

test.before(async () => {
  server = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-owner-${process.pid}`), persistent: false });
});

test.after.always(async () => {
  await server?.stop();
});

const quiet = (id: string, lines: string[] = []) => createLogger(id, 'debug', (line) => lines.push(line));

test.serial('a second node on the same database is refused with the holder named, and starts once the first stopped', async (t) => {
  const url = await server.createDatabase('shared_db');
  const first = await Sidecar.start(soloSidecarConfig(url), quiet('n1'));
  let firstStopped = false;
  t.teardown(async () => {
    if (!firstStopped) await first.stop();
  });
  await waitFor('leadership', () => (first.node?.raft.isLeader() ? true : undefined));
  const secondConfig = { ...soloSidecarConfig(url), nodeId: 'n2' };
  const refused = await t.throwsAsync(Sidecar.start(secondConfig, quiet('n2')));
  t.regex(refused?.message ?? '', /already in use by rale node n1 \(backend pid \d+/);
  t.regex(refused?.message ?? '', /each rale node needs a database of its own/);
  t.true(first.node?.raft.isLeader() ?? false, 'the first node runs on');

  await first.stop();
  firstStopped = true;
  // The same node id on the same database after a clean stop: its own restart.
  const again = await Sidecar.start(soloSidecarConfig(url), quiet('n1'));
  t.teardown(() => again.stop());
  await waitFor('leadership after the restart', () => (again.node?.raft.isLeader() ? true : undefined));
  t.pass();
});

test.serial('a node whose lock connection is killed stops and comes back, holding the database again', async (t) => {
  const url = await server.createDatabase('owner_killed');
  const lines: string[] = [];
  const sidecar = await Sidecar.start(soloSidecarConfig(url), quiet('n1', lines));
  t.teardown(() => sidecar.stop());
  const before = sidecar.node;
  await waitFor('leadership', () => (sidecar.node?.raft.isLeader() ? true : undefined));
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());
  const holders = async () =>
    (await admin.query<{ pid: number }>(`SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = 1918987365 AND l.objid = 4 AND l.granted`)).rows.map((r) => r.pid);
  const [holder] = await holders();
  t.truthy(holder, 'the node holds the lock');
  // Every connection names its part for DBAs (pg_stat_activity.application_name).
  const names = new Set((await admin.query<{ name: string }>(`SELECT application_name AS name FROM pg_stat_activity WHERE application_name LIKE 'rale %'`)).rows.map((r) => r.name));
  for (const part of ['rale node n1', 'rale n1 log', 'rale n1 apply', 'rale n1 pump', 'rale n1 listen', 'rale n1 status']) t.true(names.has(part), `${part} in ${[...names].join(', ')}`);
  await admin.query('SELECT pg_terminate_backend($1)', [holder]);
  await waitFor('a new node', () => (sidecar.node !== null && sidecar.node !== before && sidecar.node.raft.isLeader() ? true : undefined), 20_000);
  const [next] = await holders();
  t.truthy(next);
  t.not(next, holder, 'claimed again by a new connection');
  t.true(lines.some((l) => l.includes('the connection holding this database for node n1')), lines.slice(-10).join('\n'));
});
