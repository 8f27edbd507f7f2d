/**
 * The one compliance suite every LogStorage passes (see the rules in
 * sidecar/src/storage/types.ts). A storage file calls
 * `logStorageCompliance(title, harness)`; each rule becomes one ava test.
 *
 * The last test is model-based: random sequences of appends, conflicting
 * appends, holes, hard states, snapshot installs, local snapshots and
 * restarts, checked after every step against a deliberately naive model
 * (a Map from index to entry). fast-check prints the seed and the shrunk
 * sequence of a failure.
 */
import assert from 'node:assert/strict';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fc from 'fast-check';
import { EntryKind, type ClusterConfig, type Entry, type HardState, type Snapshot, type StorageState } from '../../sidecar/src/core/types.ts';
import type { LogStorage, PersistBatch } from '../../sidecar/src/storage/types.ts';

export interface StorageHarness {
  /** A new storage over an empty backing store. */
  open(options?: { bootstrap?: ClusterConfig }): Promise<LogStorage>;
  /**
   * Closes `storage` and opens a new one over the same backing store: a
   * restart. Omit it when the storage cannot outlive its object.
   */
  reopen?(storage: LogStorage, options?: { bootstrap?: ClusterConfig }): Promise<LogStorage>;
}

export interface ComplianceOptions {
  /** Run the tests one at a time (storages backed by one shared server). */
  serial?: boolean;
  /** Random sequences in the model-based test (default 100). */
  modelRuns?: number;
}

// ---------------------------------------------------------------------------
// Builders and normalisers

const enc = new TextEncoder();

export function entry(index: number, term: number, options: { kind?: EntryKind; data?: Uint8Array | string; leader?: string } = {}): Entry {
  const data = typeof options.data === 'string' ? enc.encode(options.data) : (options.data ?? enc.encode(`e${index}t${term}`));
  const e: Entry = { index, term, kind: options.kind ?? EntryKind.Normal, data };
  if (options.leader !== undefined) e.leader = options.leader;
  return e;
}

/** Entries lo..hi, all in `term`. */
export function run(lo: number, hi: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = lo; i <= hi; i++) out.push(entry(i, term));
  return out;
}

function configEntry(index: number, term: number, node: string): Entry {
  return entry(index, term, { kind: EntryKind.Config, data: JSON.stringify({ type: 'addLearner', node }) });
}

function snapshot(index: number, term: number, config: ClusterConfig = { voters: ['n1'], learners: [] }, data = `state@${index}`): Snapshot {
  return { meta: { index, term, config }, data: enc.encode(data) };
}

const batch = (b: Partial<PersistBatch>): PersistBatch => ({ snapshot: null, entries: [], hardState: null, ...b });

const hex = (d: Uint8Array) => Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('hex');

/** Comparable form: bytes as hex (storages may return Buffer or Uint8Array), absent leader as null. */
export function norm(e: Entry) {
  return { index: e.index, term: e.term, kind: e.kind, data: hex(e.data), leader: e.leader ?? null };
}

function normState(s: Omit<StorageState, 'applied'>) {
  return { ...s, configEntries: s.configEntries.map(norm) };
}

function normSnapshot(s: Snapshot | null) {
  return s && { meta: s.meta, data: hex(s.data) };
}

async function all(storage: LogStorage): Promise<Entry[]> {
  return storage.entries(1, Number.MAX_SAFE_INTEGER, Number.POSITIVE_INFINITY);
}

// ---------------------------------------------------------------------------
// The naive model

interface Model {
  hardState: HardState;
  snapshot: Snapshot | null;
  log: Map<number, Entry>;
}

const emptyModel = (): Model => ({ hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, log: new Map() });

function modelSnapshotIndex(m: Model): number {
  return m.snapshot?.meta.index ?? 0;
}

function modelLastIndex(m: Model): number {
  return Math.max(modelSnapshotIndex(m), ...m.log.keys());
}

/** The storage rules, written as plainly as possible. Returns false when the batch must be rejected. */
function modelPersist(m: Model, b: PersistBatch): boolean {
  const next: Model = { hardState: m.hardState, snapshot: m.snapshot, log: new Map(m.log) };
  if (b.snapshot) {
    next.snapshot = b.snapshot;
    next.log.clear();
  }
  const fresh = b.entries.filter((e) => e.index > modelSnapshotIndex(next));
  const first = fresh[0];
  if (first) {
    if (first.index > modelLastIndex(next) + 1) return false;
    for (const i of [...next.log.keys()]) if (i >= first.index) next.log.delete(i);
    for (const e of fresh) next.log.set(e.index, e);
  }
  if (b.hardState) next.hardState = b.hardState;
  Object.assign(m, next);
  return true;
}

function modelSaveSnapshot(m: Model, s: Snapshot): void {
  if (s.meta.index < modelSnapshotIndex(m)) return;
  m.snapshot = s;
  for (const i of [...m.log.keys()]) if (i <= s.meta.index) m.log.delete(i);
}

function modelLoad(m: Model, bootstrap: ClusterConfig): Omit<StorageState, 'applied'> {
  const entries = [...m.log.values()].sort((a, b) => a.index - b.index);
  const termStarts: Array<[number, number]> = [];
  entries.forEach((e, i) => {
    if (i === 0 || entries[i - 1]?.term !== e.term) termStarts.push([e.index, e.term]);
  });
  return {
    hardState: m.hardState,
    snapshot: m.snapshot?.meta ?? { index: 0, term: 0, config: bootstrap },
    lastIndex: modelLastIndex(m),
    termStarts,
    configEntries: entries.filter((e) => e.kind === EntryKind.Config),
  };
}

/** Throws (rather than records an ava failure) so that fast-check sees the failure and shrinks it. */
async function assertMatchesModel(storage: LogStorage, m: Model, bootstrap: ClusterConfig, step: string): Promise<void> {
  assert.deepEqual(normState(await storage.load()), normState(modelLoad(m, bootstrap)), `load() after ${step}`);
  const expected = [...m.log.values()].sort((a, b) => a.index - b.index).map(norm);
  assert.deepEqual((await all(storage)).map(norm), expected, `entries() after ${step}`);
  assert.deepEqual(normSnapshot(await storage.latestSnapshot()), normSnapshot(m.snapshot), `latestSnapshot() after ${step}`);
}

// ---------------------------------------------------------------------------
// The suite

export function logStorageCompliance(title: string, harness: StorageHarness, options: ComplianceOptions = {}): void {
  const define = options.serial ? test.serial : test;

  /** Runs `body` on a fresh storage and closes whatever storage it ends with. */
  const withStorage = (
    name: string,
    body: (t: ExecutionContext, s: LogStorage, reopen: (s: LogStorage) => Promise<LogStorage>) => Promise<LogStorage | void>,
    bootstrap?: ClusterConfig,
  ) =>
    define(`${title}: ${name}`, async (t) => {
      const opts = bootstrap ? { bootstrap } : {};
      let current = await harness.open(opts);
      const reopen = async (s: LogStorage) => {
        if (!harness.reopen) throw new Error('no reopen');
        current = await harness.reopen(s, opts);
        return current;
      };
      try {
        await body(t, current, reopen);
      } finally {
        await current.close();
      }
    });

  withStorage('an empty storage loads as a fresh node', async (t, s) => {
    t.deepEqual(await s.load(), {
      hardState: { term: 0, vote: null, commit: 0 },
      snapshot: { index: 0, term: 0, config: { voters: [], learners: [] } },
      lastIndex: 0,
      termStarts: [],
      configEntries: [],
    });
    t.deepEqual(await s.entries(1, 100, Infinity), []);
    t.is(await s.latestSnapshot(), null);
  });

  withStorage('the cluster id is absent at first, then kept across restarts and snapshots (optional methods)', async (t, s, reopen) => {
    if (s.clusterId === undefined || s.saveClusterId === undefined) {
      t.is(s.saveClusterId, undefined, 'a storage keeps a cluster id with both methods or with neither');
      return;
    }
    t.is(await s.clusterId(), null);
    await s.saveClusterId('0123456789abcdef');
    t.is(await s.clusterId(), '0123456789abcdef');
    await s.persist(batch({ entries: run(1, 3, 1) }));
    await s.saveSnapshot(snapshot(2, 1));
    t.is(await s.clusterId(), '0123456789abcdef', 'log writes and snapshots leave it alone');
    await s.saveClusterId('fedcba9876543210');
    t.is(await s.clusterId(), 'fedcba9876543210', 'saving again replaces it');
    if (harness.reopen === undefined) return s;
    const after = await reopen(s);
    t.is(await after?.clusterId?.(), 'fedcba9876543210', 'it survives a restart');
    return after;
  });

  const bootstrap: ClusterConfig = { voters: ['n1', 'n2', 'n3'], learners: ['n4'] };
  withStorage(
    'the bootstrap config is reported while no snapshot is stored, then the snapshot config',
    async (t, s) => {
      t.deepEqual((await s.load()).snapshot, { index: 0, term: 0, config: bootstrap });
      await s.persist(batch({ entries: run(1, 3, 1) }));
      t.deepEqual((await s.load()).snapshot, { index: 0, term: 0, config: bootstrap }, 'a log without snapshot still starts from the bootstrap config');
      const config = { voters: ['n1', 'n2'], learners: [] };
      await s.saveSnapshot(snapshot(2, 1, config));
      t.deepEqual((await s.load()).snapshot, { index: 2, term: 1, config });
    },
    bootstrap,
  );

  withStorage('appended entries read back exactly (kinds, leaders, empty and binary payloads)', async (t, s) => {
    const written = [
      entry(1, 1, { kind: EntryKind.Noop, data: new Uint8Array(0), leader: 'n1' }),
      entry(2, 1, { data: new Uint8Array([0, 1, 2, 0xff, 0, 0x5c, 0x22]) }),
      configEntry(3, 1, 'n4'),
      entry(4, 2, { data: 'ünïcødé', leader: 'node-2' }),
    ];
    await s.persist(batch({ entries: written }));
    t.deepEqual((await all(s)).map(norm), written.map(norm));
    const loaded = await s.load();
    t.is(loaded.lastIndex, 4);
    t.deepEqual(loaded.termStarts, [
      [1, 1],
      [4, 2],
    ]);
    t.deepEqual(loaded.configEntries.map(norm), [norm(configEntry(3, 1, 'n4'))]);
    t.true((await s.entries(2, 2, Infinity))[0]?.data instanceof Uint8Array);
  });

  withStorage('batches append after each other', async (t, s) => {
    await s.persist(batch({ entries: run(1, 3, 1) }));
    await s.persist(batch({ entries: run(4, 4, 1) }));
    await s.persist(batch({ entries: run(5, 7, 2) }));
    t.deepEqual((await all(s)).map(norm), [...run(1, 4, 1), ...run(5, 7, 2)].map(norm));
    t.is((await s.load()).lastIndex, 7);
  });

  withStorage('an entry at an existing index replaces it and every entry after it', async (t, s) => {
    await s.persist(batch({ entries: [...run(1, 4, 1), configEntry(5, 1, 'x'), ...run(6, 8, 1)] }));
    await s.persist(batch({ entries: run(3, 4, 2) }));
    t.deepEqual((await all(s)).map(norm), [...run(1, 2, 1), ...run(3, 4, 2)].map(norm));
    let loaded = await s.load();
    t.is(loaded.lastIndex, 4);
    t.deepEqual(loaded.termStarts, [
      [1, 1],
      [3, 2],
    ]);
    t.deepEqual(loaded.configEntries, [], 'the truncated config entry is gone');

    // Even an identical entry truncates what follows it.
    await s.persist(batch({ entries: [entry(2, 1)] }));
    t.deepEqual((await all(s)).map(norm), run(1, 2, 1).map(norm));

    // A conflict at index 1 replaces the whole log.
    await s.persist(batch({ entries: run(1, 2, 3) }));
    t.deepEqual((await all(s)).map(norm), run(1, 2, 3).map(norm));
    loaded = await s.load();
    t.deepEqual(loaded.termStarts, [[1, 3]]);
    t.is(loaded.lastIndex, 2);
  });

  withStorage('a batch that would leave a hole is rejected and changes nothing', async (t, s) => {
    await t.throwsAsync(s.persist(batch({ entries: run(2, 3, 1) })), { message: /hole/ }, 'an empty log starts at 1');
    await s.persist(batch({ entries: run(1, 3, 1), hardState: { term: 1, vote: 'n1', commit: 1 } }));
    const before = normState(await s.load());
    await t.throwsAsync(
      s.persist(batch({ entries: run(5, 6, 2), hardState: { term: 9, vote: 'n9', commit: 3 } })),
      { message: /hole/ },
    );
    await t.throwsAsync(s.persist(batch({ entries: [entry(4, 2), entry(6, 2)] })), { message: /contiguous/ });
    await t.throwsAsync(s.persist(batch({ entries: [entry(4, 0)] })), { message: /term/ });
    t.deepEqual(normState(await s.load()), before, 'neither the entries nor the hard state of a rejected batch are stored');
    t.deepEqual((await all(s)).map(norm), run(1, 3, 1).map(norm));
  });

  withStorage('a rejected batch does not install its snapshot either (atomicity)', async (t, s) => {
    await s.persist(batch({ entries: run(1, 5, 1) }));
    await t.throwsAsync(s.persist(batch({ snapshot: snapshot(10, 1), entries: run(12, 13, 2), hardState: { term: 2, vote: null, commit: 10 } })), {
      message: /hole/,
    });
    t.is(await s.latestSnapshot(), null);
    t.deepEqual((await all(s)).map(norm), run(1, 5, 1).map(norm));
    t.deepEqual((await s.load()).hardState, { term: 0, vote: null, commit: 0 });
  });

  withStorage('the hard state round-trips and is kept when a batch has none', async (t, s) => {
    await s.persist(batch({ hardState: { term: 3, vote: 'n2', commit: 0 } }));
    t.deepEqual((await s.load()).hardState, { term: 3, vote: 'n2', commit: 0 });
    await s.persist(batch({ entries: run(1, 2, 3) }));
    t.deepEqual((await s.load()).hardState, { term: 3, vote: 'n2', commit: 0 }, 'a batch without hard state keeps it');
    await s.persist(batch({ hardState: { term: 4, vote: null, commit: 2 } }));
    t.deepEqual((await s.load()).hardState, { term: 4, vote: null, commit: 2 }, 'a null vote overwrites a vote');
    t.is((await s.load()).lastIndex, 2, 'a hard-state-only batch leaves the log alone');
  });

  withStorage('installing a snapshot drops the whole log, whatever its index', async (t, s) => {
    await s.persist(batch({ entries: [...run(1, 3, 1), configEntry(4, 1, 'a'), ...run(5, 10, 2)] }));
    const snap5 = snapshot(5, 1, { voters: ['n1', 'n2'], learners: ['a'] });
    await s.persist(batch({ snapshot: snap5 }));
    let loaded = await s.load();
    t.deepEqual(loaded.snapshot, snap5.meta);
    t.is(loaded.lastIndex, 5, 'entries after the snapshot are dropped too');
    t.deepEqual(loaded.termStarts, []);
    t.deepEqual(loaded.configEntries, []);
    t.deepEqual(await all(s), []);
    t.deepEqual(normSnapshot(await s.latestSnapshot()), normSnapshot(snap5));

    // Beyond the log, with entries and a hard state in the same batch.
    const snap20 = snapshot(20, 4);
    await s.persist(batch({ snapshot: snap20, entries: run(21, 23, 4), hardState: { term: 4, vote: 'n3', commit: 20 } }));
    loaded = await s.load();
    t.deepEqual(loaded.snapshot, snap20.meta);
    t.is(loaded.lastIndex, 23);
    t.deepEqual(loaded.termStarts, [[21, 4]]);
    t.deepEqual(loaded.hardState, { term: 4, vote: 'n3', commit: 20 });
    t.deepEqual((await all(s)).map(norm), run(21, 23, 4).map(norm));

    // An installed snapshot replaces the stored one even when older.
    const snap8 = snapshot(8, 3);
    await s.persist(batch({ snapshot: snap8 }));
    t.deepEqual((await s.load()).snapshot, snap8.meta);
    t.is((await s.load()).lastIndex, 8);
  });

  withStorage('saveSnapshot compacts only the entries the snapshot covers', async (t, s) => {
    const log = [...run(1, 1, 1), configEntry(2, 1, 'a'), entry(3, 1), ...run(4, 5, 2), configEntry(6, 2, 'b'), entry(7, 2), ...run(8, 8, 3), configEntry(9, 3, 'c'), entry(10, 3)];
    await s.persist(batch({ entries: log }));
    const snap5 = snapshot(5, 2);
    await s.saveSnapshot(snap5);
    let loaded = await s.load();
    t.deepEqual(loaded.snapshot, snap5.meta);
    t.is(loaded.lastIndex, 10);
    t.deepEqual(loaded.termStarts, [
      [6, 2],
      [8, 3],
    ]);
    t.deepEqual(loaded.configEntries.map(norm), [configEntry(6, 2, 'b'), configEntry(9, 3, 'c')].map(norm));
    t.deepEqual((await all(s)).map(norm), log.slice(5).map(norm));
    t.deepEqual(normSnapshot(await s.latestSnapshot()), normSnapshot(snap5));

    await s.saveSnapshot(snapshot(3, 1));
    t.deepEqual((await s.load()).snapshot, snap5.meta, 'an older snapshot is ignored');
    t.is((await all(s)).length, 5);

    const again = snapshot(5, 2, snap5.meta.config, 'same index, newer bytes');
    await s.saveSnapshot(again);
    t.deepEqual(normSnapshot(await s.latestSnapshot()), normSnapshot(again), 'a snapshot at the same index replaces it');

    // A snapshot beyond the log empties it; the log continues after it.
    await s.saveSnapshot(snapshot(12, 3));
    loaded = await s.load();
    t.is(loaded.lastIndex, 12);
    t.deepEqual(await all(s), []);
    await t.throwsAsync(s.persist(batch({ entries: run(14, 14, 3) })), { message: /hole/ });
    // Entries at or below the snapshot are covered by it and skipped.
    await s.persist(batch({ entries: [entry(11, 3), entry(12, 3), entry(13, 4)] }));
    t.deepEqual((await all(s)).map(norm), [norm(entry(13, 4))]);
    t.deepEqual((await s.load()).termStarts, [[13, 4]]);
  });

  withStorage('entries() respects lo, hi and maxBytes, and returns at least one entry', async (t, s) => {
    const hundred = (i: number) => entry(i, 1, { data: new Uint8Array(100).fill(i) });
    await s.persist(batch({ entries: Array.from({ length: 10 }, (_, i) => hundred(i + 1)) }));
    const indexes = async (lo: number, hi: number, max: number) => (await s.entries(lo, hi, max)).map((e) => e.index);
    t.deepEqual(await indexes(3, 6, Infinity), [3, 4, 5, 6]);
    t.deepEqual(await indexes(3, 6, 250), [3, 4], 'stops before exceeding maxBytes');
    t.deepEqual(await indexes(3, 6, 300), [3, 4, 5], 'an exact fit is included');
    t.deepEqual(await indexes(3, 6, 0), [3], 'at least one entry');
    t.deepEqual(await indexes(3, 6, 50), [3], 'at least one entry, even larger than maxBytes');
    t.deepEqual(await indexes(8, 100, Infinity), [8, 9, 10], 'hi beyond the log');
    t.deepEqual(await indexes(11, 20, Infinity), [], 'lo beyond the log');
    t.deepEqual(await indexes(6, 5, Infinity), [], 'lo > hi');
    t.deepEqual(await indexes(7, 7, 1), [7]);
    t.deepEqual((await s.entries(4, 4, Infinity)).map(norm), [norm(hundred(4))]);

    await s.saveSnapshot(snapshot(5, 1));
    t.deepEqual(await indexes(1, 7, Infinity), [6, 7], 'entries below the first retained index are not returned');
    t.deepEqual(await indexes(1, 5, Infinity), []);

    // Empty payloads weigh nothing.
    await s.persist(batch({ entries: [entry(11, 2, { data: new Uint8Array(0) }), entry(12, 2, { data: new Uint8Array(0) }), hundred(13)] }));
    t.deepEqual(await indexes(10, 13, 100), [10, 11, 12]);
  });

  withStorage('large entries and large batches round-trip', async (t, s) => {
    const big = new Uint8Array(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff;
    const many = Array.from({ length: 2000 }, (_, i) => entry(i + 1, 1 + Math.floor(i / 500), { leader: `n${i % 3}` }));
    await s.persist(batch({ entries: many }));
    await s.persist(batch({ entries: [entry(2001, 5, { data: big })] }));
    const loaded = await s.load();
    t.is(loaded.lastIndex, 2001);
    t.deepEqual(loaded.termStarts, [
      [1, 1],
      [501, 2],
      [1001, 3],
      [1501, 4],
      [2001, 5],
    ]);
    t.deepEqual((await s.entries(1, 2000, Infinity)).map(norm), many.map(norm));
    const [got] = await s.entries(2001, 2001, 10);
    t.is(got && hex(got.data), hex(big));
  });

  withStorage('writes issued without waiting apply in call order', async (t, s) => {
    await Promise.all([
      s.persist(batch({ entries: run(1, 5, 1) })),
      s.persist(batch({ entries: run(3, 4, 2), hardState: { term: 2, vote: 'n2', commit: 0 } })),
      s.saveSnapshot(snapshot(2, 1)),
      s.persist(batch({ entries: run(5, 6, 2), hardState: { term: 2, vote: 'n2', commit: 4 } })),
    ]);
    t.deepEqual((await all(s)).map(norm), run(3, 6, 2).map(norm));
    const loaded = await s.load();
    t.deepEqual(loaded.snapshot.index, 2);
    t.deepEqual(loaded.hardState, { term: 2, vote: 'n2', commit: 4 });
  });

  withStorage('stored data is a copy: mutating what was passed or read changes nothing', async (t, s) => {
    const e = entry(1, 1, { data: 'abc' });
    const snap = snapshot(0, 0, { voters: ['n1'], learners: [] }, 'xyz');
    await s.persist(batch({ entries: [e] }));
    await s.persist(batch({ entries: [entry(2, 1)] }));
    e.data[0] = 0x7a;
    const [read] = await s.entries(1, 1, Infinity);
    t.is(read && Buffer.from(read.data).toString(), 'abc');
    if (read) read.data[0] = 0x7a;
    const [again] = await s.entries(1, 1, Infinity);
    t.is(again && Buffer.from(again.data).toString(), 'abc');
    await s.saveSnapshot(snap);
    snap.meta.config.voters.push('intruder');
    t.deepEqual((await s.latestSnapshot())?.meta.config, { voters: ['n1'], learners: [] });
    const hardState = { term: 2, vote: 'n1', commit: 1 };
    await s.persist(batch({ hardState }));
    hardState.term = 7;
    (await s.load()).hardState.term = 8;
    t.deepEqual((await s.load()).hardState, { term: 2, vote: 'n1', commit: 1 });
  });

  withStorage('a closed storage refuses work', async (t, s) => {
    await s.close();
    await t.throwsAsync(s.load(), { message: /closed/ });
    await t.throwsAsync(s.persist(batch({ entries: run(1, 1, 1) })), { message: /closed/ });
    await t.throwsAsync(s.entries(1, 1, Infinity), { message: /closed/ });
    await t.throwsAsync(s.saveSnapshot(snapshot(1, 1)), { message: /closed/ });
    await t.throwsAsync(s.latestSnapshot(), { message: /closed/ });
    await s.close(); // idempotent
  });

  if (harness.reopen) {
    withStorage('everything persisted survives a restart', async (t, s, reopen) => {
      await s.persist(batch({ entries: [...run(1, 3, 1), configEntry(4, 1, 'n4'), ...run(5, 9, 2)], hardState: { term: 2, vote: 'n1', commit: 6 } }));
      await s.saveSnapshot(snapshot(3, 1, { voters: ['n1', 'n2', 'n3'], learners: [] }));
      await s.persist(batch({ entries: run(8, 10, 3), hardState: { term: 3, vote: null, commit: 8 } }));
      const state = normState(await s.load());
      const entries = (await all(s)).map(norm);
      const snap = normSnapshot(await s.latestSnapshot());

      const r = await reopen(s);
      t.deepEqual(normState(await r.load()), state);
      t.deepEqual((await all(r)).map(norm), entries);
      t.deepEqual(normSnapshot(await r.latestSnapshot()), snap);
      // And it goes on from there.
      await r.persist(batch({ entries: run(11, 11, 3) }));
      t.is((await r.load()).lastIndex, 11);
    });
  }

  define(`${title}: random operation sequences match a naive model${harness.reopen ? ', across restarts' : ''}`, async (t) => {
    const ops = [
      // Append at or before the end: `back` 0 appends, more overwrites a suffix.
      { weight: 6, arbitrary: fc.record({ type: fc.constant('append' as const), back: fc.nat(4), count: fc.integer({ min: 1, max: 4 }), newTerm: fc.boolean(), config: fc.boolean(), size: fc.nat(40), withHardState: fc.boolean() }) },
      { weight: 1, arbitrary: fc.record({ type: fc.constant('hole' as const), gap: fc.integer({ min: 2, max: 3 }) }) },
      { weight: 2, arbitrary: fc.record({ type: fc.constant('hardState' as const), vote: fc.option(fc.constantFrom('n1', 'n2', 'n3')) }) },
      { weight: 1, arbitrary: fc.record({ type: fc.constant('install' as const), ahead: fc.integer({ min: -3, max: 5 }), withEntries: fc.nat(2) }) },
      { weight: 2, arbitrary: fc.record({ type: fc.constant('saveSnapshot' as const), back: fc.integer({ min: -1, max: 6 }) }) },
    ];
    const op = harness.reopen ? fc.oneof(...ops, { weight: 1, arbitrary: fc.record({ type: fc.constant('reopen' as const) }) }) : fc.oneof(...ops);
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 20 }), async (ops) => {
        const m = emptyModel();
        let s = await harness.open();
        let term = 1;
        let stateTerm = 0;
        try {
          for (const [step, o] of ops.entries()) {
            const label = `step ${step} ${JSON.stringify(o)}`;
            const snapIndex = modelSnapshotIndex(m);
            const last = modelLastIndex(m);
            const termAt = (i: number) => (i === snapIndex ? (m.snapshot?.meta.term ?? 0) : (m.log.get(i)?.term ?? 0));
            if (o.type === 'append') {
              const start = Math.max(1, last + 1 - o.back);
              // Raft: a conflicting suffix comes from a newer term.
              if (o.newTerm || start <= last) term++;
              term = Math.max(term, termAt(start - 1));
              const entries = Array.from({ length: o.count }, (_, k) =>
                o.config && k === 0 ? configEntry(start, term, `x${step}`) : entry(start + k, term, { data: new Uint8Array(o.size).fill(step * 7 + k) }),
              );
              stateTerm = Math.max(stateTerm, term);
              const b = batch({ entries, hardState: o.withHardState ? { term: stateTerm, vote: 'n1', commit: snapIndex } : null });
              assert.ok(modelPersist(m, b), label);
              await s.persist(b);
            } else if (o.type === 'hole') {
              const b = batch({ entries: run(last + o.gap, last + o.gap, term), hardState: { term: 99, vote: 'bad', commit: 99 } });
              assert.ok(!modelPersist(m, b), label);
              await assert.rejects(s.persist(b), /hole/, label);
            } else if (o.type === 'hardState') {
              stateTerm++;
              const b = batch({ hardState: { term: stateTerm, vote: o.vote, commit: Math.min(last, stateTerm) } });
              modelPersist(m, b);
              await s.persist(b);
            } else if (o.type === 'install') {
              const index = Math.max(0, last + o.ahead);
              term++;
              const snap = snapshot(index, term, { voters: [`v${step}`], learners: [] }, `installed ${step}`);
              const b = batch({ snapshot: snap, entries: run(index + 1, index + o.withEntries, term) });
              assert.ok(modelPersist(m, b), label);
              await s.persist(b);
            } else if (o.type === 'saveSnapshot') {
              const index = Math.max(0, last - o.back);
              const snap = snapshot(index, termAt(index) || term, { voters: [`s${step}`], learners: [] }, `saved ${step}`);
              modelSaveSnapshot(m, snap);
              await s.saveSnapshot(snap);
            } else if (harness.reopen) {
              s = await harness.reopen(s);
            }
            await assertMatchesModel(s, m, { voters: [], learners: [] }, label);
          }
        } finally {
          await s.close();
        }
      }),
      { numRuns: options.modelRuns ?? 100 },
    );
    t.pass();
  });
}
