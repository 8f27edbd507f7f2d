/**
 * PgLogStorage against the compliance suite, the migration runner, and the
 * embedded PostgreSQL harness, on real PostgreSQL servers (fsync on).
 *
 * One server serves the whole file; tests run serially to keep the load low
 * on small CI machines. Each storage test starts from truncated tables; each
 * migration test gets its own database.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import test from 'ava';
import pg from 'pg';
import { EntryKind } from '../../sidecar/src/core/types.ts';
import { assertTraversable, reapStale, startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { loadMigrations, migrate, migration, MIGRATION_LOCK_KEY, SchemaTooNewError, schemaVersion } from '../../sidecar/src/pg/migrate.ts';
import { PgLogStorage } from '../../sidecar/src/storage/pg-log.ts';
import { logStorageCompliance, norm, run } from './compliance.ts';

const scratch = path.join(os.tmpdir(), `rale-test-storage-${process.pid}`);
let server: PostgresInstance | undefined;
let admin: pg.Pool | undefined;
let storageUrl = '';
let databases = 0;

function running(): { server: PostgresInstance; admin: pg.Pool } {
  if (!server || !admin) throw new Error('the test server did not start (see test.before)');
  return { server, admin };
}

/** A new empty database on the shared server. */
async function freshDatabase(): Promise<string> {
  return running().server.createDatabase(`t${++databases}`);
}

async function withClient<R>(url: string, work: (c: pg.Client) => Promise<R>): Promise<R> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

test.before(async () => {
  await fs.mkdir(scratch, { recursive: true, mode: 0o755 });
  server = await startPostgres({ dataDir: path.join(scratch, 'shared'), persistent: false });
  admin = new pg.Pool({ connectionString: server.connectionString, max: 2 });
  storageUrl = await server.createDatabase('storage');
  await migrate(storageUrl);
});

test.after.always(async () => {
  await admin?.end();
  await server?.stop();
  await fs.rm(scratch, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// PgLogStorage

logStorageCompliance(
  'PgLogStorage',
  {
    async open(options) {
      await withClient(storageUrl, (c) => c.query('TRUNCATE rale.log_entries, rale.hard_state, rale.snapshot'));
      return new PgLogStorage({ connection: storageUrl, ...options });
    },
    async reopen(storage, options) {
      await storage.close();
      return new PgLogStorage({ connection: storageUrl, ...options });
    },
  },
  { serial: true, modelRuns: 25 },
);

test.serial('PgLogStorage: an unmigrated database is refused with what to do', async (t) => {
  const storage = new PgLogStorage({ connection: await freshDatabase() });
  t.teardown(() => storage.close());
  await t.throwsAsync(storage.load(), { message: /storage tables are missing.*run the migrations/s });
  await t.throwsAsync(storage.persist({ snapshot: null, entries: [], hardState: { term: 1, vote: null, commit: 0 } }), { message: /run the migrations/ });
});

test.serial('PgLogStorage: load() detects a log with a hole (edited by hand)', async (t) => {
  const url = await freshDatabase();
  await migrate(url);
  const storage = new PgLogStorage({ connection: url });
  t.teardown(() => storage.close());
  const data = new Uint8Array([1]);
  await storage.persist({ snapshot: null, entries: [1, 2, 3].map((index) => ({ index, term: 1, kind: EntryKind.Normal, data })), hardState: null });
  await withClient(url, (c) => c.query('DELETE FROM rale.log_entries WHERE index = 2'));
  await t.throwsAsync(storage.load(), { message: /rale\.log_entries is corrupt/ });
});

test.serial('PgLogStorage: its connections force synchronous_commit on, whatever the database or caller says', async (t) => {
  const url = await freshDatabase();
  await withClient(url, (c) => c.query(`ALTER DATABASE ${c.escapeIdentifier(url.split('/').pop() ?? '')} SET synchronous_commit = off`));
  const storage = new PgLogStorage({ connection: { connectionString: url, options: '-c synchronous_commit=off -c work_mem=8MB' } });
  t.teardown(() => storage.close());
  // Reach into the pool on purpose: the setting is invisible through the LogStorage interface.
  const pool = (storage as unknown as { pool: pg.Pool }).pool;
  t.is((await pool.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]?.synchronous_commit, 'on');
  t.is((await pool.query<{ work_mem: string }>('SHOW work_mem')).rows[0]?.work_mem, '8MB', "the caller's other options are kept");
  await withClient(url, async (c) => t.is((await c.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]?.synchronous_commit, 'off'));
});

test.serial('PgLogStorage: a server crash keeps every acknowledged batch, and never half a batch', async (t) => {
  const dataDir = path.join(scratch, 'crash');
  let crashed = await startPostgres({ dataDir });
  t.teardown(() => crashed.stop());
  const url = await crashed.createDatabase('crash');
  await migrate(url);
  const storage = new PgLogStorage({ connection: url });
  // Batches of 10 entries with the hard state's commit at their last index:
  // after recovery, a half-written batch would show as a lastIndex that is
  // not a multiple of 10, or a commit that disagrees with it.
  let acknowledged = 0;
  let failure: unknown;
  const writer = (async () => {
    for (let b = 0; ; b++) {
      const last = b * 10 + 10;
      try {
        await storage.persist({ snapshot: null, entries: run(b * 10 + 1, last, 1), hardState: { term: 1, vote: 'n1', commit: last } });
      } catch (err) {
        failure = err;
        return;
      }
      acknowledged = last;
    }
  })();
  while (acknowledged < 200 && failure === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
  t.is(failure, undefined, 'the writer works before the crash');
  // Immediate shutdown: every backend exits at once, nothing is flushed or
  // checkpointed; the next start runs crash recovery from the WAL.
  process.kill(crashed.pid, 'SIGQUIT');
  await writer;
  t.truthy(failure, 'the writer saw the crash');
  await storage.close();
  await crashed.stop();

  crashed = await startPostgres({ dataDir, persistent: false });
  const reopened = new PgLogStorage({ connection: crashed.urlFor('crash') });
  t.teardown(() => reopened.close());
  const loaded = await reopened.load();
  t.true(loaded.lastIndex >= acknowledged, `acknowledged up to ${acknowledged}, recovered up to ${loaded.lastIndex}`);
  t.is(loaded.lastIndex % 10, 0, 'whole batches only');
  t.is(loaded.hardState.commit, loaded.lastIndex, 'entries and hard state of a batch commit together');
  t.deepEqual((await reopened.entries(1, loaded.lastIndex, Infinity)).map(norm), run(1, loaded.lastIndex, 1).map(norm));
});

// ---------------------------------------------------------------------------
// Migrations

const storageTables = ['rale.log_entries', 'rale.hard_state', 'rale.snapshot', 'rale.schema_version'];

test.serial('migrate: creates the schema at the newest version, then changes nothing', async (t) => {
  const url = await freshDatabase();
  const newest = (await loadMigrations()).length;
  t.true(newest >= 1);
  t.deepEqual(await migrate(url), { from: 0, to: newest, applied: Array.from({ length: newest }, (_, i) => i + 1) });
  t.deepEqual(await migrate(url), { from: newest, to: newest, applied: [] });
  await withClient(url, async (c) => {
    t.is(await schemaVersion(c), newest);
    for (const table of storageTables) {
      t.truthy((await c.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [table])).rows[0]?.t, table);
    }
    t.is(Number((await c.query('SELECT count(*) AS n FROM rale.schema_version')).rows[0].n), newest);
  });
});

test.serial('migrate: refuses a database migrated by a newer rale, naming both versions', async (t) => {
  const url = await freshDatabase();
  const { to } = await migrate(url);
  await withClient(url, (c) => c.query(`INSERT INTO rale.schema_version (version, name, checksum) VALUES ($1, 'from_the_future', 'x')`, [to + 1]));
  const err = await t.throwsAsync(migrate(url), { instanceOf: SchemaTooNewError });
  t.regex(err?.message ?? '', new RegExp(`version ${to + 1}.*up to ${to}.*Upgrade rale`, 's'));
  t.is(err?.databaseVersion, to + 1);
  t.is(err?.codeVersion, to);
});

test.serial('migrate: concurrent runners both succeed and each migration is applied once', async (t) => {
  const url = await freshDatabase();
  // Not idempotent on purpose: applied twice, the CREATE TABLE would fail.
  const slow = [
    migration(1, 'slow', 'CREATE TABLE rale.once (x int); SELECT pg_sleep(0.3);'),
    migration(2, 'insert', 'INSERT INTO rale.once VALUES (1);'),
  ];
  const results = await Promise.all([migrate(url, { migrations: slow }), migrate(url, { migrations: slow }), migrate(url, { migrations: slow })]);
  t.deepEqual(results.map((r) => r.applied.length).sort(), [0, 0, 2]);
  t.true(results.every((r) => r.to === 2));
  await withClient(url, async (c) => {
    t.is(Number((await c.query('SELECT count(*) AS n FROM rale.once')).rows[0].n), 1);
    t.is(Number((await c.query('SELECT count(*) AS n FROM rale.schema_version')).rows[0].n), 2);
  });

  // The real migrations too, on another database.
  const url2 = await freshDatabase();
  const real = await Promise.all([migrate(url2), migrate(url2)]);
  t.deepEqual(real.map((r) => r.applied.length).sort(), [0, (await loadMigrations()).length]);
});

test.serial('migrate: two databases of one server creating the same role at once both succeed (roles are per server, the lock per database)', async (t) => {
  const [a, b] = [await freshDatabase(), await freshDatabase()];
  // As 0002_state.sql creates rale_client: check, then create; the sleep widens the window between the two.
  const roles = [
    migration(1, 'role', `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rale_race_role') THEN PERFORM pg_sleep(0.3); CREATE ROLE rale_race_role NOLOGIN; END IF; END $$;`),
  ];
  t.teardown(() => running().admin.query('DROP ROLE IF EXISTS rale_race_role').then(() => undefined));
  const results = await Promise.all([migrate(a, { migrations: roles }), migrate(b, { migrations: roles })]);
  t.deepEqual(results.map((r) => r.to), [1, 1]);
});

test.serial('migrate: a failing migration is rolled back entirely and named', async (t) => {
  const url = await freshDatabase();
  const good = migration(1, 'good', 'CREATE TABLE rale.good (x int);');
  const bad = migration(2, 'bad', 'CREATE TABLE rale.half (x int); SELECT 1/0;');
  await t.throwsAsync(migrate(url, { migrations: [good, bad] }), { message: /0002_bad\.sql failed and was rolled back.*stays at version 1.*division by zero/s });
  await withClient(url, async (c) => {
    t.is(await schemaVersion(c), 1);
    t.is((await c.query<{ t: string | null }>(`SELECT to_regclass('rale.half') AS t`)).rows[0]?.t, null, 'nothing of the failed migration remains');
  });
  const fixed = migration(2, 'bad', 'CREATE TABLE rale.half (x int);');
  t.deepEqual(await migrate(url, { migrations: [good, fixed] }), { from: 1, to: 2, applied: [2] });
});

test.serial('migrate: refuses to run when an applied migration was edited', async (t) => {
  const url = await freshDatabase();
  await migrate(url, { migrations: [migration(1, 'a', 'CREATE TABLE rale.a (x int);')] });
  await t.throwsAsync(migrate(url, { migrations: [migration(1, 'a', 'CREATE TABLE rale.a (x bigint);')] }), {
    message: /0001_a\.sql was changed after it was applied/,
  });
});

test.serial('migrate: gives up with a clear error when another runner holds the lock too long', async (t) => {
  const url = await freshDatabase();
  await withClient(url, async (holder) => {
    await holder.query('SELECT pg_advisory_lock($1, $2)', [...MIGRATION_LOCK_KEY]);
    await t.throwsAsync(migrate(url, { lockTimeoutMs: 200 }), { message: /Another process has been migrating/ });
  });
  // Released with the holder's session: now it runs.
  t.true((await migrate(url)).applied.length > 0);
});

test.serial("migrate: runs on a caller's client and leaves its lock_timeout as it was", async (t) => {
  const url = await freshDatabase();
  await withClient(url, async (c) => {
    await c.query(`SET lock_timeout = '5s'`);
    t.true((await migrate(c)).applied.length > 0);
    t.is((await c.query<{ lock_timeout: string }>('SHOW lock_timeout')).rows[0]?.lock_timeout, '5s');
    t.is((await c.query('SELECT count(*) AS n FROM pg_locks WHERE locktype = $1', ['advisory'])).rows[0].n, '0', 'the advisory lock is released');
  });
});

test.serial('loadMigrations: rejects misnamed files and gaps in the numbering', async (t) => {
  const dir = await fs.mkdtemp(path.join(scratch, 'migrations-'));
  await fs.writeFile(path.join(dir, '0001_a.sql'), 'SELECT 1;');
  await fs.writeFile(path.join(dir, 'README.md'), 'not a migration');
  t.deepEqual((await loadMigrations(dir)).map((m) => [m.version, m.name]), [[1, 'a']]);
  await fs.writeFile(path.join(dir, '0003_c.sql'), 'SELECT 1;');
  await t.throwsAsync(loadMigrations(dir), { message: /without gaps or duplicates.*0001_a\.sql, 0003_c\.sql/ });
  await fs.rm(path.join(dir, '0003_c.sql'));
  await fs.writeFile(path.join(dir, 'fix.sql'), 'SELECT 1;');
  await t.throwsAsync(loadMigrations(dir), { message: /fix\.sql is not named NNNN_name\.sql/ });
});

test.serial('loadMigrations: finds sql/migrations from any working directory', async (t) => {
  const cwd = process.cwd();
  process.chdir(os.tmpdir());
  try {
    const migrations = await loadMigrations();
    t.is(migrations[0]?.file, '0001_core.sql');
  } finally {
    process.chdir(cwd);
  }
});

// ---------------------------------------------------------------------------
// The embedded PostgreSQL harness

/** True while `pid` runs (a zombie counts as gone). */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

test.serial('harness: a persistent server keeps its data across a restart, and stop() ends every process', async (t) => {
  const dataDir = path.join(scratch, 'restart');
  const first = await startPostgres({ dataDir });
  t.teardown(() => first.stop());
  await withClient(first.connectionString, async (c) => {
    await c.query('CREATE TABLE kept (x int)');
    await c.query('INSERT INTO kept VALUES (42)');
    const settings = await c.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'listen_addresses') ORDER BY name`,
    );
    t.deepEqual(settings.rows, [
      { name: 'fsync', setting: 'on' },
      { name: 'listen_addresses', setting: '127.0.0.1' },
      { name: 'synchronous_commit', setting: 'on' },
    ]);
  });
  await first.stop();
  t.false(await alive(first.pid));
  t.deepEqual((await reapStale(dataDir)).stopped, [], 'no process of the data dir is left');

  const second = await startPostgres({ dataDir, persistent: false, settings: { work_mem: '8MB' } });
  t.teardown(() => second.stop());
  await withClient(second.connectionString, async (c) => {
    t.is((await c.query('SELECT x FROM kept')).rows[0].x, 42);
    t.is((await c.query<{ work_mem: string }>('SHOW work_mem')).rows[0]?.work_mem, '8MB');
  });
  await second.stop();
  await t.throwsAsync(fs.access(dataDir), undefined, 'a non-persistent data dir is deleted on stop');
});

test.serial('harness: reaps the orphaned server of a killed process before starting', async (t) => {
  const dataDir = path.join(scratch, 'orphan');
  const embedded = pathToFileURL(fileURLToPath(new URL('../../sidecar/src/pg/embedded.ts', import.meta.url))).href;
  const script =
    `import { startPostgres } from ${JSON.stringify(embedded)};\n` +
    `const s = await startPostgres({ dataDir: ${JSON.stringify(dataDir)} });\n` +
    `console.log(JSON.stringify({ pid: s.pid }));\n` +
    `setInterval(() => {}, 1000);\n`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => void child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const orphan = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const match = /"pid":(\d+)/.exec(out);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', () => reject(new Error(`the helper process exited early: ${stderr}`)));
  });
  t.teardown(() => reapStale(dataDir).then(() => undefined));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  t.true(await alive(orphan), 'killing Node leaves its postgres running');

  const started = await startPostgres({ dataDir, persistent: false });
  t.teardown(() => started.stop());
  t.false(await alive(orphan), 'the orphan was stopped');
  t.not(started.pid, orphan);
  await withClient(started.connectionString, async (c) => t.is((await c.query('SELECT 1 AS one')).rows[0].one, 1));
});

test.serial('harness: refuses a folder that is not a data dir, and one already running here', async (t) => {
  const dataDir = path.join(scratch, 'not-a-cluster');
  await fs.mkdir(dataDir, { recursive: true });
  await fs.writeFile(path.join(dataDir, 'precious.txt'), 'keep me');
  await t.throwsAsync(startPostgres({ dataDir }), { message: /not empty and is not a PostgreSQL data dir/ });
  t.is(await fs.readFile(path.join(dataDir, 'precious.txt'), 'utf8'), 'keep me');

  const { server: shared } = running();
  await t.throwsAsync(startPostgres({ dataDir: shared.dataDir }), { message: /already runs on/ });
});

test.serial('harness: names the folder the postgres user cannot traverse', async (t) => {
  const locked = await fs.mkdtemp(path.join(scratch, 'locked-'));
  const inner = path.join(locked, 'inner');
  await fs.mkdir(inner, { mode: 0o755 });
  await fs.chmod(locked, 0o700);
  const stranger = { uid: 54321, gid: 54321 };
  await t.throwsAsync(assertTraversable(inner, stranger), {
    message: new RegExp(`cannot enter ${locked.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(mode 700`),
  });
  await fs.chmod(locked, 0o711);
  await t.notThrowsAsync(assertTraversable(inner, stranger));
});

test.serial('harness: RALE_PG_BIN_DIR without PostgreSQL in it is refused, naming the folder and what to do', async (t) => {
  const module = pathToFileURL(fileURLToPath(new URL('../../sidecar/src/pg/embedded.ts', import.meta.url))).href;
  const empty = await fs.mkdtemp(path.join(os.tmpdir(), 'rale-no-bin-'));
  t.teardown(() => fs.rm(empty, { recursive: true, force: true }));
  const script = `import { postgresBinaries } from ${JSON.stringify(module)};\n` + `postgresBinaries().then(() => console.log('resolved'), (err) => console.log('ERROR ' + err.message));\n`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RALE_PG_BIN_DIR: empty } });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  await new Promise((resolve) => child.once('exit', resolve));
  t.regex(out, /^ERROR RALE_PG_BIN_DIR is .*rale-no-bin-.*, which has no initdb: point it at a folder holding PostgreSQL's initdb and postgres, or unset it/);
});
