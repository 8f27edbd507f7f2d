/**
 * The checks have teeth: with each of the core's FaultInjection switches on
 * (and a broken dedupe table), the seeded scenarios find a violation, and the
 * invariant that fires is the one the bug breaks. Each search stops at the
 * first failing seed; the same seed without the fault holds.
 */
import test from 'ava';
import type { FaultInjection } from '../../sidecar/src/core/index.ts';
import { runScenario, type MixName, type ScenarioResult } from '../sim/scenario.ts';
import type { InvariantName } from '../sim/violation.ts';

interface Hunt {
  coreFaults?: FaultInjection;
  ignoreDedupe?: boolean;
  nodes: number;
  mix?: MixName;
  seeds: number;
  expect: InvariantName;
}

function hunt(h: Hunt): { found: ScenarioResult | null; tried: number } {
  for (let seed = 1; seed <= h.seeds; seed++) {
    const result = runScenario({ seed, nodes: h.nodes, steps: 3000, mix: h.mix, coreFaults: h.coreFaults, ignoreDedupe: h.ignoreDedupe });
    if (!result.ok) return { found: result, tried: seed };
  }
  return { found: null, tried: h.seeds };
}

function check(t: import('ava').ExecutionContext, h: Hunt): void {
  const { found, tried } = hunt(h);
  if (found === null) {
    t.fail(`no violation in ${tried} seeds`);
    return;
  }
  t.log(`seed ${found.seed} (tried ${tried}): ${found.violation?.message ?? ''}`);
  t.log(`replay: ${found.replay}`);
  t.is(found.violation?.invariant, h.expect);
  const clean = runScenario({ seed: found.seed, nodes: h.nodes, steps: 3000, mix: found.mix });
  t.true(clean.ok, `the same seed without the fault holds (${clean.violation?.message ?? ''})`);
}

test('voteTwice (a second vote in one term) breaks election safety', (t) => {
  check(t, { coreFaults: { voteTwice: true }, nodes: 3, seeds: 100, expect: 'election-safety' });
});

test('voteTwice is caught with 5 nodes too', (t) => {
  check(t, { coreFaults: { voteTwice: true }, nodes: 5, seeds: 100, expect: 'election-safety' });
});

test('skipVoteLogCheck (votes for stale logs) breaks leader completeness', (t) => {
  check(t, { coreFaults: { skipVoteLogCheck: true }, nodes: 3, seeds: 100, expect: 'leader-completeness' });
});

test('skipVoteLogCheck is caught with 7 nodes too', (t) => {
  check(t, { coreFaults: { skipVoteLogCheck: true }, nodes: 7, seeds: 100, expect: 'leader-completeness' });
});

test('commitOldTerms (counting replicas of old-term entries) breaks leader completeness in the Figure 8 mix', (t) => {
  check(t, { coreFaults: { commitOldTerms: true }, nodes: 3, mix: 'figure8', seeds: 100, expect: 'leader-completeness' });
});

test('commitOldTerms is caught with 5 nodes too', (t) => {
  check(t, { coreFaults: { commitOldTerms: true }, nodes: 5, mix: 'figure8', seeds: 100, expect: 'leader-completeness' });
});

test('countUnpersistedSelf (a leader counting entries it is still persisting, while its Appends leave early) breaks leader completeness with crashes', (t) => {
  check(t, { coreFaults: { countUnpersistedSelf: true }, nodes: 3, mix: 'crashes', seeds: 400, expect: 'leader-completeness' });
});

test('a state machine that ignores its dedupe table applies retried proposals twice', (t) => {
  check(t, { ignoreDedupe: true, nodes: 3, seeds: 50, expect: 'at-most-once' });
});

test('the liveness check fires when the cluster cannot converge within the bound', (t) => {
  // A bound of zero election timeouts: work left at the heal (there usually is) is a liveness failure.
  const results = [1, 2, 3, 4, 5].map((seed) => runScenario({ seed, nodes: 3, steps: 3000, mix: 'chaos', livenessTimeouts: 0 }));
  t.deepEqual(results.filter((r) => r.violation !== null && r.violation.invariant !== 'liveness'), [], 'nothing else fired');
  const caught = results.find((r) => r.violation?.invariant === 'liveness');
  t.truthy(caught);
  t.regex(caught?.violation?.message ?? '', /not converged 0 ticks \(0 election timeouts\) after the heal: /);
});
