/**
 * A closed-loop load generator: N clients, each running one operation after
 * another for a fixed time. Operations that start during the warm-up, or end
 * after the deadline, are not counted; the rate is the counted operations
 * over the measured window.
 */

export interface LoadResult {
  clients: number;
  /** Length of the measured window, seconds. */
  seconds: number;
  /** Successful operations in the window. */
  ops: number;
  /** Successful operations per second, times `perOp` (proposals per second for a bulk form). */
  rate: number;
  /** Proposals each operation carries (1 but for the bulk form); latencies are per operation. */
  perOp: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
  /** Failed operations (thrown errors or a wrong answer) during the whole run, warm-up included. */
  errors: number;
  /** The first few distinct error messages, with counts. */
  errorSamples: Array<{ message: string; count: number }>;
}

export interface LoadSpec<Client> {
  clients: number;
  seconds: number;
  warmupSeconds: number;
  /** Opens client number `c` (a connection); not timed. */
  open(c: number): Promise<Client>;
  /** One operation; throws if it failed. `n` counts this client's operations. */
  op(client: Client, c: number, n: number): Promise<void>;
  close(client: Client): Promise<void>;
  /** Called once every client is open, just before the clock starts. */
  onStart?(): void;
  /** Proposals each operation carries (default 1): the rate counts them. */
  perOp?: number;
}

/** The q-quantile of sorted values (nearest rank). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

/** After this many consecutive failures a client pauses a little, so a broken path does not spin. */
const BACKOFF_AFTER = 3;

export async function runLoad<Client>(spec: LoadSpec<Client>): Promise<LoadResult> {
  const handles: Client[] = [];
  try {
    for (let c = 0; c < spec.clients; c++) handles.push(await spec.open(c));
    spec.onStart?.();
    const start = performance.now();
    const measureFrom = start + spec.warmupSeconds * 1000;
    const deadline = measureFrom + spec.seconds * 1000;
    const latencies: number[] = [];
    const errors = new Map<string, number>();
    let errorCount = 0;
    await Promise.all(
      handles.map(async (client, c) => {
        let failuresInARow = 0;
        for (let n = 0; performance.now() < deadline; n++) {
          const began = performance.now();
          try {
            await spec.op(client, c, n);
            failuresInARow = 0;
            const ended = performance.now();
            if (began >= measureFrom && ended <= deadline) latencies.push(ended - began);
          } catch (err) {
            errorCount++;
            // Numbers differ from one error to the next (ids, indexes, ms): group the messages without them.
            const message = String((err as Error)?.message ?? err).replace(/\d+/g, 'N').slice(0, 200);
            errors.set(message, (errors.get(message) ?? 0) + 1);
            if (++failuresInARow >= BACKOFF_AFTER) await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
      }),
    );
    const sorted = Float64Array.from(latencies).sort();
    const total = latencies.reduce((a, b) => a + b, 0);
    const perOp = spec.perOp ?? 1;
    return {
      clients: spec.clients,
      seconds: spec.seconds,
      ops: sorted.length,
      rate: (sorted.length * perOp) / spec.seconds,
      perOp,
      p50: quantile(sorted, 0.5),
      p99: quantile(sorted, 0.99),
      max: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : NaN,
      mean: sorted.length > 0 ? total / sorted.length : NaN,
      errors: errorCount,
      errorSamples: [...errors.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 5)
        .map(([message, count]) => ({ message, count })),
    };
  } finally {
    await Promise.allSettled(handles.map((h) => spec.close(h)));
  }
}

/** A 256-byte value, the size the etcd reference figures were measured with. */
export const VALUE_256 = 'v'.repeat(256);

export function warmupFor(seconds: number): number {
  return Math.min(2, Math.max(0.5, seconds / 10));
}
