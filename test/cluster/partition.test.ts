/**
 * Five sidecar processes whose peer links run through proxies: the leader
 * isolated, a 2|3 split with the leader on the small side, and a one-way
 * cut. The minority stops taking writes (they fail or time out, with a
 * reason), the majority elects and takes writes, and once healed the old
 * leader follows and every node converges. No acknowledged write is lost.
 */
import test from 'ava';
import { missingWrites, waitFor, Writer, type Cluster } from './harness.ts';
import { useCluster } from './hooks.ts';

const cluster = useCluster(test, { name: 'partition', size: 5 });

/** Nodes the background writer uses: the side that can commit. */
let writable: string[] = [];
let writer: Writer;

test.serial.before(() => {
  writable = cluster().members;
  writer = new Writer(cluster(), 'partition', () => writable);
});

test.after.always(async () => {
  await writer?.stop();
});

/** Waits until `id` follows the cluster's leader, in that leader's term (whoever leads by then). */
async function rejoined(c: Cluster, id: string): Promise<void> {
  await waitFor(`${id} to follow the leader again`, async () => {
    const leader = await c.leader({ timeoutMs: 5_000 });
    const [mine, theirs] = await Promise.all([c.status(id), c.status(leader)]);
    return mine !== null && theirs !== null && mine.role === 'follower' && mine.leader === leader && mine.term === theirs.term;
  }, 30_000, 100);
}

test.serial('the leader isolated: it cannot commit, the other four elect and take writes; healed, it follows and converges', async (t) => {
  const c = cluster();
  await writer.waitForAcks(3);
  const old = await c.leader();
  const others = c.members.filter((id) => id !== old);
  writable = others;

  c.isolate(old);
  // A write on the isolated node is not acknowledged: SQL times out, REST answers an error that says why.
  const sql = await c.sqlSubmit(old, { op: 'set', key: 'isolated-sql', value: 1 }, 3_000);
  t.not(sql.status, 'applied');
  const rest = await c.restPropose(old, { op: 'set', key: 'isolated-rest', value: 1 }, 'isolated-rest');
  t.true(rest.status >= 500, `REST on the isolated node answered ${rest.status}`);
  t.regex(rest.body?.error?.message ?? '', /\w/);
  t.log(`on the isolated ${old}: SQL ${sql.status}; REST ${rest.status} ${rest.body.error.code}: ${rest.body.error.message}`);
  const health = await c.api(old, 'GET', '/health');
  t.is(health.status, 503);

  const next = await c.leader({ among: others, timeoutMs: 20_000 });
  t.not(next, old);
  await writer.waitForAcks(5);

  c.healAll();
  writable = c.members;
  await rejoined(c, old);
  await writer.waitForAcks(3);
});

test.serial('a 2|3 split with the leader on the small side (connections reset): the three elect; healed, all converge', async (t) => {
  const c = cluster();
  const old = await c.leader();
  const buddy = c.members.find((id) => id !== old) as string;
  const minority = [old, buddy];
  const majority = c.members.filter((id) => !minority.includes(id));
  writable = majority;

  c.partition([minority, majority], 'reset');
  const sql = await c.sqlSubmit(buddy, { op: 'set', key: 'minority-sql', value: 1 }, 3_000).catch((err: Error) => ({ status: err.message, index: null }));
  t.not(sql.status, 'applied');
  const next = await c.leader({ among: majority, timeoutMs: 20_000 });
  t.true(majority.includes(next));
  await writer.waitForAcks(5);

  c.healAll();
  writable = c.members;
  await rejoined(c, old);
  await rejoined(c, buddy);
  await writer.waitForAcks(3);
});

test.serial('a one-way cut: the leader hears the others but cannot reach them; they elect, it steps down; healed, it follows', async (t) => {
  const c = cluster();
  const old = await c.leader();
  const others = c.members.filter((id) => id !== old);
  writable = others;
  for (const id of others) c.cut(old, id);

  const next = await c.leader({ among: others, timeoutMs: 20_000 });
  t.not(next, old);
  // The new leader's messages reach the old one, which learns the new term and stops leading.
  await waitFor(`${old} to step down`, async () => (await c.status(old))?.role !== 'leader', 20_000, 100);
  await writer.waitForAcks(5);

  c.healAll();
  writable = c.members;
  await rejoined(c, old);
  await writer.waitForAcks(3);
});

test.serial('every acknowledged write is on every node, and the five agree', async (t) => {
  const c = cluster();
  await writer.stop();
  await c.waitConverged();
  for (const id of c.members) t.deepEqual(await missingWrites(c, id, writer.acked), [], `acknowledged writes lost on ${id}`);
  t.log(`${writer.acked.length} acknowledged writes on every node; ${writer.failures.length} failed or timed out`);
});
