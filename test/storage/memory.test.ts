import test from 'ava';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { EntryKind } from '../../sidecar/src/core/types.ts';
import { logStorageCompliance } from './compliance.ts';

logStorageCompliance(
  'MemoryLogStorage',
  {
    open: async (options) => new MemoryLogStorage(options),
    // A restart after a crash: a new object over a copy of the durable state.
    reopen: async (storage) => {
      await storage.close();
      return (storage as MemoryLogStorage).clone();
    },
  },
  { modelRuns: 300 },
);

test('MemoryLogStorage: a clone is independent of its original', async (t) => {
  const original = new MemoryLogStorage();
  await original.persist({ snapshot: null, entries: [{ index: 1, term: 1, kind: EntryKind.Normal, data: new Uint8Array([1]) }], hardState: null });
  const copy = original.clone();
  await original.persist({ snapshot: null, entries: [{ index: 2, term: 1, kind: EntryKind.Normal, data: new Uint8Array([2]) }], hardState: null });
  await copy.persist({ snapshot: null, entries: [], hardState: { term: 5, vote: 'n2', commit: 0 } });
  t.is((await original.load()).lastIndex, 2);
  t.is((await copy.load()).lastIndex, 1);
  t.deepEqual((await original.load()).hardState, { term: 0, vote: null, commit: 0 });
});
