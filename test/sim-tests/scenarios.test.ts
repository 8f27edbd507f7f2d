/**
 * Targeted, deterministic scenarios, one per mechanism, named after the
 * sections of the Raft paper (§5) and Ongaro's thesis that describe them.
 * Each drives a simulated cluster by hand (partitions, crashes, proposals)
 * while the simulator checks every invariant after every step, and then
 * asserts the specific behaviour the mechanism promises.
 */
import test from 'ava';
import { MessageType, Role, type Message } from '../../sidecar/src/core/index.ts';
import { Cluster, type ClusterOptions } from '../sim/cluster.ts';
import { InvariantViolation } from '../sim/violation.ts';

const ELECTION = 10;

function cluster(voters: number, options: Partial<ClusterOptions> = {}): Cluster {
  return new Cluster({ seed: 7, voters, core: { electionTicks: ELECTION, heartbeatTicks: 1, ...options.core }, ...options });
}

/** Counts delivered messages that match `filter`. */
function countMessages(c: Cluster, filter: (m: Message) => boolean): { count: number } {
  const counter = { count: 0 };
  c.network.observers.push((m) => {
    if (filter(m)) counter.count++;
  });
  return counter;
}

function commitAll(c: Cluster, keys: number, prefix = 'v'): void {
  for (let k = 0; k < keys; k++) c.propose(`k${k % 5}`, `${prefix}${k}`);
}

test('§9.6 pre-vote: an isolated follower that returns neither raises the term nor deposes the leader', (t) => {
  const c = cluster(3);
  const leader = c.elect('n1');
  const term = leader.core?.currentTerm;
  c.isolate('n3');
  c.runTicks(5 * ELECTION); // n3 times out again and again, but only pre-votes
  t.is(c.node('n3').core?.currentTerm, term, 'pre-vote does not raise the isolated node term');
  c.heal();
  c.runTicks(3 * ELECTION);
  t.is(c.leader()?.id, 'n1');
  t.is(c.node('n1').core?.currentTerm, term, 'the leader kept its term');
  t.is(c.node('n3').core?.currentLeader, 'n1', 'n3 follows the leader again');

  // The same scenario without pre-vote: the returning node disrupts the cluster (what pre-vote prevents).
  const bare = cluster(3, { core: { preVote: false } });
  const bareTerm = bare.elect('n1').core?.currentTerm ?? 0;
  bare.isolate('n3');
  bare.runTicks(5 * ELECTION);
  t.true((bare.node('n3').core?.currentTerm ?? 0) > bareTerm, 'without pre-vote the isolated node raises its term');
  bare.heal();
  bare.runTicks(3 * ELECTION);
  t.true((bare.leader()?.core?.currentTerm ?? 0) > bareTerm, 'without pre-vote the leader is deposed');
});

test('§6.2 check-quorum: a leader cut off from the majority steps down within an election timeout', (t) => {
  const c = cluster(5);
  c.elect('n1');
  const term = c.node('n1').core?.currentTerm ?? 0;
  c.split(['n1', 'n2'], ['n3', 'n4', 'n5']);
  const cutAt = c.ticks;
  t.true(c.runUntil(() => c.node('n1').core?.currentRole !== Role.Leader, 2 * ELECTION));
  // One election timeout without a quorum, plus at most a tick of slack for the last acknowledgements in flight.
  t.true(c.ticks - cutAt <= ELECTION + 1, `stepped down after ${c.ticks - cutAt} ticks`);
  // The majority side elects its own leader in a later term.
  t.true(c.runUntil(() => (c.leader()?.core?.currentTerm ?? 0) > term, 4 * ELECTION));
  t.true(['n3', 'n4', 'n5'].includes(c.leader()?.id ?? ''));
  c.heal();
  t.true(c.settle());
});

test('§4.2.3 leader stickiness: a follower that stops hearing the leader cannot depose it', (t) => {
  // Without pre-vote, so that stickiness alone is what protects the leader.
  const c = cluster(3, { core: { preVote: false } });
  c.elect('n1');
  const term = c.node('n1').core?.currentTerm ?? 0;
  c.block('n1', 'n3'); // n3 no longer hears the leader; everyone still hears n3
  c.runTicks(5 * ELECTION);
  t.true((c.node('n3').core?.currentTerm ?? 0) > term, 'n3 campaigned');
  t.is(c.leader()?.id, 'n1', 'n1 still leads');
  t.is(c.node('n1').core?.currentTerm, term, 'in the same term');
  t.is(c.node('n2').core?.currentTerm, term, 'n2 ignored the vote requests: it hears the leader');
  const p = c.propose('k', 'still-committing');
  t.true(c.runUntil(() => p.done, ELECTION), 'the leader still commits');
});

test('§5.3 fast conflict backtracking: a long conflicting tail costs one rejection per term, not per entry', (t) => {
  const c = cluster(3, { core: { maxMessageBytes: 300 } });
  c.elect('n1');
  commitAll(c, 5);
  t.true(c.runUntil(() => c.pendingProposals.length === 0, ELECTION));
  // n1, cut off, still believes it leads for a while: it appends 30 entries nobody else sees.
  c.isolate('n1');
  for (let k = 0; k < 30; k++) c.propose('stale', `s${k}`, 'n1');
  t.true(c.runUntil(() => c.node('n1').core?.currentRole !== Role.Leader, 2 * ELECTION), 'n1 stepped down');
  // Meanwhile n3 leads a later term and commits 30 other entries with n2.
  c.elect('n3', { force: true });
  const fresh = Array.from({ length: 30 }, (_, k) => c.propose(`k${k % 5}`, `fresh${k}`));
  t.true(c.runUntil(() => fresh.every((p) => p.done), 2 * ELECTION));
  // n2 takes over with n1 back: n2 has never replicated to n1, so it starts
  // probing at its own last index, far above where the logs diverge.
  c.crash('n3');
  c.heal();
  const rejections = countMessages(c, (m) => m.type === MessageType.AppendResponse && m.from === 'n1' && m.reject && m.index > 0);
  c.elect('n2', { force: true });
  const conflicting = (c.node('n1').core?.log.lastIndex ?? 0) - 6;
  t.true(c.runUntil(() => c.node('n1').sm.applied === c.node('n2').core?.commitIndex, 2 * ELECTION));
  t.true(conflicting >= 30, `${conflicting} conflicting entries`);
  t.true(rejections.count >= 1 && rejections.count <= 2, `${rejections.count} rejections to replace ${conflicting} conflicting entries`);
  t.false([...c.node('n1').sm.data.values()].some((v) => v.startsWith('s')), 'the stale entries were never applied');
});

test('§7 log compaction: a follower behind the first retained index gets a snapshot', (t) => {
  const c = cluster(3, { driver: { snapshotEvery: 10 }, core: { entryCacheBytes: 200 } });
  c.elect('n1');
  c.crash('n3');
  commitAll(c, 40);
  t.true(c.runUntil(() => c.pendingProposals.length === 0, 3 * ELECTION));
  c.runTicks(2); // let appends sent to n3 while it was down drain (a restarted node would receive them)
  const leader = c.node('n1');
  t.true(leader.storage.snapshotIndex >= 30, `leader compacted to ${leader.storage.snapshotIndex}`);
  const snapshots = countMessages(c, (m) => m.type === MessageType.Snapshot && m.to === 'n3');
  c.restart('n3');
  t.true(c.settle());
  t.true(snapshots.count >= 1, 'the leader sent a snapshot');
  t.true(c.node('n3').stats.snapshotsInstalled >= 1, 'n3 installed it');
  t.true(c.node('n3').storage.snapshotIndex >= 30);
  t.deepEqual(c.node('n3').sm.data, leader.sm.data);
  t.deepEqual(c.node('n3').sm.dedupe, leader.sm.dedupe, 'the dedupe table travels in the snapshot');
});

test('§4.2.2 removing the leader: it steps down once the change commits and a remaining voter takes over', (t) => {
  const c = cluster(5);
  c.elect('n1');
  const term = c.node('n1').core?.currentTerm ?? 0;
  t.true(c.changeMembership({ type: 'remove', node: 'n1' }));
  t.true(c.runUntil(() => c.node('n1').core?.currentRole !== Role.Leader, 2 * ELECTION), 'n1 stepped down');
  // The hand-over (TimeoutNow to the most up-to-date voter) is immediate: no election timeout to wait out.
  t.true(c.runUntil(() => (c.leader()?.core?.currentTerm ?? 0) > term, ELECTION), 'a remaining voter took over within an election timeout');
  const leader = c.leader();
  t.not(leader?.id, 'n1');
  t.deepEqual(leader?.core?.config.voters.slice().sort(), ['n2', 'n3', 'n4', 'n5']);
  const p = c.propose('after', 'removal');
  t.true(c.runUntil(() => p.done, 2 * ELECTION));
  c.runTicks(5 * ELECTION);
  t.not(c.leader()?.id, 'n1', 'the removed node never leads again');
  t.true(c.settle());
});

test('§4.2.1 a learner catches up without counting toward quorums, then is promoted', (t) => {
  const c = cluster(3, { spares: 1 });
  c.elect('n1');
  commitAll(c, 20);
  t.true(c.runUntil(() => c.pendingProposals.length === 0, 2 * ELECTION));
  t.true(c.changeMembership({ type: 'addLearner', node: 'n4' }));
  const leader = c.node('n1');
  t.true(c.runUntil(() => c.node('n4').sm.applied === leader.core?.commitIndex, 3 * ELECTION), 'the learner caught up');
  t.is(c.node('n4').core?.currentRole, Role.Follower);
  // Learners do not count: with the learner down and one voter down, the cluster still commits.
  c.crash('n4');
  const p = c.propose('with', 'learner-down');
  t.true(c.runUntil(() => p.done, ELECTION));
  c.restart('n4');
  t.true(c.runUntil(() => c.node('n4').sm.applied === leader.core?.commitIndex, 3 * ELECTION));
  t.true(c.changeMembership({ type: 'promote', node: 'n4' }));
  t.true(c.runUntil(() => leader.core?.commitIndex === leader.core?.log.lastIndex, ELECTION));
  t.deepEqual(leader.core?.config.voters.slice().sort(), ['n1', 'n2', 'n3', 'n4']);
  // A voter now: it can be elected.
  t.true(c.transferLeadership('n4'));
  t.true(c.runUntil(() => c.leader()?.id === 'n4', ELECTION));
  t.true(c.settle());
});

test('§3.10 leadership transfer goes to the named up-to-date node in the next term', (t) => {
  const c = cluster(5);
  c.elect('n1');
  commitAll(c, 10);
  t.true(c.runUntil(() => c.pendingProposals.length === 0, 2 * ELECTION));
  const term = c.node('n1').core?.currentTerm ?? 0;
  t.true(c.transferLeadership('n4'));
  t.true(c.runUntil(() => c.leader()?.id === 'n4', ELECTION), 'n4 leads within an election timeout');
  t.is(c.node('n4').core?.currentTerm, term + 1);
  t.is(c.checker.leaderOf(term + 1), 'n4', 'nobody else led the new term');
  const p = c.propose('after', 'transfer');
  t.true(c.runUntil(() => p.done, ELECTION));
});

test('§6.4 ReadIndex on the leader and via a follower returns the latest committed write', (t) => {
  const c = cluster(3);
  c.elect('n1');
  const first = c.propose('x', 'one');
  t.true(c.runUntil(() => first.done, ELECTION));
  const onLeader = c.read('n1', 'x');
  const viaFollower = c.read('n2', 'x');
  t.truthy(onLeader);
  t.truthy(viaFollower);
  t.true(c.runUntil(() => c.servedReads.has(onLeader ?? '') && c.servedReads.has(viaFollower ?? ''), ELECTION));
  t.is(c.servedReads.get(onLeader ?? '')?.value, 'one');
  t.is(c.servedReads.get(viaFollower ?? '')?.value, 'one');
  t.is(c.servedReads.get(viaFollower ?? '')?.node, 'n2', 'served from the follower own state machine');

  // A write committed on the leader is visible to a read through a lagging follower:
  // the read waits until the follower has applied up to the read index.
  c.node('n3').slowStorage = true;
  const second = c.propose('x', 'two');
  t.true(c.runUntil(() => c.node('n1').sm.data.get('x') === 'two', ELECTION));
  const lagging = c.read('n3', 'x');
  t.true(c.runUntil(() => c.servedReads.has(lagging ?? ''), ELECTION));
  t.is(c.servedReads.get(lagging ?? '')?.value, 'two');
  t.true(second.done);

  // A leader cut off from the majority cannot confirm a read.
  c.isolate('n1');
  const cutOff = c.read('n1', 'x');
  t.truthy(cutOff);
  c.runTicks(3 * ELECTION);
  t.false(c.servedReads.has(cutOff ?? ''), 'a deposed leader serves no read');
});

test('a single-node cluster elects itself, commits, reads and restarts', (t) => {
  const c = cluster(1);
  t.true(c.runUntil(() => c.leader()?.id === 'n1', 3 * ELECTION), 'elected without any peer');
  const p = c.propose('solo', 'yes');
  t.true(c.runUntil(() => p.done, 1));
  const read = c.read('n1', 'solo');
  t.true(c.runUntil(() => c.servedReads.has(read ?? ''), 1));
  t.is(c.servedReads.get(read ?? '')?.value, 'yes');
  c.crash('n1');
  c.restart('n1');
  t.is(c.node('n1').sm.data.get('solo'), 'yes', 'the state machine is durable');
  t.true(c.runUntil(() => c.leader()?.id === 'n1', 3 * ELECTION));
  const q = c.propose('solo', 'again');
  t.true(c.runUntil(() => q.done, 1));
  t.true(c.settle());
});

test('§6.3 a retried proposal (same id) takes effect once, on every node', (t) => {
  const c = cluster(3);
  c.elect('n1');
  const p = c.propose('counter', 'once');
  c.attempt(p); // the client did not hear back and retries: the log now holds the command twice
  t.true(c.settle());
  for (const node of c.nodes) {
    t.is(node.sm.effects.get(p.id), 1, `${node.id} applied it once`);
    t.is(node.stats.duplicatesSkipped, 1, `${node.id} skipped the duplicate`);
  }
});

/**
 * Figure 8 of the Raft paper, on three nodes (one entry per Append). With
 * i the first index after the first leader's no-op:
 *  1. n1 leads term a and appends entry i (a) that nobody else receives; it crashes.
 *  2. n2 leads term b > a, its no-op at index i (b) reaches nobody; it crashes.
 *  3. n1 returns and leads term c > b with n3's vote; it sends n3 entry i (a):
 *     now a majority holds it, but it is of an older term.
 *  4. n1 crashes before its own no-op reaches n3; n2 returns and wins with
 *     n3's vote (its last term b is newer than a) and overwrites index i.
 * Counting replicas of the old-term entry in step 3 (what commitOldTerms
 * does) "commits" an entry that step 4 then loses. The correct core does not
 * commit it, and the same schedule is safe.
 */
function figure8(commitOldTerms: boolean): { c: Cluster; i: number; a: number; onMajority: boolean; committedThen: boolean } {
  const c = cluster(3, { core: { maxMessageBytes: 80 }, coreFaults: { commitOldTerms } });
  const n1 = c.node('n1');
  const n2 = c.node('n2');
  const seize = (id: string): void => void c.elect(id, { force: true, noCommitWait: true });

  // 1. n1 leads and appends entry i that nobody else receives, then crashes.
  c.elect('n1');
  const i = n1.storage.lastIndex + 1;
  const a = n1.core?.currentTerm ?? 0;
  c.isolate('n1');
  c.propose('fig8', 'from-n1', 'n1');
  c.runUntil(() => n1.storage.lastIndex === i, ELECTION);
  c.crash('n1');
  c.heal();

  // 2. n2 wins the next term; cut off at once, its no-op (index i) stays its own. It crashes.
  seize('n2');
  c.isolate('n2');
  c.runUntil(() => n2.storage.lastIndex === i, ELECTION);
  c.crash('n2');
  c.heal();

  // 3. n1 returns and wins with n3's vote; as soon as n3 acknowledges entry i, n1 crashes.
  c.restart('n1');
  seize('n1');
  c.runUntil(() => (n1.core?.status().progress.n3?.match ?? 0) >= i, ELECTION);
  const onMajority = n1.core?.log.termAt(i) === a && c.node('n3').core?.log.termAt(i) === a;
  const committedThen = (n1.core?.commitIndex ?? 0) >= i;
  c.crash('n1');

  // 4. n2 returns and wins with n3's vote; n1 comes back; the client retries what was lost.
  c.restart('n2');
  seize('n2');
  c.restart('n1');
  for (const proposal of c.pendingProposals) c.attempt(proposal);
  c.settle();
  return { c, i, a, onMajority, committedThen };
}

test('§5.4.2 Figure 8: an old-term entry on a majority is not committed by counting replicas', (t) => {
  const { c, i, a, onMajority, committedThen } = figure8(false);
  t.true(onMajority, `n1 and n3 held entry ${i} of term ${a} when n1 crashed`);
  t.false(committedThen, 'yet n1 had not committed it');
  t.is(c.unconverged(), null, 'the cluster converged');
  const n3 = c.node('n3');
  t.is(n3.storage.termAt(i), c.node('n2').storage.termAt(i), `n3 took n2's entry at index ${i}`);
  t.not(n3.storage.termAt(i), a, 'the old-term entry was overwritten: it had never been committed');
  t.is(n3.sm.data.get('fig8'), 'from-n1', 'the client retry committed the write in a later term');
  // With the bug, the same schedule loses a committed entry, and the checker says so.
  const error = t.throws(() => figure8(true), { instanceOf: InvariantViolation });
  t.is(error?.invariant, 'leader-completeness');
});
