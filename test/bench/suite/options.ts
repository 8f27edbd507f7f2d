/** Command-line options of `npm run bench`. */

export const PARTS = ['baseline', 'sql', 'rest', 'failover'] as const;
export type Part = (typeof PARTS)[number];

export interface BenchOptions {
  /** Seconds per throughput measurement (a short warm-up before it is not counted). */
  seconds: number;
  /** Client counts for the throughput measurements. */
  clients: number[];
  /** Which parts run. */
  only: Set<Part>;
  /** Write the results as JSON here. */
  json: string | null;
  /** Minutes of idling to count spurious elections (0: skipped). */
  idleMinutes: number;
  /** Leader kills in the failover part. */
  failoverTrials: number;
  /** Commands per CALL rale.submit_many in the bulk SQL form (part sql). */
  perCall: number;
  /** Print every sidecar log line. */
  verbose: boolean;
}

export const USAGE = `npm run bench -- [options]

  --seconds N          seconds per throughput measurement (default 10)
  --clients 1,64       concurrent clients per measurement (default 1,64)
  --only a,b           parts to run: ${PARTS.join(', ')} (default all)
  --json FILE          also write the results as JSON
  --idle-minutes N     idle the cluster N minutes and count term changes (default 0: off)
  --failover-trials N  leader kills (default 5)
  --per-call N         commands per CALL rale.submit_many in the bulk SQL form (default 16)
  --verbose            print every sidecar log line
  --help`;

export class UsageError extends Error {}

export function parseOptions(argv: readonly string[]): BenchOptions | 'help' {
  const options: BenchOptions = {
    seconds: 10,
    clients: [1, 64],
    only: new Set(PARTS),
    json: null,
    idleMinutes: 0,
    failoverTrials: 5,
    perCall: 16,
    verbose: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--verbose') {
      options.verbose = true;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`${name} needs a value`);
    const number = (min: number, max: number): number => {
      const n = Number(value);
      if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`${name} must be a number from ${min} to ${max}, got ${JSON.stringify(value)}`);
      return n;
    };
    switch (name) {
      case '--per-call':
        options.perCall = number(1, 1000);
        break;
      case '--seconds':
        options.seconds = number(1, 3600);
        break;
      case '--clients':
        options.clients = value.split(',').map((part) => {
          const n = Number(part);
          if (!Number.isInteger(n) || n < 1 || n > 70) throw new UsageError(`--clients takes integers from 1 to 70 (each PostgreSQL allows 100 connections, 3 reserved, and the sidecar uses up to about 28), got ${JSON.stringify(part)}`);
          return n;
        });
        break;
      case '--only': {
        const parts = value.split(',').filter((p) => p !== '');
        for (const p of parts) {
          if (!(PARTS as readonly string[]).includes(p)) throw new UsageError(`--only: unknown part ${JSON.stringify(p)}; the parts are ${PARTS.join(', ')}`);
        }
        options.only = new Set(parts as Part[]);
        break;
      }
      case '--json':
        options.json = value;
        break;
      case '--idle-minutes':
        options.idleMinutes = number(0, 24 * 60);
        break;
      case '--failover-trials':
        options.failoverTrials = Math.round(number(1, 100));
        break;
      default:
        throw new UsageError(`unknown option ${JSON.stringify(name)}`);
    }
  }
  return options;
}
