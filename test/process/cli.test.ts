/**
 * The `rale` command (bin/rale.js -> sidecar/src/cli/rale.ts) as users run
 * it: a child process, its exit code and what it prints. Bad input must exit
 * 2 with a message naming what is wrong; an unreachable service exits 1 and
 * says what it tried to reach. `rale init` runs against a real (embedded)
 * PostgreSQL, twice.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import pg from 'pg';
import { startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { ENVIRONMENT, FLAGS } from '../../sidecar/src/process/config.ts';

const BIN = fileURLToPath(new URL('../../bin/rale.js', import.meta.url));
const MIGRATIONS = fileURLToPath(new URL('../../sql/migrations/', import.meta.url));

interface Run {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** The environment without any RALE_* variable of the machine running the tests. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('RALE_')) env[name] = value;
  return { ...env, ...extra };
}

/** Runs `rale <args>`; `onStderr` sees stderr as it arrives and may act on the child. */
function rale(args: string[], options: { env?: Record<string, string>; timeoutMs?: number; onStderr?: (text: string, kill: (s: NodeJS.Signals) => void) => void } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: cleanEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`rale ${args.join(' ')} did not exit within ${options.timeoutMs ?? 30_000} ms; stderr so far:\n${stderr}`));
    }, options.timeoutMs ?? 30_000);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      options.onStderr?.(stderr, (signal) => child.kill(signal));
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    });
  });
}

/** A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

test('no command prints the usage and exits 0', async (t) => {
  const r = await rale([]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^usage: rale <command> \[options\]/);
  for (const command of ['start', 'init', 'status', 'leader', 'propose', 'members add', 'members remove', 'transfer-leader']) t.true(r.stdout.includes(command), command);
});

test('an unknown command exits 2 and names it', async (t) => {
  const r = await rale(['frobnicate']);
  t.is(r.code, 2);
  t.regex(r.stderr, /^rale: unknown command "frobnicate"/);
  t.regex(r.stderr, /usage: rale <command>/);
});

test('start --help lists every flag and environment variable', async (t) => {
  const r = await rale(['start', '--help']);
  t.is(r.code, 0, r.stderr);
  for (const name of [...Object.keys(FLAGS), ...Object.keys(ENVIRONMENT)]) t.true(r.stdout.includes(name), name);
});

test('start without a node id exits 2 naming nodeId', async (t) => {
  const r = await rale(['start', '--database-url', 'postgres://rale@127.0.0.1:5432/app']);
  t.is(r.code, 2);
  t.is(r.stderr.trim(), 'rale: configuration: nodeId: is required');
});

test('start without a database URL exits 2 naming databaseUrl (node id from the environment)', async (t) => {
  const r = await rale(['start'], { env: { RALE_NODE_ID: 'node1' } });
  t.is(r.code, 2);
  t.is(r.stderr.trim(), 'rale: configuration: databaseUrl: is required');
});

test('start with a bad value exits 2 naming the field and the source', async (t) => {
  const r = await rale(['start', '--node-id', 'node1', '--database-url', 'postgres://h/db'], { env: { RALE_ELECTION_TICKS: 'ten' } });
  t.is(r.code, 2);
  t.is(r.stderr.trim(), 'rale: configuration: raft.electionTicks: RALE_ELECTION_TICKS must be an integer, got "ten"');
});

test('init without a database URL exits 2 and says how to give one', async (t) => {
  const r = await rale(['init']);
  t.is(r.code, 2);
  t.regex(r.stderr, /^rale: rale init needs --database-url postgres:\/\/\.\.\. \(or RALE_DATABASE_URL\)/);
});

test('propose with a command that is not JSON exits 2', async (t) => {
  const r = await rale(['propose', 'not json', '--api', 'http://127.0.0.1:9']);
  t.is(r.code, 2);
  t.regex(r.stderr, /^rale: the command is not JSON: /);
});

test('status against a closed port: "cannot reach", exit 1', async (t) => {
  const port = await closedPort();
  const r = await rale(['status', '--api', `http://127.0.0.1:${port}`]);
  t.is(r.code, 1);
  t.is(r.stdout, '');
  t.regex(r.stderr, new RegExp(`^rale: cannot reach the rale API at http://127\\.0\\.0\\.1:${port}: ECONNREFUSED; is the sidecar running`));
});

/** A stand-in for a node's REST API that records the requests it gets and answers `reply`. */
async function fakeApi(reply: (path: string) => [number, unknown]): Promise<{ url: string; requests: Array<{ path: string; authorization: string | undefined }>; close(): Promise<void> }> {
  const requests: Array<{ path: string; authorization: string | undefined }> = [];
  const server = http.createServer((req, res) => {
    requests.push({ path: `${req.method} ${req.url}`, authorization: req.headers.authorization });
    const [status, body] = reply(req.url ?? '');
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

test('leader: the API from RALE_API_URL, no Authorization header when RALE_API_TOKEN is empty', async (t) => {
  const api = await fakeApi(() => [200, { node_id: 'node2', address: '10.0.0.2:7400', api_url: 'http://10.0.0.2:8400', term: 3, is_this_node: false }]);
  try {
    const r = await rale(['leader'], { env: { RALE_API_URL: api.url, RALE_API_TOKEN: '' } });
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout.trim(), 'node2 (term 3, peer address 10.0.0.2:7400, API http://10.0.0.2:8400)');
    t.deepEqual(api.requests, [{ path: 'GET /api/v1/consensus/leader', authorization: undefined }]);
  } finally {
    await api.close();
  }
});

test('transfer-leader: the token is sent, and an API error is shown with its code and hint, exit 1', async (t) => {
  const api = await fakeApi(() => [409, { error: { code: 'NOT_A_VOTER', message: 'node9 is not a voter', hint: 'rale members add it first' } }]);
  try {
    const r = await rale(['transfer-leader', 'node9', '--api', api.url, '--token', 'tok-0123456789abcdef']);
    t.is(r.code, 1);
    t.is(r.stderr.trim(), 'rale: NOT_A_VOTER: node9 is not a voter\nhint: rale members add it first');
    t.deepEqual(api.requests, [{ path: 'POST /api/v1/consensus/transfer-leader', authorization: 'Bearer tok-0123456789abcdef' }]);
  } finally {
    await api.close();
  }
});

test('init against a closed port: says where it connected and what to check, password hidden, exit 1', async (t) => {
  const port = await closedPort();
  const r = await rale(['init', '--database-url', `postgres://rale:hunter2@127.0.0.1:${port}/app`]);
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`cannot install the schema in postgres://rale:\\*\\*\\*@127\\.0\\.0\\.1:${port}/app: .*ECONNREFUSED.*is PostgreSQL running there`));
  t.false(r.stderr.includes('hunter2'));
});

test('SIGTERM while start waits for PostgreSQL ends the process at once, exit 0', async (t) => {
  const port = await closedPort();
  let sent = false;
  const started = Date.now();
  let signalledAt = 0;
  const r = await rale(['start', '--peer-listen', '127.0.0.1:0', '--api-listen', '127.0.0.1:0'], {
    env: { RALE_NODE_ID: 'waiting', RALE_DATABASE_URL: `postgres://rale:pw@127.0.0.1:${port}/app` },
    onStderr: (text, kill) => {
      if (!sent && text.includes('waiting for PostgreSQL')) {
        sent = true;
        signalledAt = Date.now();
        kill('SIGTERM');
      }
    },
  });
  t.true(sent, `the sidecar never said it was waiting for PostgreSQL:\n${r.stderr}`);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /component=sidecar msg="SIGTERM while starting: exiting"/);
  t.true(Date.now() - signalledAt < 5_000, `exited ${Date.now() - signalledAt} ms after SIGTERM (started ${signalledAt - started} ms in)`);
});

test('init installs the schema in a real PostgreSQL, and a second run changes nothing', async (t) => {
  const known = fs.readdirSync(MIGRATIONS).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).length;
  t.true(known > 0);
  let server: PostgresInstance | undefined;
  try {
    server = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-cli-init-${process.pid}`), persistent: false });
    const url = await server.createDatabase('app');

    const first = await rale(['init', '--database-url', url]);
    t.is(first.code, 0, first.stderr);
    t.is(first.stdout.trim(), `schema rale upgraded from version 0 to ${known} (applied ${Array.from({ length: known }, (_, k) => k + 1).join(', ')})`);

    // The second run: from the environment, JSON output, nothing applied.
    const second = await rale(['init', '--json'], { env: { RALE_DATABASE_URL: url } });
    t.is(second.code, 0, second.stderr);
    t.deepEqual(JSON.parse(second.stdout), { from: known, to: known, applied: [] });

    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const versions = await client.query<{ version: number }>('SELECT version FROM rale.schema_version ORDER BY version');
      t.deepEqual(
        versions.rows.map((r) => Number(r.version)),
        Array.from({ length: known }, (_, k) => k + 1),
      );
      const tables = await client.query<{ n: string }>("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'rale' AND table_name IN ('log_entries', 'hard_state', 'snapshot')");
      t.is(Number(tables.rows[0]?.n), 3);
    } finally {
      await client.end();
    }
  } finally {
    await server?.stop();
  }
});
