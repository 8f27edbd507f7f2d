/**
 * npm run torture -- [--nodes 5] [--minutes 10 | --seconds 90] [--seed 42] [--clients 8] [--keys 4] [--faults kill-sidecar,partition,...]
 *
 * The long form of the nemesis run (see DESIGN.md): prints its seed and the
 * command that replays it, the faults as they happen, and a report with
 * operations per kind, faults per type and the checks. Exit code 0 when
 * every check passed, 1 when one failed (the processes' logs are printed),
 * 2 on bad arguments. Ctrl-C ends the fault phase early; the run still heals,
 * checks and stops everything it started.
 */
import { FAULT_KINDS, type FaultKind } from './faults.ts';
import { formatReport } from './report.ts';
import { runNemesis } from './scenario.ts';

function usage(message: string): never {
  console.error(`${message}\nusage: npm run torture -- [--nodes 3|5|...] [--minutes M | --seconds S] [--seed N] [--clients N] [--keys N] [--faults ${FAULT_KINDS.join(',')}] [--logs (print the processes' logs even when the run passes)]`);
  process.exit(2);
}

const args = new Map<string, string>();
const argv = process.argv.slice(2);
for (let k = 0; k < argv.length; k++) {
  const arg = argv[k]!;
  if (arg === '--logs') {
    args.set('logs', 'true');
    continue;
  }
  if (arg === '--help' || arg === '-h') usage('The nemesis run: faults against a real rale cluster, then linearizability and exactly-once checks.');
  const m = /^--([a-z]+)(?:=(.*))?$/.exec(arg);
  if (m === null) usage(`not an option: ${arg}`);
  const value = m[2] ?? argv[++k];
  if (value === undefined || value.startsWith('--')) usage(`--${m[1]} needs a value`);
  args.set(m[1]!, value);
}
const known = new Set(['logs', 'nodes', 'minutes', 'seconds', 'seed', 'clients', 'keys', 'faults']);
for (const name of args.keys()) if (!known.has(name)) usage(`unknown option --${name}`);

function int(name: string, fallback: number, min: number, max: number): number {
  const raw = args.get(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer in [${min}, ${max}], got ${raw}`);
  return n;
}

const nodes = int('nodes', 5, 3, 9);
const seed = int('seed', Math.floor(Math.random() * 1_000_000), 0, 2 ** 31 - 1);
const clients = args.has('clients') ? int('clients', 0, 1, 64) : undefined;
const keys = args.has('keys') ? int('keys', 0, 1, 100) : undefined;
if (args.has('minutes') && args.has('seconds')) usage('give --minutes or --seconds, not both');
const minutes = args.has('minutes') ? Number(args.get('minutes')) : undefined;
if (minutes !== undefined && !(minutes > 0 && minutes <= 24 * 60)) usage(`--minutes must be a positive number, got ${args.get('minutes')}`);
const durationMs = minutes !== undefined ? minutes * 60_000 : int('seconds', 300, 5, 86_400) * 1000;
let kinds: FaultKind[] | undefined;
if (args.has('faults')) {
  kinds = args.get('faults')!.split(',').map((k) => k.trim()) as FaultKind[];
  for (const k of kinds) if (!(FAULT_KINDS as readonly string[]).includes(k)) usage(`unknown fault ${k}; the faults are ${FAULT_KINDS.join(', ')}`);
}

const replay = ['npm run torture --', `--nodes ${nodes}`, minutes !== undefined ? `--minutes ${minutes}` : `--seconds ${durationMs / 1000}`, `--seed ${seed}`]
  .concat(clients !== undefined ? [`--clients ${clients}`] : [], keys !== undefined ? [`--keys ${keys}`] : [], kinds ? [`--faults ${kinds.join(',')}`] : [])
  .join(' ');
console.log(`seed ${seed}; replay with: ${replay}`);

const abort = new AbortController();
let interrupts = 0;
process.on('SIGINT', () => {
  interrupts++;
  if (interrupts === 1) {
    console.log('\nCtrl-C: ending the fault phase; healing and checking (Ctrl-C again to quit at once)');
    abort.abort();
  } else process.exit(130);
});

const t0 = Date.now();
const result = await runNemesis({
  name: `torture-${seed}`,
  nodes,
  durationMs,
  seed,
  ...(clients !== undefined ? { clients } : {}),
  ...(keys !== undefined ? { keys } : {}),
  ...(kinds ? { kinds } : {}),
  replay,
  keepLogs: args.has('logs'),
  signal: abort.signal,
  log: (line) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${line}`),
});
console.log('');
console.log(formatReport(result));
if (result.logs !== null) {
  console.log('');
  console.log(result.logs);
}
if (!result.ok) console.log(`\nFAILED; replay with: ${replay}`);
process.exit(result.ok ? 0 : 1);
