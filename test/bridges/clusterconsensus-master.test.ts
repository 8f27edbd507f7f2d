/**
 * The master side of the clusterconsensus bridge against a participant that
 * behaves like the reference (test/fixtures/clusterc-participant.ts), driven
 * with the core's messages as a leader would send them. No PostgreSQL: the
 * bridge context is faked around an in-memory kv.
 */
import test from 'ava';
import { INSTANCES_PER_TERM, ParticipantLink, type MasterSettings } from '../../bridges/clusterconsensus/master.ts';
import { checkMembershipChange } from '../../bridges/clusterconsensus/index.ts';
import { encodeCommand } from '../../sidecar/src/node/command.ts';
import { encodeConfigChange } from '../../sidecar/src/core/config.ts';
import { EntryKind, MessageType, type Entry, type Message } from '../../sidecar/src/core/types.ts';
import type { BridgeStatus } from '../../sidecar/src/plugins/bridge-api.ts';
import { FakeParticipant } from '../fixtures/clusterc-participant.ts';

const settings: MasterSettings = {
  clusterId: 'rale',
  advertiseUrl: 'http://127.0.0.1:1',
  requestTimeoutMs: 2_000,
  retryMs: 10,
  maxHeldEntries: 1_000,
  maxBatchChanges: 3,
};

/** A leader's log and kv, as the fake context exposes them. */
class FakeLeader {
  log: Entry[] = [];
  kv = new Map<string, unknown>();
  applied = 0;
  term = 2;
  role: BridgeStatus['role'] = 'leader' as BridgeStatus['role'];
  delivered: Message[] = [];
  errors: unknown[] = [];
  members: BridgeStatus['members'] = [];

  set(key: string, value: unknown): Entry {
    const entry: Entry = { index: this.log.length + 1, term: this.term, kind: EntryKind.Normal, data: encodeCommand({ id: `c${this.log.length}`, command: { op: 'set', key, value } }) };
    this.log.push(entry);
    return entry;
  }

  /** Commits and applies everything up to `index`. */
  applyTo(index: number): void {
    for (const e of this.log.slice(this.applied, index)) {
      if (e.kind !== EntryKind.Normal) continue;
      const cmd = JSON.parse(new TextDecoder().decode(e.data)).command as { key: string; value: unknown };
      this.kv.set(cmd.key, cmd.value);
    }
    this.applied = Math.max(this.applied, index);
  }

  ctx() {
    return {
      nodeId: 'n1',
      status: (): BridgeStatus => ({
        id: 'n1',
        role: this.role,
        term: this.term,
        leader: 'n1',
        leaderAddress: null,
        commitIndex: this.applied,
        appliedIndex: this.applied,
        lastIndex: this.log.length,
        members: this.members,
      }),
      deliver: async (_from: string, messages: Message[]) => void this.delivered.push(...messages),
      log: () => {},
      reportError: (err: unknown) => void this.errors.push(err),
      kvSnapshot: async () => ({ index: this.applied, term: this.term, kv: [...this.kv].map(([key, value]) => ({ key, value, version: 1 })) }),
    };
  }

  append(prevIndex: number, entries: Entry[], commit: number): Message {
    return { type: MessageType.Append, from: 'n1', to: 'p1', term: this.term, prevIndex, prevTerm: prevIndex === 0 ? 0 : this.term, entries, commit };
  }

  heartbeat(commit: number): Message {
    return { type: MessageType.Heartbeat, from: 'n1', to: 'p1', term: this.term, commit, context: '' };
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function setup(t: { teardown(fn: () => Promise<void> | void): void }) {
  const participant = new FakeParticipant();
  const url = await participant.listen();
  t.teardown(() => participant.close());
  const leader = new FakeLeader();
  leader.members = [{ id: 'p1', role: 'learner', address: url.replace('http://', 'clusterc://') }];
  const link = new ParticipantLink(leader.ctx(), settings, 'p1', url.replace('http://', 'clusterc://'));
  t.teardown(() => link.close());
  return { participant, leader, link };
}

const K = INSTANCES_PER_TERM;

const acks = (leader: FakeLeader) => leader.delivered.filter((m) => m.type === MessageType.AppendResponse) as Array<Extract<Message, { type: MessageType.AppendResponse }>>;

test('committed entries reach the participant as accepts followed by a pure commit; uncommitted ones wait', async (t) => {
  const { participant, leader, link } = await setup(t);
  leader.set('a', 1);
  leader.applyTo(1);
  // First contact of the term: prepare, accept(i, 0), start with the state at index 1.
  await link.invoke('raft', [leader.heartbeat(0)]);
  await until('start', () => participant.installs === 1);
  t.deepEqual(participant.calls.slice(0, 2), [`prepare ${2 * K}`, `start ${2 * K}/0`], 'an unjoined participant is started directly');
  t.is(participant.kv.get('a'), 1);

  const e2 = leader.set('b', 2);
  const e3 = leader.set('c', 3);
  await link.invoke('raft', [leader.append(1, [e2, e3], 2)]);
  await until('b applied', () => participant.kv.get('b') === 2);
  t.false(participant.kv.has('c'), 'entry 3 is not committed: it must not reach the participant');
  t.is(acks(leader).at(-1)?.index, 3, 'the link acknowledges what it holds');
  leader.applyTo(3);
  await link.invoke('raft', [leader.heartbeat(3)]);
  await until('c applied', () => participant.kv.get('c') === 3);
  t.deepEqual(participant.applied, ['{"op":"set","key":"b","value":2}', '{"op":"set","key":"c","value":3}']);
  t.is(participant.state, 'clean', 'a pure commit followed the last batch');
  t.deepEqual(leader.errors, []);
});

test('a gap is answered with a rejection hinting at what the link holds; votes get no answer', async (t) => {
  const { participant, leader, link } = await setup(t);
  leader.set('a', 1);
  leader.applyTo(1);
  for (let k = 0; k < 4; k++) leader.set(`k${k}`, k);
  await link.invoke('raft', [leader.append(5, [], 1)]);
  await until('answer', () => acks(leader).length === 1);
  const reject = acks(leader)[0];
  t.true(reject?.reject);
  t.is(reject?.hintIndex, 1, 'the participant was started at index 1');
  await link.invoke('raft', [{ type: MessageType.Vote, from: 'n1', to: 'p1', term: 3, preVote: false, lastIndex: 5, lastTerm: 2, transfer: false }]);
  leader.applyTo(5);
  await link.invoke('raft', [leader.append(1, leader.log.slice(1), 5)]);
  await until('all applied', () => participant.kv.get('k3') === 3);
  t.false(leader.delivered.some((m) => m.type === MessageType.VoteResponse), 'a participant never answers a vote');
  t.is(participant.calls.filter((c) => c.startsWith(`accept ${2 * K}/`) && !c.endsWith(' 0')).length, 2, 'four changes in batches of at most three');
});

test('a restarted participant and a new leader term are resynchronised with start at a higher instance', async (t) => {
  const { participant, leader, link } = await setup(t);
  leader.set('a', 1);
  leader.applyTo(1);
  await link.invoke('raft', [leader.heartbeat(0)]);
  await until('start', () => participant.installs === 1);
  participant.restart();
  const e2 = leader.set('b', 2);
  leader.applyTo(2);
  await link.invoke('raft', [leader.append(1, [e2], 2)]);
  // The accept fails (unjoined): a later message (heartbeats come every tick) resynchronises from the state, which holds b.
  await until('restart installed', () => {
    void link.invoke('raft', [leader.heartbeat(2)]);
    return participant.installs === 2;
  });
  t.is(participant.kv.get('b'), 2);
  t.is(participant.instance, 2 * K + 1, 'a second session of term 2 uses the next instance of its range: start refuses an older instance/sequence');

  leader.term = 7;
  const e3 = leader.set('c', 3);
  leader.applyTo(3);
  await link.invoke('raft', [leader.heartbeat(3)]);
  await until('new term installed', () => participant.installs === 3);
  t.is(participant.instance, 7 * K, 'the first instance of term 7\'s range');
  t.is(participant.kv.get('c'), 3);
  await link.invoke('raft', [leader.append(3, [], 3)]);
  await until('ack', () => acks(leader).some((m) => m.term === 7 && !m.reject && m.index === 3));
  t.truthy(e3);
});

test('membership entries about other participants become addmember and rmmember', async (t) => {
  const { participant, leader, link } = await setup(t);
  await link.invoke('raft', [leader.heartbeat(0)]);
  await until('start', () => participant.installs === 1);
  const add: Entry = { index: 1, term: 2, kind: EntryKind.Config, data: encodeConfigChange({ type: 'addLearner', node: 'p2', context: 'clusterc://127.0.0.1:9' }) };
  const remove: Entry = { index: 2, term: 2, kind: EntryKind.Config, data: encodeConfigChange({ type: 'remove', node: 'p2' }) };
  leader.log.push(add, remove);
  leader.applyTo(2);
  await link.invoke('raft', [leader.append(0, [add, remove], 2)]);
  await until('removal committed', () => participant.state === 'clean' && participant.calls.some((c) => c.startsWith('rmmember')));
  t.deepEqual(participant.calls.slice(2), [`addmember ${2 * K}/1 http://127.0.0.1:9`, `rmmember ${2 * K}/2 http://127.0.0.1:9`, `accept ${2 * K}/3 0`]);
  t.false(participant.members.includes('http://127.0.0.1:9'));
});

test('promotion of a participant, or adding one as voter, is refused with a clear error', (t) => {
  const members = [{ id: 'p1', role: 'learner' as const, address: 'clusterc://127.0.0.1:9' }, { id: 'n2', role: 'learner' as const, address: '127.0.0.1:7' }];
  const promote = t.throws(() => checkMembershipChange({ type: 'promote', node: 'p1' }, members));
  t.regex(promote?.message ?? '', /clusterconsensus participant and cannot be promoted/);
  t.throws(() => checkMembershipChange({ type: 'addVoter', node: 'p3', context: 'clusterc://h:1' }, members), { message: /cannot be added as a voter/ });
  t.notThrows(() => checkMembershipChange({ type: 'promote', node: 'n2' }, members));
  t.notThrows(() => checkMembershipChange({ type: 'addLearner', node: 'p3', context: 'clusterc://h:1' }, members));
});

test('a deposed leader never overwrites the participant that the next leader started (instances are partitioned by term)', async (t) => {
  const participant = new FakeParticipant();
  const url = await participant.listen();
  t.teardown(() => participant.close());
  const address = url.replace('http://', 'clusterc://');

  // The leader of term 5 starts the participant at index 1; it commits b (index 2) but has not sent it yet.
  const old = new FakeLeader();
  old.term = 5;
  old.members = [{ id: 'p1', role: 'learner', address }];
  old.set('a', 1);
  const b = old.set('b', 2);
  old.applyTo(1);
  const oldLink = new ParticipantLink(old.ctx(), settings, 'p1', address);
  t.teardown(() => oldLink.close());
  await oldLink.invoke('raft', [old.heartbeat(1)]);
  await until('the first start', () => participant.installs === 1);
  old.applyTo(2);

  // The leader of term 6 (elected while the old one is cut off) holds a, b and its own c, and starts the participant at index 3.
  const next = new FakeLeader();
  next.term = 5;
  next.set('a', 1);
  next.set('b', 2);
  next.term = 6;
  next.set('c', 3);
  next.applyTo(3);
  next.members = old.members;
  const nextLink = new ParticipantLink(next.ctx(), settings, 'p1', address);
  t.teardown(() => nextLink.close());
  await nextLink.invoke('raft', [next.heartbeat(3)]);
  await until('the new leader\'s start', () => participant.installs === 2);
  t.is(participant.kv.get('c'), 3);

  // The deposed leader, not yet aware, goes on: its accept is refused (older instance), and it tries to resynchronise.
  await oldLink.invoke('raft', [old.append(1, [b], 2)]);
  const deadline = Date.now() + 400;
  while (Date.now() < deadline) {
    await oldLink.invoke('raft', [old.heartbeat(2)]);
    await new Promise((resolve) => setTimeout(resolve, 15));
  }
  t.is(participant.installs, 2, `the deposed leader started the participant again: ${participant.calls.join(', ')}`);
  t.is(participant.kv.get('c'), 3, 'the participant lost a committed change (c) to an older state');
  t.true(participant.instance >= 6 * K);
  t.regex(oldLink.describe(), /newer master drives it|not synchronised/);

  // The new leader goes on from where it started the participant.
  const d = next.set('d', 4);
  next.applyTo(4);
  await nextLink.invoke('raft', [next.append(3, [d], 4)]);
  await until('d applied', () => participant.kv.get('d') === 4);
  t.deepEqual([...participant.kv].sort(), [['a', 1], ['b', 2], ['c', 3], ['d', 4]]);
});
