/**
 * RaftNode: the driver around the pure core. It owns the clock (a tick
 * timer), the storage, the state machine and the transport, and runs the
 * core's Ready batches strictly one at a time:
 *
 *   persist (snapshot, entries, hard state) -> restore snapshot data ->
 *   send messages -> queue committed entries to apply -> answer reads -> advance
 *
 * Applying runs off the loop, batch after batch in log order (enqueueApply),
 * so that the next persist overlaps it; `applied` and waitApplied follow
 * the state machine, not the core.
 *
 * Messages leave only after everything they depend on is durable (a vote
 * after the vote is saved, an append acknowledgement after the entries are),
 * which is what makes an acknowledged write survive any single crash. The
 * one exception is the core's to grant: a leader whose term and vote are
 * already durable sends its Appends while it persists the same entries
 * (Ready.sendBeforePersist); its own copy counts toward commit only after
 * advance().
 */
import { EventEmitter } from 'node:events';
import { randomInt as cryptoRandomInt, randomUUID } from 'node:crypto';
import { RaleError, isRaleError } from '../errors.ts';
import { RaftCore, type CoreStatus, type ProposeResult } from '../core/raft.ts';
import { seededRandom } from '../core/random.ts';
import { decodeConfigChange, encodeConfigChange } from '../core/config.ts';
import {
  EntryKind,
  MessageType,
  Role,
  type ConfigChange,
  type CoreOptions,
  type Entry,
  type LogFetch,
  type Message,
  type NodeId,
  type Ready,
  type SnapshotMeta,
  type StorageState,
} from '../core/types.ts';
import type { ApplyResult, LogStorage, StateMachine } from '../storage/types.ts';
import type { Connection, Transport } from './transport.ts';
import { encodeCommand } from './command.ts';
import { clusterIdOf } from './cluster-id.ts';
import { span, tracing } from './trace.ts';

export interface RaftNodeOptions {
  id: NodeId;
  log: LogStorage;
  stateMachine: StateMachine;
  transport: Transport;
  /**
   * Voters of a brand-new cluster: on empty storage, the node writes them as
   * the log's first entry (the same on every founder). Ignored once storage
   * holds anything. Omit on a node that will be joined to an existing cluster.
   */
  bootstrap?: NodeId[];
  /**
   * Goes into the cluster id with the founding voters (node/cluster-id.ts):
   * give clusters whose founders have the same ids different tokens, so that
   * a node wired to the wrong one is refused. Used when founding (and when a
   * database of an older version gets its id); ignored once the id is stored.
   * Default ''.
   */
  clusterToken?: string;
  /** Known addresses of peers, for transports that need them. */
  addresses?: Record<NodeId, string>;
  /** Milliseconds per core tick. Default 100. */
  tickMs?: number;
  /** Core tunables (electionTicks, heartbeatTicks, ...). */
  core?: Partial<Omit<CoreOptions, 'id' | 'random'>>;
  /** Seed of the election-timeout randomness (default: random). */
  seed?: number;
  /** Take a snapshot and compact the log after this many applied entries. Default 10,000; 0 disables. */
  snapshotEvery?: number;
  /**
   * Takes a snapshot where state machine and log live together, without the
   * image passing through this process: reads the state machine's applied
   * index, asks `metaAt` for the snapshot's metadata at that index, saves the
   * image with it and compacts the stored log, atomically. Resolves with the
   * metadata saved, or null when a newer snapshot is stored already. Without
   * it, the driver calls stateMachine.snapshot() and log.saveSnapshot().
   */
  snapshotInPlace?: (metaAt: (index: number) => SnapshotMeta) => Promise<SnapshotMeta | null>;
  /** Default time a proposal or read waits before failing with TIMEOUT. Default 5,000 ms. */
  requestTimeoutMs?: number;
}

export interface ProposalOutcome extends ApplyResult {
  term: number;
}

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

interface ForwardedProposal {
  data: Uint8Array;
  /** How many nodes passed it on already: bounded so stale leader views cannot bounce it forever. */
  hops: number;
}

const MAX_FORWARD_HOPS = 2;

/**
 * The arguments of a forwarded call: a map holding `field`, and `hops`, a
 * small non-negative integer (missing: the limit, so it is not passed on).
 */
function forwardedArgs(type: string, args: unknown, field: string): Record<string, unknown> & { hops: number } {
  if (args === null || typeof args !== 'object' || Array.isArray(args) || args instanceof Uint8Array) {
    throw new RaleError('INVALID_ARGUMENT', `a '${type}' call carries a map {${field}, hops}, got ${args === null ? 'null' : Array.isArray(args) ? 'an array' : typeof args}`, { field: 'args' });
  }
  const map = args as Record<string, unknown>;
  const hops = map.hops === undefined ? MAX_FORWARD_HOPS : map.hops;
  if (typeof hops !== 'number' || !Number.isSafeInteger(hops) || hops < 0) {
    throw new RaleError('INVALID_ARGUMENT', `a '${type}' call's hops must be a non-negative integer`, { field: 'hops' });
  }
  return { ...map, hops };
}
/** Committed batches handed to the state machine and not yet applied, at most (see enqueueApply). */
const MAX_APPLIES_IN_FLIGHT = 2;

/**
 * Events: 'role' (role), 'leader' (leader id or null), 'follower' / 'candidate'
 * / 'leader-elected', 'applied' (entry, result), 'error' (err), 'stopped',
 * 'cluster-id' (id, 'first-entry' | 'adopted': learned after start).
 */
export class RaftNode extends EventEmitter {
  readonly id: NodeId;
  private readonly options: RaftNodeOptions;
  private core: RaftCore | null = null;
  private timer: NodeJS.Timeout | null = null;
  private processing = false;
  private stopped = false;
  private stopping: Promise<void> | null = null;
  private unsubscribePeerDown: (() => void) | null = null;
  private readonly connections = new Map<NodeId, Connection>();
  private readonly addresses = new Map<NodeId, string>();
  /** Proposals made here, by log index: resolved when that index applies. */
  private readonly proposalWaiters = new Map<number, Waiter<ProposalOutcome> & { term: number }>();
  /** Callers waiting until the local applied index reaches a point. */
  private appliedWaiters: Array<Waiter<number> & { index: number }> = [];
  /** ReadIndex requests by context. */
  private readonly readWaiters = new Map<string, Waiter<number>>();
  private lastSnapshotIndex = 0;
  /** The background snapshot in progress (maybeSnapshot), if any. */
  private snapshotting: Promise<void> | null = null;
  /** A saved snapshot's index the core's log is still to be compacted to (0: none). */
  private compactTo = 0;
  /** After a failed snapshot, the applied index at which to try again. */
  private snapshotRetryAt = 0;
  private readCounter = 0;
  /** What the state machine has applied (the core's applied index may run ahead by the batches in `applying`). */
  private applied = 0;
  /** The apply pipeline: batches apply one after another, in log order, off the Ready loop. */
  private applying: Promise<void> = Promise.resolve();
  private appliesInFlight = 0;
  /** This node's cluster id (node/cluster-id.ts); null until a node that joins hears it from a peer. */
  private clusterIdValue: string | null = null;
  /** An adopted id not yet written (the write failed): retried from the tick at clusterIdRetryAt. */
  private clusterIdUnsaved = false;
  private clusterIdSaving = false;
  private clusterIdRetryAt = Number.POSITIVE_INFINITY;
  /** Ticks since start (for retries paced in ticks). */
  private ticks = 0;

  constructor(options: RaftNodeOptions) {
    super();
    this.id = options.id;
    this.options = options;
    for (const [id, address] of Object.entries(options.addresses ?? {})) this.addresses.set(id, address);
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    if (this.core !== null) return;
    let loaded = await this.options.log.load();
    this.clusterIdValue = (await this.options.log.clusterId?.()) ?? null;
    if (this.options.bootstrap !== undefined && isEmptyStorage(loaded)) {
      // A founding member writes the cluster's first entry: the initial
      // voters, at index 1 of term 1, identical on every founder (sorted, so
      // that the order they were listed in does not matter). Being in the
      // log, it reaches every member that joins later; being identical, it
      // is committed by construction. Founders that were given different
      // lists get different cluster ids, and refuse each other's calls.
      const voters = [...new Set(this.options.bootstrap)].sort();
      this.clusterIdValue = clusterIdOf(voters, this.options.clusterToken);
      await this.options.log.saveClusterId?.(this.clusterIdValue);
      const first: Entry = {
        index: 1,
        term: 1,
        kind: EntryKind.Config,
        data: encodeConfigChange({ type: 'bootstrap', voters }),
      };
      await this.options.log.persist({ snapshot: null, entries: [first], hardState: { term: 1, vote: null, commit: 1 } });
      loaded = await this.options.log.load();
    } else if (this.clusterIdValue === null) {
      await this.clusterIdFromFirstEntry(loaded);
    }
    let applied = await this.options.stateMachine.appliedIndex();
    if (applied < loaded.snapshot.index) {
      // Crash between installing a snapshot into the log and restoring it into the state machine.
      const snapshot = await this.options.log.latestSnapshot();
      if (snapshot === null) throw new RaleError('STORAGE', `storage reports a snapshot at ${loaded.snapshot.index} but returns none`);
      await this.options.stateMachine.restore(snapshot.meta, snapshot.data);
      applied = snapshot.meta.index;
    }
    const state: StorageState = { ...loaded, applied };
    this.applied = applied;
    this.lastSnapshotIndex = loaded.snapshot.index;
    for (const entry of loaded.configEntries) this.learnAddress(entry);
    const seed = this.options.seed ?? cryptoRandomInt(0, 2 ** 31);
    this.core = new RaftCore({ ...this.options.core, id: this.id, random: seededRandom(seed) }, state);
    this.options.transport.bindClusterId?.({ current: () => this.clusterIdValue, adopt: (id) => this.adoptClusterId(id) });
    await this.options.transport.listen(this.id, (type, args) => this.handleCall(type, args));
    // A peer whose connection broke abruptly has likely died: if it led, campaign soon instead of after a whole election timeout.
    this.unsubscribePeerDown =
      this.options.transport.onPeerDown?.((peer) => {
        if (this.stopped || this.core === null) return;
        this.core.leaderUnreachable(peer);
        this.kick();
      }) ?? null;
    this.timer = setInterval(() => this.onTick(), this.options.tickMs ?? 100);
    this.kick();
  }

  /**
   * Stops the node: pending requests fail with STOPPED, the Ready batch in
   * progress finishes its storage writes, the transport closes. A second
   * call waits for the first to finish (a caller that then closes the
   * storage must not do so under a Ready batch still writing).
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stopped = true;
    this.unsubscribePeerDown?.();
    if (this.timer !== null) clearInterval(this.timer);
    const stoppedError = () => new RaleError('STOPPED', `node ${this.id} stopped`);
    for (const w of this.proposalWaiters.values()) this.settle(w, stoppedError());
    for (const w of this.appliedWaiters) this.settle(w, stoppedError());
    for (const w of this.readWaiters.values()) this.settle(w, stoppedError());
    this.proposalWaiters.clear();
    this.appliedWaiters = [];
    this.readWaiters.clear();
    // Let a Ready in progress finish its storage writes, and the applies under
    // way finish theirs, before closing storage.
    while (this.processing) await new Promise((resolve) => setTimeout(resolve, 1));
    await this.applying.catch(() => {});
    await this.snapshotting; // never rejects
    await this.options.transport.close();
    for (const c of this.connections.values()) await c.close().catch(() => {});
    this.emit('stopped');
  }

  private requireCore(): RaftCore {
    if (this.core === null) throw new RaleError('STOPPED', `node ${this.id} has not been started`);
    if (this.stopped) throw new RaleError('STOPPED', `node ${this.id} stopped`);
    return this.core;
  }

  // ---------------------------------------------------------------- queries

  /** The core's status; `applied` is what the state machine has applied (applies run off the Ready loop). */
  status(): CoreStatus {
    return { ...this.requireCore().status(), applied: this.applied };
  }

  get role(): Role {
    return this.requireCore().currentRole;
  }

  get leader(): NodeId | null {
    return this.requireCore().currentLeader;
  }

  /** The address of a member, when this node knows it (from options or config entries). */
  addressOf(id: NodeId): string | undefined {
    return this.addresses.get(id);
  }

  isLeader(): boolean {
    return this.core?.currentRole === Role.Leader;
  }

  // ---------------------------------------------------------------- client operations

  /**
   * Proposes `command` (any JSON value) and resolves with its outcome once it
   * is applied on this node. On a follower the proposal is forwarded to the
   * leader. `id` makes retries safe: the same id applies once.
   */
  async command(command: unknown, opts: { id?: string; timeoutMs?: number } = {}): Promise<ProposalOutcome> {
    const data = encodeCommand({ id: opts.id ?? randomUUID(), command });
    return this.proposeData(data, opts.timeoutMs);
  }

  /**
   * Proposes raw entry data (already an encoded command envelope). Waits up
   * to the timeout for a leader when none is known (an election is running).
   */
  async proposeData(data: Uint8Array, timeoutMs = this.options.requestTimeoutMs ?? 5000, hops = 0): Promise<ProposalOutcome> {
    const deadline = Date.now() + timeoutMs;
    const core = this.requireCore();
    const leader = await this.waitForLeader(timeoutMs);
    if (leader === this.id) {
      const { index, term } = core.propose(data);
      this.kick();
      if (!tracing) return this.waitForIndex(index, term, Math.max(1, deadline - Date.now()));
      const from = performance.now();
      const outcome = await this.waitForIndex(index, term, Math.max(1, deadline - Date.now()));
      span('propose.toApplied', performance.now() - from, 1, this.id);
      return outcome;
    }
    if (hops >= MAX_FORWARD_HOPS) {
      throw new RaleError('NOT_LEADER', `node ${this.id} is not the leader (forwarded ${hops} times already)`, { leader });
    }
    const outcome = (await withTimeout(
      this.connection(leader).invoke('propose', { data, hops: hops + 1 } satisfies ForwardedProposal),
      Math.max(1, deadline - Date.now()),
      `proposal forwarded to ${leader}`,
    )) as ProposalOutcome;
    // Read-your-writes on this node: return once the entry is applied here too.
    await this.waitApplied(outcome.index, Math.max(1, deadline - Date.now()));
    return outcome;
  }

  /** The current leader's id, waiting up to `timeoutMs` for an election to produce one. */
  async waitForLeader(timeoutMs: number): Promise<NodeId> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const leader = this.requireCore().currentLeader;
      if (leader !== null) return leader;
      if (Date.now() >= deadline) throw new RaleError('NO_LEADER', `node ${this.id} found no leader within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(10, Math.max(1, deadline - Date.now()))));
    }
  }

  /**
   * Appends payloads to the leader's log (forwarding from a follower) and
   * resolves with their log positions, without waiting for them to commit.
   * Used by the proposal pump: outcomes come from the state machine.
   */
  async submit(payloads: Uint8Array[], timeoutMs = this.options.requestTimeoutMs ?? 5000, hops = 0): Promise<ProposeResult[]> {
    const leader = await this.waitForLeader(timeoutMs);
    if (leader === this.id) {
      const positions = this.requireCore().proposeBatch(payloads);
      this.kick();
      return positions;
    }
    if (hops >= MAX_FORWARD_HOPS) throw new RaleError('NOT_LEADER', `node ${this.id} is not the leader`, { leader });
    return (await withTimeout(this.connection(leader).invoke('submit', { payloads, hops: hops + 1 }), timeoutMs, `submission forwarded to ${leader}`)) as ProposeResult[];
  }

  /** Like submit, for a membership change. */
  async submitConfigChange(change: ConfigChange, timeoutMs = this.options.requestTimeoutMs ?? 5000, hops = 0): Promise<ProposeResult> {
    const leader = await this.waitForLeader(timeoutMs);
    if (leader === this.id) {
      if ((change.type === 'addLearner' || change.type === 'addVoter') && change.context) this.addresses.set(change.node, change.context);
      const position = this.requireCore().proposeConfigChange(change);
      this.kick();
      return position;
    }
    if (hops >= MAX_FORWARD_HOPS) throw new RaleError('NOT_LEADER', `node ${this.id} is not the leader`, { leader });
    return (await withTimeout(this.connection(leader).invoke('config', { change, hops: hops + 1 }), timeoutMs, `membership change forwarded to ${leader}`)) as ProposeResult;
  }

  /** Proposes a membership change and waits until it is applied here (forwarded to the leader from a follower). */
  async changeMembership(change: ConfigChange, timeoutMs = this.options.requestTimeoutMs ?? 5000): Promise<ProposalOutcome> {
    const deadline = Date.now() + timeoutMs;
    // One change at a time, and not before a new leader committed its first
    // entry: CONFIG_CHANGE_PENDING passes by itself, so wait it out.
    let position: ProposeResult;
    for (;;) {
      try {
        position = await this.submitConfigChange(change, Math.max(1, deadline - Date.now()));
        break;
      } catch (err) {
        if (!isRaleError(err, 'CONFIG_CHANGE_PENDING') || Date.now() >= deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    const remaining = Math.max(1, deadline - Date.now());
    if (this.requireCore().currentRole === Role.Leader) return this.waitForIndex(position.index, position.term, remaining);
    await this.waitApplied(position.index, remaining);
    return { ...position, status: 'ok' };
  }

  /**
   * A linearizable read point: the leader's commit index, confirmed by a
   * quorum round that started after this call. Does not wait for this node
   * to apply up to it (see readBarrier).
   */
  readIndex(timeoutMs = this.options.requestTimeoutMs ?? 5000): Promise<number> {
    const core = this.requireCore();
    const context = `${this.id}:${++this.readCounter}`;
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readWaiters.delete(context);
        reject(new RaleError('TIMEOUT', `read index not confirmed within ${timeoutMs} ms (no quorum?)`));
      }, timeoutMs);
      this.readWaiters.set(context, { resolve, reject, timer });
      try {
        core.readIndex(context);
      } catch (err) {
        clearTimeout(timer);
        this.readWaiters.delete(context);
        reject(err as Error);
        return;
      }
      this.kick();
    });
  }

  /**
   * Read barrier: resolves with a read index once this node has applied up to
   * it, so that a read of the local state machine right after is linearizable.
   */
  async readBarrier(timeoutMs = this.options.requestTimeoutMs ?? 5000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    const index = await this.readIndex(timeoutMs);
    await this.waitApplied(index, Math.max(1, deadline - Date.now()));
    return index;
  }

  transferLeadership(target: NodeId): void {
    this.requireCore().transferLeadership(target);
    this.kick();
  }

  /** Starts an election now (e.g. a single node that should lead at once). */
  campaign(): void {
    this.requireCore().campaign();
    this.kick();
  }

  /** Resolves once the local applied index reaches `index`. */
  waitApplied(index: number, timeoutMs = this.options.requestTimeoutMs ?? 5000): Promise<number> {
    this.requireCore();
    if (this.applied >= index) return Promise.resolve(this.applied);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.appliedWaiters = this.appliedWaiters.filter((w) => w.timer !== timer);
        reject(new RaleError('TIMEOUT', `index ${index} not applied on ${this.id} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.appliedWaiters.push({ index, resolve, reject, timer });
    });
  }

  private waitForIndex(index: number, term: number, timeoutMs: number): Promise<ProposalOutcome> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.proposalWaiters.delete(index);
        reject(new RaleError('TIMEOUT', `entry ${index} not applied within ${timeoutMs} ms; it may still commit`, { index, term }));
      }, timeoutMs);
      // An index reused by a newer term means the older entry there was overwritten.
      const previous = this.proposalWaiters.get(index);
      if (previous !== undefined) {
        this.settle(previous, new RaleError('PROPOSAL_DROPPED', `entry ${index} of term ${previous.term} was replaced by a new leader`, { index }));
      }
      this.proposalWaiters.set(index, { term, resolve, reject, timer });
    });
  }

  private settle<T>(w: Waiter<T>, err: Error): void {
    clearTimeout(w.timer);
    w.reject(err);
  }

  // ---------------------------------------------------------------- inbound calls

  private async handleCall(type: string, args: unknown): Promise<unknown> {
    const core = this.requireCore();
    switch (type) {
      case 'raft': {
        if (!Array.isArray(args)) throw new RaleError('INVALID_ARGUMENT', "a 'raft' call carries an array of messages");
        for (const m of args as Message[]) core.step(m);
        this.kick();
        return null;
      }
      // Forwarded work from a peer: checked field by field before use, since
      // a peer (or whatever got past its authentication) may send anything.
      case 'propose': {
        const { data, hops } = forwardedArgs(type, args, 'data');
        if (!(data instanceof Uint8Array)) throw new RaleError('INVALID_ARGUMENT', "a 'propose' call carries {data: bytes}", { field: 'data' });
        return this.proposeData(data, undefined, hops);
      }
      case 'submit': {
        const { payloads, hops } = forwardedArgs(type, args, 'payloads');
        if (!Array.isArray(payloads) || !payloads.every((p) => p instanceof Uint8Array)) {
          throw new RaleError('INVALID_ARGUMENT', "a 'submit' call carries {payloads: bytes[]}", { field: 'payloads' });
        }
        return this.submit(payloads as Uint8Array[], undefined, hops);
      }
      case 'config': {
        const { change, hops } = forwardedArgs(type, args, 'change');
        let checked: ConfigChange;
        try {
          // The same check a config entry gets when it is read back from the log.
          checked = decodeConfigChange(new TextEncoder().encode(JSON.stringify(change ?? null)));
        } catch (err) {
          throw new RaleError('INVALID_ARGUMENT', `a 'config' call carries {change}: ${(err as Error).message}`, { field: 'change' });
        }
        return this.submitConfigChange(checked, undefined, hops);
      }
      default:
        throw new RaleError('INVALID_ARGUMENT', `unknown call type '${type}'`);
    }
  }

  private connection(peer: NodeId): Connection {
    let c = this.connections.get(peer);
    if (c === undefined) {
      c = this.options.transport.connect(this.id, peer, this.addresses.get(peer));
      this.connections.set(peer, c);
    }
    return c;
  }

  // ---------------------------------------------------------------- the Ready loop

  private onTick(): void {
    if (this.stopped || this.core === null) return;
    this.ticks++;
    this.core.tick();
    this.kick();
    if (this.clusterIdUnsaved && this.ticks >= this.clusterIdRetryAt) this.saveAdoptedClusterId();
  }

  /** Ticks in about `ms` milliseconds (at least 1). */
  private ticksPer(ms: number): number {
    return Math.max(1, Math.round(ms / (this.options.tickMs ?? 100)));
  }

  /** Runs the Ready loop unless it is already running; it drains everything pending. */
  private kick(): void {
    if (this.processing || this.stopped || this.core === null) return;
    this.processing = true;
    setImmediate(() => void this.processLoop());
  }

  private async processLoop(): Promise<void> {
    const core = this.core as RaftCore;
    try {
      while (!this.stopped && core.hasReady()) {
        // Backpressure: at most MAX_APPLIES_IN_FLIGHT batches wait to apply;
        // meanwhile commits accumulate into the next, larger, batch.
        const waitFrom = tracing ? performance.now() : 0;
        while (this.appliesInFlight >= MAX_APPLIES_IN_FLIGHT && !this.stopped) await this.applying.catch(() => {});
        if (tracing && this.appliesInFlight > 0) span('ready.applyBackpressure', performance.now() - waitFrom, 1, this.id);
        if (this.stopped) break;
        const ready = core.ready();
        const readyFrom = tracing ? performance.now() : 0;
        await this.handleReady(core, ready);
        if (tracing) span('ready.handle', performance.now() - readyFrom, ready.entries.length, this.id);
        core.advance(ready);
        this.compactIfSaved(core);
        this.maybeSnapshot(core);
      }
      this.compactIfSaved(core);
    } catch (err) {
      // Storage failed mid-Ready: the core can no longer trust what is durable.
      // Stop rather than risk acknowledging what was not persisted.
      this.emit('error', err);
      this.processing = false;
      await this.stop();
      return;
    }
    this.processing = false;
  }

  private async handleReady(core: RaftCore, ready: Ready): Promise<void> {
    const { log, stateMachine } = this.options;
    for (const entry of ready.entries) this.learnAddress(entry);
    // A leader's Appends leave while it persists the same entries (the core
    // says when that is safe: see Ready.sendBeforePersist); everything else
    // leaves only once the persist is durable.
    if (ready.sendBeforePersist) this.sendMessages(core, ready.messages);
    if (ready.snapshot !== null || ready.entries.length > 0 || ready.hardState !== null) {
      const from = tracing ? performance.now() : 0;
      await log.persist({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState });
      if (tracing) span('persist', performance.now() - from, ready.entries.length, this.id);
    }
    if (ready.snapshot !== null) {
      // The snapshot replaces the state machine: every earlier apply first.
      await this.applying;
      await stateMachine.restore(ready.snapshot.meta, ready.snapshot.data);
      this.lastSnapshotIndex = ready.snapshot.meta.index;
      this.applied = Math.max(this.applied, ready.snapshot.meta.index);
      this.settleAppliedWaiters();
    }
    if (!ready.sendBeforePersist) this.sendMessages(core, ready.messages);
    if (ready.committedEntries.length > 0) this.enqueueApply(ready.committedEntries);
    for (const rs of ready.readStates) {
      const w = this.readWaiters.get(rs.context);
      if (w !== undefined) {
        this.readWaiters.delete(rs.context);
        clearTimeout(w.timer);
        w.resolve(rs.index);
      }
    }
    for (const fetch of ready.fetches) void this.answerFetch(core, fetch);
    if (ready.softState !== null) this.emitRole(ready.softState.role, ready.softState.leader);
  }

  /**
   * Applies committed entries after every batch before them, without holding
   * up the Ready loop: the next persist (and, on a follower, its next
   * acknowledgement) overlaps this apply. Entries are durable in the local
   * log already (they were persisted by an earlier Ready, which the loop
   * awaited), so a crash before the apply commits only means applying them
   * again from the log, once. A failed apply stops the node, as a failed
   * persist does: later batches in the chain never run.
   */
  private enqueueApply(entries: Entry[]): void {
    const { stateMachine } = this.options;
    this.appliesInFlight++;
    const next = this.applying.then(async () => {
      if (this.stopped) throw new RaleError('STOPPED', `node ${this.id} stopped`);
      const from = tracing ? performance.now() : 0;
      const results = await stateMachine.apply(entries);
      if (tracing) span('apply', performance.now() - from, entries.length, this.id);
      this.onApplied(entries, results);
    });
    this.applying = next;
    next.then(
      () => this.appliesInFlight--,
      (err: unknown) => {
        this.appliesInFlight--;
        if (this.stopped) return;
        this.emit('error', err);
        void this.stop();
      },
    );
  }

  private learnAddress(entry: Entry): void {
    if (entry.kind !== EntryKind.Config) return;
    try {
      const change = decodeConfigChange(entry.data);
      if ((change.type === 'addLearner' || change.type === 'addVoter') && change.context) this.addresses.set(change.node, change.context);
    } catch {
      // not ours to judge: the core treats an undecodable change as none
    }
  }

  private sendMessages(core: RaftCore, messages: Message[]): void {
    const byPeer = new Map<NodeId, Message[]>();
    for (const m of messages) {
      if (m.type === MessageType.Snapshot) {
        void this.sendSnapshot(core, m);
        continue;
      }
      let list = byPeer.get(m.to);
      if (list === undefined) byPeer.set(m.to, (list = []));
      list.push(m);
    }
    for (const [peer, batch] of byPeer) {
      this.connection(peer)
        .invoke('raft', batch)
        .catch(() => {
          if (this.stopped) return;
          core.reportUnreachable(peer);
        });
    }
  }

  private async sendSnapshot(core: RaftCore, m: Extract<Message, { type: MessageType.Snapshot }>): Promise<void> {
    let ok = false;
    try {
      const stored = await this.options.log.latestSnapshot();
      if (stored === null || stored.meta.index < m.snapshot.meta.index) throw new Error('no stored snapshot covers the requested index');
      await this.connection(m.to).invoke('raft', [{ ...m, snapshot: stored }]);
      ok = true;
    } catch {
      ok = false;
    }
    if (this.stopped) return;
    core.reportSnapshot(m.to, ok);
    this.kick();
  }

  private async answerFetch(core: RaftCore, fetch: LogFetch): Promise<void> {
    let entries: Entry[] = [];
    try {
      entries = await this.options.log.entries(fetch.lo, fetch.hi, fetch.maxBytes);
    } catch (err) {
      this.emit('error', err);
      await new Promise((resolve) => setTimeout(resolve, 50)); // back off before the core asks again
    }
    if (this.stopped) return;
    core.entriesFetched(fetch, entries);
    this.kick();
  }

  private onApplied(entries: Entry[], results: ApplyResult[]): void {
    const byIndex = new Map(results.map((r) => [r.index, r]));
    for (const entry of entries) {
      const result = byIndex.get(entry.index) ?? { index: entry.index, status: 'ok' as const };
      this.emit('applied', entry, result);
      const waiter = this.proposalWaiters.get(entry.index);
      if (waiter === undefined) continue;
      this.proposalWaiters.delete(entry.index);
      clearTimeout(waiter.timer);
      if (entry.term === waiter.term) waiter.resolve({ ...result, term: entry.term });
      else waiter.reject(new RaleError('PROPOSAL_DROPPED', `entry ${entry.index} of term ${waiter.term} was replaced by a new leader`, { index: entry.index }));
    }
    this.applied = Math.max(this.applied, entries[entries.length - 1]?.index ?? 0);
    this.settleAppliedWaiters();
  }

  private settleAppliedWaiters(): void {
    const applied = this.applied;
    const still: typeof this.appliedWaiters = [];
    for (const w of this.appliedWaiters) {
      if (w.index <= applied) {
        clearTimeout(w.timer);
        w.resolve(applied);
      } else still.push(w);
    }
    this.appliedWaiters = still;
  }

  /**
   * Takes a snapshot in the background once `snapshotEvery` entries were
   * applied since the last one, one at a time. Not inside the Ready loop:
   * reading every replicated table and writing the image took hundreds of
   * ms under load, and a leader whose loop waited on it sent no heartbeat
   * (every node snapshots at about the same index, so all of them paused at
   * once): followers campaigned and the leader stepped down, one election
   * per snapshot (seen in the benchmark at 64 clients). The state machine
   * reads a consistent view at its own applied index in its own transaction;
   * the log storage serialises the save with persists; the core is compacted
   * only between Readies (compactIfSaved).
   */
  private maybeSnapshot(core: RaftCore): void {
    const every = this.options.snapshotEvery ?? 10_000;
    if (every <= 0 || this.snapshotting !== null || this.stopped) return;
    if (core.appliedIndex - this.lastSnapshotIndex < every || core.appliedIndex < this.snapshotRetryAt) return;
    this.snapshotting = (async () => {
      try {
        let meta: SnapshotMeta | null;
        if (this.options.snapshotInPlace !== undefined) {
          meta = await this.options.snapshotInPlace((index) => core.snapshotMetaAt(index));
        } else {
          const image = await this.options.stateMachine.snapshot();
          // A snapshot installed meanwhile (a follower catching up) is newer: this one is dropped.
          if (this.stopped || this.core !== core || image.index <= this.lastSnapshotIndex) return;
          meta = core.snapshotMetaAt(image.index);
          await this.options.log.saveSnapshot({ meta, data: image.data });
        }
        if (meta === null || this.stopped || this.core !== core || meta.index <= this.lastSnapshotIndex) return;
        this.lastSnapshotIndex = meta.index;
        this.compactTo = Math.max(this.compactTo, meta.index);
        if (!this.processing) this.compactIfSaved(core);
      } catch (err) {
        // The log stays whole: nothing is lost, the log is only longer. Tried again after a tenth of the interval.
        this.snapshotRetryAt = core.appliedIndex + Math.ceil(every / 10);
        if (!this.stopped) this.emit('error', new RaleError('STORAGE', `taking a snapshot failed (the log is kept; tried again later): ${(err as Error).message}`));
      } finally {
        this.snapshotting = null;
      }
    })();
  }

  /** Compacts the core's log to the last saved snapshot; only between Readies (no Ready outstanding). */
  private compactIfSaved(core: RaftCore): void {
    if (this.compactTo === 0) return;
    const index = this.compactTo;
    this.compactTo = 0;
    try {
      core.compact(index);
    } catch {
      // Restored past it meanwhile (a snapshot installed): nothing to compact.
    }
  }

  private emitRole(role: Role, leader: NodeId | null): void {
    this.emit('role', role);
    this.emit('leader', leader);
    if (role === Role.Leader) this.emit('leader-elected', this.id);
    else if (role === Role.Follower) this.emit('follower', leader);
    else this.emit('candidate');
  }

  // ---------------------------------------------------------------- cluster identity

  /** This node's cluster id (node/cluster-id.ts), or null while a node that joins has not heard it yet. */
  get clusterId(): string | null {
    return this.clusterIdValue;
  }

  /**
   * A database written before cluster ids existed: the id follows from the
   * first entry (the founding voters) while the log still holds it. When it
   * was compacted away, the node adopts the id of the first peer that calls.
   */
  private async clusterIdFromFirstEntry(loaded: Omit<StorageState, 'applied'>): Promise<void> {
    if (loaded.snapshot.index > 0 || loaded.lastIndex < 1) return;
    const [first] = await this.options.log.entries(1, 1, Number.POSITIVE_INFINITY);
    if (first?.index !== 1 || first.kind !== EntryKind.Config) return;
    const change = decodeConfigChange(first.data);
    if (change.type !== 'bootstrap') return;
    this.clusterIdValue = clusterIdOf(change.voters, this.options.clusterToken);
    await this.options.log.saveClusterId?.(this.clusterIdValue);
    this.emit('cluster-id', this.clusterIdValue, 'first-entry');
  }

  /** A peer called with a cluster id and this node had none (it joined): keep it, here and in storage. */
  private adoptClusterId(id: string): void {
    if (this.clusterIdValue !== null || this.stopped) return;
    this.clusterIdValue = id;
    this.emit('cluster-id', id, 'adopted');
    this.clusterIdUnsaved = true;
    this.saveAdoptedClusterId();
  }

  /**
   * Writes the adopted id; on failure tries again about once a second (from
   * the tick), so that a restart finds it stored rather than deriving one
   * from the log's first entry with this node's own token.
   */
  private saveAdoptedClusterId(): void {
    const id = this.clusterIdValue;
    const save = this.options.log.saveClusterId;
    if (id === null || save === undefined || this.clusterIdSaving || this.stopped) return;
    this.clusterIdSaving = true;
    this.clusterIdRetryAt = Number.POSITIVE_INFINITY;
    save
      .call(this.options.log, id)
      .then(
        () => {
          this.clusterIdUnsaved = false;
        },
        (err: unknown) => {
          this.clusterIdRetryAt = this.ticks + this.ticksPer(1000);
          if (!this.stopped) this.emit('error', new RaleError('STORAGE', `storing the cluster id ${id} failed (tried again in a second): ${(err as Error).message}`));
        },
      )
      .finally(() => {
        this.clusterIdSaving = false;
      });
  }
}

/** Nothing was ever written: no snapshot, no entry, no vote. */
function isEmptyStorage(loaded: Omit<StorageState, 'applied'>): boolean {
  return loaded.snapshot.index === 0 && loaded.lastIndex === 0 && loaded.hardState.term === 0 && loaded.hardState.vote === null;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new RaleError('TIMEOUT', `${what} did not answer within ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
