import test from 'ava';
import { RaftLog } from '../../sidecar/src/core/log.ts';
import { EntryKind, type Entry } from '../../sidecar/src/core/types.ts';

const entry = (index: number, term: number, bytes = 0): Entry => ({ index, term, kind: EntryKind.Normal, data: new Uint8Array(bytes) });
const fresh = () => new RaftLog({ snapshotIndex: 0, snapshotTerm: 0, lastIndex: 0, termStarts: [], committed: 0, applied: 0 });

/** A log holding terms [1,1,1,4,4,5,5,6,6,6] at indexes 1..10 (the Raft paper's Figure 7 leader). */
function figure7(): RaftLog {
  const log = fresh();
  [1, 1, 1, 4, 4, 5, 5, 6, 6, 6].forEach((term, k) => log.append([entry(k + 1, term)]));
  return log;
}

test('terms are answered from runs, for every index', (t) => {
  const log = figure7();
  t.deepEqual(log.termRuns(), [
    [1, 1],
    [4, 4],
    [6, 5],
    [8, 6],
  ]);
  t.deepEqual(
    Array.from({ length: 12 }, (_, i) => log.termAt(i)),
    [0, 1, 1, 1, 4, 4, 5, 5, 6, 6, 6, undefined],
  );
  t.is(log.lastTerm, 6);
});

test('appending with a hole or a lower term is refused', (t) => {
  const log = figure7();
  t.throws(() => log.append([entry(12, 6)]), { message: /hole/ });
  t.throws(() => log.append([entry(11, 5)]), { message: /term regression/ });
});

test('maybeAppend: consistency check, skip of duplicates, truncation of conflicts', (t) => {
  const log = figure7();
  log.takeUnpersisted();
  log.persistedTo(10, 6);
  t.is(log.maybeAppend(10, 5, [entry(11, 6)]), null, 'prev term mismatch');
  t.is(log.maybeAppend(12, 6, []), null, 'prev beyond the log');
  t.is(log.maybeAppend(5, 4, [entry(6, 5), entry(7, 5)]), 7, 'duplicates are acknowledged');
  t.is(log.lastIndex, 10, 'and nothing after them is truncated');
  t.is(log.maybeAppend(5, 4, [entry(6, 5), entry(7, 7), entry(8, 7)]), 8);
  t.is(log.lastIndex, 8);
  t.deepEqual(log.termRuns(), [
    [1, 1],
    [4, 4],
    [6, 5],
    [7, 7],
  ]);
  t.is(log.pendingFrom, 7, 'the rewritten suffix must be persisted again');
  t.is(log.persisted, 6, 'what was truncated is no longer durable');
});

test('committed entries are never truncated', (t) => {
  const log = figure7();
  log.commitTo(8);
  t.throws(() => log.maybeAppend(5, 4, [entry(6, 5), entry(7, 5), entry(8, 9)]), { message: /committed/ });
});

test('findConflictByTerm skips whole terms', (t) => {
  const log = figure7();
  t.is(log.findConflictByTerm(10, 6), 10);
  t.is(log.findConflictByTerm(10, 5), 7);
  t.is(log.findConflictByTerm(10, 3), 3);
  t.is(log.findConflictByTerm(10, 0), 0);
});

test('isUpToDate compares last term, then last index', (t) => {
  const log = figure7();
  t.true(log.isUpToDate(1, 7));
  t.true(log.isUpToDate(10, 6));
  t.false(log.isUpToDate(9, 6));
  t.false(log.isUpToDate(100, 5));
});

test('compaction keeps terms after the snapshot and forgets entries before it', (t) => {
  const log = figure7();
  log.commitTo(10);
  log.appliedTo(7);
  log.compact(7);
  t.is(log.snapshotIndex, 7);
  t.is(log.snapshotTerm, 5);
  t.is(log.termAt(6), undefined);
  t.is(log.termAt(7), 5);
  t.is(log.termAt(8), 6);
  t.is(log.slice(6, 10, Infinity), null, 'compacted entries must be fetched (and will be refused)');
  t.deepEqual(
    log.slice(8, 10, Infinity)?.map((e) => e.index),
    [8, 9, 10],
  );
  t.throws(() => log.compact(9), { message: /applied/ });
});

test('the in-memory tail is bounded and evicts only durable, applied entries', (t) => {
  const log = fresh();
  for (let i = 1; i <= 100; i++) log.append([entry(i, 1, 100)]);
  log.evict(1000, 0);
  t.not(log.entryAt(1), undefined, 'nothing durable yet: nothing evicted');
  log.takeUnpersisted();
  log.persistedTo(100, 1);
  log.commitTo(100);
  log.appliedTo(50);
  log.evict(1000, 0);
  t.is(log.entryAt(50), undefined);
  t.not(log.entryAt(51), undefined, 'unapplied entries stay');
  t.is(log.slice(40, 60, Infinity), null);
  t.is(log.addFetched([entry(40, 1, 100), entry(41, 2, 100)]), 1, 'a fetched entry with the wrong term is refused');
  t.deepEqual(
    log.slice(40, 45, Infinity)?.map((e) => e.index),
    [40],
  );
});

test('slice respects the byte limit but always returns one entry', (t) => {
  const log = fresh();
  for (let i = 1; i <= 5; i++) log.append([entry(i, 1, 1000)]);
  t.is(log.slice(1, 5, 10)?.length, 1);
  t.is(log.slice(1, 5, 2100)?.length, 2);
  t.is(log.slice(1, 5, Infinity)?.length, 5);
});

test('persistedTo ignores an acknowledgement for entries since rewritten', (t) => {
  const log = fresh();
  log.append([entry(1, 1), entry(2, 1)]);
  const batch = log.takeUnpersisted();
  t.is(batch.length, 2);
  log.maybeAppend(1, 1, [entry(2, 3)]);
  log.persistedTo(2, 1);
  t.is(log.persisted, 0, 'entry 2 of term 1 was persisted, but the log now holds term 3 there: the ack is not trusted');
  const rewritten = log.takeUnpersisted();
  t.deepEqual(
    rewritten.map((e) => [e.index, e.term]),
    [[2, 3]],
  );
  log.persistedTo(2, 3);
  t.is(log.persisted, 2);
});
