import test, { type ExecutionContext } from 'ava';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';
import { MemoryStateMachine } from '../../sidecar/src/node/memory-state-machine.ts';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { GrpcTransport, type GrpcTransportOptions } from '../../sidecar/src/transport/grpc.ts';
import { memoryLog, waitFor } from './helpers.ts';

interface Cluster {
  ids: string[];
  nodes: RaftNode[];
  machines: MemoryStateMachine[];
  transports: GrpcTransport[];
  logs: string[];
}

/** Three RaftNodes, each with its own GrpcTransport bound first so that every node knows every address. */
async function cluster(t: ExecutionContext, options: GrpcTransportOptions = {}, snapshotEvery = 0): Promise<Cluster> {
  const ids = ['n1', 'n2', 'n3'];
  const logs: string[] = [];
  const transports = ids.map(() => new GrpcTransport({ clusterSecret: 'cluster secret', log: memoryLog(logs), ...options }));
  await Promise.all(transports.map((tr) => tr.bind()));
  const addresses = Object.fromEntries(ids.map((id, i) => [id, (transports[i] as GrpcTransport).address]));
  const machines = ids.map(() => new MemoryStateMachine());
  const nodes = ids.map(
    (id, i) =>
      new RaftNode({
        id,
        log: new MemoryLogStorage(),
        stateMachine: machines[i] as MemoryStateMachine,
        transport: transports[i] as GrpcTransport,
        bootstrap: ids,
        addresses,
        tickMs: 20,
        core: { electionTicks: 5, heartbeatTicks: 1 },
        seed: i + 1,
        snapshotEvery,
      }),
  );
  t.teardown(async () => {
    await Promise.all(nodes.map((n) => n.stop().catch(() => {})));
    await Promise.all(transports.map((tr) => tr.close()));
  });
  return { ids, nodes, machines, transports, logs };
}

test('three RaftNodes over gRPC elect a leader and apply commands, forwarded ones included', async (t) => {
  const { nodes, machines } = await cluster(t);
  await Promise.all(nodes.map((n) => n.start()));
  const leader = await waitFor('a leader', () => nodes.find((n) => n.isLeader()));
  const follower = nodes.find((n) => n !== leader) as RaftNode;
  await waitFor('the follower to know the leader', () => follower.leader === leader.id);

  const direct = await leader.command({ op: 'set', key: 'x', value: 1 });
  t.like(direct, { status: 'ok', result: { ok: true } });
  // A follower forwards over the 'propose' call.
  const forwarded = await follower.command({ op: 'cas', key: 'x', expected: 1, value: 2 });
  t.like(forwarded, { status: 'ok', result: { ok: true } });
  // And appends over 'submit'.
  const [position] = await follower.submit([new TextEncoder().encode(JSON.stringify({ id: 'sub-1', command: { op: 'set', key: 'y', value: 'z' } }))]);
  const submitted = position?.index ?? 0;
  t.true(submitted > forwarded.index);

  await waitFor('every node to apply everything', () => nodes.every((n) => n.status().applied >= submitted));
  for (const m of machines) {
    t.deepEqual(
      [...m.kv].sort(([a], [b]) => a.localeCompare(b)),
      [
        ['x', 2],
        ['y', 'z'],
      ],
    );
  }
  t.is(nodes.filter((n) => n.isLeader()).length, 1);
});

test('a node that starts late catches up through a chunked snapshot over gRPC', async (t) => {
  // Small chunks so that the snapshot (a few tens of KiB) takes the chunked path.
  const { nodes, machines, transports } = await cluster(t, { chunkBytes: 4096 }, 10);
  const [n1, n2, n3] = nodes as [RaftNode, RaftNode, RaftNode];
  await Promise.all([n1.start(), n2.start()]);
  const leader = await waitFor('a leader among n1 and n2', () => [n1, n2].find((n) => n.isLeader()));
  const value = 'v'.repeat(1000);
  for (let i = 0; i < 40; i++) await leader.command({ op: 'set', key: `k${i}`, value });
  // The log is compacted: n3 can only be brought up to date by a snapshot.
  await n3.start();
  const commit = leader.status().commit;
  await waitFor('n3 to catch up', () => n3.status().applied >= commit, 15_000);
  t.is(machines[2]?.kv.size, 40);
  t.is(machines[2]?.kv.get('k39'), value);
  t.true((transports[2] as GrpcTransport).stats().chunkedCalls >= 1, 'the snapshot came through ChunkedCall');
  await leader.command({ op: 'set', key: 'after', value: 1 });
  await waitFor('n3 to apply new entries', () => machines[2]?.kv.get('after') === 1);
});
