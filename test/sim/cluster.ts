/**
 * A whole simulated cluster in one process: nodes (core + simulated driver),
 * the network, a client and an operator, on one virtual clock.
 *
 * `step()` runs exactly one event, then checks the invariants of the node it
 * touched (or of every node, for client and operator actions) and adds one
 * line to the trace hash. Everything random comes from `rng` (seeded), so a
 * seed fixes the whole run. Targeted tests drive a Cluster by hand (partition,
 * crash, propose, runTicks...); randomised scenarios (scenario.ts) schedule
 * client, operator and fault events into it.
 */
import {
  DEFAULT_CORE_OPTIONS,
  isMember,
  members,
  Role,
  seededRandom,
  type ClusterConfig,
  type ConfigChange,
  type CoreOptions,
  type Entry,
  type FaultInjection,
  type Message,
  type NodeId,
  type ReadState,
} from '../../sidecar/src/core/index.ts';
import { isRaleError } from '../../sidecar/src/errors.ts';
import { encodeCommand } from './codec.ts';
import { TraceHash } from './hash.ts';
import { Checker } from './invariants.ts';
import { Network } from './network.ts';
import { SimNode, type DriverParams, type NodeHost } from './node.ts';
import { deriveSeed, Rng } from './rng.ts';
import { Scheduler, TICK } from './scheduler.ts';
import type { ApplyOutcome } from './statemachine.ts';
import { InvariantViolation } from './violation.ts';

export interface ClusterOptions {
  seed: number;
  /** Voters of the initial configuration: n1..n<voters>. */
  voters: number;
  /** Extra nodes, running but not members, that membership changes can add: n<voters+1>... */
  spares?: number;
  /** Core tunables (electionTicks, heartbeatTicks, maxInflight, byte limits...). */
  core?: Partial<Omit<CoreOptions, 'id' | 'random'>>;
  /** Test-only: break the core on purpose (every node). */
  coreFaults?: FaultInjection;
  /** Test-only: the state machines ignore their dedupe table. */
  ignoreDedupe?: boolean;
  driver?: Partial<DriverParams>;
  /** Whether messages on one link may overtake each other (default: links are FIFO, like TCP). */
  reorder?: boolean;
  /** Each node's tick period is TICK +- up to this many time units (clock drift). */
  clockDrift?: number;
  /** Called with every trace line (for --verbose). */
  trace?: (line: string) => void;
}

export const DEFAULT_DRIVER_PARAMS: DriverParams = {
  readyDelay: [0, 10],
  slowPersistDelay: [20, 150],
  fetchDelay: [0, 60],
  fetchEmptyChance: 0,
  snapshotEvery: 0,
};

export interface Proposal {
  id: string;
  key: string;
  value: string;
  attempts: number;
  /** Virtual time of the last attempt (retries wait a while after it). */
  lastAttempt: number;
  done: boolean;
}

export interface ServedRead {
  node: NodeId;
  index: number;
  key: string;
  /** The value of `key` in the node's state machine when the read was served. */
  value: string | undefined;
}

export class Cluster implements NodeHost {
  readonly scheduler = new Scheduler();
  readonly rng: Rng;
  readonly network: Network;
  readonly checker: Checker;
  readonly params: DriverParams;
  readonly coreFaults: FaultInjection;
  readonly nodes: SimNode[] = [];
  readonly bootstrap: ClusterConfig;
  readonly electionTicks: number;
  readonly trace = new TraceHash();
  /** Events run so far. */
  steps = 0;
  readonly proposals: Proposal[] = [];
  readonly servedReads = new Map<string, ServedRead>();
  /** Called after every event with the node it touched (scenarios react to states, e.g. crash a leader as it commits). */
  readonly stepObservers: Array<(node: SimNode) => void> = [];
  private readonly byId = new Map<NodeId, SimNode>();
  private readonly readKeys = new Map<string, string>();
  private readonly proposalsById = new Map<string, Proposal>();
  private readonly coreTunables: Partial<Omit<CoreOptions, 'id' | 'random'>>;
  /** Operator actions the core accepted (for scenario statistics). */
  readonly operatorStats = { membershipChanges: 0, leaderRemovals: 0, transfers: 0 };
  private proposalCounter = 0;
  private readCounter = 0;

  constructor(private readonly options: ClusterOptions) {
    this.rng = new Rng(deriveSeed(options.seed, 0x5111));
    this.network = new Network(this.scheduler, this.rng, (message: Message) => this.node(message.to).receive(message));
    this.network.reorder = options.reorder === true;
    this.checker = new Checker(() => this.nodes);
    this.params = { ...DEFAULT_DRIVER_PARAMS, ...options.driver };
    this.coreFaults = options.coreFaults ?? {};
    this.coreTunables = options.core ?? {};
    this.electionTicks = this.coreTunables.electionTicks ?? DEFAULT_CORE_OPTIONS.electionTicks;
    const ids = Array.from({ length: options.voters + (options.spares ?? 0) }, (_, k) => `n${k + 1}`);
    this.bootstrap = { voters: ids.slice(0, options.voters), learners: [] };
    const drift = options.clockDrift ?? 0;
    for (const id of ids) {
      const node = new SimNode(id, this, {
        ignoreDedupe: options.ignoreDedupe === true,
        tickPeriod: TICK + (drift > 0 ? this.rng.int(-drift, drift + 1) : 0),
      });
      this.nodes.push(node);
      this.byId.set(id, node);
    }
    // The founders write the initial voters as entry 1; spares start empty (no configuration:
    // they do not campaign) and learn it from the log once a membership change adds them.
    for (const node of this.nodes) {
      if (this.bootstrap.voters.includes(node.id)) node.bootstrap(this.bootstrap.voters);
      this.guard(() => node.start(), node);
    }
  }

  // ---------------------------------------------------------------- NodeHost

  coreOptions(id: NodeId, incarnation: number): Partial<CoreOptions> & Pick<CoreOptions, 'id' | 'random'> {
    const index = this.nodes.findIndex((n) => n.id === id);
    return { ...this.coreTunables, id, random: seededRandom(deriveSeed(this.options.seed, 0xc0de, index, incarnation)) };
  }

  applied(_node: SimNode, _entry: Entry, outcome: ApplyOutcome): void {
    if (outcome.kind === 'write' || outcome.kind === 'duplicate') {
      const proposal = this.proposalsById.get(outcome.id);
      if (proposal !== undefined) proposal.done = true;
    }
  }

  readServed(node: SimNode, read: ReadState): void {
    const key = this.readKeys.get(read.context) ?? '';
    this.servedReads.set(read.context, { node: node.id, index: read.index, key, value: node.sm.data.get(key) });
  }

  // ---------------------------------------------------------------- running

  node(id: NodeId): SimNode {
    const node = this.byId.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  get ids(): NodeId[] {
    return this.nodes.map((n) => n.id);
  }

  /** Virtual time in ticks. */
  get ticks(): number {
    return this.scheduler.now / TICK;
  }

  /** Runs one event and checks the invariants. Throws InvariantViolation. */
  step(): boolean {
    const event = this.scheduler.next();
    if (event === undefined) return false;
    this.steps++;
    const touched = event.node === null ? null : this.node(event.node);
    this.guard(event.run, touched);
    this.record(event.time, event.label, touched);
    if (touched !== null) for (const observe of this.stepObservers) observe(touched);
    return true;
  }

  /**
   * Runs an action (an event, or a test's direct call), then checks the
   * invariants of the node it touched (of every node when `touched` is null).
   * A surprise exception becomes a 'core-exception' violation. With
   * `refusalOk`, a RaleError (NOT_LEADER, CONFIG_CHANGE_PENDING...) is an
   * ordinary answer to a client or operator request: it is rethrown after
   * the checks.
   */
  guard(action: () => void, touched: SimNode | null, refusalOk = false): void {
    let refusal: unknown = null;
    try {
      try {
        action();
      } catch (err) {
        if (!(refusalOk && isRaleError(err))) throw err;
        refusal = err;
      }
      if (touched !== null) this.checker.afterStep(touched);
      else for (const node of this.nodes) this.checker.afterStep(node);
    } catch (err) {
      if (err instanceof InvariantViolation) throw err;
      const error = err instanceof Error ? err : new Error(String(err));
      const where = (error.stack ?? '').split('\n').slice(1, 4).join(' | ');
      throw new InvariantViolation('core-exception', `${error.message} (${where.trim()})`);
    }
    if (refusal !== null) throw refusal;
  }

  private record(time: number, label: string, touched: SimNode | null): void {
    let line = `${time} ${label}`;
    if (touched !== null) line += ` => ${this.describe(touched)}`;
    this.trace.update(line);
    this.options.trace?.(line);
  }

  /** A short summary of a node's state for the trace. */
  describe(node: SimNode): string {
    const core = node.core;
    if (core === null) return `${node.id} down`;
    const role = core.currentRole === Role.Leader ? 'L' : core.currentRole === Role.Follower ? 'F' : core.currentRole === Role.Candidate ? 'C' : 'P';
    return `${node.id} ${role}${core.currentTerm} c${core.commitIndex} a${core.appliedIndex} l${core.log.lastIndex}${node.persisting ? ' persisting' : ''}`;
  }

  /** Adds a line to the trace for an action a test or scenario takes directly. */
  note(line: string): void {
    this.record(this.scheduler.now, line, null);
  }

  runSteps(count: number): void {
    for (let k = 0; k < count; k++) if (!this.step()) return;
  }

  runTicks(ticks: number): void {
    const until = this.scheduler.now + ticks * TICK;
    while (this.scheduler.now < until && this.step()) {
      // keep going
    }
  }

  /** Runs until `done()` holds (checked after every step) or `maxTicks` pass. Returns whether it held. */
  runUntil(done: () => boolean, maxTicks: number): boolean {
    const until = this.scheduler.now + maxTicks * TICK;
    while (!done()) {
      if (this.scheduler.now >= until || !this.step()) return done();
    }
    return true;
  }

  // ---------------------------------------------------------------- observation

  get liveNodes(): SimNode[] {
    return this.nodes.filter((n) => n.core !== null);
  }

  /** The live node that believes it leads, in the highest term (what service discovery would return). */
  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const node of this.nodes) {
      const core = node.core;
      if (core === null || core.currentRole !== Role.Leader) continue;
      if (best === undefined || core.currentTerm > (best.core?.currentTerm ?? -1)) best = node;
    }
    return best;
  }

  // ---------------------------------------------------------------- faults

  isolate(id: NodeId): void {
    this.network.isolate(id, this.ids);
    this.note(`isolate ${id}`);
  }

  split(groupA: readonly NodeId[], groupB: readonly NodeId[]): void {
    this.network.split(groupA, groupB);
    this.note(`split ${groupA.join(',')} | ${groupB.join(',')}`);
  }

  /** One-way partition: messages from `from` to `to` are dropped. */
  block(from: NodeId, to: NodeId): void {
    this.network.block(from, to);
    this.note(`block ${from}>${to}`);
  }

  heal(): void {
    this.network.heal();
    this.note('heal partitions');
  }

  crash(id: NodeId): void {
    this.node(id).crash();
    this.note(`crash ${id}`);
    // As the gRPC transport does when a peer's process dies (its connection is reset):
    // the other live nodes hear that `id` is down, and stop trusting it if it led them.
    for (const other of this.nodes) {
      if (other.id !== id && other.core !== null) other.withCore((core) => core.leaderUnreachable(id));
    }
  }

  restart(id: NodeId): void {
    const node = this.node(id);
    this.guard(() => node.start(), node);
    this.note(`restart ${id} => ${this.describe(node)}`);
  }

  // ---------------------------------------------------------------- client

  /** Creates a proposal and makes a first attempt (see `attempt`). */
  propose(key: string, value: string, to?: NodeId): Proposal {
    const proposal: Proposal = { id: `p${++this.proposalCounter}`, key, value, attempts: 0, lastAttempt: this.scheduler.now, done: false };
    this.proposals.push(proposal);
    this.proposalsById.set(proposal.id, proposal);
    this.attempt(proposal, to);
    return proposal;
  }

  /**
   * Sends a proposal (again: a retry keeps its id) to `to`, or to the node
   * that believes it leads. Returns what happened. A refusal (not leader,
   * transfer in progress) is an ordinary outcome: the client retries later.
   */
  attempt(proposal: Proposal, to?: NodeId): string {
    proposal.attempts++;
    proposal.lastAttempt = this.scheduler.now;
    const target = to === undefined ? this.leader() : this.node(to);
    let outcome: string;
    if (target === undefined) {
      outcome = 'no leader';
    } else if (target.core === null) {
      outcome = `${target.id} is down`;
    } else {
      try {
        const data = encodeCommand({ id: proposal.id, key: proposal.key, value: proposal.value });
        let result = { index: 0, term: 0 };
        this.guard(() => {
          result = target.propose(data);
        }, target, true);
        outcome = `${target.id} appended ${result.index}@${result.term}`;
      } catch (err) {
        if (!isRaleError(err)) throw err;
        outcome = `${target.id} refused: ${err.code}`;
      }
    }
    this.note(`propose ${proposal.id} (${proposal.key}=${proposal.value}) attempt ${proposal.attempts}: ${outcome}`);
    return outcome;
  }

  get pendingProposals(): Proposal[] {
    return this.proposals.filter((p) => !p.done);
  }

  /**
   * Asks `nodeId` for a linearizable read of `key`. Returns the read's context
   * (see `servedReads`), or null when the node refused (no leader known).
   */
  read(nodeId: NodeId, key: string): string | null {
    const node = this.node(nodeId);
    if (node.core === null) return null;
    const context = `read${++this.readCounter}@${nodeId}`;
    this.readKeys.set(context, key);
    this.checker.readRequested(context);
    try {
      this.guard(() => node.withCore((core) => core.readIndex(context)), node, true);
      this.note(`read ${context} ${key}`);
      return context;
    } catch (err) {
      if (!isRaleError(err)) throw err;
      this.note(`read ${context} refused: ${err.code}`);
      return null;
    }
  }

  // ---------------------------------------------------------------- operator

  /** Proposes a membership change on the current leader. Returns whether it was accepted. */
  changeMembership(change: ConfigChange): boolean {
    const leader = this.leader();
    if (leader === undefined) {
      this.note(`membership ${change.type} ${changeTarget(change)}: no leader`);
      return false;
    }
    try {
      this.guard(() => leader.withCore((core) => core.proposeConfigChange(change)), leader, true);
      this.note(`membership ${change.type} ${changeTarget(change)} on ${leader.id}`);
      this.operatorStats.membershipChanges++;
      if (change.type === 'remove' && changeTarget(change) === leader.id) this.operatorStats.leaderRemovals++;
      return true;
    } catch (err) {
      if (!isRaleError(err)) throw err;
      this.note(`membership ${change.type} ${changeTarget(change)} on ${leader.id} refused: ${err.code}`);
      return false;
    }
  }

  /** Asks the current leader to hand leadership to `target`. Returns whether it was accepted. */
  transferLeadership(target: NodeId): boolean {
    const leader = this.leader();
    if (leader === undefined) return false;
    try {
      this.guard(() => leader.withCore((core) => core.transferLeadership(target)), leader, true);
      this.note(`transfer ${leader.id} -> ${target}`);
      this.operatorStats.transfers++;
      return true;
    } catch (err) {
      if (!isRaleError(err)) throw err;
      this.note(`transfer ${leader.id} -> ${target} refused: ${err.code}`);
      return false;
    }
  }

  /**
   * Makes `id` the leader: it campaigns (again, whenever it is back to
   * follower) until it leads and, unless `noCommitWait`, has committed its
   * no-op. `force` campaigns as a leadership transfer does (no pre-vote,
   * voters ignore their lease), for scenarios that need a particular winner
   * at a particular moment. Throws if it does not happen within `maxTicks`
   * (default: 10 election timeouts).
   */
  elect(id: NodeId, options: { force?: boolean; noCommitWait?: boolean; maxTicks?: number } = {}): SimNode {
    const node = this.node(id);
    const leads = (): boolean =>
      node.core?.currentRole === Role.Leader && (options.noCommitWait === true || node.core.commitIndex === node.core.log.lastIndex);
    const until = this.scheduler.now + (options.maxTicks ?? 10 * this.electionTicks) * TICK;
    while (!leads() && this.scheduler.now < until) {
      if (node.core?.currentRole === Role.Follower) this.guard(() => node.withCore((core) => core.campaign(options.force === true)), node);
      this.runUntil(() => leads() || node.core?.currentRole === Role.Follower, (until - this.scheduler.now) / TICK);
    }
    if (!leads()) throw new Error(`${id} did not become leader within ${options.maxTicks ?? 10 * this.electionTicks} ticks`);
    return node;
  }

  /** Runs until the cluster has converged (see `unconverged`); returns whether it did within `maxTicks`. */
  settle(maxTicks = 30 * this.electionTicks): boolean {
    return this.runUntil(() => this.unconverged() === null, maxTicks);
  }

  // ---------------------------------------------------------------- convergence

  /**
   * Null when the cluster has converged: a leader holds everything committed
   * (its no-op included), every proposal ever made took effect, and every
   * member of the leader's configuration is up, applied exactly the leader's
   * commit index and has the same state-machine history. Otherwise, why not.
   */
  unconverged(): string | null {
    const leader = this.leader();
    const core = leader?.core;
    if (leader === undefined || core === undefined || core === null) return 'no leader';
    if (core.commitIndex < core.log.lastIndex) {
      const progress = Object.entries(core.status().progress)
        .map(([id, p]) => `${id}:${p.state} match ${p.match} next ${p.next}${p.recentlyActive ? '' : ' inactive'}`)
        .join('; ');
      return `${leader.id} (leader, term ${core.currentTerm}) committed ${core.commitIndex} of ${core.log.lastIndex} (${progress})`;
    }
    const missing = this.proposals.filter((p) => !leader.sm.dedupe.has(p.id));
    if (missing.length > 0) return `${missing.length} proposals not applied by ${leader.id}: ${missing.slice(0, 5).map((p) => p.id).join(',')}`;
    for (const id of members(core.config)) {
      const node = this.node(id);
      if (node.core === null) return `${id} is down`;
      if (node.sm.applied !== core.commitIndex) return `${id} applied ${node.sm.applied}, leader ${leader.id} committed ${core.commitIndex}`;
      if (node.sm.history !== leader.sm.history) return `${id} and ${leader.id} applied different histories`;
    }
    return null;
  }

  /** Members of the leader's configuration (or the founders when there is no leader). */
  currentMembers(): NodeId[] {
    const config = this.leader()?.core?.config ?? this.bootstrap;
    return this.ids.filter((id) => isMember(config, id));
  }
}

/** The node a membership change is about (the voter list for a bootstrap). */
function changeTarget(change: ConfigChange): string {
  return change.type === 'bootstrap' ? change.voters.join(',') : change.node;
}
