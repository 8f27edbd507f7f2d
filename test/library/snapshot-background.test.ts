/**
 * Snapshots are taken off the Ready loop (RaftNode.maybeSnapshot): while a
 * node's state machine takes seconds to produce its image, the cluster keeps
 * its leader (heartbeats go on) and keeps committing; the snapshot is then
 * saved and the log compacted. Regression: under the benchmark's load every
 * node snapshotted at about the same index with its Ready loop waiting, no
 * heartbeat went out, and each snapshot cost an election.
 */
import test from 'ava';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';
import { MemoryStateMachine } from '../../sidecar/src/node/memory-state-machine.ts';
import { MemoryNetwork } from '../../sidecar/src/node/transport.ts';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { waitFor } from '../transport/helpers.ts';

/** A state machine whose snapshot takes `delayMs`, as reading every table of a busy database can. */
class SlowSnapshotMachine extends MemoryStateMachine {
  snapshotsStarted = 0;
  constructor(private readonly delayMs: number) {
    super();
  }
  override async snapshot(): Promise<{ index: number; term: number; data: Uint8Array }> {
    this.snapshotsStarted++;
    const image = await super.snapshot();
    await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    return image;
  }
}

test('a slow snapshot holds up neither heartbeats nor commits, and the log is compacted after it', async (t) => {
  const ids = ['n1', 'n2', 'n3'];
  const network = new MemoryNetwork();
  const tickMs = 20;
  const electionTicks = 10; // 200 ms: far below the 1.5 s snapshot
  const machines = ids.map(() => new SlowSnapshotMachine(1_500));
  const logs = ids.map(() => new MemoryLogStorage());
  const nodes = ids.map(
    (id, i) =>
      new RaftNode({
        id,
        log: logs[i] as MemoryLogStorage,
        stateMachine: machines[i] as SlowSnapshotMachine,
        transport: network.transport(),
        bootstrap: ids,
        tickMs,
        core: { electionTicks, heartbeatTicks: 1 },
        seed: i + 1,
        snapshotEvery: 20,
      }),
  );
  t.teardown(() => Promise.all(nodes.map((n) => n.stop().catch(() => {}))));
  await Promise.all(nodes.map((n) => n.start()));
  const leader = await waitFor('a leader', () => nodes.find((n) => n.isLeader()));
  const term = leader.status().term;

  // Past the threshold: every node starts its (slow) snapshot at about the same time.
  for (let k = 0; k < 25; k++) await leader.command({ op: 'set', key: `k${k}`, value: k });
  await waitFor('every node to start a snapshot', () => machines.every((m) => m.snapshotsStarted > 0));

  // While they run, commands commit promptly and nobody campaigns.
  const slowest = { ms: 0 };
  for (let k = 0; k < 20; k++) {
    const from = Date.now();
    const result = await leader.command({ op: 'set', key: `during${k}`, value: k });
    t.is(result.status, 'ok');
    slowest.ms = Math.max(slowest.ms, Date.now() - from);
    await new Promise((r) => setTimeout(r, 25));
  }
  t.true(slowest.ms < 1_000, `a command took ${slowest.ms} ms while snapshots ran`);
  for (const n of nodes) t.is(n.status().term, term, `${n.id} stayed in term ${term}`);
  t.true(leader.isLeader());

  // Then the snapshots land and the logs are compacted.
  await waitFor('every log compacted', () => nodes.every((n) => n.status().firstIndex > 1), 10_000);
  for (const log of logs) t.true(((await log.latestSnapshot())?.meta.index ?? 0) >= 20);
});
