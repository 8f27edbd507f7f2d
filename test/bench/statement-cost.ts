/**
 * What one SQL statement costs the server on this machine: wall time per
 * round trip and the backend's CPU time per statement (from
 * /proc/<backend pid>/stat), one connection, one embedded PostgreSQL, for the
 * statements a SQL proposal is made of and for the plain baseline. This is
 * the floor under "proposals per second": every SQL proposal costs its
 * client at least two statements on the leader (propose, wait) plus the
 * node's own work, on a server shared with the other nodes. Not a test.
 * Run: npx tsx test/bench/statement-cost.ts [iterations=3000]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort, startPostgres } from '../../sidecar/src/pg/embedded.ts';
import { migrate } from '../../sidecar/src/pg/migrate.ts';

const iterations = Number(process.argv[2] ?? 3000);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'rale-statement-cost-'));
fs.chmodSync(root, 0o755);
const server = await startPostgres({ dataDir: path.join(root, 'pg'), port: await freePort(), persistent: false });
try {
  const client = new pg.Client({ connectionString: server.connectionString });
  await client.connect();
  await migrate(server.connectionString);
  await client.query('CREATE TABLE plain (id bigserial PRIMARY KEY, payload text)');
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
  const ticksPerMs = 0.1; // USER_HZ = 100 on Linux
  const cpuMs = () => {
    const fields = (fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] as string).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerMs;
  };
  const value = 'x'.repeat(256);
  const command = (i: number) => JSON.stringify({ op: 'set', key: `bench-${i % 100}`, value });
  console.log(`| statement (one connection, ${iterations} times) | wall µs | backend CPU µs |\n|---|---:|---:|`);
  const measure = async (label: string, run: (i: number) => Promise<unknown>) => {
    for (let i = 0; i < 200; i++) await run(i);
    const cpu0 = cpuMs();
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) await run(i);
    const wall = performance.now() - t0;
    console.log(`| ${label} | ${((wall / iterations) * 1000).toFixed(0)} | ${(((cpuMs() - cpu0) / iterations) * 1000).toFixed(0)} |`);
  };
  await measure('`SELECT 1`', () => client.query('SELECT 1'));
  await measure('`INSERT` one row, synchronous commit', () => client.query('INSERT INTO plain (payload) VALUES ($1)', [value]));
  await client.query('SET synchronous_commit = off');
  await measure('`INSERT` one row, asynchronous commit', () => client.query('INSERT INTO plain (payload) VALUES ($1)', [value]));
  await measure('`SELECT rale.check_command($1)`', (i) => client.query('SELECT rale.check_command($1::jsonb)', [command(i)]));
  await client.query('UPDATE rale.pump SET sleeping = false'); // as under load: no NOTIFY
  await measure('`SELECT rale_propose($1)`, asynchronous commit (as in rale.submit)', (i) => client.query('SELECT rale_propose($1::jsonb)', [command(i)]));
  // The bulk form: one statement carries 16 commands (figures are per call; divide by 16 for per proposal).
  const sixteen = (i: number) => Array.from({ length: 16 }, (_, k) => command(i * 16 + k));
  await measure('`SELECT rale_propose_many($1)` with 16 commands, asynchronous commit', (i) => client.query('SELECT rale_propose_many($1::jsonb[])', [sixteen(i)]));
  await measure('`SELECT count(rale.check_command(c)) FROM unnest($1)`, 16 commands', (i) => client.query('SELECT count(rale.check_command(c)) FROM unnest($1::jsonb[]) c', [sixteen(i)]));
  await client.end();
} finally {
  await server.stop();
  fs.rmSync(root, { recursive: true, force: true });
}
