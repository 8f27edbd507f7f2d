/**
 * Where does one proposal's time go? A three-node cluster in one process
 * (in-memory network, one embedded PostgreSQL per node), one SQL client
 * running CALL rale.submit in a loop; storage, apply and pump steps are
 * wrapped to record when they start and end, relative to the client's call.
 * Prints the median offset of every step over the run.
 * Run: npx tsx test/bench/trace-one.ts [proposals=200]
 */
import pg from 'pg';
import { startPgCluster } from '../pg/support.ts';
import { PgLogStorage } from '../../sidecar/src/storage/pg-log.ts';
import { PgStateMachine } from '../../sidecar/src/pg/state-machine.ts';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';

const total = Number(process.argv[2] ?? 200);
let t0 = 0;
let events: Array<[string, number]> = [];
const mark = (what: string) => events.push([what, performance.now() - t0]);

function wrap<T extends object>(proto: T, method: keyof T & string, label: (self: T) => string): void {
  const original = proto[method] as unknown as (...args: unknown[]) => Promise<unknown>;
  (proto as Record<string, unknown>)[method] = async function (this: T, ...args: unknown[]) {
    const name = `${label(this)}.${method}`;
    mark(`${name} start`);
    try {
      return await original.apply(this, args);
    } finally {
      mark(`${name} end`);
    }
  };
}

const cluster = await startPgCluster('trace', ['node1', 'node2', 'node3'], { tickMs: 50, core: { electionTicks: 20, heartbeatTicks: 2 } });
try {
  const leader = await cluster.leader();
  const names = new Map<object, string>();
  for (const n of cluster.nodes.values()) {
    names.set(n.log, n === leader ? 'L' : `F${names.size}`);
    names.set(n.stateMachine, n === leader ? 'L' : `F${names.size}`);
    names.set(n.raft, n === leader ? 'L' : `F${names.size}`);
  }
  wrap(PgLogStorage.prototype, 'persist', (s) => `${names.get(s)}.log`);
  wrap(PgStateMachine.prototype, 'apply', (s) => `${names.get(s)}.sm`);
  wrap(RaftNode.prototype, 'submit', (s) => `${names.get(s)}.raft`);
  const url = cluster.servers.get(leader.id)!.connectionString;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const runs: Array<Map<string, number>> = [];
  const latencies: number[] = [];
  for (let k = 0; k < total; k++) {
    events = [];
    t0 = performance.now();
    await client.query(`CALL rale.submit($1::jsonb, NULL)`, [JSON.stringify({ op: 'set', key: `k${k % 100}`, value: 'x'.repeat(200) })]);
    const took = performance.now() - t0;
    latencies.push(took);
    const first = new Map<string, number>();
    for (const [what, at] of events) if (!first.has(what)) first.set(what, at);
    first.set('client done', took);
    if (k >= 10) runs.push(first);
    if (process.env.TRACE_SLOW && took > Number(process.env.TRACE_SLOW)) {
      console.log(`slow run ${k}: ${took.toFixed(1)} ms: ` + events.map(([w, at]) => `${w}@${at.toFixed(1)}`).join(' '));
    }
  }
  await client.end();
  const keys = new Map<string, number[]>();
  for (const run of runs) for (const [what, at] of run) (keys.get(what) ?? keys.set(what, []).get(what)!).push(at);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const rows = [...keys].map(([what, xs]) => [what, median(xs), xs.length] as const).sort((a, b) => a[1] - b[1]);
  for (const [what, at, n] of rows) console.log(`${at.toFixed(2).padStart(8)} ms  ${what}  (${n}/${runs.length})`);
  latencies.sort((a, b) => a - b);
  console.log(`p50 ${latencies[Math.floor(latencies.length / 2)]!.toFixed(2)} ms, p99 ${latencies[Math.floor(latencies.length * 0.99)]!.toFixed(2)} ms`);
} finally {
  await cluster.stop();
}
