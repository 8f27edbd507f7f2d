/**
 * Runs a batch of seeded scenarios (what CI does) and summarises them: the
 * failures with their replay commands, and totals showing that the batch
 * exercised what it should (elections, snapshots, deduplicated retries...).
 */
import { MIX_NAMES, runScenario, type MixName, type ScenarioResult, type ScenarioStats } from './scenario.ts';

export interface BatchOptions {
  nodes: number;
  /** Seeds first, first + 1, ...; seed k runs mix MIX_NAMES[k % mixes] unless `mix` is given. */
  first: number;
  count: number;
  steps: number;
  mix?: MixName;
}

export interface BatchSummary {
  scenarios: number;
  failures: ScenarioResult[];
  totals: Record<keyof ScenarioStats, number>;
  byMix: Partial<Record<MixName, number>>;
  /** Longest convergence after the heal, in election timeouts. */
  slowestConvergence: number;
}

export function runBatch(options: BatchOptions): BatchSummary {
  const failures: ScenarioResult[] = [];
  const totals = {} as Record<keyof ScenarioStats, number>;
  const byMix: Partial<Record<MixName, number>> = {};
  let slowestConvergence = 0;
  for (let k = 0; k < options.count; k++) {
    const seed = options.first + k;
    const mix = options.mix ?? (MIX_NAMES[seed % MIX_NAMES.length] as MixName);
    const result = runScenario({ seed, nodes: options.nodes, steps: options.steps, mix });
    byMix[mix] = (byMix[mix] ?? 0) + 1;
    if (!result.ok) failures.push(result);
    for (const [key, value] of Object.entries(result.stats) as Array<[keyof ScenarioStats, number]>) totals[key] = (totals[key] ?? 0) + value;
    slowestConvergence = Math.max(slowestConvergence, result.stats.convergedAfterTicks / result.stats.electionTicks);
  }
  return { scenarios: options.count, failures, totals, byMix, slowestConvergence };
}

/** One paragraph per failure: what broke, where, and the command that replays it. */
export function describeFailures(failures: readonly ScenarioResult[]): string {
  return failures
    .map((f) => `seed ${f.seed} (${f.nodes} nodes, mix ${f.mix}): ${f.violation?.message ?? '?'} at step ${f.violation?.step ?? '?'}\n  replay: ${f.replay}`)
    .join('\n');
}
