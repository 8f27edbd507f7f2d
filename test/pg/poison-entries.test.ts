/**
 * An entry the database could not store must not stop apply. Once committed,
 * an entry is in the log for good: if applying it raised a database error
 * (a key too long for the kv index, NUL in a string, a proposal id too long
 * for the results index), every node would retry it forever and apply
 * nothing after it. Such entries can reach the log without SQL's
 * propose-time checks (bridges, the library, a peer's forwarded proposal),
 * so the state machine checks the same deterministic limits and records the
 * entry as failed, identically on every node.
 */
import test from 'ava';
import pg from 'pg';
import { migrate } from '../../sidecar/src/pg/migrate.ts';
import { useScratchServer } from './support.ts';
import { PgStateMachine } from '../../sidecar/src/pg/state-machine.ts';
import { encodeCommand } from '../../sidecar/src/node/command.ts';
import { commandProblem } from '../../sidecar/src/node/command-limits.ts';
import { EntryKind, type Entry } from '../../sidecar/src/core/types.ts';

const scratch = useScratchServer(test, 'poison');

const entry = (index: number, id: string, command: unknown): Entry => ({ index, term: 1, kind: EntryKind.Normal, data: encodeCommand({ id, command }) });

test('entries the database cannot store fail as themselves; the entries around them apply', async (t) => {
  const url = await scratch().createDatabase('poison');
  await migrate(url);
  const sm = new PgStateMachine({ connection: url });
  t.teardown(() => sm.close());
  let nested: unknown = 1;
  for (let k = 0; k < 150; k++) nested = [nested];
  const batch = [
    entry(1, 'a', { op: 'set', key: 'before', value: 1 }),
    entry(2, 'b', { op: 'set', key: 'k'.repeat(4000), value: 1 }),
    entry(3, 'c', { op: 'set', key: 'nul', value: 'x\u0000y' }),
    entry(4, 'd', { op: 'set', key: 'lone', value: '\ud800' }),
    entry(5, 'i'.repeat(3000), { op: 'set', key: 'long-id', value: 1 }),
    entry(6, 'e', { op: 'cas', key: 'deep', expected: null, value: nested }),
    entry(7, 'f', { op: 'set', key: 'after', value: 2 }),
  ];
  const results = await sm.apply(batch);
  t.deepEqual(
    results.map((r) => [r.index, r.status]),
    [
      [1, 'ok'],
      [2, 'failed'],
      [3, 'failed'],
      [4, 'failed'],
      [5, 'failed'],
      [6, 'failed'],
      [7, 'ok'],
    ],
  );
  t.regex(results[1]?.error ?? '', /4000 bytes long, above the limit of 1024/);
  t.regex(results[2]?.error ?? '', /NUL/);
  t.regex(results[3]?.error ?? '', /surrogate/);
  t.regex(results[4]?.error ?? '', /proposal id must be 1 to 512 bytes/);
  t.regex(results[5]?.error ?? '', /nested deeper than 100/);
  t.is(await sm.appliedIndex(), 7);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  t.teardown(() => c.end());
  t.deepEqual((await c.query('SELECT key FROM rale.kv ORDER BY key')).rows, [{ key: 'after' }, { key: 'before' }]);
  // The failures are recorded under their ids (so a retry learns the outcome), except the id that is itself too long.
  t.deepEqual((await c.query("SELECT proposal_id, status FROM rale.results WHERE status = 'failed' ORDER BY proposal_id")).rows.map((r) => r.proposal_id), ['b', 'c', 'd', 'e']);
});

test('commandProblem accepts ordinary commands', (t) => {
  t.is(commandProblem({ op: 'set', key: 'k', value: { a: [1, 'two', null, true], 'é': '😀' } }), null);
  t.is(commandProblem({ op: 'call', handler: 'transfer', payload: { from: 'a', to: 'b', amount: 5 } }), null);
  t.regex(commandProblem({ op: 'set', key: 'k', value: { ['x\u0000']: 1 } }) ?? '', /field name/);
  t.regex(commandProblem({ op: 'set', key: 'k', value: Number.NaN }) ?? '', /number JSON cannot carry/);
});
