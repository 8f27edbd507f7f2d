/**
 * The leader sends its Appends in parallel with persisting the same entries
 * (Ready.sendBeforePersist), so its own copy must count toward commit only
 * once that persist is done (advance). These tests drive one core by hand
 * as the leader of three voters.
 */
import test from 'ava';
import { MessageType, RaftCore, Role, seededRandom, type FaultInjection, type Message, type Ready, type StorageState } from '../../sidecar/src/core/index.ts';

const VOTERS = ['a', 'b', 'c'];

function storage(): StorageState {
  return {
    hardState: { term: 1, vote: null, commit: 0 },
    snapshot: { index: 0, term: 0, config: { voters: VOTERS, learners: [] } },
    lastIndex: 0,
    termStarts: [],
    configEntries: [],
    applied: 0,
  };
}

/** A leader of term 2 whose no-op is committed and applied, with nothing in flight. */
function leader(faults: FaultInjection = {}): RaftCore {
  const core = new RaftCore({ id: 'a', random: seededRandom(1), preVote: false }, storage(), faults);
  core.campaign();
  let ready = core.ready();
  t_assert(ready.sendBeforePersist === false, 'a candidate’s vote requests wait for its vote to be durable');
  core.advance(ready);
  core.step({ type: MessageType.VoteResponse, from: 'b', to: 'a', term: 2, preVote: false, granted: true });
  t_assert(core.currentRole === Role.Leader, 'won the election');
  ready = core.ready(); // the no-op, and its Appends
  core.advance(ready);
  for (const from of ['b', 'c']) ack(core, from, core.log.lastIndex);
  while (core.hasReady()) core.advance(core.ready());
  t_assert(core.commitIndex === core.log.lastIndex, 'no-op committed');
  return core;
}

function t_assert(ok: boolean, what: string): void {
  if (!ok) throw new Error(`setup: ${what}`);
}

function ack(core: RaftCore, from: string, index: number): void {
  core.step({ type: MessageType.AppendResponse, from, to: 'a', term: core.currentTerm, reject: false, index, hintIndex: 0, hintTerm: 0 });
}

function appendsIn(ready: Ready): Message[] {
  return ready.messages.filter((m) => m.type === MessageType.Append && m.entries.length > 0);
}

test('a leader’s Appends may leave before its own persist completes', (t) => {
  const core = leader();
  const { index } = core.propose(new Uint8Array([1]));
  const ready = core.ready();
  t.true(ready.sendBeforePersist);
  t.deepEqual(ready.entries.map((e) => e.index), [index]);
  t.deepEqual(appendsIn(ready).map((m) => m.to).sort(), ['b', 'c'], 'the new entry goes to both followers in this Ready');
});

test('the leader does not count its unpersisted entry: one follower is not a quorum yet', (t) => {
  const core = leader();
  const { index } = core.propose(new Uint8Array([1]));
  const ready = core.ready(); // persist under way: not advanced
  ack(core, 'b', index);
  t.true(core.commitIndex < index, 'a quorum of {a (unpersisted), b} must not commit');
  core.advance(ready); // the leader's persist completed
  t.is(core.commitIndex, index, 'now {a, b} is a durable majority');
});

test('two followers commit without the leader’s own persist (a durable majority)', (t) => {
  const core = leader();
  const { index } = core.propose(new Uint8Array([1]));
  const ready = core.ready();
  ack(core, 'b', index);
  ack(core, 'c', index);
  t.is(core.commitIndex, index);
  core.advance(ready);
  // The entry is applied only in a later Ready, after the leader's own persist.
  const next = core.ready();
  t.deepEqual(next.committedEntries.map((e) => e.index), [index]);
});

test('the fault switch countUnpersistedSelf commits with the unpersisted self (so the check above has teeth)', (t) => {
  const core = leader({ countUnpersistedSelf: true });
  const { index } = core.propose(new Uint8Array([1]));
  core.ready();
  ack(core, 'b', index);
  t.is(core.commitIndex, index);
});

test('messages wait for the persist when the term or vote changes in the Ready', (t) => {
  const core = leader();
  core.propose(new Uint8Array([1]));
  // A higher-term vote request arrives before the Ready is taken: the leader steps down and votes.
  core.step({ type: MessageType.Vote, from: 'b', to: 'a', term: 5, preVote: false, lastIndex: 100, lastTerm: 4, transfer: true });
  const ready = core.ready();
  t.false(ready.sendBeforePersist);
  t.truthy(ready.hardState);
  t.true(ready.messages.some((m) => m.type === MessageType.VoteResponse && m.granted));
});

test('a follower’s acknowledgements never leave before its persist', (t) => {
  const core = new RaftCore({ id: 'b', random: seededRandom(2) }, storage());
  core.step({ type: MessageType.Append, from: 'a', to: 'b', term: 1, prevIndex: 0, prevTerm: 0, entries: [{ index: 1, term: 1, kind: 0, data: new Uint8Array([1]) }], commit: 0 });
  const ready = core.ready();
  t.false(ready.sendBeforePersist);
  t.true(ready.messages.some((m) => m.type === MessageType.AppendResponse));
});
