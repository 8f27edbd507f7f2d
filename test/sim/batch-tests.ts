/**
 * The two tests every seeded batch file declares: all scenarios hold every
 * invariant and converge after the heal, and the batch really exercised the
 * features it is meant to (so a quiet scheduler cannot pass vacuously).
 */
import test from 'ava';
import { describeFailures, runBatch } from './batch.ts';

export function declareSeedBatch(options: { nodes: number; first: number; count: number; steps: number }): void {
  const summary = runBatch(options);
  const voters = `${options.nodes} voters`;

  test(`${options.count} scenarios with ${voters} hold every invariant and converge after the heal`, (t) => {
    t.log(`mixes: ${JSON.stringify(summary.byMix)}; slowest convergence: ${summary.slowestConvergence.toFixed(1)} election timeouts`);
    if (summary.failures.length > 0) t.fail(`${summary.failures.length} of ${summary.scenarios} failed:\n${describeFailures(summary.failures)}`);
    else t.pass();
  });

  test(`the ${options.nodes}-voter scenarios exercise what they are meant to`, (t) => {
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
}
