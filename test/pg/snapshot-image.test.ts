/**
 * The snapshot image of PgStateMachine (built and taken apart inside
 * PostgreSQL): a round trip carries every replicated table exactly, values
 * of any JSON type and declared handler tables included; a restore replaces
 * what was there; an image that is not JSON, or of an unknown version, is
 * refused with a clear error and changes nothing.
 */
import test from 'ava';
import pg from 'pg';
import { migrate } from '../../sidecar/src/pg/migrate.ts';
import { useScratchServer } from './support.ts';
import { PgStateMachine } from '../../sidecar/src/pg/state-machine.ts';
import { encodeCommand } from '../../sidecar/src/node/command.ts';
import { EntryKind, type Entry } from '../../sidecar/src/core/types.ts';

const scratch = useScratchServer(test, 'snapimage');

const TABLE_SQL = `
  CREATE TABLE visits (who text PRIMARY KEY, n int NOT NULL, tags text[], seen jsonb);
  CREATE FUNCTION visit(p jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO visits VALUES (p->>'who', 1, ARRAY['a', 'b"c'], p) ON CONFLICT (who) DO UPDATE SET n = visits.n + 1 RETURNING to_jsonb(n) $$;`;

const entry = (index: number, id: string, command: unknown): Entry => ({ index, term: 2, kind: EntryKind.Normal, data: encodeCommand({ id, command }) });

async function database(name: string): Promise<{ url: string; sm: PgStateMachine; sql: pg.Client }> {
  const url = await scratch().createDatabase(name);
  await migrate(url);
  const sql = new pg.Client({ connectionString: url });
  await sql.connect();
  await sql.query(TABLE_SQL);
  return { url, sm: new PgStateMachine({ connection: url }), sql };
}

async function state(sql: pg.Client): Promise<unknown> {
  const rows = async (q: string) => (await sql.query(q)).rows;
  return {
    kv: await rows('SELECT key, value, version FROM rale.kv ORDER BY key'),
    handlers: await rows('SELECT name, function, tables, registered_index FROM rale.handlers ORDER BY name'),
    results: await rows('SELECT proposal_id, index, term, status, result, error FROM rale.results ORDER BY proposal_id'),
    visits: await rows('SELECT * FROM visits ORDER BY who'),
    applied: await rows('SELECT index, term FROM rale.applied'),
  };
}

test('a snapshot restores every replicated table exactly, replacing what was there', async (t) => {
  const source = await database('snap_source');
  const target = await database('snap_target');
  t.teardown(async () => {
    await source.sm.close();
    await target.sm.close();
    await source.sql.end();
    await target.sql.end();
  });
  const values = [1, -2.5, 'text with "quotes" and \\ and é', null, true, [1, [2, { deep: [] }]], { a: { b: null } }];
  const batch: Entry[] = [];
  let index = 0;
  batch.push(entry(++index, 'register-visit', { op: 'register_handler', name: 'visit', function: 'public.visit(jsonb)', tables: ['visits'] }));
  for (const [k, value] of values.entries()) batch.push(entry(++index, `set-${k}`, { op: 'set', key: `key-${k}`, value }));
  batch.push(entry(++index, 'del', { op: 'delete', key: 'key-0' }));
  for (const who of ['ann', 'bob', 'ann']) batch.push(entry(++index, `visit-${index}`, { op: 'call', handler: 'visit', payload: { who } }));
  batch.push(entry(++index, 'bad', { op: 'call', handler: 'nobody', payload: {} }));
  await source.sm.apply(batch);
  const before = await state(source.sql);
  t.is((before as { visits: unknown[] }).visits.length, 2, JSON.stringify(before));
  t.is((before as { results: unknown[] }).results.length, batch.length, 'every command has its result');

  // The target holds other state, which the restore must replace entirely.
  await target.sm.apply([entry(1, 'other', { op: 'set', key: 'only-on-target', value: 1 })]);
  await target.sql.query(`INSERT INTO visits VALUES ('zed', 9, NULL, NULL)`);

  const snap = await source.sm.snapshot();
  t.is(snap.index, index);
  const image = JSON.parse(new TextDecoder().decode(snap.data)) as Record<string, unknown>;
  t.deepEqual(Object.keys(image), ['version', 'applied', 'kv', 'handlers', 'settings', 'results', 'tables']);
  await target.sm.restore({ index: snap.index, term: snap.term, config: { voters: ['n1'], learners: [] } }, snap.data);
  t.deepEqual(await state(target.sql), before);
  t.is(await target.sm.appliedIndex(), index);
});

test('an image that is not JSON, or of an unknown version, is refused and changes nothing', async (t) => {
  const target = await database('snap_refuse');
  t.teardown(async () => {
    await target.sm.close();
    await target.sql.end();
  });
  await target.sm.apply([entry(1, 'keep', { op: 'set', key: 'kept', value: 'yes' })]);
  const before = await state(target.sql);
  const meta = { index: 50, term: 3, config: { voters: ['n1'], learners: [] } };
  const notJson = await t.throwsAsync(target.sm.restore(meta, new TextEncoder().encode('{"version":1,"kv":[')));
  t.regex(notJson?.message ?? '', /the snapshot image is not valid JSON/);
  const future = await t.throwsAsync(target.sm.restore(meta, new TextEncoder().encode('{"version":2,"kv":[]}')));
  t.regex(future?.message ?? '', /unknown snapshot image version 2: upgrade rale on this node/);
  t.deepEqual(await state(target.sql), before);
  t.is(await target.sm.appliedIndex(), 1);
});

test('snapshotInPlace stores the same image in rale.snapshot and compacts the log, in one transaction; an older one is not written', async (t) => {
  const db = await database('snap_in_place');
  t.teardown(async () => {
    await db.sm.close();
    await db.sql.end();
  });
  const batch = [
    entry(1, 'register-visit', { op: 'register_handler', name: 'visit', function: 'public.visit(jsonb)', tables: ['visits'] }),
    entry(2, 'a', { op: 'set', key: 'a', value: null }),
    entry(3, 'v', { op: 'call', handler: 'visit', payload: { who: "o'hara" } }),
  ];
  await db.sm.apply(batch);
  // The log as PgLogStorage would hold it: entries 1-5 (4 and 5 not applied yet).
  await db.sql.query(`INSERT INTO rale.log_entries (index, term, kind, data) SELECT i, 2, 0, '\\x00'::bytea FROM generate_series(1, 5) AS i`);
  const config = { voters: ['n1', 'n2'], learners: ['n3'] };
  const asked: number[] = [];
  const meta = await db.sm.snapshotInPlace((index) => {
    asked.push(index);
    return { index, term: 2, config };
  });
  t.deepEqual(meta, { index: 3, term: 2, config });
  t.deepEqual(asked, [3], 'asked for the metadata at the applied index');
  const row = (await db.sql.query('SELECT index, term, config, data FROM rale.snapshot')).rows[0];
  t.like(row, { index: '3', term: '2', config });
  const viaNode = await db.sm.snapshot();
  t.is(Buffer.from(row.data).toString('utf8'), new TextDecoder().decode(viaNode.data), 'the same image as snapshot()');
  t.deepEqual((await db.sql.query('SELECT index FROM rale.log_entries ORDER BY index')).rows.map((r) => Number(r.index)), [4, 5], 'covered entries deleted');
  // Nothing newer applied: not written again.
  t.is(await db.sm.snapshotInPlace((index) => ({ index, term: 2, config })), null);
  // A metadata failure (the core cannot give it) changes nothing.
  await db.sm.apply([entry(4, 'b', { op: 'set', key: 'b', value: 1 })]);
  await t.throwsAsync(db.sm.snapshotInPlace(() => {
    throw new Error('no snapshot can be taken here');
  }), { message: /no snapshot can be taken here/ });
  t.is(Number((await db.sql.query('SELECT index FROM rale.snapshot')).rows[0].index), 3);
  t.deepEqual((await db.sql.query('SELECT index FROM rale.log_entries ORDER BY index')).rows.map((r) => Number(r.index)), [4, 5]);
});
