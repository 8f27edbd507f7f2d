/**
 * The simulator's command line.
 *
 *   npm run sim -- --seed 12345 --nodes 5 --steps 3000 --verbose   replay one scenario with its trace
 *   npm run sim -- --seeds 100000                                   run many (nodes cycle 3, 5, 7)
 *
 * Options: --seed N | --seeds COUNT [--from FIRST], --nodes 3|5|7, --steps N
 * (chaos-phase events, default 3000), --mix calm|lossy|partitions|crashes|
 * membership|chaos (default: picked by the seed), --fault commitOldTerms|
 * skipVoteLogCheck|voteTwice|ignoreDedupe (repeatable: break things on
 * purpose), --verbose (print every event), --keep-going (do not stop at the
 * first failure).
 * Exit status: 0 when every scenario held, 1 otherwise.
 */
import { performance } from 'node:perf_hooks';
import type { FaultInjection } from '../../sidecar/src/core/index.ts';
import { MIX_NAMES, runScenario, type MixName, type ScenarioResult } from './scenario.ts';

interface Args {
  seed: number | null;
  seeds: number;
  from: number;
  nodes: number | null;
  steps: number;
  mix: MixName | undefined;
  coreFaults: FaultInjection;
  ignoreDedupe: boolean;
  verbose: boolean;
  keepGoing: boolean;
}

const CORE_FAULTS = ['commitOldTerms', 'skipVoteLogCheck', 'voteTwice', 'countUnpersistedSelf'] as const;

function usage(message: string): never {
  console.error(`${message}\nusage: npm run sim -- (--seed N | --seeds COUNT [--from N]) [--nodes 3|5|7] [--steps N] [--mix ${MIX_NAMES.join('|')}] [--fault NAME]... [--verbose] [--keep-going]`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const args: Args = { seed: null, seeds: 1, from: 1, nodes: null, steps: 3000, mix: undefined, coreFaults: {}, ignoreDedupe: false, verbose: false, keepGoing: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    const int = (): number => {
      const v = Number(value());
      if (!Number.isInteger(v) || v < 0) usage(`${flag} needs a non-negative integer`);
      return v;
    };
    switch (flag) {
      case '--seed':
        args.seed = int();
        break;
      case '--seeds':
        args.seeds = int();
        break;
      case '--from':
        args.from = int();
        break;
      case '--nodes':
        args.nodes = int();
        if (args.nodes < 1) usage('--nodes must be at least 1');
        break;
      case '--steps':
        args.steps = int();
        break;
      case '--mix': {
        const mix = value();
        if (!(MIX_NAMES as string[]).includes(mix)) usage(`unknown mix ${mix}`);
        args.mix = mix as MixName;
        break;
      }
      case '--fault': {
        const fault = value();
        if (fault === 'ignoreDedupe') args.ignoreDedupe = true;
        else if ((CORE_FAULTS as readonly string[]).includes(fault)) args.coreFaults[fault as (typeof CORE_FAULTS)[number]] = true;
        else usage(`unknown fault ${fault}`);
        break;
      }
      case '--verbose':
        args.verbose = true;
        break;
      case '--keep-going':
        args.keepGoing = true;
        break;
      default:
        usage(`unknown option ${flag}`);
    }
  }
  return args;
}

function report(result: ScenarioResult): void {
  const v = result.violation;
  if (v === null) return;
  console.log(`FAILED seed ${result.seed} (${result.nodes} nodes, mix ${result.mix}) at step ${v.step}, tick ${v.tick}: ${v.message}`);
  console.log(`replay: ${result.replay}`);
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const seeds = args.seed !== null ? [args.seed] : Array.from({ length: args.seeds }, (_, k) => args.from + k);
  const started = performance.now();
  let failures = 0;
  let steps = 0;
  for (const [k, seed] of seeds.entries()) {
    const nodes = args.nodes ?? [3, 5, 7][k % 3] ?? 3;
    const result = runScenario({
      seed,
      nodes,
      steps: args.steps,
      mix: args.mix,
      coreFaults: args.coreFaults,
      ignoreDedupe: args.ignoreDedupe,
      trace: args.verbose ? (line) => console.log(line) : undefined,
    });
    steps += args.steps;
    if (seeds.length === 1) {
      console.log(JSON.stringify({ ok: result.ok, seed, nodes, mix: result.mix, traceHash: result.traceHash, stats: result.stats }, null, 2));
    }
    if (!result.ok) {
      failures++;
      report(result);
      if (!args.keepGoing) break;
    }
    if (seeds.length > 1 && (k + 1) % 1000 === 0) {
      console.log(`${k + 1} scenarios, ${failures} failed, ${((performance.now() - started) / 1000).toFixed(1)} s`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(`${seeds.length > 1 ? `${seeds.length} scenarios` : '1 scenario'}: ${failures === 0 ? 'all held' : `${failures} failed`} (${seconds.toFixed(1)} s, ${steps} chaos steps)`);
  process.exit(failures === 0 ? 0 : 1);
}

main();
