/** The results of one run, and the Markdown report printed from them. */
import type { IdleResult } from './idle.ts';
import type { FailoverTrial } from './failover.ts';
import type { LoadResult } from './load.ts';
import type { LogIssue } from './cluster.ts';

export type Form = 'baseline' | 'sql-two-statements' | 'sql-submit' | 'sql-submit-many' | 'sql-two-statements-follower' | 'rest';

export interface Measurement {
  form: Form;
  /** Node the clients were connected to (a rale node's id, or "baseline"). */
  node: string;
  /** The leader when the measurement started (null for the baseline). */
  leader: string | null;
  /** Raft term before and after the run: a change means an election under load. */
  termBefore: number | null;
  termAfter: number | null;
  result: LoadResult;
  /** CPU during the measurement, percent of one core: `sidecar <id>`, `pg <id>`, `pg baseline`, `load generator`; `machine` is percent of all cores. */
  cpu: Record<string, number>;
}

export interface MachineFacts {
  cores: number;
  cpuModel: string;
  memTotalMiB: number;
  loadAverageStart: number[];
  loadAverageEnd: number[];
  node: string;
  postgres: string;
  startedAt: string;
  /** Other rale/postgres processes seen at start (other engineers' tests compete for the CPU). */
  otherProcessesAtStart: number;
}

export interface Results {
  machine: MachineFacts;
  options: { seconds: number; clients: number[]; only: string[]; idleMinutes: number; failoverTrials: number; perCall?: number };
  baselineSettings: Record<string, string> | null;
  measurements: Measurement[];
  failover: { trials: FailoverTrial[]; medianMs: number | null; maxMs: number | null } | null;
  memory: { clients: number; perNode: Record<string, number>; maxBytes: number; overallMaxBytes: number } | null;
  idle: IdleResult | null;
  logIssues: LogIssue[];
  failures: string[];
  durationSeconds: number;
}

const LABEL: Record<Form, string> = {
  baseline: 'Baseline: plain PostgreSQL, single-row INSERT per tx',
  'sql-two-statements': 'SQL `rale_propose` + `rale_wait`, leader',
  'sql-submit': 'SQL `CALL rale.submit`, leader',
  'sql-submit-many': 'SQL `CALL rale.submit_many` (proposals/s; latency per call), leader',
  'sql-two-statements-follower': 'SQL `rale_propose` + `rale_wait`, follower (forwarded)',
  rest: 'REST `POST /consensus/propose`, leader',
};

export const ETCD = {
  1: { rate: 362, p50: 2.35, p99: 8.7 },
  64: { rate: 1731, p50: 33, p99: 97 },
  failoverMedianMs: 1270,
} as const;

export const TARGETS = { rate64: 10_000, p50_1: 2, p99_1: 10, failoverMedianMs: 1000, failoverMaxMs: 2000, memoryMiB: 150 } as const;

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number) => (Number.isNaN(n) ? '—' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : int(n));
const secs = (m: number | null) => (m === null ? '—' : `${(m / 1000).toFixed(2)} s`);
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`;
const verdict = (ok: boolean) => (ok ? 'met' : '**missed**');

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function target(m: Measurement): string {
  const r = m.result;
  if (m.form !== 'sql-two-statements' && m.form !== 'sql-submit' && m.form !== 'sql-submit-many') return '';
  if (m.form === 'sql-submit-many' && r.clients !== 64) return '';
  if (r.clients === 1) return `p50 ≤ ${TARGETS.p50_1} ms, p99 ≤ ${TARGETS.p99_1} ms: ${verdict(r.p50 <= TARGETS.p50_1 && r.p99 <= TARGETS.p99_1)}`;
  if (r.clients === 64) return `≥ ${int(TARGETS.rate64)}/s: ${verdict(r.rate >= TARGETS.rate64)}`;
  return '';
}

function etcd(m: Measurement): string {
  if (m.form === 'baseline' || m.form === 'sql-two-statements-follower' || m.form === 'sql-submit-many') return '';
  const ref = m.result.clients === 1 ? ETCD[1] : m.result.clients === 64 ? ETCD[64] : null;
  return ref === null ? '' : `${int(ref.rate)}/s, p50 ${ref.p50} ms, p99 ${ref.p99} ms`;
}

export function markdown(results: Results): string {
  const out: string[] = [];
  const m = results.machine;
  out.push(`## rale benchmark (${m.startedAt})`, '');
  out.push(
    `Machine: ${m.cores} cores (${m.cpuModel}), ${int(m.memTotalMiB)} MiB; load average at start ${m.loadAverageStart.map((l) => l.toFixed(2)).join(' / ')} (1/5/15 min), at end ${m.loadAverageEnd.map((l) => l.toFixed(2)).join(' / ')}; ` +
      `${m.otherProcessesAtStart} other node/postgres processes running at start. Node ${m.node}, PostgreSQL ${m.postgres} (embedded, fsync on, synchronous_commit on). ` +
      `Three sidecar processes + three PostgreSQL servers + the load generator share the machine. ${results.options.seconds} s per measurement after a warm-up; total run ${int(results.durationSeconds)} s.`,
    '',
  );
  const baselineRate = new Map<number, number>();
  for (const x of results.measurements) if (x.form === 'baseline') baselineRate.set(x.result.clients, x.result.rate);
  out.push('| measurement | clients | ops/s | p50 ms | p99 ms | errors | vs baseline | target | etcd 3.4 (same machine) |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---|---|');
  for (const x of results.measurements) {
    const r = x.result;
    const base = baselineRate.get(r.clients);
    const ratio = x.form !== 'baseline' && base !== undefined && base > 0 ? `${((100 * r.rate) / base).toFixed(0)} %` : '';
    const election = x.termBefore !== null && x.termAfter !== null && x.termAfter !== x.termBefore ? ` (term ${x.termBefore}→${x.termAfter}!)` : '';
    out.push(
      `| ${LABEL[x.form]}${(r.perOp ?? 1) > 1 ? `, ${r.perOp} per call` : ''}${election} | ${r.clients} | ${int(r.rate)} | ${ms(r.p50)} | ${ms(r.p99)} | ${r.errors} | ${ratio} | ${target(x)} | ${etcd(x)} |`,
    );
  }
  if (results.failover !== null) {
    const f = results.failover;
    const ok = f.medianMs !== null && f.maxMs !== null && f.medianMs <= TARGETS.failoverMedianMs && f.maxMs <= TARGETS.failoverMaxMs && f.trials.every((t) => t.ms !== null);
    const trials = f.trials.map((t) => (t.ms === null ? 'none' : (t.ms / 1000).toFixed(2))).join(', ');
    out.push(
      `| Failover: leader SIGKILL → first committed write (REST via a survivor) | ${f.trials.length} trials | median ${secs(f.medianMs)}, max ${secs(f.maxMs)} (${trials}) | | | | | median ≤ 1 s, max ≤ 2 s: ${verdict(ok)} | median ${(ETCD.failoverMedianMs / 1000).toFixed(2)} s (1.0-2.8 s) |`,
    );
  }
  if (results.memory !== null) {
    const mem = results.memory;
    const per = Object.entries(mem.perNode).map(([id, b]) => `${id} ${mib(b)}`).join(', ');
    out.push(
      `| Sidecar RSS, max during the ${mem.clients}-client loads | | ${mib(mem.maxBytes)} (${per}) | | | | | ≤ ${TARGETS.memoryMiB} MB: ${verdict(mem.maxBytes <= TARGETS.memoryMiB * 1024 * 1024)} | |`,
    );
  }
  if (results.idle !== null) {
    const i = results.idle;
    out.push(`| Idle spurious elections over ${i.minutes} min | | ${i.termChanges} term changes, ${i.leaderChanges} leader changes (term ${i.termBefore}→${i.termAfter}) | | | | | 0: ${verdict(i.termChanges === 0)} | |`);
  }
  out.push('');
  out.push(...cpuTable(results));
  const errored = results.measurements.filter((x) => x.result.errors > 0);
  if (errored.length > 0) {
    out.push('Errors seen by clients:');
    for (const x of errored) {
      out.push(`- ${LABEL[x.form]}, ${x.result.clients} clients: ${x.result.errorSamples.map((e) => `${e.count}× ${e.message}`).join('; ')}`);
    }
    out.push('');
  }
  if (results.failover !== null) {
    out.push(
      'Failover trials: ' +
        results.failover.trials
          .map(
            (t) =>
              `killed ${t.killed} (term ${t.termBefore ?? '?'}) → ${t.newLeader ?? 'no leader'} (term ${t.termAfter ?? '?'}) elected after ${secs(t.electedMs)}, first write after ${secs(t.ms)}, ${t.failedAttempts} failed writes meanwhile, rejoined in ${secs(t.recoveryMs)}`,
          )
          .join('; ') +
        '.',
      '',
    );
  }
  if (results.logIssues.length > 0) {
    const top = [...results.logIssues].sort((a, b) => b.count - a.count).slice(0, 12);
    out.push(`Sidecar WARN/ERROR log lines (${results.logIssues.reduce((a, b) => a + b.count, 0)} in all, ${results.logIssues.length} distinct; top ${top.length}):`);
    for (const i of top) out.push(`- ${i.count}× ${i.level} ${i.node} ${i.component} (first during ${i.phase}): ${i.message}`);
    out.push('');
  }
  if (results.failures.length > 0) {
    out.push('**Failures:**');
    for (const f of results.failures) out.push(`- ${f.split('\n')[0]}`);
    out.push('');
  }
  return out.join('\n');
}

/** CPU per process group during each measurement: where the time went. */
function cpuTable(results: Results): string[] {
  const rows = results.measurements.filter((x) => Object.keys(x.cpu).length > 0);
  if (rows.length === 0) return [];
  const pct = (n: number | undefined) => (n === undefined ? '—' : `${Math.round(n)}`);
  const group = (x: Measurement, prefix: string) => {
    const ids = Object.keys(x.cpu)
      .filter((k) => k.startsWith(prefix))
      .map((k) => k.slice(prefix.length))
      .sort((a, b) => (a === x.leader ? -1 : b === x.leader ? 1 : a.localeCompare(b)));
    if (ids.length === 0) return '—';
    const parts = ids.map((id) => `${id === x.leader ? '*' : ''}${pct(x.cpu[prefix + id])}`);
    const sum = ids.reduce((a, id) => a + (x.cpu[prefix + id] ?? 0), 0);
    return ids.length > 1 ? `${parts.join(' / ')} (Σ ${Math.round(sum)})` : (parts[0] as string);
  };
  const cores = results.machine.cores;
  const out = [
    `CPU during each measurement, % of one core (the machine has ${cores} cores = ${cores * 100} %); * marks the leader, listed first. "others" is the rest of the machine's busy time: other engineers' work.`,
    '',
    '| measurement | clients | sidecars | PostgreSQL servers | load generator | others | machine busy |',
    '|---|---:|---|---|---:|---:|---:|',
  ];
  for (const x of rows) {
    const ours = Object.entries(x.cpu).reduce((a, [k, v]) => (k === 'machine' ? a : a + v), 0);
    const machine = x.cpu.machine;
    const others = machine === undefined ? undefined : Math.max(0, (machine * cores) - ours);
    out.push(
      `| ${LABEL[x.form]} | ${x.result.clients} | ${group(x, 'sidecar ')} | ${group(x, 'pg ')} | ${pct(x.cpu['load generator'])} | ${pct(others)} | ${machine === undefined ? '—' : `${Math.round(machine)} %`} |`,
    );
  }
  out.push('');
  return out;
}
