/**
 * `npm run bench`: rale's benchmarks (issue 4) on a three-node local cluster
 * of separate sidecar processes, each beside its own embedded PostgreSQL,
 * with a plain-PostgreSQL baseline measured in the same run. Prints a
 * Markdown report on stdout (progress goes to stderr). See DESIGN.md.
 *
 *   npm run bench -- --seconds 10 --clients 1,64 --only sql,rest,failover,baseline --json out.json [--idle-minutes N]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { postgresVersion, startPostgres } from '../../sidecar/src/pg/embedded.ts';
import { cleanup, installSignalHandlers, interrupted, noteLeftovers, onCleanup } from './suite/cleanup.ts';
import { BenchCluster, sleep } from './suite/cluster.ts';
import { failoverTrial, type FailoverTrial } from './suite/failover.ts';
import { idle } from './suite/idle.ts';
import { warmupFor, type LoadResult } from './suite/load.ts';
import { cpuPercent, cpuSnapshot, type CpuTarget } from './suite/cpu.ts';
import { RssSampler } from './suite/memory.ts';
import { parseOptions, USAGE, UsageError, type BenchOptions } from './suite/options.ts';
import { markdown, median, type Form, type Measurement, type Results } from './suite/report.ts';
import { baselineInsert, checkDurableSettings, prepareBaseline, restPropose, sqlSubmit, sqlSubmitMany, sqlTwoStatements, type Timing } from './suite/workloads.ts';

const progress = (line: string) => {
  if (!interrupted()) console.error(`bench: ${line}`);
};

function describe(r: LoadResult): string {
  return `${Math.round(r.rate)} ops/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.errors} errors`;
}

function describeCpu(cpu: Record<string, number>): string {
  return Object.entries(cpu)
    .map(([label, pct]) => `${label} ${Math.round(pct)}%`)
    .join(', ');
}

/** node and postgres processes already running (other engineers' tests share the 2 cores). */
function countOtherProcesses(): number {
  try {
    const out = execFileSync('ps', ['-eo', 'pid=,comm='], { encoding: 'utf8' });
    return out.split('\n').filter((l) => /\s(node|postgres)$/.test(l) && !l.trim().startsWith(`${process.pid} `)).length;
  } catch {
    return -1;
  }
}

async function newResults(options: BenchOptions): Promise<Results> {
  return {
    machine: {
      cores: os.cpus().length,
      cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
      memTotalMiB: os.totalmem() / 1024 / 1024,
      loadAverageStart: os.loadavg(),
      loadAverageEnd: [],
      node: process.version,
      postgres: await postgresVersion(),
      startedAt: new Date().toISOString(),
      otherProcessesAtStart: countOtherProcesses(),
    },
    options: { seconds: options.seconds, clients: options.clients, only: [...options.only], idleMinutes: options.idleMinutes, failoverTrials: options.failoverTrials, perCall: options.perCall },
    baselineSettings: null,
    measurements: [],
    failover: null,
    memory: null,
    idle: null,
    logIssues: [],
    failures: [],
    durationSeconds: 0,
  };
}

/** Runs the parts, filling `results` as it goes (so that a failure still reports what was measured). */
async function run(options: BenchOptions, results: Results): Promise<void> {
  const machine = results.machine;
  progress(`load average ${machine.loadAverageStart.map((l) => l.toFixed(2)).join(' ')} on ${machine.cores} cores; ${machine.otherProcessesAtStart} node/postgres processes already running`);

  // Data under a fresh temp folder, removed at the end. The harness runs
  // postgres as the `postgres` user when we are root: it must traverse it.
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'rale-bench-'));
  await fs.chmod(root, 0o755);
  onCleanup('the temporary folder', () => fs.rm(root, { recursive: true, force: true }));
  noteLeftovers(root);

  const timing: Timing = { seconds: options.seconds, warmupSeconds: warmupFor(options.seconds) };
  const maxClients = Math.max(...options.clients);

  // 1. The baseline: its own PostgreSQL server, before any rale process runs.
  if (options.only.has('baseline')) {
    progress('baseline: starting a separate PostgreSQL server ...');
    const server = await startPostgres({ dataDir: path.join(root, 'baseline'), persistent: false });
    const unregister = onCleanup('the baseline PostgreSQL server', () => server.stop());
    try {
      const url = await server.createDatabase('baseline');
      results.baselineSettings = await checkDurableSettings(url);
      await prepareBaseline(url);
      for (const clients of [...new Set([...options.clients, 32])].sort((a, b) => a - b)) {
        const targets: CpuTarget[] = [
          { label: 'pg baseline', pid: server.pid, tree: true },
          { label: 'load generator', pid: process.pid, tree: false },
        ];
        const before = await cpuSnapshot(targets);
        const result = await baselineInsert(url, clients, timing);
        const cpu = cpuPercent(before, await cpuSnapshot(targets));
        progress(`baseline ${clients} clients: ${describe(result)}; CPU ${describeCpu(cpu)}`);
        results.measurements.push({ form: 'baseline', node: 'baseline', leader: null, termBefore: null, termAfter: null, result, cpu });
      }
    } finally {
      await server.stop();
      unregister();
    }
  }

  const needCluster = options.only.has('sql') || options.only.has('rest') || options.only.has('failover') || options.idleMinutes > 0;
  if (!needCluster) return;

  progress('starting three PostgreSQL servers and three sidecar processes ...');
  const cluster = await BenchCluster.start(path.join(root, 'cluster'), options.verbose);
  const sampler = new RssSampler(() => cluster.pids());
  const overall = new RssSampler(() => cluster.pids());
  const recordMemory = () => {
    sampler.stop();
    overall.stop();
    if (sampler.samples > 0 && results.memory === null) {
      results.memory = {
        clients: maxClients,
        perNode: Object.fromEntries(sampler.max),
        maxBytes: Math.max(...sampler.max.values()),
        overallMaxBytes: Math.max(...overall.max.values()),
      };
    }
  };
  try {
    const leader0 = await cluster.leader();
    progress(`cluster up: leader ${leader0.id}`);

    if (options.idleMinutes > 0) {
      cluster.phase = 'idle';
      progress(`idle for ${options.idleMinutes} min, counting term changes ...`);
      results.idle = await idle(cluster, options.idleMinutes, progress);
      progress(`idle: ${results.idle.termChanges} term changes`);
    }

    overall.start();
    const measure = async (form: Form, clients: number, pick: 'leader' | 'follower', go: (target: ReturnType<BenchCluster['node']>) => Promise<LoadResult>) => {
      cluster.phase = `${form} ${clients} clients`;
      const leader = await cluster.leader();
      const target = pick === 'leader' ? leader : (cluster.nodes.find((n) => n !== leader && !n.expectDown) as typeof leader);
      const termBefore = (await cluster.status(leader))?.term ?? null;
      const targets: CpuTarget[] = [
        ...cluster.nodes.flatMap((n) => [
          { label: `sidecar ${n.id}`, pid: n.sidecar.child.pid ?? -1, tree: false },
          { label: `pg ${n.id}`, pid: n.pg.pid, tree: true },
        ]),
        { label: 'load generator', pid: process.pid, tree: false },
      ];
      if (clients === maxClients) sampler.start();
      let result: LoadResult;
      const before = await cpuSnapshot(targets);
      try {
        result = await go(target);
      } finally {
        if (clients === maxClients) sampler.stop();
      }
      const cpu = cpuPercent(before, await cpuSnapshot(targets));
      const termAfter = (await cluster.status(target))?.term ?? null;
      const m: Measurement = { form, node: target.id, leader: leader.id, termBefore, termAfter, result, cpu };
      results.measurements.push(m);
      progress(`${form} ${clients} clients on ${target.id}: ${describe(result)}${termAfter !== termBefore ? ` (term ${termBefore} -> ${termAfter})` : ''}; CPU ${describeCpu(cpu)}`);
      await sleep(500); // let the pump and the apply loop settle before the next run
    };

    if (options.only.has('sql')) {
      for (const clients of options.clients) {
        await measure('sql-two-statements', clients, 'leader', (n) => sqlTwoStatements(n.pg.connectionString, clients, timing));
      }
      for (const clients of options.clients) {
        await measure('sql-submit', clients, 'leader', (n) => sqlSubmit(n.pg.connectionString, clients, timing));
      }
      for (const clients of options.clients) {
        await measure('sql-submit-many', clients, 'leader', (n) => sqlSubmitMany(n.pg.connectionString, clients, options.perCall, timing));
      }
      for (const clients of options.clients) {
        await measure('sql-two-statements-follower', clients, 'follower', (n) => sqlTwoStatements(n.pg.connectionString, clients, timing));
      }
    }
    if (options.only.has('rest')) {
      for (const clients of options.clients) {
        await measure('rest', clients, 'leader', (n) => restPropose(n.sidecar.apiUrl, clients, timing));
      }
    }
    recordMemory();

    if (options.only.has('failover')) {
      const trials: FailoverTrial[] = [];
      const summarize = () => {
        const times = trials.flatMap((t) => (t.ms === null ? [] : [t.ms]));
        results.failover = { trials, medianMs: median(times), maxMs: times.length === trials.length && times.length > 0 ? Math.max(...times) : null };
      };
      for (let k = 1; k <= options.failoverTrials; k++) {
        cluster.phase = `failover trial ${k}`;
        const trial = await failoverTrial(cluster, (t) => {
          trials.push(t);
          summarize();
        });
        progress(
          `failover ${k}/${options.failoverTrials}: killed ${trial.killed}, new leader elected after ${Math.round(trial.electedMs ?? NaN)} ms, first write through ${trial.writer} after ${trial.ms === null ? 'none' : `${Math.round(trial.ms)} ms`}; new leader ${trial.newLeader}; ${trial.killed} back and caught up in ${Math.round(trial.recoveryMs ?? 0)} ms`,
        );
      }
    }
  } finally {
    recordMemory();
    results.logIssues = [...cluster.issues.values()];
    results.failures.push(...cluster.failures);
    cluster.phase = 'stop';
    progress('stopping the cluster ...');
    await cluster.stop();
  }
}

async function main(): Promise<number> {
  let options: BenchOptions | 'help';
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`bench: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  }
  if (options === 'help') {
    console.log(USAGE);
    return 0;
  }
  installSignalHandlers();
  const began = performance.now();
  const results = await newResults(options);
  try {
    await run(options, results);
  } catch (err) {
    if (interrupted()) throw err;
    console.error(`bench: failed: ${(err as Error).stack ?? String(err)}`);
    results.failures.push(`the run stopped early: ${(err as Error).message}`);
  } finally {
    await cleanup();
  }
  results.machine.loadAverageEnd = os.loadavg();
  results.durationSeconds = (performance.now() - began) / 1000;
  console.log(markdown(results));
  if (options.json !== null) {
    await fs.writeFile(options.json, JSON.stringify(results, null, 2) + '\n');
    progress(`results written to ${options.json}`);
  }
  return results.failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  async (err: Error) => {
    console.error(`bench: failed: ${err.stack ?? err.message}`);
    await cleanup();
    process.exit(1);
  },
);
