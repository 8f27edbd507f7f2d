/**
 * Nothing lost, nothing doubled: crashes of a node's driver at the two
 * dangerous points of applying (after the log append but before the apply
 * transaction; after the apply transaction but before the driver records
 * it), and duplicate copies of a proposal in the log.
 */
import test from 'ava';
import { encodeCommand } from '../../sidecar/src/node/command.ts';
import type { Entry } from '../../sidecar/src/core/types.ts';
import { startPgCluster, waitFor, type PgCluster } from './support.ts';

let cluster: PgCluster;

test.before(async () => {
  cluster = await startPgCluster('once');
  for (const id of cluster.ids) {
    await cluster.sql.get(id)!.query(`
      CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL);
      INSERT INTO counter VALUES (1, 0);
      CREATE FUNCTION bump(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
        UPDATE counter SET n = n + (payload->>'by')::bigint WHERE id = 1 RETURNING to_jsonb(n) $$;`);
  }
  const db = cluster.sql.get('node1')!;
  const id = (await db.query(`SELECT rale.register_handler('bump', 'bump', '{counter}') AS id`)).rows[0].id;
  await db.query('SELECT rale.wait($1, 10000)', [id]);
  // rale.wait answers once node1 applied the registration; proposals are checked
  // against the handlers of the node they are made on, so wait for every node.
  for (const nodeId of cluster.ids) {
    await waitFor(`the handler registered on ${nodeId}`, async () => (await cluster.sql.get(nodeId)!.query(`SELECT 1 FROM rale.handlers WHERE name = 'bump'`)).rows.length > 0);
  }
});

test.after.always(async () => {
  await cluster?.stop();
});

async function counters(): Promise<number[]> {
  return Promise.all(cluster.ids.map(async (id) => Number((await cluster.sql.get(id)!.query('SELECT n FROM counter')).rows[0].n)));
}

async function converged(expected: number): Promise<void> {
  await waitFor(`every counter at ${expected}`, async () => (await counters()).every((n) => n === expected), 20_000);
}

async function bumpFrom(nodeId: string, times: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < times; i++) {
    const { rows } = await cluster.sql.get(nodeId)!.query(`SELECT rale_propose('{"op":"call","handler":"bump","payload":{"by":1}}') AS id`);
    ids.push(rows[0].id);
  }
  return ids;
}

async function crashAndRestart(nodeId: string, fault: 'before-apply' | 'after-apply'): Promise<void> {
  const node = cluster.nodes.get(nodeId)!;
  const realApply = node.stateMachine.apply.bind(node.stateMachine);
  const stopped = new Promise<void>((resolve) => node.raft.once('stopped', () => resolve()));
  let armed = true;
  node.stateMachine.apply = async (entries: Entry[]) => {
    if (armed && entries.some((e) => e.kind === 0)) {
      armed = false;
      if (fault === 'after-apply') await realApply(entries);
      throw new Error(`injected crash ${fault}`);
    }
    return realApply(entries);
  };
  await stopped; // the driver stops on a storage failure rather than go on unsure of what is durable
  await node.stop();
  cluster.nodes.delete(nodeId);
  await cluster.startNode(nodeId);
}

test.serial('a crash between the log append and the apply transaction: the entries apply once after restart', async (t) => {
  const leader = await cluster.leader();
  const victim = cluster.ids.find((id) => id !== leader.id)!;
  const before = (await counters())[0]!;
  const crash = crashAndRestart(victim, 'before-apply');
  const ids = await bumpFrom(victim, 5);
  await crash;
  await converged(before + 5);
  for (const id of cluster.ids) {
    const { rows } = await cluster.sql.get(id)!.query(`SELECT count(*)::int AS n FROM rale.results WHERE proposal_id = ANY($1::text[])`, [ids]);
    t.is(rows[0].n, 5, `${id} recorded each proposal once`);
  }
  t.deepEqual(await counters(), cluster.ids.map(() => before + 5));
});

test.serial('a crash after the apply transaction committed but before the driver knew: nothing is applied twice', async (t) => {
  const leader = await cluster.leader();
  const victim = cluster.ids.find((id) => id !== leader.id)!;
  const before = (await counters())[0]!;
  const crash = crashAndRestart(victim, 'after-apply');
  await bumpFrom(leader.id, 4);
  await crash;
  await bumpFrom(victim, 1);
  await converged(before + 5);
  t.deepEqual(await counters(), cluster.ids.map(() => before + 5));
});

test.serial('the same proposal reaching the log twice (a retry) takes effect once, and both copies answer alike', async (t) => {
  const leader = await cluster.leader();
  const before = (await counters())[0]!;
  const envelope = encodeCommand({ id: 'retry-me', command: { op: 'call', handler: 'bump', payload: { by: 10 } } });
  const [first] = await leader.raft.submit([envelope]);
  const [second] = await leader.raft.submit([envelope]);
  t.true(second!.index > first!.index);
  await converged(before + 10);
  for (const id of cluster.ids) {
    const { rows } = await cluster.sql.get(id)!.query(`SELECT index, status, result FROM rale.results WHERE proposal_id = 'retry-me'`);
    t.is(rows.length, 1);
    t.is(Number(rows[0].index), first!.index, 'the result is the first copy\'s');
  }
});
