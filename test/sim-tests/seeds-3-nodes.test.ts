/**
 * CI: 420 seeded whole-cluster scenarios with 3 voters (plus two spare nodes),
 * spread evenly over the fault mixes (seed k runs mix k mod 7). Each checks
 * every invariant after every step, then heals and requires convergence
 * within the liveness bound. A failure prints the command that replays it.
 */
import test from 'ava';
import { describeFailures, runBatch } from '../sim/batch.ts';

const summary = runBatch({ nodes: 3, first: 1, count: 420, steps: 3000 });

test('420 scenarios with 3 voters hold every invariant and converge after the heal', (t) => {
  t.log(`mixes: ${JSON.stringify(summary.byMix)}; slowest convergence: ${summary.slowestConvergence.toFixed(1)} election timeouts`);
  if (summary.failures.length > 0) t.fail(`${summary.failures.length} of ${summary.scenarios} failed:\n${describeFailures(summary.failures)}`);
  else t.pass();
});

test('the 3-voter scenarios exercise what they are meant to', (t) => {
  const { totals } = summary;
  t.log(JSON.stringify(totals));
  t.true(totals.leadersElected > summary.scenarios, 'elections beyond the first');
  t.true(totals.crashes > 0, 'crashes and restarts');
  t.true(totals.retries > 0 && totals.duplicatesSkipped > 0, 'client retries, deduplicated by the state machines');
  t.true(totals.readsServed > 0, 'linearizable reads');
  t.true(totals.snapshotsTaken > 0 && totals.snapshotsInstalled > 0, 'snapshots taken and installed on lagging followers');
  t.true(totals.fetches > 0, 'asynchronous log fetches');
  t.true(totals.membershipChanges > 0 && totals.leaderRemovals > 0, 'membership changes, including removing the leader');
  t.true(totals.transfers > 0, 'leadership transfers');
});
