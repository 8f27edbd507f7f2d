/**
 * Where the leader's PostgreSQL spends its CPU, by connection: C clients
 * run CALL rale.submit on the leader of a three-node cluster (one process,
 * in-memory network, one embedded PostgreSQL per node) for D seconds; each
 * backend's CPU time (/proc/<pid>/stat) is summed by application_name
 * ("bench-client", and "rale <node> log / apply / pump / listen / status"),
 * per second and per proposal. Not a test.
 * With per-call > 1 the clients run CALL rale.submit_many with that many commands.
 * Run: npx tsx test/bench/server-cpu.ts [clients=64] [seconds=8] [per-call=1]
 */
import fs from 'node:fs';
import pg from 'pg';
import { startPgCluster } from '../pg/support.ts';
import { cpuPercent, cpuSnapshot, type CpuTarget } from './suite/cpu.ts';

const clients = Number(process.argv[2] ?? 64);
const seconds = Number(process.argv[3] ?? 8);
const perCall = Number(process.argv[4] ?? 1);
const cluster = await startPgCluster('cpusplit', ['node1', 'node2', 'node3'], { tickMs: 50, core: { electionTicks: 10, heartbeatTicks: 1 } });
try {
  const leader = await cluster.leader();
  const url = cluster.servers.get(leader.id)!.connectionString;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const conns: pg.Client[] = [];
  for (let i = 0; i < clients; i++) {
    const c = new pg.Client({ connectionString: url, application_name: 'bench-client' });
    await c.connect();
    conns.push(c);
  }
  const value = 'x'.repeat(256);
  const cpuOf = (pid: number) => {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(f[11]) + Number(f[12])) * 10;
    } catch {
      return 0; // the backend exited
    }
  };
  const snapshot = async () => {
    const { rows } = await admin.query(`SELECT pid, coalesce(nullif(application_name, ''), backend_type) AS who, left(query, 40) AS q FROM pg_stat_activity`);
    const m = new Map<number, { who: string; cpu: number }>();
    for (const r of rows) m.set(r.pid, { who: r.who, cpu: cpuOf(r.pid) });
    return m;
  };
  let done = 0;
  let stop = false;
  const warm = Date.now() + 2000;
  const work = conns.map(async (c, k) => {
    let n = 0;
    while (!stop) {
      if (perCall > 1) {
        const commands = Array.from({ length: perCall }, () => JSON.stringify({ op: 'set', key: `b-${k}-${n++ % 100}`, value }));
        await c.query('CALL rale.submit_many($1::jsonb[], NULL)', [commands]);
        if (Date.now() > warm) done += perCall;
      } else {
        await c.query('CALL rale.submit($1::jsonb, NULL)', [JSON.stringify({ op: 'set', key: `b-${k}-${n++ % 100}`, value })]);
        if (Date.now() > warm) done++;
      }
    }
  });
  await new Promise((r) => setTimeout(r, 2000));
  // Whole servers too: the postmaster's tree counts autovacuum workers and other short-lived processes that
  // the per-connection sums below miss.
  const servers: CpuTarget[] = [...cluster.servers].map(([id, server]) => ({ label: id === leader.id ? `${id} (leader)` : id, pid: server.pid, tree: true }));
  const wholeBefore = await cpuSnapshot(servers);
  const a = await snapshot();
  done = 0;
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const b = await snapshot();
  const whole = cpuPercent(wholeBefore, await cpuSnapshot(servers));
  const ops = done;
  const dt = (Date.now() - t0) / 1000;
  stop = true;
  await Promise.all(work);
  const by = new Map<string, number>();
  for (const [pid, x] of b) { const before = a.get(pid); if (!before) continue; by.set(x.who, (by.get(x.who) ?? 0) + x.cpu - before.cpu); }
  console.log(`${ops} proposals in ${dt.toFixed(1)} s = ${(ops / dt).toFixed(0)}/s`);
  for (const [who, ms] of [...by].sort((p, q) => q[1] - p[1])) console.log(`${who.padEnd(30)} ${(ms / dt / 10).toFixed(0).padStart(4)} % of a core   ${(ms * 1000 / ops).toFixed(0).padStart(6)} us/proposal`);
  for (const [label, percent] of Object.entries(whole)) {
    if (label === 'machine') continue;
    console.log(`whole server ${label.padEnd(17)} ${percent.toFixed(0).padStart(4)} % of a core   ${((percent * 10 * dt * 1000) / ops).toFixed(0).padStart(6)} us/proposal`);
  }
  console.log(`machine busy ${whole.machine?.toFixed(0)} %`);
  for (const c of conns) await c.end();
  await admin.end();
} finally {
  await cluster.stop();
}
