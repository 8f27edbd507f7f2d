/**
 * A node's PostgreSQL server stops under its running sidecar (a follower's,
 * then the leader's): the node says so on /health, gives up leadership,
 * the others keep taking writes, and once its database is back the node
 * recovers by itself and catches up. No acknowledged write is lost.
 */
import test from 'ava';
import { missingWrites, waitFor, Writer, type Cluster } from './harness.ts';
import { useCluster } from './hooks.ts';

const cluster = useCluster(test, { name: 'pgdown', size: 3 });

/** Waits until /health of `id` answers 503 UNHEALTHY with a reason matching `reason`; returns the envelope. */
async function unhealthy(c: Cluster, id: string, reason = /./): Promise<{ code: string; message: string; reasons: string[] }> {
  return waitFor(`${id} to report itself unhealthy (a reason matching ${reason})`, async () => {
    const answer = await c.api(id, 'GET', '/health', undefined, 5_000);
    return answer.status === 503 && answer.body.error.reasons.some((r: string) => reason.test(r)) ? answer.body.error : null;
  }, 20_000, 100);
}

async function healthy(c: Cluster, id: string): Promise<void> {
  await waitFor(`${id} to report itself healthy again`, async () => (await c.api(id, 'GET', '/health', undefined, 5_000)).status === 200, 45_000, 200);
}

let writer: Writer;

test.serial.before(() => {
  // One writer for the whole file, over every node whose database runs.
  writer = new Writer(cluster(), 'pgdown', () => cluster().members);
});

test.serial('a follower loses its PostgreSQL: unhealthy with a reason, writes go on, it recovers by itself', async (t) => {
  const c = cluster();
  await writer.waitForAcks(5);
  const leader = await c.leader();
  const follower = c.members.find((id) => id !== leader) as string;

  await c.stopPostgres(follower);
  // The reason names the database and what connecting to it says (the server is down: refused).
  const error = await unhealthy(c, follower, /PostgreSQL does not answer \(.*ECONNREFUSED/);
  t.is(error.code, 'UNHEALTHY');
  t.log(`${follower}: ${error.message}`);
  // The other two are a quorum: writes go on, under the same leader.
  await writer.waitForAcks(5);
  t.is(await c.leader({ among: c.members.filter((id) => id !== follower) }), leader);

  await c.startPostgres(follower);
  await healthy(c, follower);
  await writer.waitForAcks(3);
});

test.serial('the leader loses its PostgreSQL: it hands leadership away, writes go on elsewhere, it recovers as a follower', async (t) => {
  const c = cluster();
  const old = await c.leader();
  const others = c.members.filter((id) => id !== old);

  const stoppedAt = Date.now();
  await c.stopPostgres(old);
  const next = await c.leader({ among: others, timeoutMs: 20_000 });
  t.not(next, old);
  t.log(`${old}'s PostgreSQL stopped; ${next} leads ${Date.now() - stoppedAt} ms later`);
  const error = await unhealthy(c, old);
  t.true(error.reasons.length > 0);
  t.log(`${old}: ${error.message}`);
  // The old leader no longer claims leadership (its node is stopped until its database answers).
  const view = await c.api(old, 'GET', '/cluster/status', undefined, 5_000);
  t.not(view.body?.role, 'leader', JSON.stringify(view.body));
  await writer.waitForAcks(5);

  await c.startPostgres(old);
  await healthy(c, old);
  const back = await c.status(old);
  t.is(back?.role, 'follower');
  await writer.waitForAcks(3);
});

test.serial('a sidecar started while its PostgreSQL is down says why on /health, and starts once the database answers', async (t) => {
  const c = cluster();
  const leader = await c.leader();
  const follower = c.members.find((id) => id !== leader) as string;
  await c.killSidecar(follower);
  await c.stopPostgres(follower);
  await c.startSidecar(follower, false);
  const error = await unhealthy(c, follower, /waiting for its PostgreSQL to answer \(.*ECONNREFUSED/);
  t.log(`${follower}: ${error.message}`);
  await writer.waitForAcks(3);

  await c.startPostgres(follower);
  await healthy(c, follower);
  t.is((await c.status(follower))?.leader, await c.leader());
  await writer.waitForAcks(3);
});

test.serial('every acknowledged write is on every node, and the nodes agree', async (t) => {
  const c = cluster();
  await writer.stop();
  t.true(writer.acked.length >= 20);
  await c.waitConverged();
  for (const id of c.members) t.deepEqual(await missingWrites(c, id, writer.acked), [], `acknowledged writes lost on ${id}`);
  t.log(`${writer.acked.length} acknowledged writes on every node; ${writer.failures.length} failed or timed out`);
});

test.after.always(async () => {
  await writer?.stop();
});
