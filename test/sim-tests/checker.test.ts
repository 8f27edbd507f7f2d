/**
 * Unit tests of the simulator's own parts: the durable storage's
 * truncate-on-conflict semantics and restart summary, and checks that are
 * hard to reach with a correct core (so that they are known to work).
 */
import test from 'ava';
import { EntryKind, encodeConfigChange, type Entry } from '../../sidecar/src/core/index.ts';
import { Cluster } from '../sim/cluster.ts';
import { encodeCommand } from '../sim/codec.ts';
import { DurableStorage } from '../sim/storage.ts';
import { InvariantViolation } from '../sim/violation.ts';

const bootstrap = { voters: ['n1', 'n2', 'n3'], learners: [] };

function entry(index: number, term: number, value = `v${index}`): Entry {
  return { index, term, kind: EntryKind.Normal, data: encodeCommand({ id: `p${index}.${term}`, key: 'k', value }) };
}

test('storage: an entry at an existing index replaces it and everything after it', (t) => {
  const s = new DurableStorage();
  s.persist({ snapshot: null, entries: [entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)], hardState: { term: 1, vote: 'n1', commit: 1 } });
  s.persist({ snapshot: null, entries: [entry(3, 2), entry(4, 2)], hardState: null });
  t.deepEqual(s.entries().map((e) => `${e.index}@${e.term}`), ['1@1', '2@1', '3@2', '4@2']);
  s.persist({ snapshot: null, entries: [entry(2, 3)], hardState: { term: 3, vote: null, commit: 1 } });
  t.deepEqual(s.entries().map((e) => `${e.index}@${e.term}`), ['1@1', '2@3'], 'entries after the replaced one are gone');
  t.is(s.lastIndex, 2);
});

test('storage: holes, entries under the snapshot and a term going back are contract violations', (t) => {
  const s = new DurableStorage();
  s.persist({ snapshot: null, entries: [entry(1, 1)], hardState: { term: 2, vote: null, commit: 0 } });
  t.throws(() => s.persist({ snapshot: null, entries: [entry(3, 1)], hardState: null }), { instanceOf: InvariantViolation, message: /hole/ });
  t.throws(() => s.persist({ snapshot: null, entries: [], hardState: { term: 1, vote: null, commit: 0 } }), { message: /went back/ });
  s.persist({ snapshot: { meta: { index: 5, term: 2, config: bootstrap }, data: new Uint8Array(0) }, entries: [], hardState: null });
  t.is(s.lastIndex, 5, 'a snapshot replaces the whole log');
  t.throws(() => s.persist({ snapshot: null, entries: [entry(5, 2)], hardState: null }), { message: /at or below the snapshot/ });
});

test('storage: load() summarises the log for a restarting core', (t) => {
  const s = new DurableStorage();
  const config: Entry = { index: 3, term: 2, kind: EntryKind.Config, data: encodeConfigChange({ type: 'addLearner', node: 'n4' }) };
  s.persist({ snapshot: null, entries: [entry(1, 1), entry(2, 2), config, entry(4, 4)], hardState: { term: 4, vote: 'n2', commit: 3 } });
  s.saveSnapshot({ meta: { index: 1, term: 1, config: bootstrap }, data: new Uint8Array(0) });
  const loaded = s.load();
  t.deepEqual(loaded.hardState, { term: 4, vote: 'n2', commit: 3 });
  t.deepEqual(loaded.snapshot, { index: 1, term: 1, config: bootstrap });
  t.is(loaded.lastIndex, 4);
  t.deepEqual(loaded.termStarts, [[2, 2], [4, 4]]);
  t.deepEqual(loaded.configEntries.map((e) => e.index), [3]);
  t.deepEqual(s.read(1, 4, 1 << 20).map((e) => e.index), [2, 3, 4], 'compacted entries are not returned');
  t.deepEqual(s.read(2, 4, 1).map((e) => e.index), [2], 'at least one entry, then the byte limit');
});

test('checker: logs that agree on an entry but differ below it break log matching', (t) => {
  const c = new Cluster({ seed: 1, voters: 3 });
  c.node('n1').storage.persist({ snapshot: null, entries: [entry(1, 1, 'a'), entry(2, 2)], hardState: null });
  c.node('n2').storage.persist({ snapshot: null, entries: [entry(1, 1, 'b'), entry(2, 2)], hardState: null });
  const error = t.throws(() => c.checker.checkLogsPairwise(c.nodes), { instanceOf: InvariantViolation });
  t.is(error?.invariant, 'log-matching');
  t.regex(error?.message ?? '', /agree on 2@2 but differ at 1/);
});

test('checker: a read answered below the commit index known when it was asked is not linearizable', (t) => {
  const c = new Cluster({ seed: 2, voters: 3 });
  c.elect('n1');
  const p = c.propose('x', '1');
  t.true(c.runUntil(() => p.done, 10));
  const committed = c.checker.maxCommitted;
  c.checker.readRequested('probe');
  const error = t.throws(() => c.checker.readState(c.node('n2'), { index: committed - 1, context: 'probe' }), { instanceOf: InvariantViolation });
  t.is(error?.invariant, 'read-linearizability');
  t.notThrows(() => c.checker.readState(c.node('n2'), { index: committed, context: 'probe' }));
});

test('checker: an exception inside the core becomes a core-exception violation', (t) => {
  const c = new Cluster({ seed: 3, voters: 3 });
  const node = c.node('n1');
  const error = t.throws(
    () =>
      c.guard(() => {
        throw new Error('boom');
      }, node),
    { instanceOf: InvariantViolation },
  );
  t.is(error?.invariant, 'core-exception');
});
