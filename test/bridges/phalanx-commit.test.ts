/**
 * The commit index the Phalanx bridge tells a member, against a follower that
 * bounds its commit by its LAST log index (min(LeaderCommit, lastIndex), the
 * rule many Go Raft followers use) rather than by the last entry the request
 * matched. Such a follower holding a stale suffix of an older term must not
 * be told a commit index that reaches into that suffix.
 */
import test from 'ava';
import { EntryKind, MessageType, type Entry, type Message } from '../../sidecar/src/core/types.ts';
import { toPhalanxEntry } from '../../bridges/phalanx/entries.ts';
import { PhalanxPeer, type PeerHost } from '../../bridges/phalanx/peer.ts';
import { FakePhalanxNode } from './phalanx-fake-node.ts';

const utf8 = (s: string) => new TextEncoder().encode(s);
const set = (index: number, term: number, key: string, value: string): Entry => ({
  index,
  term,
  kind: EntryKind.Normal,
  data: utf8(JSON.stringify({ id: `c${index}-${term}`, command: { op: 'set', key, value } })),
});

async function waitFor(what: string, probe: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('an Append never lets a member commit a stale suffix beyond the entries it matched (follower commits min(LeaderCommit, last index))', async (t) => {
  const node = new FakePhalanxNode('p1', 'last-index');
  await node.listen();
  const delivered: Message[] = [];
  const host: PeerHost = {
    localId: 'n1',
    deliver: async (_from, messages) => void delivered.push(...messages),
    roleOf: () => 'learner',
    log: () => {},
    reportError: () => {},
    sent: () => {},
  };
  const peer = new PhalanxPeer('p1', `phalanx://127.0.0.1:${node.port}`, host, { rpcTimeoutMs: 2000, maxQueuedMessages: 64 });
  t.teardown(async () => {
    await peer.close();
    await node.close();
  });

  // The member got 1..4 from the leader of term 2, which committed only 1..2 and then died.
  const old = [set(1, 1, 'a', 'a1'), set(2, 2, 'b', 'b2'), set(3, 2, 'x', 'stale'), set(4, 2, 'y', 'stale')];
  node.log = [node.log[0] as (typeof node.log)[number], ...old.map(toPhalanxEntry)];
  node.term = 2;

  // The leader of term 3 holds 1..2, then its own 3..4, all committed. Its Append happens to carry
  // only entry 2 (a small message size, or a probe): prev 1 matches, entry 2 matches, nothing is truncated.
  await peer.invoke('raft', [{ type: MessageType.Append, from: 'n1', to: 'p1', term: 3, prevIndex: 1, prevTerm: 1, entries: [old[1] as Entry], commit: 4 }]);
  await waitFor('the ack', () => delivered.length === 1);
  t.like(delivered[0], { type: MessageType.AppendResponse, reject: false, index: 2 });
  t.true((node.received.at(-1)?.LeaderCommit ?? Infinity) <= 2, 'LeaderCommit is bounded by what this request matched');
  t.is(node.commitIndex, 2, 'the member commits nothing of the stale suffix');
  t.false(node.kv.has('x'), 'a stale entry of term 2 was applied as committed');

  // The next Append replaces the suffix; then the commit reaches it.
  const fresh = [{ index: 3, term: 3, kind: EntryKind.Noop, data: new Uint8Array(0) }, set(4, 3, 'y', 'new')];
  await peer.invoke('raft', [{ type: MessageType.Append, from: 'n1', to: 'p1', term: 3, prevIndex: 2, prevTerm: 2, entries: fresh, commit: 4 }]);
  await waitFor('the second ack', () => delivered.length === 2);
  t.is(node.commitIndex, 4);
  t.deepEqual([...node.kv].sort(), [['a', 'a1'], ['b', 'b2'], ['y', 'new']]);
});
