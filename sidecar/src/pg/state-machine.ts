/**
 * The replicated state machine in PostgreSQL: applies committed entries to
 * the `rale` tables (kv, handlers, settings, results) and calls registered
 * handlers, in transactions that also advance rale.applied.
 *
 * Exactly once, per node:
 *  - a batch of entries is applied in ONE transaction that also moves
 *    rale.applied to the batch's last index: after a crash either the whole
 *    batch and the new applied index are there, or neither is, and the
 *    entries are applied again from the log (which is durable);
 *  - every command carries a proposal id, recorded in rale.results in the
 *    same transaction: a proposal that reaches the log twice (a client or
 *    pump retry) takes effect once; its second copy is skipped.
 *
 * Determinism: the effects of an entry depend only on the entry and the
 * replicated tables, never on time, randomness or node-local state. Handler
 * functions must be deterministic too (no now(), random(), or reads of local
 * tables): that is the DBA's contract, stated in the docs.
 *
 * Apply transactions commit with synchronous_commit = off by default: the
 * log entries were made durable (fsync) before they were acknowledged, so a
 * lost apply commit is simply redone on restart (see sql/DESIGN.md).
 */
import pg from 'pg';
import { EntryKind, type Entry, type SnapshotMeta } from '../core/types.ts';
import { decodeConfigChange } from '../core/config.ts';
import type { ApplyResult, StateMachine } from '../storage/types.ts';
import { commandProblem, proposalIdProblem } from '../node/command-limits.ts';
import { decodeCommand } from '../node/command.ts';
import { pgTypes } from './types.ts';

export interface PgStateMachineOptions {
  connection: string | pg.PoolConfig;
  /** Commit apply transactions synchronously (slower; see DESIGN). Default false. */
  synchronousApply?: boolean;
  maxConnections?: number;
}

export interface SnapshotImage {
  version: 1;
  applied: { index: number; term: number };
  kv: Array<{ key: string; value: unknown; version: number }>;
  handlers: Array<{ name: string; function: string; tables: string[]; registered_index: number }>;
  settings: Array<{ key: string; value: unknown }>;
  results: Array<{ proposal_id: string; index: number; term: number; status: string; result: unknown; error: string | null }>;
  /** Rows of the tables handlers declared, by table name. */
  tables: Record<string, unknown[]>;
}

/**
 * What rale.apply_entries does with one entry (see 0003_fast_path.sql). JSON
 * values travel as JSON text made by JSON.stringify, as they always did.
 */
interface EntryPlan {
  action: 'noop' | 'bad' | 'config' | 'fail' | 'set' | 'delete' | 'cas' | 'call' | 'register';
  id?: string | null;
  key?: string;
  value?: string;
  /** cas only: JSON text, or absent for "the key must be absent". */
  expected?: string | null;
  error?: string;
}

export class PgStateMachine implements StateMachine {
  readonly pool: pg.Pool;
  private readonly synchronousApply: boolean;

  constructor(options: PgStateMachineOptions) {
    const base = typeof options.connection === 'string' ? { connectionString: options.connection } : options.connection;
    this.pool = new pg.Pool({
      ...base,
      // A batch is applied by one statement: a local statement_timeout must not
      // cut it (it would stop the node), whatever the server or role default.
      options: [base.options, '-c statement_timeout=0'].filter(Boolean).join(' '),
      max: options.maxConnections ?? 2,
      types: pgTypes,
    });
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

  /**
   * Applies a batch in ONE statement, rale.apply_entries
   * (sql/migrations/0003_fast_path.sql): one round trip and one implicit
   * transaction, which locks and advances rale.applied, skips what is
   * already applied, dedupes proposal ids, applies runs of kv set/delete
   * set-based, calls handlers in subtransactions and records outcomes. Here
   * the entries are decoded and the commands' shapes checked (the error
   * texts of malformed commands are made here).
   */
  async apply(entries: Entry[]): Promise<ApplyResult[]> {
    if (entries.length === 0) return [];
    const n = entries.length;
    const cols = {
      index: new Array<number>(n),
      term: new Array<number>(n),
      id: new Array<string | null>(n),
      action: new Array<string>(n),
      key: new Array<string | null>(n),
      value: new Array<string | null>(n),
      expected: new Array<string | null>(n),
      error: new Array<string | null>(n),
    };
    entries.forEach((entry, k) => {
      const plan = planEntry(entry);
      cols.index[k] = entry.index;
      cols.term[k] = entry.term;
      cols.id[k] = plan.id ?? null;
      cols.action[k] = plan.action;
      cols.key[k] = plan.key ?? null;
      cols.value[k] = plan.value ?? null;
      cols.expected[k] = plan.expected ?? null;
      cols.error[k] = plan.error ?? null;
    });
    const { rows } = await this.pool.query<{ entry_index: number; outcome_status: string; outcome_result: unknown; outcome_error: string | null }>({
      name: 'rale-apply-entries',
      text: 'SELECT * FROM rale.apply_entries($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::text[], $9::boolean)',
      values: [cols.index, cols.term, cols.id, cols.action, cols.key, cols.value, cols.expected, cols.error, this.synchronousApply],
    });
    return rows.map((r) =>
      r.outcome_status === 'ok'
        ? { index: r.entry_index, status: 'ok' as const, result: r.outcome_result }
        : { index: r.entry_index, status: 'failed' as const, error: r.outcome_error ?? 'failed' },
    );
  }

  /**
   * The image (SnapshotImage, as JSON) is built by PostgreSQL: one SQL
   * expression (imageExpression) of json_agg per table, joined as text. No
   * JS object per row: row objects made the sidecar's memory jump by tens of
   * MB at every snapshot under the benchmark (rale.results alone keeps up to
   * 10^6 rows). snapshotInPlace() does not even bring the image here.
   */
  async snapshot(): Promise<{ index: number; term: number; data: Uint8Array }> {
    const client = await this.pool.connect();
    try {
      // One consistent view of every replicated table.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const applied = (await client.query<{ index: number; term: number }>('SELECT index, term FROM rale.applied')).rows[0] ?? { index: 0, term: 0 };
      const expression = await imageExpression(client);
      const text = (await client.query<{ image: string }>(`SELECT ${expression} AS image`, [applied.index, applied.term])).rows[0]?.image ?? '';
      await client.query('COMMIT');
      return { index: applied.index, term: applied.term, data: new TextEncoder().encode(text) };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /**
   * Takes a snapshot into rale.snapshot and compacts rale.log_entries in one
   * transaction, the image built and stored by PostgreSQL without passing
   * through this process (RaftNodeOptions.snapshotInPlace): the sidecar's
   * memory no longer grows with the replicated state at every snapshot.
   * The same rules as PgLogStorage.saveSnapshot: an older snapshot than the
   * stored one is not written (null), and only covered entries are deleted.
   * Synchronous commit: the log's compaction must be as durable as the log.
   */
  async snapshotInPlace(metaAt: (index: number) => SnapshotMeta): Promise<SnapshotMeta | null> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await client.query('SET LOCAL synchronous_commit = on');
      const applied = (await client.query<{ index: number; term: number }>('SELECT index, term FROM rale.applied')).rows[0] ?? { index: 0, term: 0 };
      const stored = (await client.query<{ index: number }>('SELECT index FROM rale.snapshot FOR UPDATE')).rows[0]?.index ?? 0;
      if (applied.index === 0 || stored >= applied.index) {
        await client.query('ROLLBACK');
        return null;
      }
      const meta = metaAt(applied.index);
      const expression = await imageExpression(client);
      const config = JSON.stringify({ voters: [...meta.config.voters], learners: [...meta.config.learners] });
      await client.query(
        `INSERT INTO rale.snapshot (id, index, term, config, data) SELECT true, $3::bigint, $4::bigint, $5::jsonb, convert_to(${expression}, 'UTF8')
         ON CONFLICT (id) DO UPDATE SET index = excluded.index, term = excluded.term, config = excluded.config, data = excluded.data`,
        [applied.index, applied.term, meta.index, meta.term, config],
      );
      await client.query('DELETE FROM rale.log_entries WHERE index <= $1', [meta.index]);
      await client.query('COMMIT');
      return meta;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /**
   * Replaces the whole replicated state with the snapshot's, in one
   * transaction. The image goes to PostgreSQL once, as one jsonb value in a
   * temporary table, and is taken apart there (no JS object per row).
   */
  async restore(meta: SnapshotMeta, data: Uint8Array): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('CREATE TEMPORARY TABLE rale_snapshot_image (image jsonb NOT NULL) ON COMMIT DROP');
      try {
        await client.query('INSERT INTO rale_snapshot_image (image) VALUES ($1::jsonb)', [new TextDecoder().decode(data)]);
      } catch (err) {
        throw new Error(`the snapshot image is not valid JSON: ${(err as Error).message}`);
      }
      const head = (
        await client.query<{ version: unknown; tables: string[] | null }>(
          `SELECT image -> 'version' AS version, ARRAY(SELECT jsonb_object_keys(coalesce(image -> 'tables', '{}'))) AS tables FROM rale_snapshot_image`,
        )
      ).rows[0];
      if (head?.version !== 1) throw new Error(`unknown snapshot image version ${JSON.stringify(head?.version ?? null)}: upgrade rale on this node`);
      const from = (part: string) => `(SELECT image -> '${part}' FROM rale_snapshot_image)`;
      await client.query('DELETE FROM rale.kv');
      await client.query('DELETE FROM rale.handlers');
      await client.query('DELETE FROM rale.settings');
      await client.query('DELETE FROM rale.results');
      // Elements, not jsonb_to_recordset: that turns a JSON null into SQL NULL, and a key set to null
      // (jsonb 'null', NOT NULL column) then failed every restore, so such a node never caught up.
      // rale.results: an applied entry's result is never SQL NULL (apply_entries stores jsonb 'null'), a failed one's always is.
      const elements = (part: string) => `jsonb_array_elements(coalesce(${from(part)}, '[]')) AS e`;
      await client.query(`INSERT INTO rale.kv (key, value, version) SELECT e ->> 'key', e -> 'value', (e ->> 'version')::bigint FROM ${elements('kv')}`);
      await client.query(
        `INSERT INTO rale.handlers (name, function, tables, registered_index)
         SELECT e ->> 'name', e ->> 'function', ARRAY(SELECT jsonb_array_elements_text(coalesce(e -> 'tables', '[]'))), (e ->> 'registered_index')::bigint
         FROM ${elements('handlers')}`,
      );
      await client.query(`INSERT INTO rale.settings (key, value) SELECT e ->> 'key', e -> 'value' FROM ${elements('settings')}`);
      await client.query(
        `INSERT INTO rale.results (proposal_id, index, term, status, result, error)
         SELECT e ->> 'proposal_id', (e ->> 'index')::bigint, (e ->> 'term')::bigint, e ->> 'status',
                CASE WHEN e ->> 'status' = 'applied' THEN e -> 'result' END, e ->> 'error'
         FROM ${elements('results')}`,
      );
      for (const table of head.tables ?? []) {
        const q = await resolveTable(client, table);
        await client.query(`DELETE FROM ${q}`);
        await client.query(`INSERT INTO ${q} SELECT * FROM jsonb_populate_recordset(NULL::${q}, (SELECT image -> 'tables' -> $1 FROM rale_snapshot_image))`, [table]);
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

/** Decodes an entry and checks its command's shape; the database does the rest. */
export function planEntry(entry: Entry): EntryPlan {
  if (entry.kind === EntryKind.Config) return { action: 'config', id: configChangeId(entry) };
  if (entry.kind !== EntryKind.Normal) return { action: 'noop' };
  const envelope = safeDecode(entry.data);
  if (typeof envelope === 'string') return { action: 'bad', error: envelope };
  const id = envelope.id;
  // Deterministic limits (see node/command-limits.ts): an entry the database could not store fails as that entry, identically on every node, instead of stopping apply.
  const idProblem = proposalIdProblem(id);
  if (idProblem !== null) return { action: 'bad', error: idProblem };
  const command = envelope.command;
  if (command === null || typeof command !== 'object') return { action: 'fail', id, error: 'a command must be a JSON object' };
  const limitProblem = commandProblem(command);
  if (limitProblem !== null) return { action: 'fail', id, error: limitProblem };
  const c = command as Record<string, unknown>;
  const key = typeof c.key === 'string' ? c.key : null;
  switch (c.op) {
    case 'set':
      if (key === null || !('value' in c)) return { action: 'fail', id, error: 'set needs a string key and a value' };
      return { action: 'set', id, key, value: JSON.stringify(c.value) };
    case 'delete':
      if (key === null) return { action: 'fail', id, error: 'delete needs a string key' };
      return { action: 'delete', id, key };
    case 'cas': {
      if (key === null || !('value' in c)) return { action: 'fail', id, error: 'cas needs a string key, expected and value' };
      const expected = c.expected ?? null;
      return { action: 'cas', id, key, value: JSON.stringify(c.value), expected: expected === null ? null : JSON.stringify(expected) };
    }
    case 'call': {
      const name = typeof c.handler === 'string' ? c.handler : null;
      if (name === null) return { action: 'fail', id, error: 'call needs a handler name' };
      return { action: 'call', id, key: name, value: JSON.stringify(c.payload ?? null) };
    }
    case 'register_handler': {
      const name = typeof c.name === 'string' ? c.name : null;
      const fn = typeof c.function === 'string' ? c.function : null;
      const tables = Array.isArray(c.tables) ? c.tables.filter((t): t is string => typeof t === 'string') : [];
      if (name === null || fn === null) return { action: 'fail', id, error: 'register_handler needs a name and a function' };
      return { action: 'register', id, key: name, value: JSON.stringify({ function: fn, tables }) };
    }
    default:
      return { action: 'fail', id, error: `unknown command op ${JSON.stringify(c.op)}` };
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


/**
 * The quoted, schema-qualified name of an existing table, as PostgreSQL
 * itself prints it: safe to place in SQL text. Throws when there is none.
 */
/**
 * The SQL expression (text) of the snapshot image (SnapshotImage as JSON),
 * read in the caller's transaction; $1 and $2 are the applied index and
 * term. The tables registered handlers declare are looked up now and named
 * by quoted identifiers.
 */
async function imageExpression(client: pg.PoolClient): Promise<string> {
  const list = (sql: string) => `coalesce((${sql})::text, '[]')`;
  const declared = (await client.query<{ table: string }>('SELECT DISTINCT unnest(tables) AS table FROM rale.handlers ORDER BY 1')).rows.map((r) => r.table);
  const tables: string[] = [];
  for (const table of declared) {
    tables.push(`${pgLiteral(JSON.stringify(table))} || ':' || ${list(`SELECT json_agg(to_jsonb(t)) FROM ${await resolveTable(client, table)} t`)}`);
  }
  const parts = [
    `'{"version":1,"applied":' || json_build_object('index', $1::bigint, 'term', $2::bigint)::text`,
    `',"kv":' || ${list(`SELECT json_agg(json_build_object('key', key, 'value', value, 'version', version) ORDER BY key) FROM rale.kv`)}`,
    `',"handlers":' || ${list(`SELECT json_agg(json_build_object('name', name, 'function', function, 'tables', tables, 'registered_index', registered_index) ORDER BY name) FROM rale.handlers`)}`,
    `',"settings":' || ${list(`SELECT json_agg(json_build_object('key', key, 'value', value) ORDER BY key) FROM rale.settings`)}`,
    `',"results":' || ${list(`SELECT json_agg(json_build_object('proposal_id', proposal_id, 'index', index, 'term', term, 'status', status, 'result', result, 'error', error) ORDER BY proposal_id) FROM rale.results`)}`,
    `',"tables":{' || ${tables.length === 0 ? `''` : tables.join(` || ',' || `)} || '}}'`,
  ];
  return `(${parts.join(' || ')})`;
}

/** A SQL string literal. */
function pgLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

async function resolveTable(client: pg.PoolClient, name: string): Promise<string> {
  const { rows } = await client.query<{ q: string | null }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS q FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`,
    [name],
  );
  const quoted = rows[0]?.q;
  if (!quoted) throw new Error(`table ${name}, declared by a handler, does not exist on this node: create it, as on the other nodes`);
  return quoted;
}
