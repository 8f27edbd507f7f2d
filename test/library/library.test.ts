import test from 'ava';
import { MemoryLogStorage, MemoryNetwork, MemoryStateMachine, Node, isRaleError, type NodeOptions } from '../../sidecar/src/index.ts';

const FAST = { heartbeatInterval: 20, minElectionTimeout: 100 } as const;

interface Cluster {
  network: MemoryNetwork;
  nodes: Node[];
  machines: Map<string, MemoryStateMachine>;
  stop(): Promise<void>;
}

async function startCluster(ids: string[], extra: Partial<NodeOptions> = {}): Promise<Cluster> {
  const network = new MemoryNetwork();
  const machines = new Map<string, MemoryStateMachine>();
  const nodes = ids.map((id, k) => {
    const stateMachine = new MemoryStateMachine();
    machines.set(id, stateMachine);
    return new Node({ id, transport: network.transport(), bootstrap: ids, stateMachine, seed: k + 1, ...FAST, ...extra });
  });
  await Promise.all(nodes.map((n) => n.start()));
  return { network, nodes, machines, stop: async () => void (await Promise.all(nodes.map((n) => n.stop()))) };
}

async function waitFor<T>(what: string, probe: () => T | undefined | null | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const leaderOf = (nodes: Node[]) => waitFor('a leader', () => nodes.find((n) => n.isLeader()));

test('three nodes elect one leader and apply the same commands in the same order', async (t) => {
  const cluster = await startCluster(['a', 'b', 'c']);
  t.teardown(cluster.stop);
  const leader = await leaderOf(cluster.nodes);
  t.is(cluster.nodes.filter((n) => n.isLeader()).length, 1);
  const follower = cluster.nodes.find((n) => n !== leader) as Node;
  t.deepEqual(await follower.command({ op: 'set', key: 'x', value: 1 }), { ok: true });
  t.deepEqual(await leader.command({ op: 'cas', key: 'x', expected: 1, value: 2 }), { ok: true });
  t.deepEqual(await leader.command({ op: 'cas', key: 'x', expected: 1, value: 3 }), { ok: false, current: 2 });
  const leaderStatus = leader.status();
  await waitFor('all applied', () => cluster.nodes.every((n) => n.status().applied >= leaderStatus.commit));
  for (const machine of cluster.machines.values()) t.deepEqual([...machine.kv], [['x', 2]]);
});

test('a follower refuses with NOT_LEADER naming the leader when forwarding is off', async (t) => {
  const cluster = await startCluster(['a', 'b', 'c']);
  t.teardown(cluster.stop);
  const leader = await leaderOf(cluster.nodes);
  const follower = cluster.nodes.find((n) => n !== leader) as Node;
  await waitFor('follower knows the leader', () => follower.leader() === leader.id);
  const err = await t.throwsAsync(follower.command({ op: 'set', key: 'k', value: 1 }, { forward: false }));
  t.true(isRaleError(err, 'NOT_LEADER'));
  t.is((err as unknown as { details: { leader: string } }).details.leader, leader.id);
});

test('a command id applies once even when submitted twice', async (t) => {
  let applications = 0;
  const network = new MemoryNetwork();
  const nodes = ['p', 'q', 'r'].map(
    (id, k) =>
      new Node({
        id,
        transport: network.transport(),
        bootstrap: ['p', 'q', 'r'],
        seed: 10 + k,
        ...FAST,
        apply: (command) => {
          if (id === 'p') applications++;
          return { echoed: command };
        },
      }),
  );
  await Promise.all(nodes.map((n) => n.start()));
  t.teardown(async () => void (await Promise.all(nodes.map((n) => n.stop()))));
  const leader = await leaderOf(nodes);
  const first = await leader.command('hello', { id: 'same-id' });
  const second = await leader.command('hello again', { id: 'same-id' });
  t.deepEqual(first, { echoed: 'hello' });
  t.deepEqual(second, { echoed: 'hello' }, 'the retry answers with the first application result');
  const p = nodes[0] as Node;
  await waitFor('p applied both entries', () => p.status().applied >= leader.status().commit);
  t.is(applications, 1);
});

test('a command the state machine rejects fails with APPLY_FAILED and later commands still apply', async (t) => {
  const network = new MemoryNetwork();
  const node = new Node({
    id: 'solo',
    transport: network.transport(),
    bootstrap: true,
    ...FAST,
    apply: (command) => {
      if (command === 'bad') throw new Error('bad command');
      return 'fine';
    },
  });
  t.teardown(() => node.stop());
  await node.start();
  await leaderOf([node]);
  const err = await t.throwsAsync(node.command('bad'));
  t.true(isRaleError(err, 'APPLY_FAILED'));
  t.regex((err as Error).message, /bad command/);
  t.is(await node.command('good'), 'fine');
});

test('callbacks work in node-raft style', async (t) => {
  const network = new MemoryNetwork();
  const node = new Node({ id: 'solo', transport: network.transport(), bootstrap: true, ...FAST });
  t.teardown(() => node.stop());
  await new Promise<void>((resolve, reject) => node.start((err) => (err ? reject(err) : resolve())));
  await leaderOf([node]);
  const result = await new Promise((resolve, reject) => node.command({ op: 'set', key: 'k', value: 'v' }, (err, r) => (err ? reject(err) : resolve(r))));
  t.deepEqual(result, { ok: true });
});

test('join adds learners that catch up, then voters; leave removes them', async (t) => {
  const network = new MemoryNetwork();
  const machines = new Map<string, MemoryStateMachine>();
  const make = (id: string, bootstrap?: boolean) => {
    const stateMachine = new MemoryStateMachine();
    machines.set(id, stateMachine);
    return new Node({ id, transport: network.transport(), bootstrap, stateMachine, ...FAST, snapshotEvery: 20 });
  };
  const a = make('a', true);
  await a.start();
  t.teardown(() => a.stop());
  await leaderOf([a]);
  // Enough entries for a snapshot, so the joiners catch up from it.
  for (let i = 0; i < 30; i++) await a.command({ op: 'set', key: `k${i}`, value: i });
  const b = make('b');
  const c = make('c');
  await Promise.all([b.start(), c.start()]);
  t.teardown(async () => void (await Promise.all([b.stop(), c.stop()])));
  await a.join('b');
  await a.join({ id: 'c' });
  t.deepEqual([...a.peers].sort(), ['b', 'c']);
  t.deepEqual(a.status().config, { voters: ['a', 'b', 'c'], learners: [] });
  await a.command({ op: 'set', key: 'after-join', value: true });
  await waitFor('c applied', () => c.status().applied >= a.status().commit);
  t.is(machines.get('c')?.kv.get('k29'), 29);
  t.is(machines.get('c')?.kv.get('after-join'), true);
  await a.leave('c');
  t.deepEqual(a.status().config.voters, ['a', 'b']);
});

test('after the leader stops, the others elect a new leader and keep accepting commands', async (t) => {
  const cluster = await startCluster(['a', 'b', 'c']);
  t.teardown(cluster.stop);
  const first = await leaderOf(cluster.nodes);
  await first.command({ op: 'set', key: 'before', value: 1 });
  await first.stop();
  const rest = cluster.nodes.filter((n) => n !== first);
  const second = await leaderOf(rest);
  t.not(second.id, first.id);
  t.deepEqual(await second.command({ op: 'set', key: 'after', value: 2 }), { ok: true });
  const survivor = rest.find((n) => n !== second) as Node;
  await survivor.readBarrier();
  t.is(cluster.machines.get(survivor.id)?.kv.get('before'), 1);
  t.is(cluster.machines.get(survivor.id)?.kv.get('after'), 2);
});

test('a restarted node resumes from its persistence and catches up', async (t) => {
  const network = new MemoryNetwork();
  const ids = ['a', 'b', 'c'];
  const logs = new Map(ids.map((id) => [id, new MemoryLogStorage()]));
  const machines = new Map(ids.map((id) => [id, new MemoryStateMachine()]));
  const make = (id: string) =>
    new Node({ id, transport: network.transport(), bootstrap: ids, persistence: logs.get(id), stateMachine: machines.get(id), ...FAST });
  const nodes = ids.map(make);
  await Promise.all(nodes.map((n) => n.start()));
  const leader = await leaderOf(nodes);
  const victim = nodes.find((n) => n !== leader) as Node;
  await leader.command({ op: 'set', key: 'one', value: 1 });
  await victim.stop();
  await leader.command({ op: 'set', key: 'two', value: 2 });
  // Reopen the victim's durable log (the state machine object survives, as a database would).
  logs.set(victim.id, logs.get(victim.id)!.clone());
  const reborn = make(victim.id);
  await reborn.start();
  t.teardown(async () => void (await Promise.all([...nodes.filter((n) => n !== victim), reborn].map((n) => n.stop()))));
  await waitFor('reborn caught up', () => reborn.status().applied >= leader.status().commit);
  t.is(machines.get(victim.id)?.kv.get('two'), 2);
});

test('bad options get clear errors', (t) => {
  const transport = new MemoryNetwork().transport();
  t.throws(() => new Node(undefined as unknown as NodeOptions), { message: /needs options.transport/ });
  t.throws(() => new Node({ transport, heartbeatInterval: 100, minElectionTimeout: 50 }), { message: /must exceed heartbeatInterval/ });
  t.throws(() => new Node({ transport, minElectionTimeout: 300, maxElectionTimeout: 200 }), { message: /at least minElectionTimeout/ });
});

test('an oversized command is refused before it reaches the log', async (t) => {
  const network = new MemoryNetwork();
  const node = new Node({ id: 'solo', transport: network.transport(), bootstrap: true, ...FAST });
  t.teardown(() => node.stop());
  await node.start();
  await leaderOf([node]);
  const err = await t.throwsAsync(node.command('x'.repeat(2 << 20)));
  t.true(isRaleError(err, 'ENTRY_TOO_LARGE'));
  t.is(node.status().lastIndex, 2, 'only the bootstrap entry and the leader no-op are in the log');
});

test('a member that joins learns the founding voters from the log, not from its own options', async (t) => {
  const cluster = await startCluster(['a', 'b', 'c']);
  t.teardown(cluster.stop);
  const leader = await leaderOf(cluster.nodes);
  const d = new Node({ id: 'd', transport: cluster.network.transport(), ...FAST });
  await d.start();
  t.teardown(() => d.stop());
  await leader.join('d');
  await waitFor('d applied the promotion', () => d.status().applied >= leader.status().commit);
  t.deepEqual(d.status().config, { voters: ['a', 'b', 'c', 'd'], learners: [] });
  t.deepEqual([...d.peers].sort(), ['a', 'b', 'c']);
});

test('the cluster name is part of the cluster id: over gRPC, a founder started under another name is refused', async (t) => {
  const { GrpcTransport } = await import('../../sidecar/src/index.ts');
  const ids = ['a', 'b', 'c'];
  const transports = ids.map(() => new GrpcTransport({ listen: { host: '127.0.0.1', port: 0 }, log: () => {} }));
  await Promise.all(transports.map((tr) => tr.bind()));
  const addresses = Object.fromEntries(ids.map((id, k) => [id, transports[k]!.address]));
  const nodes = ids.map(
    (id, k) => new Node({ id, cluster: id === 'c' ? 'staging' : 'prod', transport: transports[k]!, bootstrap: ids, addresses, seed: k + 1, ...FAST }),
  );
  t.teardown(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.all(transports.map((tr) => tr.close()));
  });
  await Promise.all(nodes.map((n) => n.start()));
  const [a, b, c] = nodes as [Node, Node, Node];
  const leader = await waitFor('a leader among a and b', () => [a, b].find((n) => n.isLeader()));
  await new Promise<void>((resolve, reject) => leader.command({ op: 'set', key: 'k', value: 1 }, (err) => (err ? reject(err) : resolve())));
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.false(c.isLeader());
  t.is(c.status().lastIndex, 1, 'nothing was appended to the node of another cluster');
  t.is(c.status().cluster, 'staging');
  t.throws(() => new Node({ id: 'x', cluster: 'n'.repeat(257), transport: new MemoryNetwork().transport() }), { message: /at most 256 characters/ });
});
