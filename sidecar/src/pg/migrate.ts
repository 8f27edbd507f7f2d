/**
 * Versioned migrations of rale's schema (`rale`), applied by the sidecar on
 * every start.
 *
 * Migrations are the files `NNNN_name.sql` in sql/migrations/, numbered
 * 1, 2, 3... without gaps. The runner:
 *  - takes a session advisory lock first, so concurrent runners (two
 *    sidecars, or a sidecar and a test, on one database) run one after the
 *    other; the second finds nothing left to do;
 *  - creates the schema and its bookkeeping table rale.schema_version
 *    (one row per applied migration) if missing;
 *  - refuses to go on when the database is at a version newer than the
 *    newest migration it knows (an older rale must not run against a schema
 *    it does not understand), or when an applied migration's text changed;
 *  - applies each missing migration in its own transaction together with
 *    its schema_version row: a migration is applied entirely and recorded,
 *    or not at all.
 * Hence it is idempotent: running it again changes nothing.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

/** Where the migrations live, resolved from this file so that any cwd works. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../sql/migrations/', import.meta.url));

/** The schema rale's tables live in. */
export const SCHEMA = 'rale';

/**
 * The advisory lock key, as two int4: 0x72616c65 is "rale" in ASCII, 1 names
 * this lock (migrations). Other rale advisory locks must use other second keys.
 */
export const MIGRATION_LOCK_KEY: readonly [number, number] = [0x72616c65, 1];

export interface Migration {
  version: number;
  /** The file name without the number and extension, e.g. "core". */
  name: string;
  file: string;
  sql: string;
  /** sha256 of the text with line endings normalised, to notice edits of applied migrations. */
  checksum: string;
}

export interface MigrateOptions {
  /** Migrations to apply instead of the files in `dir` (tests). */
  migrations?: Migration[];
  /** Folder of the migration files (default MIGRATIONS_DIR). */
  dir?: string;
  /** Longest wait for another runner's lock before giving up (default 60 s). */
  lockTimeoutMs?: number;
}

export interface MigrateResult {
  /** Schema version before and after the run. */
  from: number;
  to: number;
  /** Versions this run applied, ascending (empty when the schema was up to date). */
  applied: number[];
}

/** The database was migrated by a newer rale than this one. */
export class SchemaTooNewError extends Error {
  constructor(
    readonly databaseVersion: number,
    readonly codeVersion: number,
  ) {
    super(
      `The database schema "${SCHEMA}" is at version ${databaseVersion}, but this rale only knows versions up to ${codeVersion}: ` +
        `a newer rale has migrated this database. Upgrade rale to the version that did (or a later one); ` +
        `do not run an older rale against it.`,
    );
    this.name = 'SchemaTooNewError';
  }
}

const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/;

export function checksumOf(sql: string): string {
  return createHash('sha256').update(sql.replace(/\r\n/g, '\n')).digest('hex');
}

/** Builds a Migration from its text (tests, or migrations not stored as files). */
export function migration(version: number, name: string, sql: string): Migration {
  return { version, name, file: `${String(version).padStart(4, '0')}_${name}.sql`, sql, checksum: checksumOf(sql) };
}

/**
 * Reads and checks the migration files: every `.sql` file must be named
 * `NNNN_name.sql` and the numbers must run 1, 2, 3... (two engineers adding
 * the same number is caught here, not in production).
 */
export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  let files: string[];
  try {
    files = (await fs.readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  } catch (err) {
    throw new Error(`Cannot read the migrations folder ${dir}: ${String(err)}. Is rale installed completely?`);
  }
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = FILE_PATTERN.exec(file);
    if (!match?.[1] || !match[2]) {
      throw new Error(`Migration file ${path.join(dir, file)} is not named NNNN_name.sql (4 digits, lower-case name): rename it.`);
    }
    const sql = await fs.readFile(path.join(dir, file), 'utf8');
    migrations.push({ ...migration(Number(match[1]), match[2], sql), file });
  }
  checkSequence(migrations);
  return migrations;
}

function checkSequence(migrations: Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      const files = migrations.map((x) => x.file).join(', ');
      throw new Error(`Migrations must be numbered 1, 2, 3... without gaps or duplicates; found ${files}. Renumber the newest one.`);
    }
  });
}

type Db = pg.Pool | pg.ClientBase | string;

/**
 * Brings the `rale` schema up to the newest migration. Safe to call on every
 * start and from several processes at once. `db` is a connection string (a
 * connection is opened and closed), a pool (one client is borrowed) or a
 * connected client that is not inside a transaction.
 */
export async function migrate(db: Db, options: MigrateOptions = {}): Promise<MigrateResult> {
  const migrations = options.migrations ?? (await loadMigrations(options.dir));
  checkSequence(migrations);

  // The advisory lock is held by a session: everything below runs on one connection.
  // Connections we open or borrow get an 'error' listener: if the server dies
  // mid-migration, an unheard 'error' event would crash the process, while
  // the failing query rejects anyway.
  const ignore = () => {};
  let client: pg.ClientBase;
  let done: () => Promise<void>;
  if (typeof db === 'string') {
    const own = new pg.Client({ connectionString: db });
    own.on('error', ignore);
    await own.connect();
    client = own;
    done = () => own.end();
  } else if (db instanceof pg.Pool) {
    const own = await db.connect();
    own.on('error', ignore);
    client = own;
    done = async () => {
      own.removeListener('error', ignore);
      own.release();
    };
  } else {
    client = db;
    done = async () => {};
  }

  try {
    await lock(client, options.lockTimeoutMs ?? 60_000);
    try {
      return await migrateLocked(client, migrations);
    } finally {
      // If the connection broke, the server has released the lock already.
      await client.query('SELECT pg_advisory_unlock($1, $2)', [...MIGRATION_LOCK_KEY]).catch(() => undefined);
    }
  } finally {
    await done();
  }
}

async function lock(client: pg.ClientBase, timeoutMs: number): Promise<void> {
  // lock_timeout bounds the wait for the advisory lock too (it goes through
  // the lock manager). The caller's own setting is restored afterwards.
  const { rows } = await client.query<{ previous: string }>(
    `SELECT current_setting('lock_timeout') AS previous, set_config('lock_timeout', $1, false)`,
    [String(Math.max(1, Math.floor(timeoutMs)))],
  );
  try {
    await client.query('SELECT pg_advisory_lock($1, $2)', [...MIGRATION_LOCK_KEY]);
  } catch (err) {
    if ((err as { code?: string }).code === '55P03') {
      throw new Error(
        `Another process has been migrating the "${SCHEMA}" schema for more than ${timeoutMs} ms (advisory lock ` +
          `${MIGRATION_LOCK_KEY.join(', ')} is held): wait for it, or find it in pg_locks and stop it.`,
      );
    }
    throw err;
  } finally {
    await client.query(`SELECT set_config('lock_timeout', $1, false)`, [rows[0]?.previous ?? '0']);
  }
}

async function migrateLocked(client: pg.ClientBase, migrations: Migration[]): Promise<MigrateResult> {
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
  await client.query(`
    CREATE TABLE IF NOT EXISTS ${SCHEMA}.schema_version (
      version    integer     PRIMARY KEY,
      name       text        NOT NULL,
      checksum   text        NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
  const { rows } = await client.query<{ version: number; name: string; checksum: string }>(
    `SELECT version, name, checksum FROM ${SCHEMA}.schema_version ORDER BY version`,
  );
  const from = rows.reduce((max, r) => Math.max(max, r.version), 0);
  const known = migrations.length;
  if (from > known) throw new SchemaTooNewError(from, known);
  for (const row of rows) {
    const m = migrations[row.version - 1];
    if (m && m.checksum !== row.checksum) {
      throw new Error(
        `Migration ${m.file} was changed after it was applied to this database (checksum ${row.checksum.slice(0, 12)} ` +
          `recorded, ${m.checksum.slice(0, 12)} now): applied migrations must never be edited. Restore the file and ` +
          `put the change in a new migration (or, on a throwaway dev database, drop the schema "${SCHEMA}").`,
      );
    }
  }

  const applied: number[] = [];
  for (const m of migrations.slice(from)) {
    // Roles are shared by every database of a server, and the migration lock
    // is per database: two databases of one server migrating at once (two
    // nodes' databases on one test server, say) both find a role missing and
    // both create it; the second fails on the catalog's unique index. Its
    // transaction rolled back whole, so trying again (it now finds the role)
    // is safe.
    for (let attempt = 1; !(await applyOne(client, m, attempt < 3)); attempt++);
    applied.push(m.version);
  }
  return { from, to: applied.at(-1) ?? from, applied };

  /** Applies `m` in its own transaction: true when done, false when it should be tried again. */
  async function applyOne(client: pg.ClientBase, m: Migration, mayRetry: boolean): Promise<boolean> {
    await client.query('BEGIN');
    try {
      await client.query(m.sql);
      await client.query(`INSERT INTO ${SCHEMA}.schema_version (version, name, checksum) VALUES ($1, $2, $3)`, [
        m.version,
        m.name,
        m.checksum,
      ]);
      await client.query('COMMIT');
      return true;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (mayRetry && isConcurrentRoleCreation(err)) return false;
      const version = applied.at(-1) ?? from;
      throw new Error(
        `Migration ${m.file} failed and was rolled back; the schema "${SCHEMA}" stays at version ${version}. ` +
          `Cause: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
}

/** A role created by another database's migration between our check and our CREATE ROLE. */
function isConcurrentRoleCreation(err: unknown): boolean {
  const e = err as { code?: string; constraint?: string };
  return (e.code === '23505' && e.constraint === 'pg_authid_rolname_index') || e.code === '42710';
}

/** The schema version of a database (0 when rale never migrated it). */
export async function schemaVersion(db: pg.Pool | pg.ClientBase): Promise<number> {
  const table = await db.query<{ present: boolean }>(`SELECT to_regclass('${SCHEMA}.schema_version') IS NOT NULL AS present`);
  if (!table.rows[0]?.present) return 0;
  const { rows } = await db.query<{ version: number }>(`SELECT coalesce(max(version), 0) AS version FROM ${SCHEMA}.schema_version`);
  return rows[0]?.version ?? 0;
}
