/**
 * Set-based apply (rale.apply_entries) against the per-statement apply it
 * replaced (test/pg/reference-state-machine.ts): random batches of kv
 * commands on few keys (runs with repeated keys), cas, handler calls that
 * succeed, fail or read what a run just wrote, handler registrations,
 * malformed commands, undecodable entries, no-ops, config entries, and
 * proposal ids repeated within a batch and across batches, some batches
 * replayed (already applied). Both must give the same outcomes and leave the
 * same rows in kv, results, handlers, applied and the handlers' table.
 */
import assert from 'node:assert/strict';
import test from 'ava';
import fc from 'fast-check';
import pg from 'pg';
import { migrate } from '../../sidecar/src/pg/migrate.ts';
import { useScratchServer } from './support.ts';
import { PgStateMachine } from '../../sidecar/src/pg/state-machine.ts';
import { encodeCommand } from '../../sidecar/src/node/command.ts';
import { encodeConfigChange } from '../../sidecar/src/core/config.ts';
import { EntryKind, type Entry } from '../../sidecar/src/core/types.ts';
import { ReferenceStateMachine } from './reference-state-machine.ts';

const scratch = useScratchServer(test, 'apply');

const SETUP = `
  CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL);
  INSERT INTO counter VALUES (1, 0);
  CREATE FUNCTION bump(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
    UPDATE counter SET n = n + (payload->>'by')::bigint WHERE id = 1 RETURNING to_jsonb(n) $$;
  CREATE FUNCTION flaky(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
  BEGIN
    UPDATE counter SET n = n + 1000 WHERE id = 1;
    IF (payload->>'fail')::boolean THEN RAISE EXCEPTION 'flaky says no to %', payload->>'tag'; END IF;
    RETURN jsonb_build_object('tag', payload->'tag');
  END $$;
  CREATE FUNCTION peek(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('seen', (SELECT value FROM rale.kv WHERE key = payload->>'key'), 'n', (SELECT n FROM counter)) $$;
  CREATE FUNCTION nothing(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$;`;

let pair: { urls: string[] } | null = null;

/** Two databases, one per implementation, reset to an empty replicated state. */
async function freshPair(): Promise<{ fast: PgStateMachine; reference: ReferenceStateMachine; urls: string[] }> {
  if (pair === null) {
    const urls: string[] = [];
    for (const kind of ['fast', 'ref']) {
      const url = await scratch().createDatabase(`apply_${kind}`);
      await migrate(url);
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query(SETUP);
      await c.end();
      urls.push(url);
    }
    pair = { urls };
  }
  const { urls } = pair;
  for (const url of urls) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('TRUNCATE rale.kv, rale.results, rale.handlers; UPDATE rale.applied SET index = 0, term = 0; UPDATE counter SET n = 0');
    await c.end();
  }
  return { fast: new PgStateMachine({ connection: urls[0]! }), reference: new ReferenceStateMachine({ connection: urls[1]! }), urls };
}

async function dump(url: string): Promise<unknown> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const q = async (sql: string) => (await c.query(sql)).rows;
    return {
      kv: await q('SELECT key, value, version FROM rale.kv ORDER BY key'),
      results: await q('SELECT proposal_id, index, term, status, result, error FROM rale.results ORDER BY proposal_id'),
      handlers: await q('SELECT name, function, tables, registered_index FROM rale.handlers ORDER BY name'),
      applied: await q('SELECT index, term FROM rale.applied'),
      counter: await q('SELECT n FROM counter'),
    };
  } finally {
    await c.end();
  }
}

type Gen =
  | { t: 'set'; key: number; value: number }
  | { t: 'delete'; key: number }
  | { t: 'cas'; key: number; expected: number | null; value: number }
  | { t: 'bump'; by: number }
  | { t: 'flaky'; fail: boolean; tag: number }
  | { t: 'peek'; key: number }
  | { t: 'nothing' }
  | { t: 'missing-handler' }
  | { t: 'register' }
  | { t: 'malformed'; which: number }
  | { t: 'undecodable' }
  | { t: 'noop' }
  | { t: 'config'; withId: boolean };

const genCommand: fc.Arbitrary<Gen> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('set' as const), key: fc.nat(3), value: fc.nat(5) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('delete' as const), key: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('cas' as const), key: fc.nat(3), expected: fc.option(fc.nat(5)), value: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('bump' as const), by: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('flaky' as const), fail: fc.boolean(), tag: fc.nat(9) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('peek' as const), key: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'nothing' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'missing-handler' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'register' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('malformed' as const), which: fc.nat(6) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'undecodable' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'noop' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('config' as const), withId: fc.boolean() }) },
);

const MALFORMED: unknown[] = [
  'not an object',
  null,
  [1, 2],
  { op: 'set', value: 1 },
  { op: 'delete', key: 7 },
  { op: 'cas', key: 'k0' },
  { op: 'frobnicate', key: 'k0' },
];

/** An entry; `reuse` picks the proposal id of an earlier entry (a retry), by position. */
function toEntry(g: Gen, index: number, id: string): Entry {
  const cmd = (command: unknown): Entry => ({ index, term: 1, kind: EntryKind.Normal, data: encodeCommand({ id, command }) });
  switch (g.t) {
    case 'set':
      return cmd({ op: 'set', key: `k${g.key}`, value: { v: g.value } });
    case 'delete':
      return cmd({ op: 'delete', key: `k${g.key}` });
    case 'cas':
      return cmd({ op: 'cas', key: `k${g.key}`, expected: g.expected === null ? null : { v: g.expected }, value: { v: g.value } });
    case 'bump':
      return cmd({ op: 'call', handler: 'bump', payload: { by: g.by } });
    case 'flaky':
      return cmd({ op: 'call', handler: 'flaky', payload: { fail: g.fail, tag: g.tag } });
    case 'peek':
      return cmd({ op: 'call', handler: 'peek', payload: { key: `k${g.key}` } });
    case 'nothing':
      return cmd({ op: 'call', handler: 'nothing' });
    case 'missing-handler':
      return cmd({ op: 'call', handler: 'nobody' });
    case 'register':
      return cmd({ op: 'register_handler', name: 'peek2', function: 'peek(jsonb)', tables: ['counter', 7] });
    case 'malformed':
      return cmd(MALFORMED[g.which]);
    case 'undecodable':
      return { index, term: 1, kind: EntryKind.Normal, data: new TextEncoder().encode('{"no envelope"') };
    case 'noop':
      return { index, term: 1, kind: EntryKind.Noop, data: new Uint8Array(0) };
    case 'config':
      return { index, term: 1, kind: EntryKind.Config, data: encodeConfigChange({ type: 'addLearner', node: `n${index}`, ...(g.withId ? { id } : {}) }) };
  }
}

const genBatches = fc.array(
  fc.record({
    commands: fc.array(fc.record({ g: genCommand, reuse: fc.option(fc.nat(200), { freq: 4 }) }), { minLength: 1, maxLength: 24 }),
    replay: fc.boolean(),
  }),
  { minLength: 1, maxLength: 6 },
);

/** Applies the generated batches with both implementations; outcomes and rows must agree. */
async function compareWithReference(batches: Array<{ commands: Array<{ g: Gen; reuse: number | null }>; replay: boolean }>): Promise<void> {
  const { fast, reference, urls } = await freshPair();
  try {
    // The handlers exist before the batches (registered through the log, as clients do).
    let index = 0;
    const registrations: Entry[] = ['bump', 'flaky', 'peek', 'nothing'].map((name) => ({
      index: ++index,
      term: 1,
      kind: EntryKind.Normal,
      data: encodeCommand({ id: `reg-${name}`, command: { op: 'register_handler', name, function: `${name}(jsonb)`, tables: ['counter'] } }),
    }));
    assert.deepEqual(await fast.apply(registrations), await reference.apply(registrations));
    const ids: string[] = [];
    let previous: Entry[] = [];
    for (const batch of batches) {
      const entries = batch.commands.map(({ g, reuse }) => {
        // (A config entry never reuses an id: the reference fails on one already recorded, see below.)
        const id = reuse !== null && ids.length > 0 && g.t !== 'config' ? (ids[reuse % ids.length] as string) : `p${index + 1}`;
        ids.push(id);
        return toEntry(g, ++index, id);
      });
      // A replay re-applies the previous batch's tail with the new one (a restart's overlap).
      const applying = batch.replay ? [...previous.slice(-3), ...entries] : entries;
      const got = await fast.apply(applying);
      const want = await reference.apply(applying);
      assert.deepEqual(got, want, `outcomes of entries ${applying[0]?.index}..${index}`);
      previous = entries;
    }
    assert.deepEqual(await dump(urls[0]!), await dump(urls[1]!));
  } finally {
    await fast.close();
    await reference.close();
  }
}

test.serial('set-based apply gives the outcomes and rows of the per-statement apply', async (t) => {
  await fc.assert(fc.asyncProperty(genBatches, compareWithReference), { numRuns: Number(process.env.RALE_APPLY_RUNS ?? 15) });
  t.pass();
});

// Batches of kv set and delete only, often of one entry: apply_entries' fast
// paths (0005_batch_wait.sql), and their fall-backs when an id repeats or a
// batch is replayed.
const genKvBatches = fc.array(
  fc.record({
    commands: fc.array(
      fc.record({
        g: fc.oneof(
          fc.record({ t: fc.constant('set' as const), key: fc.nat(3), value: fc.nat(5) }),
          fc.record({ t: fc.constant('delete' as const), key: fc.nat(3) }),
        ) as fc.Arbitrary<Gen>,
        reuse: fc.option(fc.nat(200), { freq: 8 }),
      }),
      { minLength: 1, maxLength: 6 },
    ),
    replay: fc.nat(3).map((n) => n === 0), // a quarter of the batches replay
  }),
  { minLength: 1, maxLength: 8 },
);

test.serial('kv-only batches (the fast paths) give the outcomes and rows of the per-statement apply', async (t) => {
  await fc.assert(fc.asyncProperty(genKvBatches, compareWithReference), { numRuns: Number(process.env.RALE_APPLY_RUNS ?? 15) });
  t.pass();
});

test.serial('a run of kv commands on one key: last write wins, each delete sees the one before it', async (t) => {
  const { fast, reference, urls } = await freshPair();
  try {
    const ops = [
      { op: 'delete', key: 'a' },
      { op: 'set', key: 'a', value: 1 },
      { op: 'set', key: 'a', value: 2 },
      { op: 'delete', key: 'a' },
      { op: 'delete', key: 'a' },
      { op: 'set', key: 'a', value: 3 },
      { op: 'set', key: 'b', value: 1 },
      { op: 'delete', key: 'b' },
    ];
    const entries = ops.map((command, k) => ({ index: k + 1, term: 1, kind: EntryKind.Normal, data: encodeCommand({ id: `x${k}`, command }) }));
    const got = await fast.apply(entries);
    t.deepEqual(
      got.map((r) => r.result),
      [{ ok: true, existed: false }, { ok: true }, { ok: true }, { ok: true, existed: true }, { ok: true, existed: false }, { ok: true }, { ok: true }, { ok: true, existed: true }],
    );
    t.deepEqual(got, await reference.apply(entries));
    t.deepEqual(await dump(urls[0]!), await dump(urls[1]!));
    const c = new pg.Client({ connectionString: urls[0] });
    await c.connect();
    t.deepEqual((await c.query('SELECT key, value, version FROM rale.kv')).rows, [{ key: 'a', value: 3, version: '6' }]);
    await c.end();
  } finally {
    await fast.close();
    await reference.close();
  }
});

test.serial('a config entry whose id is already recorded (a resubmitted membership change) applies; the per-statement apply failed on it', async (t) => {
  const { fast, reference } = await freshPair();
  try {
    const first = [{ index: 1, term: 1, kind: EntryKind.Config, data: encodeConfigChange({ type: 'addLearner', node: 'n4', id: 'm1' }) }];
    const again = [{ index: 2, term: 1, kind: EntryKind.Config, data: encodeConfigChange({ type: 'addLearner', node: 'n4', id: 'm1' }) }];
    for (const sm of [fast, reference]) t.deepEqual(await sm.apply(first), [{ index: 1, status: 'ok', result: null }]);
    t.deepEqual(await fast.apply(again), [{ index: 2, status: 'ok', result: null }]);
    await t.throwsAsync(reference.apply(again), { message: /duplicate key/ });
  } finally {
    await fast.close();
    await reference.close();
  }
});
