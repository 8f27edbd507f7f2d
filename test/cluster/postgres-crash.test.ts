/**
 * A node's PostgreSQL crashes (SIGKILL to the postmaster)
 * and restarts: crash recovery empties every UNLOGGED table, among them
 * rale.read_rounds (where the sidecar publishes read indexes for
 * rale_read_barrier) and rale.pump (the pump's sleeping flag). Found by the
 * nemesis run (seed 1): the sidecar only UPDATEd the missing row, so every
 * SQL read barrier on that node timed out forever after.
 */
import test from 'ava';
import { waitFor } from './harness.ts';
import { useCluster } from './hooks.ts';

const cluster = useCluster(test, { name: 'pgcrash', size: 3 });

test.serial('after its PostgreSQL crashed and restarted, a node serves SQL read barriers and takes SQL proposals again', async (t) => {
  const c = cluster();
  const leader = await c.leader();
  const victim = c.members.find((id) => id !== leader) as string;
  await c.sqlWriteUntilAcked(victim, 'before-crash', 1);
  const barrier = async () => Number((await c.node(victim).pool.query<{ i: string }>('SELECT rale_read_barrier(3000) AS i')).rows[0]!.i);
  t.true((await barrier()) > 0);

  const server = c.node(victim).postgres!;
  process.kill(server.pid, 'SIGKILL'); // the postmaster dies; its backends exit when they notice; the restart runs crash recovery
  await server.stop(); // only waits for the exit and reaps what is left
  c.node(victim).postgres = null;
  await c.startPostgres(victim);

  // The sidecar notices (its connections died), restarts its node, and serves barriers again.
  const index = await waitFor(`a read barrier on ${victim} after its PostgreSQL restarted`, () => barrier().catch(() => null), 30_000, 200);
  t.true(index > 0);
  const write = await c.sqlWriteUntilAcked(victim, 'after-crash', 2, 30_000);
  t.is(write.write.value, 2);
  t.is((await c.node(victim).pool.query('SELECT rale_get($1) AS v', ['after-crash'])).rows[0].v, 2);
  t.deepEqual((await c.node(victim).pool.query('SELECT count(*)::int AS n FROM rale.pump')).rows[0], { n: 1 }, 'the pump row is back');
});
