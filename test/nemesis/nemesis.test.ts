/**
 * The nemesis run, short CI form (the long form is `npm run torture`; see
 * DESIGN.md): separate sidecar processes on their own PostgreSQL servers,
 * clients over SQL and REST, faults on a fixed seed, then the checks
 * (linearizable, acknowledged writes everywhere, exactly once, identical
 * state). A failure prints the report, the replay command and the logs.
 */
import test, { type ExecutionContext } from 'ava';
import { formatReport } from './report.ts';
import { runNemesis, type NemesisRunOptions } from './scenario.ts';

async function nemesis(t: ExecutionContext, options: Omit<NemesisRunOptions, 'replay' | 'name'>): Promise<void> {
  const replay = `npm run torture -- --nodes ${options.nodes} --seconds ${options.durationMs / 1000} --seed ${options.seed}`;
  const result = await runNemesis({ ...options, name: `ci-${options.nodes}n-${options.seed}`, replay, log: (line) => t.log(line) });
  const report = formatReport(result);
  t.log(report);
  if (!result.ok) console.error(`\n${report}\n\n${result.logs ?? ''}\nreplay: ${replay}`);
  t.true(result.ok, `the nemesis run failed; replay with: ${replay}`);
  // The run must have done something worth checking.
  const injected = [...result.faults.values()].reduce((n, f) => n + f.injected, 0);
  t.true(injected >= 3, `only ${injected} faults were injected`);
  const acknowledged = [...result.tallies.entries()].filter(([name]) => !name.endsWith(' get')).reduce((n, [, tally]) => n + tally.ok, 0);
  t.true(acknowledged >= 50, `only ${acknowledged} writes were acknowledged`);
}

// Kept short so the whole suite stays well under ten minutes on two cores; `npm run torture` runs as long as asked.
test.serial('3 nodes, 35 s of faults (seed 42): linearizable, nothing lost, nothing applied twice, identical nodes', async (t) => {
  t.timeout(300_000);
  await nemesis(t, { nodes: 3, durationMs: 35_000, seed: 42 });
});

test.serial('5 nodes, 20 s of faults (seed 5): linearizable, nothing lost, nothing applied twice, identical nodes', async (t) => {
  t.timeout(300_000);
  await nemesis(t, { nodes: 5, durationMs: 20_000, seed: 5 });
});
