/**
 * Quick throughput probe: a three-node cluster in one process (in-memory
 * network, one embedded PostgreSQL per node), C concurrent SQL clients on the
 * leader's database each running CALL rale.submit in a loop for D seconds.
 * Run: npx tsx test/bench/sql-throughput.ts [clients=1,64] [seconds=5]
 */
import pg from 'pg';
import { startPgCluster } from '../pg/support.ts';

const clientCounts = (process.argv[2] ?? '1,64').split(',').map(Number);
const seconds = Number(process.argv[3] ?? 5);
const cluster = await startPgCluster('bench', ['node1', 'node2', 'node3'], { tickMs: 50, core: { electionTicks: 20, heartbeatTicks: 2 } });
try {
  const leader = await cluster.leader();
  const url = cluster.servers.get(leader.id)!.connectionString;
  console.log('| clients | committed/s | p50 ms | p99 ms |');
  console.log('|---|---|---|---|');
  for (const clients of clientCounts) {
    const pool = new pg.Pool({ connectionString: url, max: clients });
    const latencies: number[] = [];
    const deadline = performance.now() + seconds * 1000;
    let n = 0;
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        const client = await pool.connect();
        try {
          while (performance.now() < deadline) {
            const started = performance.now();
            const r = await client.query(`CALL rale.submit($1::jsonb, NULL)`, [JSON.stringify({ op: 'set', key: `c${c}-${n++ % 100}`, value: 'x'.repeat(200) })]);
            if (!String(r.rows[0].outcome).startsWith('(applied')) throw new Error(`not applied: ${r.rows[0].outcome}`);
            latencies.push(performance.now() - started);
          }
        } finally {
          client.release();
        }
      }),
    );
    await pool.end();
    latencies.sort((a, b) => a - b);
    const q = (p: number) => (latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0).toFixed(2);
    console.log(`| ${clients} | ${Math.round(latencies.length / seconds)} | ${q(0.5)} | ${q(0.99)} |`);
  }
} finally {
  await cluster.stop();
}
