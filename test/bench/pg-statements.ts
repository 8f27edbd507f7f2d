/**
 * Where does PostgreSQL spend its time on the write path? Like
 * sql-throughput.ts (three nodes in one process, C clients running CALL
 * rale.submit on the leader for D seconds), with pg_stat_statements loaded
 * (nested statements tracked): prints each node's top statements by total
 * execution plus planning time (printed as exec+plan ms). Not a test.
 * With per-call > 1 the clients run CALL rale.submit_many with that many commands.
 * Run: npx tsx test/bench/pg-statements.ts [clients=64] [seconds=5] [top=12] [per-call=1]
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPostgresCluster } from '../../sidecar/src/pg/embedded.ts';
import { PgNode } from '../../sidecar/src/pg/node.ts';
import { MemoryNetwork } from '../../sidecar/src/node/transport.ts';
import { Role } from '../../sidecar/src/core/types.ts';

const clients = Number(process.argv[2] ?? 64);
const seconds = Number(process.argv[3] ?? 5);
const top = Number(process.argv[4] ?? 12);
const perCall = Number(process.argv[5] ?? 1);
const ids = ['node1', 'node2', 'node3'];
const root = path.join(os.tmpdir(), `rale-pgstat-${process.pid}`);
await fs.mkdir(root, { recursive: true, mode: 0o755 });
await fs.chmod(root, 0o755);
const servers = await startPostgresCluster({
  root,
  count: 3,
  names: ids,
  persistent: false,
  settings: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'all', 'pg_stat_statements.track_planning': 'on' },
});
const network = new MemoryNetwork();
const nodes: PgNode[] = [];
try {
  for (const [k, id] of ids.entries()) {
    nodes.push(
      await PgNode.start({ id, connectionString: servers[k]!.connectionString, transport: network.transport(), bootstrap: ids, tickMs: 50, core: { electionTicks: 20, heartbeatTicks: 2 }, seed: k + 1 }),
    );
  }
  let leader: PgNode | undefined;
  while (!(leader = nodes.find((n) => n.raft.status().role === Role.Leader))) await new Promise((r) => setTimeout(r, 20));
  for (const s of servers) {
    const c = new pg.Client({ connectionString: s.connectionString });
    await c.connect();
    await c.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await c.query('SELECT pg_stat_statements_reset()');
    await c.end();
  }
  const url = servers[nodes.indexOf(leader)]!.connectionString;
  const pool = new pg.Pool({ connectionString: url, max: clients });
  const deadline = performance.now() + seconds * 1000;
  let n = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const client = await pool.connect();
      try {
        while (performance.now() < deadline) {
          if (perCall > 1) {
            const commands = Array.from({ length: perCall }, (_, k) => JSON.stringify({ op: 'set', key: `c${c}-${(n + k) % 100}`, value: 'x'.repeat(200) }));
            await client.query('CALL rale.submit_many($1::jsonb[], NULL)', [commands]);
            n += perCall;
          } else {
            await client.query(`CALL rale.submit($1::jsonb, NULL)`, [JSON.stringify({ op: 'set', key: `c${c}-${n % 100}`, value: 'x'.repeat(200) })]);
            n++;
          }
        }
      } finally {
        client.release();
      }
    }),
  );
  await pool.end();
  console.log(`${n} proposals in ${seconds} s: ${Math.round(n / seconds)}/s`);
  for (const [k, s] of servers.entries()) {
    const c = new pg.Client({ connectionString: s.connectionString });
    await c.connect();
    const { rows } = await c.query(
      `SELECT calls, round(total_exec_time::numeric, 1)::text || '+' || round(total_plan_time::numeric, 1)::text AS ms,
              round(((total_exec_time + total_plan_time) / greatest(calls, 1) * 1000)::numeric, 1) AS us_per_call,
              regexp_replace(left(query, 90), '\\s+', ' ', 'g') AS q
       FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       ORDER BY total_exec_time + total_plan_time DESC LIMIT $1`,
      [top],
    );
    console.log(`\n${ids[k]}${nodes[k] === leader ? ' (leader)' : ''}`);
    for (const r of rows) console.log(`${String(r.calls).padStart(7)} ${String(r.ms).padStart(9)} ms ${String(r.us_per_call).padStart(9)} us  ${r.q}`);
    await c.end();
  }
} finally {
  for (const n of nodes) await n.stop();
  for (const s of servers) await s.stop();
  await fs.rm(root, { recursive: true, force: true });
}
