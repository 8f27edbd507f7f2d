/**
 * The nemesis: faults on a seeded schedule, one at a time, each undone
 * before the next (a sidecar killed is restarted, a partition healed...),
 * so that a majority of the members is always back before the next blow.
 *
 *   kill-sidecar     SIGKILL a sidecar (the leader half of the time), restart it on its data
 *   kill-postgres    SIGKILL a node's whole PostgreSQL (postmaster and backends), restart it
 *   pause-sidecar    SIGSTOP a sidecar (the leader half of the time), SIGCONT later
 *   pause-postgres   SIGSTOP a node's PostgreSQL (every process of it), SIGCONT later
 *   partition        majority | minority through the proxies
 *   bridge           two sides that cannot talk, one node that talks to both
 *   isolate-leader   the leader alone
 *   one-way          the leader cannot reach one follower (one direction only)
 *   add-member       a new node (new PostgreSQL, new sidecar) joins through POST /cluster/join
 *   remove-member    DELETE /cluster/nodes/{id}; the removed node is then stopped
 *   transfer-leader  POST /consensus/transfer-leader to another voter
 *
 * Decisions (which fault, which node, how long) come from a generator seeded
 * by the run's seed; timing of the real processes is not reproducible, so a
 * seed replays the schedule, not the exact interleaving.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startPostgres } from '../../sidecar/src/pg/embedded.ts';
import { sleep, type Cluster } from '../cluster/harness.ts';
import { Rng } from '../sim/rng.ts';
import { prepareDatabase } from './audit.ts';

export const FAULT_KINDS = [
  'kill-sidecar',
  'kill-postgres',
  'pause-sidecar',
  'pause-postgres',
  'partition',
  'bridge',
  'isolate-leader',
  'one-way',
  'add-member',
  'remove-member',
  'transfer-leader',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Above 2: twice per bag. */
const WEIGHTS: Record<FaultKind, number> = {
  'kill-sidecar': 3,
  'kill-postgres': 3,
  'pause-sidecar': 2,
  'pause-postgres': 1,
  partition: 3,
  bridge: 1,
  'isolate-leader': 2,
  'one-way': 1,
  'add-member': 1,
  'remove-member': 1,
  'transfer-leader': 2,
};

export interface NemesisOptions {
  seed: number;
  /** Fault kinds to use (default: all). */
  kinds?: readonly FaultKind[];
  /** Membership stays within [minSize, maxSize]. */
  minSize: number;
  maxSize: number;
  /** Quiet time between faults, ms. */
  quietMs?: [number, number];
  /** How long a fault lasts, ms. */
  holdMs?: [number, number];
  log?: (line: string) => void;
}

export interface FaultStats {
  injected: number;
  /** The fault could not be injected or undone as planned (e.g. a join that timed out); details in the timeline. */
  troubles: number;
}

export class Nemesis {
  readonly stats = new Map<FaultKind, FaultStats>(FAULT_KINDS.map((k) => [k, { injected: 0, troubles: 0 }]));
  readonly timeline: string[] = [];
  private readonly rng: Rng;
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly pausedSidecars = new Set<string>();
  private readonly pausedPostgres = new Map<string, number[]>();
  private nextNode: number;
  private readonly t0 = Date.now();
  /** Joins that did not answer 200: finished while healing. */
  private readonly unfinishedJoins = new Set<string>();

  constructor(
    private readonly cluster: Cluster,
    private readonly options: NemesisOptions,
  ) {
    this.rng = new Rng(options.seed);
    this.nextNode = cluster.nodes.size + 1;
  }

  private note(text: string): void {
    const line = `+${((Date.now() - this.t0) / 1000).toFixed(1)}s ${text}`;
    this.timeline.push(line);
    this.options.log?.(line);
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  /** Stops after the fault in progress is undone. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private hold(): number {
    const [lo, hi] = this.options.holdMs ?? [1_500, 6_000];
    return this.rng.int(lo, hi);
  }

  private async run(): Promise<void> {
    const [qlo, qhi] = this.options.quietMs ?? [1_000, 4_000];
    while (this.running) {
      await sleep(this.rng.int(qlo, qhi));
      if (!this.running) break;
      await this.waitHealthy(30_000);
      const kind = this.pickKind();
      const stats = this.stats.get(kind)!;
      stats.injected++;
      try {
        await this.inject(kind);
      } catch (err) {
        stats.troubles++;
        this.note(`${kind}: trouble: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Faults come from a shuffled bag holding every kind once (kill-sidecar,
   * kill-postgres and partition twice): a short run sees many kinds, not the
   * same one five times. A kind not allowed now (membership at its bound)
   * waits in the bag for a later turn.
   */
  private bag: FaultKind[] = [];

  private pickKind(): FaultKind {
    const size = this.cluster.members.length;
    const allowed = (k: FaultKind) => (k === 'add-member' ? size < this.options.maxSize : k === 'remove-member' ? size > this.options.minSize : true);
    const kinds = this.options.kinds ?? FAULT_KINDS;
    for (let refills = 0; refills < 2; refills++) {
      const k = this.bag.findIndex(allowed);
      if (k >= 0) return this.bag.splice(k, 1)[0]!;
      this.bag.push(...this.rng.shuffle(kinds.flatMap((kind) => Array<FaultKind>(WEIGHTS[kind] > 2 ? 2 : 1).fill(kind))));
    }
    throw new Error(`no fault kind is allowed now (kinds ${kinds.join(', ')}, ${size} members)`);
  }

  /** The leader, or null when none is agreed within a few seconds. */
  private async leader(): Promise<string | null> {
    try {
      return await this.cluster.leader({ timeoutMs: 5_000 });
    } catch {
      return null;
    }
  }

  /** The leader half of the time (when there is one), else a member picked at random. */
  private async victim(): Promise<string> {
    const members = this.cluster.members;
    const pickLeader = this.rng.chance(0.5);
    const random = this.rng.pick(members);
    if (!pickLeader) return random;
    return (await this.leader()) ?? random;
  }

  private async inject(kind: FaultKind): Promise<void> {
    const c = this.cluster;
    switch (kind) {
      case 'kill-sidecar': {
        const id = await this.victim();
        const hold = this.hold();
        this.note(`kill-sidecar ${id} (SIGKILL), restart in ${hold} ms`);
        await c.killSidecar(id);
        await sleep(hold);
        await c.startSidecar(id, false);
        return;
      }
      case 'kill-postgres': {
        const id = await this.victim();
        const hold = this.hold();
        this.note(`kill-postgres ${id} (SIGKILL to the postmaster and every child at once), restart in ${hold} ms`);
        await this.killPostgres(id);
        await sleep(hold);
        await c.startPostgres(id);
        this.note(`kill-postgres ${id}: PostgreSQL restarted`);
        return;
      }
      case 'pause-sidecar': {
        const id = await this.victim();
        const sidecar = c.node(id).sidecar;
        if (sidecar === null) throw new Error(`the sidecar of ${id} is not running`);
        const hold = this.hold();
        this.note(`pause-sidecar ${id} (SIGSTOP) for ${hold} ms`);
        sidecar.pause();
        this.pausedSidecars.add(id);
        await sleep(hold);
        sidecar.resume();
        this.pausedSidecars.delete(id);
        return;
      }
      case 'pause-postgres': {
        const id = await this.victim();
        const pid = c.node(id).postgres?.pid;
        if (pid === undefined) throw new Error(`the PostgreSQL of ${id} is not running`);
        const hold = this.hold();
        const pids = [pid, ...childrenOf(pid)];
        this.note(`pause-postgres ${id} (SIGSTOP to the postmaster and its ${pids.length - 1} children) for ${hold} ms`);
        signalAll(pids, 'SIGSTOP');
        this.pausedPostgres.set(id, pids);
        await sleep(hold);
        signalAll(pids, 'SIGCONT');
        this.pausedPostgres.delete(id);
        return;
      }
      case 'partition': {
        const members = this.rng.shuffle(c.members);
        // A minority of 1 .. floor((n-1)/2) nodes; the rest keep a quorum.
        const minority = members.splice(0, this.rng.int(1, Math.floor((members.length - 1) / 2) + 1));
        await this.partitioned([minority, members], 'partition');
        return;
      }
      case 'bridge': {
        const members = this.rng.shuffle(c.members);
        // The bridge is left out of the groups; the harness cuts an unlisted joined node's inbound proxy, so it must be a founder.
        const at = members.findIndex((m) => c.node(m).founder);
        if (at < 0) throw new Error('no founder left to be the bridge');
        const bridge = members.splice(at, 1)[0]!;
        const half = Math.ceil(members.length / 2);
        const left = members.slice(0, half);
        const right = members.slice(half);
        if (right.length === 0) throw new Error('too few members for a bridge');
        this.note(`bridge: ${bridge} talks to both sides`);
        await this.partitioned([left, right], 'bridge');
        return;
      }
      case 'isolate-leader': {
        const leader = await this.leader();
        if (leader === null) throw new Error('no leader to isolate');
        await this.partitioned([[leader], c.members.filter((m) => m !== leader)], 'isolate-leader');
        return;
      }
      case 'one-way': {
        const leader = await this.leader();
        if (leader === null) throw new Error('no leader');
        // Links into a joined node are one shared proxy: only a founder's inbound link can be cut alone.
        const followers = c.members.filter((m) => m !== leader && c.node(m).founder);
        if (followers.length === 0) throw new Error('no founder follower to cut one way');
        const follower = this.rng.pick(followers);
        const hold = this.hold();
        this.note(`one-way: ${leader} -> ${follower} cut for ${hold} ms`);
        c.cut(leader, follower);
        await sleep(hold);
        c.heal(leader, follower);
        return;
      }
      case 'add-member': {
        const id = `node${this.nextNode++}`;
        await this.prepareJoiner(id);
        this.note(`add-member ${id}: POST /cluster/join`);
        const answer = await c.addNode(id, { timeoutMs: 30_000 });
        if (answer.status !== 200) {
          this.unfinishedJoins.add(id);
          throw new Error(`join of ${id} answered ${answer.status} ${JSON.stringify(answer.body)}`);
        }
        this.note(`add-member ${id}: joined as voter at index ${answer.body.index}`);
        return;
      }
      case 'remove-member': {
        const id = await this.victim();
        const via = c.node(id).sidecar !== null ? id : c.members.find((m) => m !== id && c.node(m).sidecar !== null);
        if (via === undefined) throw new Error(`no running member to remove ${id} through`);
        this.note(`remove-member ${id} (via ${via})`);
        const answer = await c.removeNode(id, via, 30_000);
        if (answer.status !== 200) throw new Error(`removal of ${id} answered ${answer.status} ${JSON.stringify(answer.body)}`);
        this.note(`remove-member ${id}: removed at index ${answer.body.index}; stopping it`);
        await c.stopSidecar(id);
        await c.stopPostgres(id);
        return;
      }
      case 'transfer-leader': {
        const leader = await this.leader();
        if (leader === null) throw new Error('no leader');
        const target = this.rng.pick(c.members.filter((m) => m !== leader));
        this.note(`transfer-leader ${leader} -> ${target}`);
        const answer = await c.api(leader, 'POST', '/consensus/transfer-leader', { node_id: target }, 10_000);
        if (answer.status !== 200) throw new Error(`transfer answered ${answer.status} ${JSON.stringify(answer.body)}`);
        return;
      }
    }
  }

  private async partitioned(wanted: string[][], what: string): Promise<void> {
    const mode = this.rng.chance(0.2) ? 'reset' : 'blackhole';
    const hold = this.hold();
    // A joined node's inbound links are one shared proxy in the harness: it can only be cut off as a
    // whole. Such a node gets a group of its own (the partition is then harsher than planned).
    const joined = (id: string) => !this.cluster.node(id).founder;
    const groups = wanted.flatMap((g) => (g.length > 1 && g.some(joined) ? [g.filter((id) => !joined(id)), ...g.filter(joined).map((id) => [id])] : [g])).filter((g) => g.length > 0);
    const reshaped = groups.length !== wanted.length ? ' (joined nodes alone)' : '';
    this.note(`${what}: ${groups.map((g) => `{${g.join(',')}}`).join(' | ')}${reshaped} (${mode}) for ${hold} ms`);
    try {
      this.cluster.partition(groups, mode);
    } catch (err) {
      this.cluster.healAll();
      throw err;
    }
    await sleep(hold);
    this.cluster.healAll();
  }

  /**
   * SIGKILL to the postmaster and all its children at once, as a crash would
   * (PostgreSQL's children each lead their own process group, so a signal to
   * the postmaster's group would reach the postmaster only).
   */
  private async killPostgres(id: string): Promise<void> {
    const node = this.cluster.node(id);
    const server = node.postgres;
    if (server === null) throw new Error(`the PostgreSQL of ${id} is not running`);
    signalAll([server.pid, ...childrenOf(server.pid)], 'SIGKILL');
    // stop() after the kill only waits for the exit and reaps leftover backends.
    await server.stop();
    node.postgres = null;
  }

  /**
   * A joining node's database needs the audit table and handler function
   * before it applies anything: its data dir is made here (started, prepared,
   * stopped); addNode then starts PostgreSQL on it as it is.
   */
  private async prepareJoiner(id: string): Promise<void> {
    const server = await startPostgres({ dataDir: path.join(this.cluster.root, id), persistent: true });
    try {
      await prepareDatabase(server.connectionString);
    } finally {
      await server.stop();
    }
  }

  /** Waits until every member answers /health with 200 (best effort: notes and goes on after timeoutMs). */
  async waitHealthy(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let sick: string[] = [];
    while (Date.now() < deadline) {
      sick = [];
      await Promise.all(
        this.cluster.members.map(async (id) => {
          try {
            const answer = await this.cluster.api(id, 'GET', '/health', undefined, 2_000);
            if (answer.status !== 200) sick.push(`${id}: ${answer.status} ${JSON.stringify(answer.body?.error?.reasons ?? answer.body)}`);
          } catch (err) {
            sick.push(`${id}: ${(err as Error).message}`);
          }
        }),
      );
      if (sick.length === 0) return true;
      await sleep(250);
    }
    this.note(`not every member healthy after ${timeoutMs} ms: ${sick.join('; ')}`);
    return false;
  }

  /**
   * Undoes everything: SIGCONT, heal every link, start every member's
   * PostgreSQL and sidecar, finish joins, reconcile the harness's member
   * list with the leader's configuration. Then waits for health.
   */
  async healEverything(timeoutMs = 60_000): Promise<void> {
    const c = this.cluster;
    for (const id of this.pausedSidecars) c.node(id).sidecar?.resume();
    for (const pids of this.pausedPostgres.values()) signalAll(pids, 'SIGCONT');
    this.pausedSidecars.clear();
    this.pausedPostgres.clear();
    c.healAll();
    for (const id of c.members) {
      if (c.node(id).postgres === null) await c.startPostgres(id);
      if (c.node(id).sidecar === null) await c.startSidecar(id, false);
    }
    const leader = await c.leader({ timeoutMs });
    for (const id of this.unfinishedJoins) {
      // The harness counts a joining node as a member only once its join answered 200; a join resumes where it stopped.
      const node = c.node(id);
      if (node.postgres === null) await c.startPostgres(id);
      if (node.sidecar === null) await c.startSidecar(id, false);
      this.note(`heal: finishing the join of ${id}`);
      const answer = await c.api(leader, 'POST', '/cluster/join', { node_id: id, address: this.joinAddress(id) }, 60_000).catch((err: Error) => ({ status: 0, body: err.message }));
      this.note(`heal: join of ${id} answered ${answer.status}`);
      if (answer.status === 200) node.member = true;
    }
    this.unfinishedJoins.clear();
    // A removal that did not answer 200 may still have happened: the leader's configuration decides.
    const status = await c.status(leader);
    const config = new Set<string>([...((status?.voters as string[]) ?? []), ...((status?.learners as string[]) ?? [])]);
    if (config.size > 0) {
      for (const id of c.members) {
        if (!config.has(id)) {
          this.note(`heal: ${id} is not in ${leader}'s configuration (${[...config].join(',')}): no longer a member`);
          c.node(id).member = false;
          await c.stopSidecar(id);
          await c.stopPostgres(id);
        }
      }
    }
    if (!(await this.waitHealthy(timeoutMs))) throw new Error('the cluster did not become healthy after healing everything');
  }

  /** The address a joined node was joined with (its ingress proxy), from the leader's member list. */
  private joinAddress(id: string): string {
    // The harness keeps a joined node's shared ingress proxy to itself; its port is the join address.
    const ingress = (this.cluster as unknown as { ingress: Map<string, { port: number }> }).ingress.get(id);
    if (ingress === undefined) throw new Error(`no join address known for ${id}`);
    return `127.0.0.1:${ingress.port}`;
  }
}

/** The pids whose parent is `pid` (Linux /proc). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // the process went away meanwhile
    }
  }
  return out;
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}
