/**
 * The per-statement PgStateMachine.apply as it was before rale.apply_entries
 * (sql/migrations/0003_fast_path.sql), kept as the reference that the
 * set-based apply must match outcome for outcome and row for row
 * (test/pg/apply.test.ts). Test code only.
 */
import pg from 'pg';
import { EntryKind, type Entry, type SnapshotMeta } from '../../sidecar/src/core/types.ts';
import { decodeConfigChange } from '../../sidecar/src/core/config.ts';
import type { ApplyResult, StateMachine } from '../../sidecar/src/storage/types.ts';
import { decodeCommand } from '../../sidecar/src/node/command.ts';
import { pgTypes } from '../../sidecar/src/pg/types.ts';

export interface ReferenceStateMachineOptions {
  connection: string | pg.PoolConfig;
  /** Commit apply transactions synchronously (slower; see DESIGN). Default false. */
  synchronousApply?: boolean;
  maxConnections?: number;
}

interface SnapshotImage {
  version: 1;
  applied: { index: number; term: number };
  kv: Array<{ key: string; value: unknown; version: number }>;
  handlers: Array<{ name: string; function: string; tables: string[]; registered_index: number }>;
  settings: Array<{ key: string; value: unknown }>;
  results: Array<{ proposal_id: string; index: number; term: number; status: string; result: unknown; error: string | null }>;
  /** Rows of the tables handlers declared, by table name. */
  tables: Record<string, unknown[]>;
}

type Outcome = Omit<ApplyResult, 'index'>;

const RESULTS_PRUNE_EVERY = 1000;

export class ReferenceStateMachine implements StateMachine {
  readonly pool: pg.Pool;
  private readonly synchronousApply: boolean;

  constructor(options: ReferenceStateMachineOptions) {
    const base = typeof options.connection === 'string' ? { connectionString: options.connection } : options.connection;
    this.pool = new pg.Pool({ ...base, max: options.maxConnections ?? 2, types: pgTypes });
    this.pool.on('error', () => {
      // An idle connection died (server restart): the next query reconnects.
    });
    // A checked-out client whose server dies mid-transaction emits 'error';
    // unheard, that would crash the process. The query in progress fails
    // anyway, which is how the driver learns of it.
    this.pool.on('connect', (client) => client.on('error', () => {}));
    this.synchronousApply = options.synchronousApply ?? false;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async appliedIndex(): Promise<number> {
    const { rows } = await this.pool.query<{ index: number }>('SELECT index FROM rale.applied');
    return rows[0]?.index ?? 0;
  }

  async apply(entries: Entry[]): Promise<ApplyResult[]> {
    if (entries.length === 0) return [];
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      if (!this.synchronousApply) await client.query('SET LOCAL synchronous_commit = off');
      const { rows } = await client.query<{ index: number }>('SELECT index FROM rale.applied FOR UPDATE');
      const applied = rows[0]?.index ?? 0;
      const fresh = entries.filter((e) => e.index > applied);
      const out: ApplyResult[] = [];
      const decoded = fresh.map((entry) => ({ entry, envelope: entry.kind === EntryKind.Normal ? safeDecode(entry.data) : null }));
      const ids = decoded.flatMap((d) => (d.envelope && typeof d.envelope !== 'string' ? [d.envelope.id] : []));
      const seen = new Map<string, Outcome>();
      if (ids.length > 0) {
        const prior = await client.query<{ proposal_id: string; status: string; result: unknown; error: string | null }>(
          'SELECT proposal_id, status, result, error FROM rale.results WHERE proposal_id = ANY($1::text[])',
          [ids],
        );
        for (const r of prior.rows) seen.set(r.proposal_id, toOutcome(r.status, r.result, r.error));
      }
      const newResults: Array<{ id: string; index: number; term: number; outcome: Outcome }> = [];
      for (const { entry, envelope } of decoded) {
        if (entry.kind === EntryKind.Config) {
          const id = configChangeId(entry);
          if (id !== null && !seen.has(id)) {
            const outcome: Outcome = { status: 'ok', result: null };
            seen.set(id, outcome);
            newResults.push({ id, index: entry.index, term: entry.term, outcome });
          }
          out.push({ index: entry.index, status: 'ok', result: null });
          continue;
        }
        if (entry.kind !== EntryKind.Normal) {
          out.push({ index: entry.index, status: 'ok', result: null });
          continue;
        }
        if (envelope === null || typeof envelope === 'string') {
          out.push({ index: entry.index, status: 'failed', error: envelope ?? 'not a command envelope' });
          continue;
        }
        const previous = seen.get(envelope.id);
        if (previous !== undefined) {
          out.push({ index: entry.index, ...previous }); // a duplicate: same answer, no effect
          continue;
        }
        const outcome = await this.applyCommand(client, entry, envelope.command);
        seen.set(envelope.id, outcome);
        newResults.push({ id: envelope.id, index: entry.index, term: entry.term, outcome });
        out.push({ index: entry.index, ...outcome });
      }
      if (newResults.length > 0) {
        await client.query(
          `INSERT INTO rale.results (proposal_id, index, term, status, result, error)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::jsonb[], $6::text[])`,
          [
            newResults.map((r) => r.id),
            newResults.map((r) => r.index),
            newResults.map((r) => r.term),
            newResults.map((r) => (r.outcome.status === 'ok' ? 'applied' : 'failed')),
            newResults.map((r) => (r.outcome.result === undefined ? null : JSON.stringify(r.outcome.result))),
            newResults.map((r) => r.outcome.error ?? null),
          ],
        );
      }
      const last = entries[entries.length - 1] as Entry;
      if (last.index > applied) {
        await client.query('UPDATE rale.applied SET index = $1, term = $2', [last.index, last.term]);
        await this.maybePruneResults(client, applied, last.index);
      }
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /** Keeps rale.results bounded, deterministically: the same rows go at the same index on every node. */
  private async maybePruneResults(client: pg.PoolClient, from: number, to: number): Promise<void> {
    if (Math.floor(from / RESULTS_PRUNE_EVERY) === Math.floor(to / RESULTS_PRUNE_EVERY)) return;
    await client.query(
      `DELETE FROM rale.results WHERE index < $1 - coalesce((SELECT (value #>> '{}')::bigint FROM rale.settings WHERE key = 'results_retention_entries'), 1000000)`,
      [Math.floor(to / RESULTS_PRUNE_EVERY) * RESULTS_PRUNE_EVERY],
    );
  }

  private async applyCommand(client: pg.PoolClient, entry: Entry, command: unknown): Promise<Outcome> {
    if (command === null || typeof command !== 'object') return { status: 'failed', error: 'a command must be a JSON object' };
    const c = command as Record<string, unknown>;
    const key = typeof c.key === 'string' ? c.key : null;
    switch (c.op) {
      case 'set':
        if (key === null || !('value' in c)) return { status: 'failed', error: 'set needs a string key and a value' };
        await client.query(
          `INSERT INTO rale.kv (key, value, version) VALUES ($1, $2::jsonb, $3)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version`,
          [key, JSON.stringify(c.value), entry.index],
        );
        return { status: 'ok', result: { ok: true } };
      case 'delete': {
        if (key === null) return { status: 'failed', error: 'delete needs a string key' };
        const r = await client.query('DELETE FROM rale.kv WHERE key = $1', [key]);
        return { status: 'ok', result: { ok: true, existed: (r.rowCount ?? 0) > 0 } };
      }
      case 'cas': {
        if (key === null || !('value' in c)) return { status: 'failed', error: 'cas needs a string key, expected and value' };
        const expected = c.expected ?? null;
        const r =
          expected === null
            ? await client.query('INSERT INTO rale.kv (key, value, version) VALUES ($1, $2::jsonb, $3) ON CONFLICT (key) DO NOTHING', [
                key,
                JSON.stringify(c.value),
                entry.index,
              ])
            : await client.query('UPDATE rale.kv SET value = $2::jsonb, version = $3 WHERE key = $1 AND value = $4::jsonb', [
                key,
                JSON.stringify(c.value),
                entry.index,
                JSON.stringify(expected),
              ]);
        if ((r.rowCount ?? 0) > 0) return { status: 'ok', result: { ok: true } };
        const current = await client.query<{ value: unknown }>('SELECT value FROM rale.kv WHERE key = $1', [key]);
        return { status: 'ok', result: { ok: false, current: current.rows[0]?.value ?? null } };
      }
      case 'call':
        return this.callHandler(client, c);
      case 'register_handler':
        return this.registerHandler(client, entry, c);
      default:
        return { status: 'failed', error: `unknown command op ${JSON.stringify(c.op)}` };
    }
  }

  /**
   * Runs a registered handler inside a savepoint: if it raises, its effects
   * roll back, the error becomes the entry's result, and later entries still
   * apply. The function to call comes from rale.handlers (replicated), never
   * from the proposal: no SQL text from a proposal is ever executed.
   */
  private async callHandler(client: pg.PoolClient, c: Record<string, unknown>): Promise<Outcome> {
    const name = typeof c.handler === 'string' ? c.handler : null;
    if (name === null) return { status: 'failed', error: 'call needs a handler name' };
    const handler = await client.query<{ fn: string | null }>('SELECT to_regprocedure(function)::regproc::text AS fn FROM rale.handlers WHERE name = $1', [name]);
    const row = handler.rows[0];
    if (row === undefined) return { status: 'failed', error: `no handler is registered under the name "${name}"` };
    if (row.fn === null) return { status: 'failed', error: `the function of handler "${name}" does not exist on this node` };
    await client.query('SAVEPOINT rale_handler');
    try {
      // row.fn is regproc output: a quoted, schema-qualified identifier.
      const r = await client.query<{ result: unknown }>(`SELECT ${row.fn}($1::jsonb) AS result`, [JSON.stringify(c.payload ?? null)]);
      await client.query('RELEASE SAVEPOINT rale_handler');
      return { status: 'ok', result: r.rows[0]?.result ?? null };
    } catch (err) {
      await client.query('ROLLBACK TO SAVEPOINT rale_handler');
      return { status: 'failed', error: (err as Error).message };
    }
  }

  private async registerHandler(client: pg.PoolClient, entry: Entry, c: Record<string, unknown>): Promise<Outcome> {
    const name = typeof c.name === 'string' ? c.name : null;
    const fn = typeof c.function === 'string' ? c.function : null;
    const tables = Array.isArray(c.tables) ? c.tables.filter((t): t is string => typeof t === 'string') : [];
    if (name === null || fn === null) return { status: 'failed', error: 'register_handler needs a name and a function' };
    await client.query(
      `INSERT INTO rale.handlers (name, function, tables, registered_index) VALUES ($1, $2, $3, $4)
       ON CONFLICT (name) DO UPDATE SET function = EXCLUDED.function, tables = EXCLUDED.tables, registered_index = EXCLUDED.registered_index`,
      [name, fn, tables, entry.index],
    );
    return { status: 'ok', result: { registered: name } };
  }

  async snapshot(): Promise<{ index: number; term: number; data: Uint8Array }> {
    const client = await this.pool.connect();
    try {
      // One consistent view of every replicated table.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const applied = (await client.query<{ index: number; term: number }>('SELECT index, term FROM rale.applied')).rows[0] ?? { index: 0, term: 0 };
      const handlers = (await client.query('SELECT name, function, tables, registered_index FROM rale.handlers ORDER BY name')).rows;
      const image: SnapshotImage = {
        version: 1,
        applied,
        kv: (await client.query('SELECT key, value, version FROM rale.kv ORDER BY key')).rows,
        handlers,
        settings: (await client.query('SELECT key, value FROM rale.settings ORDER BY key')).rows,
        results: (await client.query('SELECT proposal_id, index, term, status, result, error FROM rale.results ORDER BY proposal_id')).rows,
        tables: {},
      };
      for (const table of new Set(handlers.flatMap((h: { tables: string[] }) => h.tables))) {
        const rows = await client.query<{ row: unknown }>(`SELECT to_jsonb(t) AS row FROM ${await resolveTable(client, table)} t`);
        image.tables[table] = rows.rows.map((r) => r.row);
      }
      await client.query('COMMIT');
      return { index: applied.index, term: applied.term, data: new TextEncoder().encode(JSON.stringify(image)) };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /** Replaces the whole replicated state with the snapshot's, in one transaction. */
  async restore(meta: SnapshotMeta, data: Uint8Array): Promise<void> {
    const image = JSON.parse(new TextDecoder().decode(data)) as SnapshotImage;
    if (image.version !== 1) throw new Error(`unknown snapshot image version ${String(image.version)}: upgrade rale on this node`);
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('DELETE FROM rale.kv');
      await client.query('DELETE FROM rale.handlers');
      await client.query('DELETE FROM rale.settings');
      await client.query('DELETE FROM rale.results');
      await client.query(`INSERT INTO rale.kv (key, value, version) SELECT key, value, version FROM jsonb_to_recordset($1::jsonb) AS t(key text, value jsonb, version bigint)`, [
        JSON.stringify(image.kv),
      ]);
      await client.query(
        `INSERT INTO rale.handlers (name, function, tables, registered_index)
         SELECT name, function, tables, registered_index FROM jsonb_to_recordset($1::jsonb) AS t(name text, function text, tables text[], registered_index bigint)`,
        [JSON.stringify(image.handlers)],
      );
      await client.query(`INSERT INTO rale.settings (key, value) SELECT key, value FROM jsonb_to_recordset($1::jsonb) AS t(key text, value jsonb)`, [
        JSON.stringify(image.settings),
      ]);
      await client.query(
        `INSERT INTO rale.results (proposal_id, index, term, status, result, error)
         SELECT proposal_id, index, term, status, result, error
         FROM jsonb_to_recordset($1::jsonb) AS t(proposal_id text, index bigint, term bigint, status text, result jsonb, error text)`,
        [JSON.stringify(image.results)],
      );
      for (const [table, rows] of Object.entries(image.tables)) {
        const q = await resolveTable(client, table);
        await client.query(`DELETE FROM ${q}`);
        await client.query(`INSERT INTO ${q} SELECT * FROM jsonb_populate_recordset(NULL::${q}, $1::jsonb)`, [JSON.stringify(rows)]);
      }
      await client.query('UPDATE rale.applied SET index = $1, term = $2', [meta.index, meta.term]);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }
}

function safeDecode(data: Uint8Array): ReturnType<typeof decodeCommand> | string {
  try {
    return decodeCommand(data);
  } catch (err) {
    return (err as Error).message;
  }
}

function configChangeId(entry: Entry): string | null {
  try {
    return decodeConfigChange(entry.data).id ?? null;
  } catch {
    return null;
  }
}

function toOutcome(status: string, result: unknown, error: string | null): Outcome {
  return status === 'applied' ? { status: 'ok', result } : { status: 'failed', error: error ?? 'failed' };
}

/**
 * The quoted, schema-qualified name of an existing table, as PostgreSQL
 * itself prints it: safe to place in SQL text. Throws when there is none.
 */
async function resolveTable(client: pg.PoolClient, name: string): Promise<string> {
  const { rows } = await client.query<{ q: string | null }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS q FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`,
    [name],
  );
  const quoted = rows[0]?.q;
  if (!quoted) throw new Error(`table ${name}, declared by a handler, does not exist on this node: create it, as on the other nodes`);
  return quoted;
}
