/**
 * Regressions for bugs the simulator found in the core. Each has a targeted,
 * readable scenario and the seeds that first exposed it (seeds are replayable
 * with the command in their failure message).
 *
 * 1. sidecar/src/core/raft.ts, handleHeartbeatResponse: in replicate state a
 *    lost Append was never sent again. Nothing times out in replicate state,
 *    and heartbeat responses only re-armed probes, so once the in-flight
 *    window was full (or simply when no newer entry followed) the follower
 *    stayed behind for good and, with two such followers, nothing committed.
 *    Fixed as etcd does: a heartbeat response from a live follower frees one
 *    window slot and lets an Append go out even when it carries no entry.
 */
import test from 'ava';
import { MessageType, ProgressState } from '../../sidecar/src/core/index.ts';
import { Cluster } from '../sim/cluster.ts';
import { runScenario, type MixName } from '../sim/scenario.ts';

test('a lost Append in replicate state is sent again (the follower does not stall)', (t) => {
  const c = new Cluster({ seed: 3, voters: 3, core: { electionTicks: 10, heartbeatTicks: 1, maxInflight: 1 } });
  c.elect('n1');
  const warmUp = c.propose('k', 'v0');
  t.true(c.runUntil(() => warmUp.done && c.node('n2').sm.applied === c.node('n1').core?.commitIndex, 10));
  t.is(c.node('n1').core?.status().progress.n2?.state, ProgressState.Replicate);
  // Lose the Append that carries the next entry, once per follower.
  const index = (c.node('n1').core?.log.lastIndex ?? 0) + 1;
  const lostTo = new Set<string>();
  c.network.dropFilters.push((m) => {
    if (m.type !== MessageType.Append || lostTo.has(m.to) || !m.entries.some((e) => e.index === index)) return false;
    lostTo.add(m.to);
    return true;
  });
  const p = c.propose('k', 'v1');
  // No newer entry follows: only the heartbeat rounds can get it across.
  t.true(c.runUntil(() => p.done, 5), 'committed within a few heartbeats');
  t.deepEqual([...lostTo].sort(), ['n2', 'n3'], 'the Append to each follower was lost');
  t.true(c.settle(30));
});

const FOUND: Array<{ seed: number; nodes: number; mix: MixName }> = [
  { seed: 7, nodes: 3, mix: 'lossy' },
  { seed: 13, nodes: 3, mix: 'partitions' },
  { seed: 8, nodes: 5, mix: 'lossy' },
  { seed: 6, nodes: 7, mix: 'membership' },
];

for (const { seed, nodes, mix } of FOUND) {
  test(`seed ${seed} (${nodes} nodes, ${mix}), which exposed the replicate stall, converges`, (t) => {
    const result = runScenario({ seed, nodes, steps: 3000, mix });
    t.is(result.violation, null, result.replay);
  });
}
