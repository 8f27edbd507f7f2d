/**
 * Failover: SIGKILL the leader's sidecar, and time how long until a write
 * is committed again. A prober writes through the REST API of a surviving
 * node (which forwards to whoever leads): it starts a write every
 * PROBE_EVERY_MS whatever the earlier ones are doing (each with its own
 * timeout), so the resolution is PROBE_EVERY_MS and a write stuck on the dead
 * leader does not delay the next. The failover time is from the kill to the
 * end of the first successful write that started after the kill.
 */
import { VALUE_256 } from './load.ts';
import { sleep, type BenchCluster, type BenchNode } from './cluster.ts';

const PROBE_EVERY_MS = 20;
const ATTEMPT_TIMEOUT_MS = 3_000;
const GIVE_UP_MS = 20_000;

export interface FailoverTrial {
  killed: string;
  /** The node whose REST API the prober wrote through. */
  writer: string;
  /** Kill to the first committed write, ms (null: none within GIVE_UP_MS). */
  ms: number | null;
  /** Kill to the first moment a survivor said it leads in a newer term (polled every 20 ms), ms. */
  electedMs: number | null;
  newLeader: string | null;
  termBefore: number | null;
  termAfter: number | null;
  /** Writes started after the kill that failed before the first success. */
  failedAttempts: number;
  /** The killed node's restart until it was healthy and caught up, ms. */
  recoveryMs: number | null;
}

interface Attempt {
  start: number;
  end: number;
  ok: boolean;
}

class Prober {
  readonly attempts: Attempt[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private n = 0;

  constructor(private readonly apiUrl: string) {}

  start(): void {
    this.timer = setInterval(() => this.fire(), PROBE_EVERY_MS);
    this.fire();
  }

  private fire(): void {
    const start = performance.now();
    const n = this.n++;
    const p = fetch(`${this.apiUrl}/api/v1/consensus/propose`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ value: { op: 'set', key: `failover-${n % 100}`, value: VALUE_256 } }),
      signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
    })
      .then(async (response) => {
        const body = (await response.json()) as { status?: string };
        return response.ok && body.status === 'applied';
      })
      .catch(() => false)
      .then((ok) => {
        this.attempts.push({ start, end: performance.now(), ok });
      });
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** The first successful attempt that started at or after `t`. */
  firstSuccessSince(t: number): Attempt | undefined {
    let first: Attempt | undefined;
    for (const a of this.attempts) if (a.ok && a.start >= t && (first === undefined || a.end < first.end)) first = a;
    return first;
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    await Promise.allSettled([...this.inFlight]);
  }
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (check()) return true;
    await sleep(5);
  }
  return check();
}

/** When a survivor first reports itself leader in a term after `term`: ms after `since`, or null. */
async function watchElection(cluster: BenchCluster, killed: BenchNode, term: number, since: number): Promise<number | null> {
  const survivors = cluster.nodes.filter((n) => n !== killed && !n.expectDown);
  const deadline = since + GIVE_UP_MS;
  while (performance.now() < deadline) {
    const statuses = await Promise.all(survivors.map((n) => cluster.status(n, 500)));
    if (statuses.some((s) => s !== null && s.role === 'leader' && s.term > term)) return performance.now() - since;
    await sleep(20);
  }
  return null;
}

/**
 * One trial. `measured` gets the trial as soon as the failover is timed,
 * before the killed node is restarted (which may fail on its own); the same
 * object then gets its recoveryMs.
 */
export async function failoverTrial(cluster: BenchCluster, measured: (trial: FailoverTrial) => void): Promise<FailoverTrial> {
  const leader = await cluster.leader();
  const writer = cluster.nodes.find((n) => n !== leader && !n.expectDown) as BenchNode;
  const termBefore = (await cluster.status(leader))?.term ?? null;
  const prober = new Prober(writer.sidecar.apiUrl);
  prober.start();
  let killAt = 0;
  let first: Attempt | undefined;
  let electedMs: number | null = null;
  try {
    // Steady state first: writes are going through.
    const steady = await waitFor(() => prober.attempts.filter((a) => a.ok).length >= 10 && prober.attempts.at(-1)?.ok === true, 10_000);
    if (!steady) throw new Error(`writes through ${writer.id} did not succeed before the kill`);
    killAt = performance.now();
    const killed = cluster.kill(leader);
    const watch = watchElection(cluster, leader, termBefore ?? 0, killAt);
    await waitFor(() => (first = prober.firstSuccessSince(killAt)) !== undefined, GIVE_UP_MS);
    await killed;
    electedMs = await watch;
  } finally {
    await prober.stop();
  }
  const failedAttempts = prober.attempts.filter((a) => a.start >= killAt && !a.ok && (first === undefined || a.start < first.start)).length;
  let newLeader: BenchNode | null = null;
  try {
    newLeader = await cluster.leader(10_000);
  } catch {
    newLeader = null;
  }
  const termAfter = newLeader === null ? null : ((await cluster.status(newLeader))?.term ?? null);
  const trial: FailoverTrial = {
    killed: leader.id,
    writer: writer.id,
    ms: first === undefined ? null : first.end - killAt,
    electedMs,
    newLeader: newLeader?.id ?? null,
    termBefore,
    termAfter,
    failedAttempts,
    recoveryMs: null,
  };
  measured(trial);
  // Bring the killed node back, and let it catch up, before the next trial.
  const restartAt = performance.now();
  await cluster.restart(leader);
  await cluster.waitCaughtUp(leader);
  await cluster.leader();
  trial.recoveryMs = performance.now() - restartAt;
  return trial;
}
