/**
 * Membership changes on a running three-node cluster while a background
 * writer keeps proposing through SQL: a fourth node (its own PostgreSQL and
 * sidecar, started without bootstrap) joined through REST, a follower
 * removed, then the leader removing itself. Every acknowledged write ends up
 * on every remaining member, and they hold the same state.
 */
import test from 'ava';
import { missingWrites, waitFor, Writer } from './harness.ts';
import { useCluster } from './hooks.ts';

const cluster = useCluster(test, { name: 'membership', size: 3 });

test.serial('a node joined, a follower removed and the leader removed while writes continue', async (t) => {
  const c = cluster();
  // Members the writer uses: those the harness still counts, whose sidecar runs.
  const writer = new Writer(c, 'membership', () => c.members.filter((id) => c.node(id).sidecar !== null));
  try {
    await writer.waitForAcks(5);

    // Join: learner, catch up, voter.
    const joined = await c.addNode('node4');
    t.is(joined.status, 200, JSON.stringify(joined.body));
    t.is(joined.body.role, 'voter');
    t.deepEqual([...joined.body.voters].sort(), ['node1', 'node2', 'node3', 'node4']);
    await waitFor('node4 to report itself healthy', async () => (await c.api('node4', 'GET', '/health')).status === 200, 30_000, 200);
    await writer.waitForAcks(5);

    // Remove a follower (not the new node), through the leader.
    const leader = await c.leader();
    const follower = c.members.find((id) => id !== leader && id !== 'node4') as string;
    const removed = await c.removeNode(follower, leader);
    t.is(removed.status, 200, JSON.stringify(removed.body));
    t.false(removed.body.voters.includes(follower));
    await c.stopSidecar(follower);
    await writer.waitForAcks(5);

    // The leader removes itself: it replicates its removal, then hands over.
    const oldLeader = await c.leader();
    const self = await c.removeNode(oldLeader, oldLeader);
    t.is(self.status, 200, JSON.stringify(self.body));
    t.false(self.body.voters.includes(oldLeader));
    const next = await c.leader({ timeoutMs: 20_000 });
    t.not(next, oldLeader);
    const health = await waitFor(`${oldLeader} to say it is no member`, async () => {
      const answer = await c.api(oldLeader, 'GET', '/health');
      return answer.status === 503 && answer.body.error.reasons.some((r: string) => r.startsWith('membership')) ? answer : null;
    }, 20_000, 200);
    t.log(`${oldLeader} after removing itself: ${health.body.error.message}`);
    await writer.waitForAcks(5);
  } finally {
    await writer.stop();
  }

  const remaining = c.members;
  t.is(remaining.length, 2);
  t.true(remaining.includes('node4'));
  const voters = (await c.status(remaining[0] as string))?.voters as string[];
  t.deepEqual([...voters].sort(), [...remaining].sort());
  await c.waitConverged(remaining);
  for (const id of remaining) t.deepEqual(await missingWrites(c, id, writer.acked), [], `acknowledged writes lost on ${id}`);
  t.log(`${writer.acked.length} acknowledged writes on ${remaining.join(' and ')}; ${writer.failures.length} failed or timed out during the changes`);
});
