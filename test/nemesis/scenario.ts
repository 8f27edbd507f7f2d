/**
 * One nemesis run from start to verdict: a cluster of separate sidecar
 * processes on their own PostgreSQL servers, the workload and the nemesis
 * for `durationMs`, then heal, converge, final reads and the checks.
 * Everything it started is stopped before it returns or throws.
 */
import { startCluster, type Cluster } from '../cluster/harness.ts';
import { installAuditHandler, runChecks, waitConverged, type CheckOutcome } from './audit.ts';
import { Nemesis, type FaultKind } from './faults.ts';
import { passed, type RunSummary } from './report.ts';
import { Workload } from './workload.ts';

export interface NemesisRunOptions {
  name: string;
  nodes: number;
  durationMs: number;
  seed: number;
  clients?: number;
  keys?: number;
  keyEpochMs?: number;
  kinds?: readonly FaultKind[];
  /** Sidecar flags (default: --snapshot-every 300, so that snapshots and their handler tables are exercised). */
  extraArgs?: string[];
  /** Progress lines (faults as they happen, phases). */
  log?: (line: string) => void;
  /** The command that replays this run, for the report. */
  replay: string;
  /** Return the processes' logs even when every check passed. */
  keepLogs?: boolean;
  /** Ends the fault phase early (Ctrl-C): the run still heals, converges and checks. */
  signal?: AbortSignal;
}

export interface NemesisRunResult extends RunSummary {
  ok: boolean;
  timeline: string[];
  /** The processes' log lines (filtered) when a check failed or the run broke. */
  logs: string | null;
}

export async function runNemesis(o: NemesisRunOptions): Promise<NemesisRunResult> {
  const log = o.log ?? (() => {});
  const started = Date.now();
  log(`starting ${o.nodes} PostgreSQL servers and ${o.nodes} sidecars (seed ${o.seed})`);
  const cluster: Cluster = await startCluster({ name: o.name, size: o.nodes, extraArgs: o.extraArgs ?? ['--snapshot-every', '300'] });
  const mark = cluster.mark();
  const workload = new Workload(cluster, {
    seed: o.seed,
    clients: o.clients ?? (o.nodes >= 5 ? 8 : 6),
    keys: o.keys ?? 4,
    keyEpochMs: o.keyEpochMs ?? 30_000,
    writeDeadlineMs: 20_000,
  });
  const nemesis = new Nemesis(cluster, {
    seed: o.seed ^ 0x5eed,
    minSize: Math.max(3, o.nodes - 1),
    maxSize: o.nodes + 1,
    ...(o.kinds ? { kinds: o.kinds } : {}),
    log,
  });
  let checks: CheckOutcome[] = [];
  let broke: Error | null = null;
  try {
    await cluster.leader();
    await installAuditHandler(cluster);
    workload.start();
    nemesis.start();
    log(`workload and nemesis running for ${(o.durationMs / 1000).toFixed(0)} s`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, o.durationMs);
      o.signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    log('stopping the nemesis');
    await nemesis.stop();
    log('healing everything');
    await nemesis.healEverything(90_000);
    log('stopping the workload (operations in flight finish or time out)');
    await workload.stop();
    log('waiting for convergence');
    await waitConverged(cluster, 90_000);
    log('final linearizable reads on every member');
    for (const id of cluster.members) await workload.finalReads(id);
    log('checking');
    checks = await runChecks({ cluster, history: workload.recorder.history(), audits: workload.audits, acked: workload.acked });
    checks.push(unexpectedExits(cluster.logsSince(mark)));
  } catch (err) {
    broke = err as Error;
    checks.push({ name: 'the run completed (heal, convergence, final reads)', ok: false, detail: (err as Error).stack ?? String(err) });
  } finally {
    await nemesis.stop().catch(() => {});
    await workload.stop().catch(() => {});
  }
  const summary: RunSummary = {
    name: o.name,
    seed: o.seed,
    nodes: o.nodes,
    durationMs: o.durationMs,
    elapsedMs: Date.now() - started,
    finalMembers: cluster.members,
    tallies: workload.tallies,
    faults: nemesis.stats,
    checks,
    anomalies: workload.anomalies,
    replay: o.replay,
  };
  const ok = broke === null && passed(summary);
  const logs = ok && !o.keepLogs ? null : `${cluster.failureReport(mark, 600)}\n---- nemesis timeline ----\n${nemesis.timeline.join('\n')}`;
  await cluster.stop();
  summary.elapsedMs = Date.now() - started;
  return { ...summary, ok, timeline: nemesis.timeline, logs };
}

/**
 * A sidecar may exit only when the nemesis or the harness told it to
 * (SIGKILL, or 0 after SIGTERM): any other exit (a crash, a refused
 * configuration on restart) is a finding even if the cluster coped.
 */
export function unexpectedExits(logs: string): CheckOutcome {
  const exits = [...logs.matchAll(/^(\S+) \[harness\] sidecar process exited \(([^)]*)\)$/gm)].map((m) => ({ node: m[1]!, code: m[2]! }));
  const bad = exits.filter((e) => e.code !== 'SIGKILL' && e.code !== '0');
  const lines = logs.split('\n');
  return {
    name: 'no sidecar exited unless told to (SIGKILL, SIGTERM)',
    ok: bad.length === 0,
    detail:
      bad.length === 0
        ? `${exits.length} sidecar exits, all asked for`
        : bad
            .map((e) => {
              // The node's last lines before it exited say why.
              const at = lines.findIndex((l) => l === `${e.node} [harness] sidecar process exited (${e.code})`);
              const before = lines.slice(0, at).filter((l) => l.startsWith(`${e.node} `) && !l.includes(' [pg] ')).slice(-3);
              return `${e.node} exited with ${e.code}: ${before.join(' / ')}`;
            })
            .join('\n'),
  };
}
