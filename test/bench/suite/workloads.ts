/**
 * The measured workloads: the plain-PostgreSQL baseline, SQL clients of
 * rale (two-statement propose + wait, and CALL rale.submit), REST clients.
 * Each runs on the closed-loop generator in load.ts.
 */
import pg from 'pg';
import { runLoad, VALUE_256, type LoadResult } from './load.ts';

export interface Timing {
  seconds: number;
  warmupSeconds: number;
}

function command(c: number, n: number): string {
  return JSON.stringify({ op: 'set', key: `bench-${c}-${n % 100}`, value: VALUE_256 });
}

async function openPg(url: string, c: number): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: `rale-bench-${c}` });
  client.on('error', () => {}); // a dropped connection fails the next query, which is counted
  await client.connect();
  return client;
}

/** The settings a baseline is only meaningful with. */
export async function checkDurableSettings(url: string): Promise<Record<string, string>> {
  const client = await openPg(url, -1);
  try {
    const { rows } = await client.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers', 'max_connections')`,
    );
    const settings = Object.fromEntries(rows.map((r) => [r.name, r.setting]));
    if (settings.fsync !== 'on' || settings.synchronous_commit !== 'on') {
      throw new Error(`the baseline server must run with fsync and synchronous_commit on, got ${JSON.stringify(settings)}`);
    }
    return settings;
  } finally {
    await client.end();
  }
}

export async function prepareBaseline(url: string): Promise<void> {
  const client = await openPg(url, -1);
  try {
    await client.query(`CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, client int NOT NULL, n int NOT NULL, payload text NOT NULL)`);
  } finally {
    await client.end();
  }
}

/** One single-row INSERT per transaction (autocommit), synchronous_commit on. */
export function baselineInsert(url: string, clients: number, t: Timing): Promise<LoadResult> {
  return runLoad({
    clients,
    ...t,
    open: (c) => openPg(url, c),
    close: (client) => client.end(),
    async op(client, c, n) {
      await client.query({ name: 'insert', text: 'INSERT INTO bench_rows (client, n, payload) VALUES ($1, $2, $3)', values: [c, n, VALUE_256] });
    },
  });
}

/** SELECT rale_propose(...), then (autocommit, so after its commit) SELECT * FROM rale_wait(id). */
export function sqlTwoStatements(url: string, clients: number, t: Timing): Promise<LoadResult> {
  return runLoad({
    clients,
    ...t,
    open: (c) => openPg(url, c),
    close: (client) => client.end(),
    async op(client, c, n) {
      const proposed = await client.query<{ id: string }>({ name: 'propose', text: 'SELECT rale_propose($1::jsonb) AS id', values: [command(c, n)] });
      const id = proposed.rows[0]?.id;
      const waited = await client.query<{ status: string; error: string | null }>({ name: 'wait', text: 'SELECT status, error FROM rale_wait($1)', values: [id] });
      const outcome = waited.rows[0];
      if (outcome?.status !== 'applied') throw new Error(`rale_wait: ${outcome?.status ?? 'no row'}${outcome?.error ? `: ${outcome.error}` : ''}`);
    },
  });
}

/** CALL rale.submit(command, NULL): propose, commit and wait in one statement. */
export function sqlSubmit(url: string, clients: number, t: Timing): Promise<LoadResult> {
  return runLoad({
    clients,
    ...t,
    open: (c) => openPg(url, c),
    close: (client) => client.end(),
    async op(client, c, n) {
      const r = await client.query<{ outcome: string }>({ name: 'submit', text: 'CALL rale.submit($1::jsonb, NULL)', values: [command(c, n)] });
      const outcome = String(r.rows[0]?.outcome);
      if (!outcome.startsWith('(applied,')) throw new Error(`rale.submit: ${outcome.replace(/\d+/g, 'N').slice(0, 120)}`);
    },
  });
}

/**
 * CALL rale.submit_many(commands, NULL): `perCall` commands proposed,
 * committed and waited for in one statement (0007_bulk_propose.sql). The
 * rate counts proposals; latencies are per call.
 */
export function sqlSubmitMany(url: string, clients: number, perCall: number, t: Timing): Promise<LoadResult> {
  return runLoad({
    clients,
    ...t,
    perOp: perCall,
    open: (c) => openPg(url, c),
    close: (client) => client.end(),
    async op(client, c, n) {
      const commands = Array.from({ length: perCall }, (_, k) => command(c, n * perCall + k));
      const r = await client.query<{ outcomes: string }>({ name: 'submit-many', text: 'CALL rale.submit_many($1::jsonb[], NULL)', values: [commands] });
      // An array of composite values: every element's text starts with its status.
      const outcomes = String(r.rows[0]?.outcomes);
      const applied = outcomes.split('"(applied,').length - 1;
      if (applied !== perCall) throw new Error(`rale.submit_many: ${applied} of ${perCall} applied: ${outcomes.replace(/\d+/g, 'N').slice(0, 120)}`);
    },
  });
}

/** POST /api/v1/consensus/propose; Node 20's fetch (undici) keeps connections alive. */
export function restPropose(apiUrl: string, clients: number, t: Timing): Promise<LoadResult> {
  const url = `${apiUrl}/api/v1/consensus/propose`;
  return runLoad({
    clients,
    ...t,
    open: async () => null,
    close: async () => {},
    async op(_client, c, n) {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: `{"value":${command(c, n)}}`,
        signal: AbortSignal.timeout(15_000),
      });
      const body = (await response.json()) as { status?: string; error?: { code: string; message: string } };
      if (!response.ok || body.status !== 'applied') {
        throw new Error(`HTTP ${response.status} ${body.error?.code ?? body.status ?? ''}: ${(body.error?.message ?? '').replace(/\d+/g, 'N').slice(0, 120)}`);
      }
    },
  });
}
