/**
 * Cluster identity (sidecar/src/node/cluster-id.ts): the id itself, the
 * transport's check of the id a peer call carries, and whole RaftNodes over
 * gRPC where one founder was given another bootstrap list or token.
 */
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { clusterIdOf, isClusterId, MAX_CLUSTER_TOKEN_LENGTH } from '../../sidecar/src/node/cluster-id.ts';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';
import { MemoryStateMachine } from '../../sidecar/src/node/memory-state-machine.ts';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { GrpcPeerError, GrpcTransport } from '../../sidecar/src/transport/grpc.ts';
import { encodeConfigChange } from '../../sidecar/src/core/config.ts';
import { EntryKind, MessageType, type Message } from '../../sidecar/src/core/types.ts';
import { isRaleError } from '../../sidecar/src/errors.ts';
import { client, memoryLog, startServer, waitFor } from './helpers.ts';

// ---------------------------------------------------------------- the id

test('the cluster id depends on the set of founding voters and the token, not on their order', (t) => {
  const id = clusterIdOf(['n1', 'n2', 'n3']);
  t.true(isClusterId(id), id);
  t.is(clusterIdOf(['n3', 'n1', 'n2']), id, 'order does not matter');
  t.is(clusterIdOf(['n1', 'n2', 'n3', 'n2']), id, 'duplicates do not matter');
  t.is(clusterIdOf(['n1', 'n2', 'n3'], ''), id, 'the default token is empty');
  t.not(clusterIdOf(['n1', 'n2']), id);
  t.not(clusterIdOf(['n1', 'n2', 'n4']), id);
  t.not(clusterIdOf(['n1', 'n2', 'n3'], 'prod'), id);
  t.not(clusterIdOf(['n1', 'n2', 'n3'], 'prod'), clusterIdOf(['n1', 'n2', 'n3'], 'staging'));
  // Lengths are part of what is hashed: joining ids differently gives another id.
  t.not(clusterIdOf(['n1n2']), clusterIdOf(['n1', 'n2']));
  t.not(clusterIdOf(['a'], 'b'), clusterIdOf(['b'], 'a'));
  // Stable across versions: a stored id must keep matching what a restarted founder computes.
  t.is(clusterIdOf(['n1', 'n2', 'n3']), clusterIdOf(['n1', 'n2', 'n3']));
});

test('the cluster id refuses an empty voter list and an oversized token, and isClusterId checks the form', (t) => {
  const empty = t.throws(() => clusterIdOf([]));
  t.true(isRaleError(empty) && empty.code === 'INVALID_ARGUMENT');
  t.regex(empty?.message ?? '', /founding voters/);
  t.notThrows(() => clusterIdOf(['n1'], 'x'.repeat(MAX_CLUSTER_TOKEN_LENGTH)));
  t.throws(() => clusterIdOf(['n1'], 'x'.repeat(MAX_CLUSTER_TOKEN_LENGTH + 1)), { message: /above 256/ });
  for (const bad of ['', '0123456789abcde', '0123456789abcdef0', '0123456789ABCDEF', 'g123456789abcdef', 12, null]) t.false(isClusterId(bad), String(bad));
  t.true(isClusterId('0123456789abcdef'));
});

// ---------------------------------------------------------------- the transport's check

function grpcCode(err: unknown): grpc.status | undefined {
  return err instanceof GrpcPeerError ? err.grpcCode : undefined;
}

/** A binding that keeps what was adopted. */
function binding(initial: string | null) {
  const state = { id: initial, adopted: [] as string[] };
  return {
    state,
    binding: {
      current: () => state.id,
      adopt: (id: string) => {
        state.adopted.push(id);
        state.id = id;
      },
    },
  };
}

const ID_A = clusterIdOf(['n1', 'n2', 'n3']);
const ID_B = clusterIdOf(['n1', 'n2', 'n3'], 'other');

test('a call that carries another cluster id is refused with FAILED_PRECONDITION, names both ids and is reported', async (t) => {
  const server = await startServer(t, 'b');
  server.transport.bindClusterId(binding(ID_A).binding);
  // A fresh link per call, so that each one reaches the server rather than failing fast on a link's backoff.
  const stranger = () => {
    const c = client(t, { chunkBytes: 1024 });
    c.bindClusterId(binding(ID_B).binding);
    return c.connect('a', 'b', server.address);
  };
  const heartbeat: Message = { type: MessageType.Heartbeat, from: 'a', to: 'b', term: 1, commit: 0, context: '' };
  const unary = await t.throwsAsync(stranger().invoke('propose', {}));
  const raft = await t.throwsAsync(stranger().invoke('raft', [heartbeat]));
  const chunked = await t.throwsAsync(stranger().invoke('propose', { data: new Uint8Array(4096) }));
  for (const [path, err] of Object.entries({ unary, raft, chunked })) {
    t.is(grpcCode(err), grpc.status.FAILED_PRECONDITION, `${path}: ${err?.message}`);
    t.regex(err?.message ?? '', new RegExp(`node a belongs to cluster ${ID_B}, this node \\(b\\) to cluster ${ID_A}`));
    t.regex(err?.message ?? '', /cluster\.bootstrap.*cluster\.token/);
  }
  t.deepEqual(server.received, [], 'the handler never ran');
  const reported = server.events.filter((e) => e.kind === 'cluster-mismatch');
  t.true(reported.length >= 1);
  t.like(reported[0], { claimedId: 'a' });
});

test('a call with the same cluster id, or with none (an older peer), passes; a node without one adopts the caller\'s', async (t) => {
  const server = await startServer(t, 'b');
  const ours = binding(ID_A);
  server.transport.bindClusterId(ours.binding);
  const member = client(t);
  member.bindClusterId(binding(ID_A).binding);
  t.like(await member.connect('a', 'b', server.address).invoke('propose', { x: 1 }), { from: 'a' });
  t.like(await client(t).connect('c', 'b', server.address).invoke('propose', { x: 2 }), { from: 'c' }, 'no id: accepted');
  t.deepEqual(ours.state.adopted, [], 'a node that has an id never adopts another');

  // A joining node: no id yet. The first peer to call gives it one; another id is refused from then on.
  const joiner = await startServer(t, 'd');
  const joining = binding(null);
  joiner.transport.bindClusterId(joining.binding);
  t.like(await client(t).connect('c', 'd', joiner.address).invoke('propose', {}), { from: 'c' }, 'a call without an id leaves it without one');
  t.is(joining.state.id, null);
  t.like(await member.connect('a', 'd', joiner.address).invoke('propose', {}), { from: 'a' });
  t.deepEqual(joining.state.adopted, [ID_A]);
  const stranger = client(t);
  stranger.bindClusterId(binding(ID_B).binding);
  const err = await t.throwsAsync(stranger.connect('x', 'd', joiner.address).invoke('propose', {}));
  t.is(grpcCode(err), grpc.status.FAILED_PRECONDITION, err?.message);
  t.deepEqual(joining.state.adopted, [ID_A]);
});

test('a joining node adopts no id from a caller that fails authentication, nor takes a malformed one', async (t) => {
  const joiner = await startServer(t, 'd', { clusterSecret: 'right secret' });
  const joining = binding(null);
  joiner.transport.bindClusterId(joining.binding);
  const intruder = client(t, { clusterSecret: 'wrong secret' });
  intruder.bindClusterId(binding(ID_B).binding);
  const refused = await t.throwsAsync(intruder.connect('x', 'd', joiner.address).invoke('propose', {}));
  t.is(grpcCode(refused), grpc.status.UNAUTHENTICATED, refused?.message);
  t.is(joining.state.id, null, 'an unauthenticated caller cannot give the node its id');

  const garbled = client(t, { clusterSecret: 'right secret' });
  garbled.bindClusterId({ current: () => 'NOT-A-CLUSTER-ID', adopt: () => {} });
  const malformed = await t.throwsAsync(garbled.connect('a', 'd', joiner.address).invoke('propose', {}));
  t.is(grpcCode(malformed), grpc.status.INVALID_ARGUMENT, malformed?.message);
  t.regex(malformed?.message ?? '', /malformed cluster id.*NOT-A-CLUSTER-ID.*16 hex digits/);
  t.is(joining.state.id, null);
  t.deepEqual(joiner.received, []);
});

// ---------------------------------------------------------------- whole nodes

interface Founder {
  id: string;
  bootstrap: string[];
  token?: string;
}

/** RaftNodes over gRPC, each with its own bootstrap list and token; every node knows every address. */
async function nodes(t: ExecutionContext, founders: Founder[], storages?: MemoryLogStorage[], stateMachines?: MemoryStateMachine[]) {
  const logs: string[] = [];
  const transports = founders.map(() => new GrpcTransport({ log: memoryLog(logs) }));
  await Promise.all(transports.map((tr) => tr.bind()));
  const addresses = Object.fromEntries(founders.map((f, i) => [f.id, (transports[i] as GrpcTransport).address]));
  const logStorages = storages ?? founders.map(() => new MemoryLogStorage());
  const machines = stateMachines ?? founders.map(() => new MemoryStateMachine());
  const raftNodes = founders.map(
    (f, i) =>
      new RaftNode({
        id: f.id,
        log: logStorages[i] as MemoryLogStorage,
        stateMachine: machines[i] as MemoryStateMachine,
        transport: transports[i] as GrpcTransport,
        ...(f.bootstrap.length > 0 ? { bootstrap: f.bootstrap } : {}),
        ...(f.token !== undefined ? { clusterToken: f.token } : {}),
        addresses,
        tickMs: 20,
        core: { electionTicks: 5, heartbeatTicks: 1 },
        seed: i + 1,
      }),
  );
  t.teardown(async () => {
    await Promise.all(raftNodes.map((n) => n.stop().catch(() => {})));
    await Promise.all(transports.map((tr) => tr.close()));
  });
  return { nodes: raftNodes, transports, addresses, storages: logStorages, logs };
}

test('a founder given another token is refused by the others, who elect a leader and commit without it', async (t) => {
  const ids = ['n1', 'n2', 'n3'];
  const { nodes: [n1, n2, n3], logs } = await nodes(t, [
    { id: 'n1', bootstrap: ids },
    // Listed in another order: the same cluster.
    { id: 'n2', bootstrap: ['n3', 'n2', 'n1'] },
    { id: 'n3', bootstrap: ids, token: 'another cluster' },
  ]);
  const [a, b, c] = [n1, n2, n3] as [RaftNode, RaftNode, RaftNode];
  await Promise.all([a.start(), b.start(), c.start()]);
  t.is(a.clusterId, clusterIdOf(ids));
  t.is(b.clusterId, a.clusterId, 'the order of the bootstrap list does not matter');
  t.is(c.clusterId, clusterIdOf(ids, 'another cluster'));

  const leader = await waitFor('a leader among n1 and n2', () => [a, b].find((n) => n.isLeader()));
  const outcome = await leader.command({ op: 'set', key: 'k', value: 'v' });
  t.like(outcome, { status: 'ok' });
  // Give n3 time to hear (and refuse) heartbeats and to campaign on its own.
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.false(c.isLeader(), 'n3 cannot win votes from a cluster it does not belong to');
  t.is(c.status().lastIndex, 1, 'n3 holds only its own first entry: nothing was appended to it');
  t.is(a.status().term, leader.status().term);
  t.true(
    logs.some((l) => /refused a call to .*belongs to cluster/.test(l)),
    'the refusal is logged where the operator looks',
  );
});

test('a node that joins adopts the cluster id from the leader and keeps it across a restart', async (t) => {
  const ids = ['n1', 'n2', 'n3'];
  const storages = [new MemoryLogStorage(), new MemoryLogStorage(), new MemoryLogStorage(), new MemoryLogStorage()];
  const cluster = await nodes(
    t,
    [...ids.map((id) => ({ id, bootstrap: ids })), { id: 'n4', bootstrap: [] }],
    storages,
  );
  const [n1, n2, n3, n4] = cluster.nodes as [RaftNode, RaftNode, RaftNode, RaftNode];
  await Promise.all([n1.start(), n2.start(), n3.start(), n4.start()]);
  t.is(n4.clusterId, null, 'a node that joins has no id before a peer calls it');
  const adopted: string[] = [];
  n4.on('cluster-id', (id: string, how: string) => adopted.push(`${how}:${id}`));
  const leader = await waitFor('a leader', () => [n1, n2, n3].find((n) => n.isLeader()));
  const added = await leader.changeMembership({ type: 'addLearner', node: 'n4', context: cluster.addresses.n4 as string });
  t.like(added, { status: 'ok' });
  await waitFor('n4 to catch up', () => n4.status().applied >= added.index);
  t.is(n4.clusterId, clusterIdOf(ids));
  t.deepEqual(adopted, [`adopted:${clusterIdOf(ids)}`]);
  await waitFor('n4 to store the id', async () => (await storages[3]?.clusterId()) === clusterIdOf(ids));

  // A restart: the id comes back from storage, before any peer calls.
  await n4.stop();
  const restarted = new RaftNode({
    id: 'n4',
    log: (storages[3] as MemoryLogStorage).clone(),
    stateMachine: new MemoryStateMachine(),
    transport: new GrpcTransport({ log: memoryLog(cluster.logs) }),
    addresses: cluster.addresses,
  });
  await restarted.start();
  t.teardown(() => restarted.stop());
  t.is(restarted.clusterId, clusterIdOf(ids));
});

test('a database written before cluster ids existed gets its id from the log\'s first entry', async (t) => {
  // The first entry as earlier versions wrote it: voters in the order they were configured.
  const storage = new MemoryLogStorage();
  await storage.persist({
    snapshot: null,
    entries: [{ index: 1, term: 1, kind: EntryKind.Config, data: encodeConfigChange({ type: 'bootstrap', voters: ['n2', 'n1', 'n3'] }) }],
    hardState: { term: 1, vote: null, commit: 1 },
  });
  const logs: string[] = [];
  const transport = new GrpcTransport({ listen: { host: '127.0.0.1', port: 0 }, log: memoryLog(logs) });
  const node = new RaftNode({ id: 'n1', log: storage, stateMachine: new MemoryStateMachine(), transport, bootstrap: ['n1', 'n2', 'n3'], clusterToken: 'tok' });
  t.teardown(async () => {
    await node.stop();
    await transport.close();
  });
  await node.start();
  t.is(node.clusterId, clusterIdOf(['n1', 'n2', 'n3'], 'tok'));
  t.is(await storage.clusterId(), node.clusterId, 'and stores it');
  t.is(node.status().lastIndex, 1, 'the bootstrap list given now changes nothing in the log');
});

test('a joining node whose storage fails to keep the adopted id keeps it and writes it again until it is stored', async (t) => {
  const ids = ['n1', 'n2', 'n3'];
  let failures = 1;
  class FlakyStorage extends MemoryLogStorage {
    override async saveClusterId(id: string): Promise<void> {
      if (failures-- > 0) throw new Error('disk full');
      return super.saveClusterId(id);
    }
  }
  const flaky = new FlakyStorage();
  const storages = [new MemoryLogStorage(), new MemoryLogStorage(), new MemoryLogStorage(), flaky];
  const cluster = await nodes(t, [...ids.map((id) => ({ id, bootstrap: ids })), { id: 'n4', bootstrap: [] }], storages);
  const [n1, n2, n3, n4] = cluster.nodes as [RaftNode, RaftNode, RaftNode, RaftNode];
  const errors: string[] = [];
  n4.on('error', (err: Error) => errors.push(err.message));
  const adopted: string[] = [];
  n4.on('cluster-id', (id: string) => adopted.push(id));
  await Promise.all([n1.start(), n2.start(), n3.start(), n4.start()]);
  const leader = await waitFor('a leader', () => [n1, n2, n3].find((n) => n.isLeader()));
  const added = await leader.changeMembership({ type: 'addLearner', node: 'n4', context: cluster.addresses.n4 as string });
  await waitFor('n4 to catch up', () => n4.status().applied >= added.index);
  await waitFor('n4 to store the id after the failed write', async () => (await flaky.clusterId()) === clusterIdOf(ids));
  t.is(n4.clusterId, clusterIdOf(ids));
  t.true(errors.some((m) => /storing the cluster id [0-9a-f]{16} failed .*disk full/.test(m)), errors.join('\n'));
  t.deepEqual(adopted, [clusterIdOf(ids)], 'adopted once');
});

test('a cluster upgraded after its logs were compacted has no id until a DBA stores one on one node; the others adopt it', async (t) => {
  const ids = ['n1', 'n2', 'n3'];
  // Each node as an earlier version left it: the bootstrap entry and a no-op, then a snapshot past both.
  const storages: MemoryLogStorage[] = [];
  const machines: MemoryStateMachine[] = [];
  for (let k = 0; k < ids.length; k++) {
    const log = new MemoryLogStorage();
    await log.persist({
      snapshot: null,
      entries: [
        { index: 1, term: 1, kind: EntryKind.Config, data: encodeConfigChange({ type: 'bootstrap', voters: ['n3', 'n1', 'n2'] }) },
        { index: 2, term: 2, kind: EntryKind.Noop, data: new Uint8Array(0) },
      ],
      hardState: { term: 2, vote: null, commit: 2 },
    });
    const machine = new MemoryStateMachine();
    const meta = { index: 2, term: 2, config: { voters: ids, learners: [] } };
    const data = (await machine.snapshot()).data;
    await log.saveSnapshot({ meta, data });
    await machine.restore(meta, data);
    storages.push(log);
    machines.push(machine);
  }
  // What rale.set_cluster_id does on node n1 before its sidecar restarts.
  await storages[0]!.saveClusterId('00aa11bb22cc33dd');
  const cluster = await nodes(t, ids.map((id) => ({ id, bootstrap: [] })), storages, machines);
  const [n1, n2, n3] = cluster.nodes as [RaftNode, RaftNode, RaftNode];
  await Promise.all([n1.start(), n2.start(), n3.start()]);
  t.is(n1.clusterId, '00aa11bb22cc33dd', 'read from storage at start');
  t.is(n2.clusterId, null, 'the first entry was compacted away: nothing to derive');
  const leader = await waitFor('a leader', () => [n1, n2, n3].find((n) => n.isLeader()));
  // As the docs say: make n1 lead, so that it calls every member (a follower may call no one for long).
  if (leader !== n1) leader.transferLeadership('n1');
  await waitFor('n1 to lead', () => n1.isLeader());
  t.like(await n1.command({ op: 'set', key: 'k', value: 1 }), { status: 'ok' });
  // n1's streams and calls carry the id; n2 and n3, having none, adopt it.
  await waitFor('n2 and n3 to adopt the id', () => n2.clusterId !== null && n3.clusterId !== null, 15_000);
  t.is(n2.clusterId, '00aa11bb22cc33dd');
  t.is(n3.clusterId, '00aa11bb22cc33dd');
  await waitFor('the id stored on n2 and n3', async () => (await storages[1]!.clusterId()) === '00aa11bb22cc33dd' && (await storages[2]!.clusterId()) === '00aa11bb22cc33dd');
});
