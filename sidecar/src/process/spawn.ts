/**
 * Runs `rale start` as a child process: what `npm start`, the multi-process
 * tests and the benchmarks use. The child gets its whole configuration in
 * flags; its log lines are passed to `onLine`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { NodeId } from '../core/types.ts';

/**
 * Node.js flags for a sidecar process (docs/operations.md, "Memory"), as the
 * Dockerfile's entry point gives them too:
 * - a young generation of 2 x 8 MB instead of 2 x 16 MB: the sidecar's
 *   allocations are short-lived (messages, query results), which a smaller
 *   young generation collects as well;
 * - --optimize-for-size: V8 grows the old generation less eagerly. Its live
 *   data is small (a heap snapshot after the bench loads: about 20 MB), but
 *   under the REST API's 64-client load the heap grew to 160-190 MB of RSS
 *   before V8 collected; with the flag the max RSS under the bench loads was
 *   105 MB against 167 MB, at the same throughput (2026-12-06).
 */
export const SIDECAR_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8', '--optimize-for-size'];

export const RALE_BIN = fileURLToPath(new URL('../../../bin/rale.js', import.meta.url));

export interface SidecarProcessOptions {
  id: NodeId;
  databaseUrl: string;
  peerPort: number;
  apiPort: number;
  /**
   * Every member of the cluster (this node included): id to peer port and API
   * port, on 127.0.0.1. `peerAddress` (host:port), when given, is where this
   * node dials that member instead of 127.0.0.1:peerPort: a proxy in the
   * multi-process tests, which cut and heal links through it.
   */
  members: Record<NodeId, { peerPort: number; apiPort: number; peerAddress?: string }>;
  /** Founding voters; omit for a node that will be joined. */
  bootstrap?: NodeId[];
  clusterSecret?: string;
  apiToken?: string;
  /** More flags, e.g. ['--tick-ms', '20']. */
  extraArgs?: string[];
  env?: Record<string, string>;
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

export interface SidecarProcess {
  readonly id: NodeId;
  readonly child: ChildProcess;
  readonly apiUrl: string;
  readonly peerAddress: string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after graceMs; resolves once exited. */
  stop(graceMs?: number): Promise<number | string>;
  /** SIGKILL at once. */
  kill(): Promise<number | string>;
  /** SIGSTOP / SIGCONT. */
  pause(): void;
  resume(): void;
  /** Resolves once GET /health answers 200, or rejects after timeoutMs (or when the process exits). */
  waitHealthy(timeoutMs?: number): Promise<void>;
}

export function sidecarArgs(options: SidecarProcessOptions): string[] {
  const peers = Object.entries(options.members)
    .filter(([id]) => id !== options.id)
    .map(([id, m]) => `${id}=${m.peerAddress ?? `127.0.0.1:${m.peerPort}`}@http://127.0.0.1:${m.apiPort}`)
    .join(',');
  const args = [
    'start',
    '--node-id', options.id,
    '--database-url', options.databaseUrl,
    '--peer-listen', `127.0.0.1:${options.peerPort}`,
    '--api-listen', `127.0.0.1:${options.apiPort}`,
  ];
  if (peers !== '') args.push('--peers', peers);
  if (options.bootstrap !== undefined) args.push('--bootstrap', options.bootstrap.join(','));
  if (options.clusterSecret !== undefined) args.push('--cluster-secret', options.clusterSecret);
  if (options.apiToken !== undefined) args.push('--api-token', options.apiToken);
  args.push(...(options.extraArgs ?? []));
  return args;
}

export function spawnSidecar(options: SidecarProcessOptions): SidecarProcess {
  // RALE_NODE_ARGS: extra Node.js flags for spawned sidecars (profiling: "--cpu-prof --cpu-prof-dir=/tmp/prof").
  const nodeArgs = (process.env.RALE_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const child = spawn(process.execPath, [...SIDECAR_NODE_FLAGS, ...nodeArgs, RALE_BIN, ...sidecarArgs(options)], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  let done = false;
  void exited.then(() => (done = true));
  for (const stream of ['stdout', 'stderr'] as const) {
    let buffered = '';
    child[stream]?.setEncoding('utf8');
    child[stream]?.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        options.onLine?.(buffered.slice(0, nl), stream);
        buffered = buffered.slice(nl + 1);
      }
    });
  }
  const apiUrl = `http://127.0.0.1:${options.apiPort}`;
  const signal = (sig: NodeJS.Signals) => {
    if (!done) child.kill(sig);
  };
  return {
    id: options.id,
    child,
    apiUrl,
    peerAddress: `127.0.0.1:${options.peerPort}`,
    exited,
    async stop(graceMs = 15_000) {
      signal('SIGCONT');
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      signal('SIGKILL');
      return exited;
    },
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    async waitHealthy(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      let last = 'no answer yet';
      while (Date.now() < deadline) {
        if (done) throw new Error(`sidecar ${options.id} exited (${await exited}) before it became healthy`);
        try {
          const response = await fetch(`${apiUrl}/api/v1/health`, { signal: AbortSignal.timeout(2_000) });
          if (response.ok) return;
          last = `${response.status} ${await response.text()}`;
        } catch (err) {
          last = (err as Error).message;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error(`sidecar ${options.id} was not healthy within ${timeoutMs} ms: ${last}`);
    },
  };
}
