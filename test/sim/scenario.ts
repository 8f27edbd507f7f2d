/**
 * Randomised whole-cluster scenarios. A scenario is fixed by (seed, nodes,
 * steps, mix, injected faults): the seed picks the core tunables and driver
 * behaviour, then drives a chaos phase of `steps` events (client writes and
 * reads, membership changes, transfers, and the mix's faults), then heals
 * everything and requires convergence within a bound.
 *
 * Liveness bound: after the heal (partitions removed, crashed nodes
 * restarted, no loss, duplication or extra delay), a leader must emerge,
 * every proposal ever made must take effect and every member must apply
 * exactly the leader's log within LIVENESS_TIMEOUTS election timeouts
 * (electionTicks ticks each). A healthy cluster needs one or two election
 * timeouts to elect and a few ticks to replicate; the bound leaves room for
 * an unlucky split vote or two, a transfer timing out, slow storage, a
 * snapshot install and the client's retry interval (one election timeout).
 */
import {
  isMember,
  Role,
  type ConfigChange,
  type CoreOptions,
  type FaultInjection,
  type NodeId,
} from '../../sidecar/src/core/index.ts';
import { Cluster } from './cluster.ts';
import type { DriverParams, SimNode } from './node.ts';
import { deriveSeed, Rng } from './rng.ts';
import { TICK } from './scheduler.ts';
import { InvariantViolation, violation, type InvariantName } from './violation.ts';

export const LIVENESS_TIMEOUTS = 30;

/** Which faults a scenario injects. */
export interface FaultMix {
  /** Network loss, duplication and extra-delay probabilities are drawn up to these. */
  loss: number;
  duplicate: number;
  delay: number;
  partitions: boolean;
  crashes: boolean;
  slowStorage: boolean;
  membership: boolean;
  transfers: boolean;
  /** Messages on one link overtake each other always (true) or in half the scenarios (false). */
  reorder: boolean;
  /** Mean ticks between two fault events. */
  faultEvery: number;
  /** Crashes and isolations pick the leader (otherwise any node). */
  targetLeader?: boolean;
  /** Probability that a leader crashes right after accepting a write (before replicating it). */
  crashAfterWrite?: number;
  /** Probability that a leader crashes at once when its commit index first moves in its term. */
  crashOnFirstCommit?: number;
  /** Probability that a new leader is cut off at once (its no-op stays its own, uncommitted). */
  isolateOnElection?: number;
  /** Mean ticks between two client writes (default 1.5). */
  writeEvery?: number;
  /** Core tunables this mix forces (others are drawn from the seed). */
  core?: Partial<Omit<CoreOptions, 'id' | 'random'>>;
}

export const MIXES = {
  /** No faults: elections, replication, reads and snapshots on a healthy network. */
  calm: { loss: 0, duplicate: 0, delay: 0, partitions: false, crashes: false, slowStorage: false, membership: false, transfers: false, reorder: false, faultEvery: 1000 },
  /** A bad network: loss, duplication, reordering and long delays. */
  lossy: { loss: 0.3, duplicate: 0.2, delay: 0.2, partitions: false, crashes: false, slowStorage: false, membership: false, transfers: false, reorder: true, faultEvery: 8 },
  /** Symmetric and one-way partitions, some loss. */
  partitions: { loss: 0.05, duplicate: 0.05, delay: 0.1, partitions: true, crashes: false, slowStorage: false, membership: false, transfers: true, reorder: false, faultEvery: 6 },
  /** Crashes that lose unpersisted state, slow storage. */
  crashes: { loss: 0.05, duplicate: 0.05, delay: 0.1, partitions: false, crashes: true, slowStorage: true, membership: false, transfers: false, reorder: false, faultEvery: 6 },
  /** Membership changes (including removing the leader) and transfers, with crashes. */
  membership: { loss: 0.05, duplicate: 0.05, delay: 0.05, partitions: false, crashes: true, slowStorage: false, membership: true, transfers: true, reorder: false, faultEvery: 10 },
  /**
   * Figure 8 of the Raft paper (§5.4.2), made likely: no background faults,
   * only faults aimed at leaders. A leader often crashes right after
   * accepting a write (its entry stays its own), a new leader is often cut
   * off at once (its no-op stays its own), and a leader often crashes the
   * moment its commit index first moves in its term; one entry per Append.
   * Old-term entries then sit on some nodes but not on a majority, and the
   * leaders that inherit them come and go: exactly where committing an
   * old-term entry by counting replicas loses it.
   */
  figure8: {
    loss: 0,
    duplicate: 0,
    delay: 0,
    partitions: false,
    crashes: false,
    slowStorage: false,
    membership: false,
    transfers: false,
    reorder: false,
    faultEvery: 1000,
    crashAfterWrite: 0.5,
    isolateOnElection: 0.5,
    crashOnFirstCommit: 0.8,
    writeEvery: 0.7,
    core: { maxMessageBytes: 80, maxInflight: 1 },
  },
  /** Everything at once. */
  chaos: { loss: 0.15, duplicate: 0.1, delay: 0.15, partitions: true, crashes: true, slowStorage: true, membership: true, transfers: true, reorder: true, faultEvery: 4 },
} satisfies Record<string, FaultMix>;

export type MixName = keyof typeof MIXES;
export const MIX_NAMES = Object.keys(MIXES) as MixName[];

export interface ScenarioOptions {
  seed: number;
  /** Voters of the initial configuration (two spare nodes exist besides). */
  nodes: number;
  /** Events in the chaos phase (the heal phase runs on until convergence or the bound). */
  steps: number;
  /** Fault mix; by default the seed picks one. */
  mix?: MixName;
  /** Test-only: break the core on purpose. */
  coreFaults?: FaultInjection;
  /** Test-only: the state machines ignore their dedupe table. */
  ignoreDedupe?: boolean;
  livenessTimeouts?: number;
  /** Receives every trace line (--verbose). */
  trace?: (line: string) => void;
}

export interface ScenarioStats {
  electionTicks: number;
  heartbeatTicks: number;
  leadersElected: number;
  highestTerm: number;
  committed: number;
  proposals: number;
  retries: number;
  duplicatesSkipped: number;
  readsServed: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  fetches: number;
  crashes: number;
  membershipChanges: number;
  leaderRemovals: number;
  transfers: number;
  messages: number;
  /** Ticks from the heal to convergence. */
  convergedAfterTicks: number;
}

export interface ScenarioResult {
  ok: boolean;
  seed: number;
  nodes: number;
  steps: number;
  mix: MixName;
  faults: string[];
  violation: { invariant: InvariantName; message: string; step: number; tick: number } | null;
  traceHash: string;
  stats: ScenarioStats;
  replay: string;
}

/** The one command that replays a scenario with its full trace. */
export function replayCommand(o: { seed: number; nodes: number; steps: number; mix: MixName; faults: string[] }): string {
  const faults = o.faults.map((f) => ` --fault ${f}`).join('');
  return `npm run sim -- --seed ${o.seed} --nodes ${o.nodes} --steps ${o.steps} --mix ${o.mix}${faults} --verbose`;
}

export function pickMix(seed: number, nodes: number): MixName {
  return new Rng(deriveSeed(seed, nodes, 0x313)).pick(MIX_NAMES);
}

interface ScenarioParams {
  reorder: boolean;
  core: Partial<Omit<CoreOptions, 'id' | 'random'>>;
  driver: Partial<DriverParams>;
  clockDrift: number;
}

/** Core tunables and driver behaviour, drawn from the seed: small limits make the rare paths common. */
function drawParams(rng: Rng, mix: FaultMix): ScenarioParams {
  const electionTicks = rng.pick([8, 10, 12]);
  const params: ScenarioParams = {
    reorder: mix.reorder || rng.chance(0.5),
    core: {
      electionTicks,
      heartbeatTicks: rng.pick([1, 2, 3]),
      preVote: rng.chance(0.8),
      checkQuorum: rng.chance(0.8),
      maxInflight: rng.pick([1, 2, 4, 64]),
      // Entries are 24 bytes plus a payload of about 40: 80 means one entry per Append.
      maxMessageBytes: rng.pick([80, 300, 2000, 1 << 20]),
      // A small cache forces log fetches (for lagging followers, and for applying after a restart).
      // Not smaller: below a few entries' worth, catch-up costs a fetch per entry, and the
      // liveness bound would measure that configuration's throughput rather than liveness.
      entryCacheBytes: rng.pick([300, 1000, 16 << 20]),
    },
    driver: {
      readyDelay: [0, rng.pick([0, 10, 30])],
      slowPersistDelay: [10, rng.pick([50, 150])],
      fetchDelay: [0, rng.pick([20, 100])],
      fetchEmptyChance: rng.pick([0, 0, 0.2]),
      snapshotEvery: rng.pick([0, 5, 15, 40]),
    },
    clockDrift: mix === MIXES.calm ? 0 : rng.int(0, 6),
  };
  if (mix.core !== undefined) Object.assign(params.core, mix.core);
  return params;
}

/**
 * Schedules the client, the operator and the faults of a mix into a cluster.
 * Everything stops at `heal()` except the client's retries, which go on until
 * every proposal took effect.
 */
class Chaos {
  private healed = false;
  private keyCounter = 0;
  private readonly retryTicks: number;
  private readonly minVoters: number;

  constructor(
    private readonly cluster: Cluster,
    private readonly mix: FaultMix,
    private readonly rng: Rng,
    initialVoters: number,
  ) {
    this.retryTicks = cluster.electionTicks;
    // Removals stop at this many voters (3 -> 2, 5 -> 3, 7 -> 5): small configurations stay common, a cluster never empties.
    this.minVoters = initialVoters <= 2 ? initialVoters : Math.max(2, initialVoters - 2);
  }

  start(): void {
    const net = this.cluster.network;
    net.faults = { loss: this.rng.float() * this.mix.loss, duplicate: this.rng.float() * this.mix.duplicate, delay: this.mix.delay, maxExtraDelay: 4 * TICK };
    this.every(this.mix.writeEvery ?? 1.5, 'client write', () => {
      if (this.cluster.pendingProposals.length >= 6) return;
      const n = ++this.keyCounter;
      const leader = this.cluster.leader();
      this.cluster.propose(`k${this.rng.int(0, 5)}`, `v${n}`);
      if (leader !== undefined && this.rng.chance(this.mix.crashAfterWrite ?? 0)) {
        // Crash the leader before it can replicate the write (it may have persisted it, or not).
        this.cluster.scheduler.schedule(this.rng.int(0, 30), null, `crash after write ${leader.id}`, () => {
          if (!this.healed) this.crashNode(leader.id);
        });
      }
    });
    this.every(1, 'client retry', () => {
      for (const proposal of this.cluster.pendingProposals) {
        if (this.cluster.scheduler.now - proposal.lastAttempt >= this.retryTicks * TICK) this.cluster.attempt(proposal);
      }
    }, true);
    this.every(3, 'client read', () => {
      const live = this.cluster.liveNodes;
      if (live.length > 0) this.cluster.read(this.rng.pick(live).id, `k${this.rng.int(0, 5)}`);
    });
    if (this.mix.membership) this.every(20, 'membership', () => this.changeMembership());
    if (this.mix.transfers) this.every(25, 'transfer', () => this.transfer());
    const faults: Array<() => void> = [];
    if (this.mix.partitions) faults.push(() => this.partition(), () => this.partition(), () => this.cluster.heal());
    if (this.mix.crashes) faults.push(() => this.crash(), () => this.crash());
    if (this.mix.slowStorage) faults.push(() => this.toggleSlowStorage());
    if (this.mix.loss > 0 || this.mix.duplicate > 0) faults.push(() => this.resampleNetwork());
    if (faults.length > 0) this.every(this.mix.faultEvery, 'fault', () => this.rng.pick(faults)());
    if ((this.mix.crashOnFirstCommit ?? 0) > 0 || (this.mix.isolateOnElection ?? 0) > 0) {
      this.cluster.stepObservers.push(this.reactToLeaders());
    }
  }

  /**
   * Faults aimed at the moments that matter for leader completeness: a
   * leader cut off as soon as it is elected (its no-op stays its own), and a
   * leader crashing as soon as its commit index first moves in its term (it
   * has just committed the entries of earlier terms it inherited, and its own
   * may not have reached a majority yet).
   */
  private reactToLeaders(): (node: SimNode) => void {
    const seen = new Map<NodeId, { term: number; leader: boolean; commit: number; committedInTerm: boolean }>();
    return (node) => {
      const core = node.core;
      if (core === null || this.healed) return;
      const before = seen.get(node.id) ?? { term: 0, leader: false, commit: 0, committedInTerm: false };
      const leader = core.currentRole === Role.Leader;
      const newLeadership = leader && (!before.leader || before.term !== core.currentTerm);
      const committed = leader && core.commitIndex > before.commit && !newLeadership;
      const committedInTerm = leader && !newLeadership ? before.committedInTerm || committed : false;
      seen.set(node.id, { term: core.currentTerm, leader, commit: core.commitIndex, committedInTerm });
      if (newLeadership && this.rng.chance(this.mix.isolateOnElection ?? 0)) {
        this.isolateFor(node.id, this.rng.int(5, 25) * TICK);
        return;
      }
      if (committed && !before.committedInTerm && this.rng.chance(this.mix.crashOnFirstCommit ?? 0)) {
        this.cluster.scheduler.schedule(this.rng.int(0, 5), null, `crash on commit ${node.id}`, () => {
          if (!this.healed) this.crashNode(node.id);
        });
      }
    };
  }

  private isolateFor(id: NodeId, duration: number): void {
    const pairs: Array<[NodeId, NodeId]> = [];
    for (const other of this.cluster.ids) if (other !== id) pairs.push([id, other], [other, id]);
    this.cluster.note(`partition: isolate new leader ${id}`);
    this.block(pairs, duration);
  }

  /** Blocks the directed links for `duration` (the heal removes them earlier). */
  private block(pairs: Array<[NodeId, NodeId]>, duration: number): void {
    const net = this.cluster.network;
    for (const [from, to] of pairs) net.block(from, to);
    this.cluster.scheduler.schedule(duration, null, 'partition ends', () => {
      if (this.healed) return;
      for (const [from, to] of pairs) net.unblock(from, to);
    });
  }

  /** Removes every fault: partitions, loss, duplication, delay; restarts crashed nodes. */
  heal(): void {
    this.healed = true;
    this.cluster.network.faults = { loss: 0, duplicate: 0, delay: 0, maxExtraDelay: 0 };
    this.cluster.heal();
    for (const node of this.cluster.nodes) if (!node.up) this.cluster.restart(node.id);
    // The client retries everything pending at once rather than waiting out its timer.
    for (const proposal of this.cluster.pendingProposals) this.cluster.attempt(proposal);
  }

  /** A recurring event every `meanTicks` on average (uniform in [0.5, 1.5] x mean). */
  private every(meanTicks: number, label: string, action: () => void, afterHeal = false): void {
    const delay = Math.max(1, Math.round(meanTicks * TICK * (0.5 + this.rng.float())));
    this.cluster.scheduler.schedule(delay, null, label, () => {
      if (this.healed && !afterHeal) return;
      action();
      this.every(meanTicks, label, action, afterHeal);
    });
  }

  private partition(): void {
    const ids = this.cluster.ids;
    const kind = this.rng.int(0, 4);
    const pairs: Array<[NodeId, NodeId]> = [];
    if (kind === 0) {
      const node = this.victim();
      for (const other of ids) if (other !== node) pairs.push([node, other], [other, node]);
      this.cluster.note(`partition: isolate ${node}`);
    } else if (kind === 1) {
      const shuffled = this.rng.shuffle(ids);
      const cut = this.rng.int(1, Math.floor(ids.length / 2) + 1);
      const minority = shuffled.slice(0, cut);
      const majority = shuffled.slice(cut);
      for (const a of minority) for (const b of majority) pairs.push([a, b], [b, a]);
      this.cluster.note(`partition: split ${minority.join(',')} | ${majority.join(',')}`);
    } else if (kind === 2) {
      const from = this.rng.pick(ids);
      const to = this.rng.pick(ids.filter((id) => id !== from));
      pairs.push([from, to]);
      this.cluster.note(`partition: one-way ${from}>${to}`);
    } else {
      // One node hears everyone but nobody hears it (or the reverse).
      const node = this.rng.pick(ids);
      const deaf = this.rng.chance(0.5);
      for (const other of ids) if (other !== node) pairs.push(deaf ? [other, node] : [node, other]);
      this.cluster.note(`partition: ${node} ${deaf ? 'hears nobody' : 'is heard by nobody'}`);
    }
    this.block(pairs, this.rng.int(2, 40) * TICK);
  }

  /** The node a fault hits: the leader if the mix targets it (and there is one), else any node. */
  private victim(): NodeId {
    const leader = this.mix.targetLeader === true ? this.cluster.leader() : undefined;
    return leader?.id ?? this.rng.pick(this.cluster.ids);
  }

  private crash(): void {
    this.crashNode(this.victim());
  }

  /** Crashes a live node (unless half the nodes are down already) and usually restarts it later. */
  private crashNode(id: NodeId): void {
    const node = this.cluster.node(id);
    const down = this.cluster.nodes.length - this.cluster.liveNodes.length;
    if (!node.up || down >= Math.ceil(this.cluster.nodes.length / 2)) return;
    this.cluster.crash(node.id);
    if (this.rng.chance(0.9)) {
      this.cluster.scheduler.schedule(this.rng.int(1, 30) * TICK, null, `restart ${node.id}`, () => {
        if (!this.healed && !node.up) this.cluster.restart(node.id);
      });
    }
  }

  private toggleSlowStorage(): void {
    const node = this.rng.pick(this.cluster.nodes);
    node.slowStorage = !node.slowStorage;
    this.cluster.note(`${node.id} slow storage ${node.slowStorage ? 'on' : 'off'}`);
  }

  private resampleNetwork(): void {
    const net = this.cluster.network;
    net.faults = { ...net.faults, loss: this.rng.float() * this.mix.loss, duplicate: this.rng.float() * this.mix.duplicate };
    this.cluster.note(`network loss ${net.faults.loss.toFixed(3)} duplicate ${net.faults.duplicate.toFixed(3)}`);
  }

  private changeMembership(): void {
    const leader = this.cluster.leader();
    const config = leader?.core?.config;
    if (leader === undefined || config === undefined) return;
    const choices: ConfigChange[] = [];
    for (const id of this.cluster.ids) {
      if (isMember(config, id)) continue;
      choices.push({ type: 'addLearner', node: id });
      if (this.rng.chance(0.2)) choices.push({ type: 'addVoter', node: id });
    }
    for (const id of config.learners) choices.push({ type: 'promote', node: id }, { type: 'promote', node: id }, { type: 'remove', node: id });
    if (config.voters.length > this.minVoters) {
      for (const id of config.voters) choices.push({ type: 'remove', node: id });
      // Removing the leader itself is the interesting case: make it common.
      choices.push({ type: 'remove', node: leader.id }, { type: 'remove', node: leader.id });
    }
    if (choices.length > 0) this.cluster.changeMembership(this.rng.pick(choices));
  }

  private transfer(): void {
    const leader = this.cluster.leader();
    const voters = leader?.core?.config.voters.filter((id) => id !== leader.id) ?? [];
    if (voters.length > 0) this.cluster.transferLeadership(this.rng.pick(voters));
  }
}

export function runScenario(options: ScenarioOptions): ScenarioResult {
  const mixName = options.mix ?? pickMix(options.seed, options.nodes);
  const mix: FaultMix = MIXES[mixName];
  const paramRng = new Rng(deriveSeed(options.seed, options.nodes, 0x9a9a));
  const params = drawParams(paramRng, mix);
  const faults = [
    ...Object.entries(options.coreFaults ?? {})
      .filter(([, on]) => on === true)
      .map(([name]) => name),
    ...(options.ignoreDedupe === true ? ['ignoreDedupe'] : []),
  ];
  const cluster = new Cluster({
    seed: options.seed,
    voters: options.nodes,
    spares: 2,
    core: params.core,
    driver: params.driver,
    clockDrift: params.clockDrift,
    reorder: params.reorder,
    coreFaults: options.coreFaults,
    ignoreDedupe: options.ignoreDedupe,
    trace: options.trace,
  });
  cluster.note(`scenario seed ${options.seed} nodes ${options.nodes} mix ${mixName} reorder ${params.reorder} core ${JSON.stringify(params.core)} driver ${JSON.stringify(params.driver)}`);
  const chaos = new Chaos(cluster, mix, new Rng(deriveSeed(options.seed, 0xca05)), options.nodes);
  const electionTicks = cluster.electionTicks;
  let convergedAfterTicks = -1;
  let found: ScenarioResult['violation'] = null;
  try {
    chaos.start();
    while (cluster.steps < options.steps && cluster.step()) {
      // chaos phase
    }
    chaos.heal();
    const healedAt = cluster.ticks;
    const bound = (options.livenessTimeouts ?? LIVENESS_TIMEOUTS) * electionTicks;
    let reason = cluster.unconverged();
    while (reason !== null) {
      if (cluster.ticks - healedAt > bound) {
        violation('liveness', `not converged ${bound} ticks (${options.livenessTimeouts ?? LIVENESS_TIMEOUTS} election timeouts) after the heal: ${reason}`);
      }
      cluster.runTicks(1);
      reason = cluster.unconverged();
    }
    convergedAfterTicks = Math.ceil(cluster.ticks - healedAt);
    cluster.checker.checkLogsPairwise(cluster.nodes);
    const members = cluster.currentMembers();
    const digests = new Set(members.map((id) => cluster.node(id).sm.stateDigest()));
    if (digests.size > 1) violation('state-machine-safety', `members ${members.join(',')} converged to different states`);
    cluster.note(`converged ${convergedAfterTicks} ticks after the heal`);
  } catch (err) {
    if (!(err instanceof InvariantViolation)) throw err;
    found = { invariant: err.invariant, message: err.message, step: cluster.steps, tick: Math.floor(cluster.ticks) };
    cluster.note(`VIOLATION ${err.message}`);
  }
  const nodeStats = cluster.nodes.map((n) => n.stats);
  const sum = (pick: (s: (typeof nodeStats)[number]) => number): number => nodeStats.reduce((total, s) => total + pick(s), 0);
  return {
    ok: found === null,
    seed: options.seed,
    nodes: options.nodes,
    steps: options.steps,
    mix: mixName,
    faults,
    violation: found,
    traceHash: cluster.trace.digest(),
    stats: {
      electionTicks,
      heartbeatTicks: params.core.heartbeatTicks ?? 1,
      leadersElected: cluster.checker.stats.leadersElected,
      highestTerm: cluster.checker.stats.highestTerm,
      committed: cluster.checker.maxCommitted,
      proposals: cluster.proposals.length,
      retries: cluster.proposals.reduce((total, p) => total + p.attempts - 1, 0),
      duplicatesSkipped: sum((s) => s.duplicatesSkipped),
      readsServed: sum((s) => s.readsServed),
      snapshotsTaken: sum((s) => s.snapshotsTaken),
      snapshotsInstalled: sum((s) => s.snapshotsInstalled),
      fetches: sum((s) => s.fetches),
      crashes: sum((s) => s.crashes),
      ...cluster.operatorStats,
      messages: cluster.network.stats.sent,
      convergedAfterTicks,
    },
    replay: replayCommand({ seed: options.seed, nodes: options.nodes, steps: options.steps, mix: mixName, faults }),
  };
}
