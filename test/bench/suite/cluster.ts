/**
 * A three-node rale cluster for the benchmark, wired as `npm start` wires it
 * (sidecar/src/cli/local-cluster.ts): one embedded PostgreSQL per node and a
 * separate `rale start` process beside each, on 127.0.0.1, free ports, the
 * sidecars' default Raft timers. Data lives under a temporary folder that
 * stop() removes.
 */
import { randomBytes } from 'node:crypto';
import { freePort, startPostgresCluster, type PostgresInstance } from '../../../sidecar/src/pg/embedded.ts';
import { spawnSidecar, type SidecarProcess, type SidecarProcessOptions } from '../../../sidecar/src/process/spawn.ts';
import { onCleanup } from './cleanup.ts';

export interface NodeStatus {
  node_id: string;
  role: string;
  term: number;
  leader: string | null;
  commit_index: number;
  applied_index: number;
}

export interface BenchNode {
  readonly id: string;
  readonly pg: PostgresInstance;
  sidecar: SidecarProcess;
  readonly spawnOptions: SidecarProcessOptions;
  /** Killed or stopped on purpose: its exit is not a failure. */
  expectDown: boolean;
  /** The last log lines, for error messages. */
  readonly tail: string[];
}

/** A WARN or ERROR line of a sidecar, counted per distinct message. */
export interface LogIssue {
  level: string;
  node: string;
  component: string;
  message: string;
  count: number;
  /** The benchmark phase in which it was first seen. */
  phase: string;
}

const TAIL_LINES = 60;
const ids = ['node1', 'node2', 'node3'];

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class BenchCluster {
  /** What the benchmark is doing now; log issues are tagged with it. */
  phase = 'start';
  readonly issues = new Map<string, LogIssue>();
  /** Unexpected sidecar exits. */
  readonly failures: string[] = [];

  private constructor(
    readonly nodes: BenchNode[],
    private readonly verbose: boolean,
  ) {}

  static async start(root: string, verbose: boolean): Promise<BenchCluster> {
    const servers = await startPostgresCluster({ root, count: ids.length, names: ids, persistent: false });
    onCleanup('the nodes\' PostgreSQL servers', async () => {
      await Promise.allSettled(servers.map((s) => s.stop()));
    });
    const members: Record<string, { peerPort: number; apiPort: number }> = {};
    for (const id of ids) members[id] = { peerPort: await freePort(), apiPort: await freePort() };
    const secret = randomBytes(24).toString('hex');
    const nodes: BenchNode[] = ids.map((id, k) => ({
      id,
      pg: servers[k] as PostgresInstance,
      sidecar: undefined as unknown as SidecarProcess,
      spawnOptions: {
        id,
        databaseUrl: (servers[k] as PostgresInstance).connectionString,
        ...(members[id] as { peerPort: number; apiPort: number }),
        members,
        bootstrap: ids,
        clusterSecret: secret,
      },
      expectDown: false,
      tail: [],
    }));
    const cluster = new BenchCluster(nodes, verbose);
    onCleanup(
      'the sidecars',
      async () => {
        for (const n of nodes) n.expectDown = true;
        await Promise.allSettled(nodes.filter((n) => n.sidecar !== undefined).map((n) => n.sidecar.stop(10_000)));
      },
      () => {
        for (const n of nodes) if (n.sidecar !== undefined) n.sidecar.child.kill('SIGKILL');
      },
    );
    for (const node of nodes) cluster.spawn(node);
    await Promise.all(nodes.map((n) => n.sidecar.waitHealthy(60_000)));
    await cluster.leader(30_000);
    return cluster;
  }

  private spawn(node: BenchNode): void {
    node.expectDown = false;
    const sidecar = spawnSidecar({ ...node.spawnOptions, onLine: (line) => this.onLine(node, line) });
    node.sidecar = sidecar;
    void sidecar.exited.then((code) => {
      if (node.expectDown || node.sidecar !== sidecar) return;
      const why = `sidecar ${node.id} exited unexpectedly (${code}) during ${this.phase}; its last lines:\n  ${node.tail.slice(-15).join('\n  ')}`;
      this.failures.push(why);
      console.error(`bench: ${why}`);
    });
  }

  private onLine(node: BenchNode, line: string): void {
    if (this.verbose) console.log(`[${node.id}] ${line}`);
    node.tail.push(line);
    if (node.tail.length > TAIL_LINES) node.tail.shift();
    const m = /^\S+ (WARN|ERROR) +node=\S+ component=(\S+) msg=("(?:[^"\\]|\\.)*")/.exec(line);
    if (m === null) return;
    const [, level, component, quoted] = m as unknown as [string, string, string, string];
    let message: string;
    try {
      message = JSON.parse(quoted) as string;
    } catch {
      message = quoted;
    }
    // Numbers vary from line to line (indexes, terms, ms): group messages without them.
    const shape = message.replace(/\d+/g, 'N');
    const key = `${node.id}|${level}|${component}|${shape}`;
    const known = this.issues.get(key);
    if (known) known.count++;
    else this.issues.set(key, { level: level as string, node: node.id, component: component as string, message: message.slice(0, 300), count: 1, phase: this.phase });
  }

  node(id: string): BenchNode {
    const node = this.nodes.find((n) => n.id === id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  async status(node: BenchNode, timeoutMs = 1_000): Promise<NodeStatus | null> {
    try {
      const response = await fetch(`${node.sidecar.apiUrl}/api/v1/cluster/status`, { signal: AbortSignal.timeout(timeoutMs) });
      if (!response.ok) return null;
      return (await response.json()) as NodeStatus;
    } catch {
      return null;
    }
  }

  /** The leader once every running node names it in the same term, and it says it leads. */
  async leader(timeoutMs = 15_000): Promise<BenchNode> {
    const deadline = Date.now() + timeoutMs;
    let seen = '';
    while (Date.now() < deadline) {
      const up = this.nodes.filter((n) => !n.expectDown);
      const statuses = await Promise.all(up.map((n) => this.status(n)));
      seen = statuses.map((s, k) => `${up[k]?.id}: ${s === null ? 'no answer' : `${s.role} term ${s.term} leader ${s.leader}`}`).join('; ');
      const first = statuses[0];
      if (
        first !== null && first !== undefined &&
        first.leader !== null &&
        statuses.every((s) => s !== null && s.leader === first.leader && s.term === first.term) &&
        statuses.some((s) => s?.node_id === first.leader && s.role === 'leader')
      ) {
        return this.node(first.leader);
      }
      await sleep(50);
    }
    throw new Error(`no agreed leader within ${timeoutMs} ms (${seen})`);
  }

  async followers(): Promise<BenchNode[]> {
    const leader = await this.leader();
    return this.nodes.filter((n) => n !== leader && !n.expectDown);
  }

  /** SIGKILL, no warning. Resolves once the process is gone. */
  async kill(node: BenchNode): Promise<void> {
    node.expectDown = true;
    await node.sidecar.kill();
  }

  /** Starts a killed node's sidecar again on its (kept) database and waits until it answers /health. */
  async restart(node: BenchNode): Promise<void> {
    this.spawn(node);
    await node.sidecar.waitHealthy(60_000);
  }

  /** Waits until `node` has applied everything the leader had committed when we asked. */
  async waitCaughtUp(node: BenchNode, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const leader = await this.leader(timeoutMs);
    const target = (await this.status(leader))?.commit_index;
    if (target === undefined) throw new Error(`leader ${leader.id} did not report its commit index`);
    while (Date.now() < deadline) {
      const s = await this.status(node);
      if (s !== null && s.applied_index >= target) return;
      await sleep(50);
    }
    throw new Error(`${node.id} did not catch up to index ${target} within ${timeoutMs} ms`);
  }

  /** The sidecars' process ids (running ones). */
  pids(): Map<string, number> {
    const pids = new Map<string, number>();
    for (const n of this.nodes) if (!n.expectDown && n.sidecar.child.pid !== undefined) pids.set(n.id, n.sidecar.child.pid);
    return pids;
  }

  /** The sidecars get SIGTERM (then SIGKILL), then the servers stop; data dirs are removed by the harness. */
  async stop(): Promise<void> {
    for (const n of this.nodes) n.expectDown = true;
    await Promise.allSettled(this.nodes.map((n) => n.sidecar.stop(10_000)));
    await Promise.allSettled(this.nodes.map((n) => n.pg.stop()));
  }
}
