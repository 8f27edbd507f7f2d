/**
 * Peer authorization against membership in a real sidecar (in-process, on
 * embedded PostgreSQL; the other members are RaftNodes on in-memory storage
 * over rale's gRPC transport):
 *
 * A member that was down while the membership changed restarts with a log
 * whose configuration does not name the current leader yet (it was added
 * while the member was down). It must accept that leader's appends, or it
 * never learns the configuration that names it, and stays behind for good.
 * A node this member has seen removed stays refused.
 */
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { freePort, startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { validateConfig } from '../../sidecar/src/process/config.ts';
import { createLogger } from '../../sidecar/src/process/logger.ts';
import { Sidecar } from '../../sidecar/src/process/sidecar.ts';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { MemoryStateMachine } from '../../sidecar/src/node/memory-state-machine.ts';
import { GrpcTransport } from '../../sidecar/src/transport/grpc.ts';
import type { NodeId } from '../../sidecar/src/core/types.ts';
import type { Transport } from '../../sidecar/src/node/transport.ts';
import { waitFor as poll } from './support.ts';

/** These scenarios run three to four nodes: a longer budget than the shared default. */
const waitFor = <T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> => poll(what, probe, 20_000, 20);

const SECRET = 'a-test-secret-of-enough-length';
let server: PostgresInstance;
const logLines: string[] = [];

test.before(async () => {
  server = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-peer-auth-${process.pid}`), persistent: false });
});

test.after.always(async () => {
  await server?.stop();
});

interface MemoryMember {
  id: NodeId;
  transport: GrpcTransport;
  address: string;
  node: RaftNode;
}

/** A member on in-memory storage; its transport is bound at once so that its address is known. */
async function memoryMember(id: NodeId): Promise<Omit<MemoryMember, 'node'> & { node: RaftNode | null }> {
  const transport = new GrpcTransport({ listen: { host: '127.0.0.1', port: 0 }, clusterSecret: SECRET, log: () => {} });
  const port = await transport.bind();
  return { id, transport, address: `127.0.0.1:${port}`, node: null };
}

/** Messages to the members named here are dropped (as by a partition). */
const cut = new Set<NodeId>();

function startMember(m: { id: NodeId; transport: GrpcTransport; address: string; node: RaftNode | null }, addresses: Record<NodeId, string>, bootstrap?: NodeId[]): MemoryMember {
  const base = m.transport;
  const transport: Transport = {
    listen: (id, handler) => base.listen(id, handler),
    close: () => base.close(),
    connect: (localId, peer, address) => {
      const inner = base.connect(localId, peer, address);
      return {
        invoke: (type, args) => (cut.has(peer) ? Promise.reject(new Error(`${peer} is cut off`)) : inner.invoke(type, args)),
        close: () => inner.close(),
      };
    },
  };
  m.node = new RaftNode({
    id: m.id,
    log: new MemoryLogStorage(),
    stateMachine: new MemoryStateMachine(),
    transport,
    addresses,
    tickMs: 20,
    core: { electionTicks: 10, heartbeatTicks: 1 },
    ...(bootstrap !== undefined ? { bootstrap } : {}),
  });
  return m as MemoryMember;
}

function leaderOf(members: MemoryMember[]): MemoryMember | undefined {
  return members.find((m) => {
    try {
      return m.node.isLeader();
    } catch {
      return false;
    }
  });
}

test.serial('a member restarting behind a membership change accepts the leader added meanwhile', async (t) => {
  const url = await server.createDatabase('behind');
  const sPort = await freePort();
  const sAddress = `127.0.0.1:${sPort}`;
  const members: MemoryMember[] = [];
  let sidecar: Sidecar | null = null;
  t.teardown(async () => {
    await sidecar?.stop();
    for (const m of members) await m.node.stop().catch(() => {});
    for (const m of members) await m.transport.close();
  });

  // a, b and c: in memory; s: the sidecar. Transports are bound first, so that every address is known.
  const [pa, pb, pc] = await Promise.all([memoryMember('a'), memoryMember('b'), memoryMember('c')]);
  const addresses = { a: pa.address, b: pb.address, c: pc.address, s: sAddress };
  const a = startMember(pa, addresses, ['a', 'c', 's']);
  const c = startMember(pc, addresses, ['a', 'c', 's']);
  const b = startMember(pb, addresses);
  members.push(a, c, b);
  const config = (peers: MemoryMember[]) =>
    validateConfig({
      nodeId: 's',
      databaseUrl: url,
      peer: { listen: sAddress, secret: SECRET },
      api: { listen: '127.0.0.1:0' },
      cluster: { bootstrap: ['a', 'c', 's'], peers: Object.fromEntries(peers.map((m) => [m.id, { peer: m.address }])) },
      raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 1, requestTimeoutMs: 5000 },
      logLevel: 'debug',
    });
  const log = createLogger('s', 'debug', (line) => logLines.push(line));

  // The founding cluster: a, c, s.
  await a.node.start();
  await c.node.start();
  sidecar = await Sidecar.start(config([a, c]), log);
  await waitFor('a leader', () => leaderOf([a, c]) ?? (sidecar?.node?.raft.isLeader() ? true : undefined));
  if (sidecar.node?.raft.isLeader()) {
    sidecar.node.raft.transferLeadership('a');
    await waitFor('a to lead', () => (a.node.isLeader() ? true : undefined));
  }
  await waitFor('s to hear from the leader', () => (sidecar?.node?.raft.status().leader ? true : undefined));

  // s goes down. Meanwhile b joins, takes over, and a is removed.
  await sidecar.stop();
  sidecar = null;
  await b.node.start();
  const first = await waitFor('a leader among a and c', () => leaderOf([a, c]));
  await first.node.changeMembership({ type: 'addLearner', node: 'b', context: b.address });
  await first.node.changeMembership({ type: 'promote', node: 'b' });
  first.node.transferLeadership('b');
  await waitFor('b to lead', () => (b.node.isLeader() ? true : undefined));
  await b.node.changeMembership({ type: 'remove', node: 'a' });
  await b.node.command({ op: 'set', key: 'after-change', value: 1 });
  await a.node.stop();
  t.deepEqual(b.node.status().config.voters.sort(), ['b', 'c', 's']);

  // s restarts: its log names a, c, s; b leads. (Its configuration now lists b's address too.)
  // b reaches it only once it runs, not while it starts.
  cut.add('s');
  sidecar = await Sidecar.start(config([a, c, b]), log);
  const restarted = sidecar;
  t.deepEqual(restarted.node?.raft.status().config.voters.sort(), ['a', 'c', 's'], 'its log does not name b yet');
  cut.delete('s');
  const target = b.node.status().commit;
  await waitFor(`s to catch up to index ${target} from leader b`, () => {
    const s = restarted.node?.raft.status();
    return s !== undefined && s.applied >= target && s.config.voters.includes('b') ? true : undefined;
  });
  t.deepEqual(restarted.node?.raft.status().config.voters.sort(), ['b', 'c', 's']);
  t.false(
    logLines.some((l) => /node b is not (allowed|a member)/.test(l)),
    'the leader was never refused',
  );
});

test.serial('a member removed while its raft stream is open can no longer append to this node', async (t) => {
  const url = await server.createDatabase('removed_stream');
  const sPort = await freePort();
  const sAddress = `127.0.0.1:${sPort}`;
  const [pb, impostorSide] = await Promise.all([memoryMember('b'), memoryMember('d')]);
  const addresses = { b: pb.address, s: sAddress, d: impostorSide.address };
  const b = startMember(pb, addresses, ['b', 's']);
  // d: a member that only this test speaks for, over its own link to s.
  const d = new GrpcTransport({ clusterSecret: SECRET, log: () => {} });
  let sidecar: Sidecar | null = null;
  t.teardown(async () => {
    await sidecar?.stop();
    await b.node.stop().catch(() => {});
    await b.transport.close();
    await impostorSide.transport.close();
    await d.close();
  });
  await b.node.start();
  sidecar = await Sidecar.start(
    validateConfig({
      nodeId: 's',
      databaseUrl: url,
      peer: { listen: sAddress, secret: SECRET },
      api: { listen: '127.0.0.1:0' },
      cluster: { bootstrap: ['b', 's'], peers: { b: { peer: b.address } } },
      raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 1, requestTimeoutMs: 5000 },
      logLevel: 'debug',
    }),
    createLogger('s', 'debug', (line) => logLines.push(line)),
  );
  const s = sidecar;
  await waitFor('b to lead', () => {
    if (s.node?.raft.isLeader()) s.node.raft.transferLeadership('b');
    return b.node.isLeader() && s.node?.raft.status().leader === 'b' ? true : undefined;
  });
  await b.node.changeMembership({ type: 'addLearner', node: 'd', context: impostorSide.address });
  await waitFor('s to know d as a learner', () => (s.node?.raft.status().config.learners.includes('d') ? true : undefined));

  // d opens its raft stream to s while it is a member (a stale message s ignores).
  const link = d.connect('d', 's', sAddress);
  await link.invoke('raft', [{ type: 'heartbeatResp', from: 'd', to: 's', term: 0, context: '' }]);

  await b.node.changeMembership({ type: 'remove', node: 'd' });
  await waitFor('s to see d removed', () => (s.node?.raft.status().config.learners.includes('d') === false ? true : undefined));
  const before = s.node?.raft.status() as ReturnType<RaftNode['status']>;

  // On the same stream, d now claims leadership of a later term.
  const attempt = link.invoke('raft', [
    { type: 'append', from: 'd', to: 's', term: before.term + 5, prevIndex: before.lastIndex, prevTerm: before.lastTerm, entries: [], commit: before.commit },
  ]);
  await t.throwsAsync(attempt, { message: /d is not a member/ });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const after = s.node?.raft.status() as ReturnType<RaftNode['status']>;
  t.is(after.term, before.term, 'a removed node cannot move this node to its term');
  t.is(after.leader, 'b');
});
