/**
 * One simulated rale node: a RaftCore plus the simulated driver around it.
 *
 * Durable (survives a crash): `storage` (log, hard state, snapshot) and `sm`
 * (the state machine, with its applied index and dedupe table).
 * Volatile (lost by a crash): the core itself, a Ready being persisted, reads
 * waiting to be served, and every scheduled tick, persist completion and
 * fetch answer of this incarnation (they check `incarnation` and die with it).
 *
 * The driver follows the Ready contract of sidecar/src/core/types.ts:
 *   1. persist snapshot, entries, hard state (atomically; with slow storage
 *      the persist completes only after a delay, and nothing else of the
 *      Ready happens until then, nor is another Ready taken);
 *   2. send messages (a Snapshot message gets the stored snapshot's bytes);
 *   3. restore the snapshot's data, then apply committed entries;
 *   4. answer fetches later (after a delay, sometimes with nothing);
 *   5. serve read states once applied >= their index;
 * then advance(ready). Ready processing is an event of its own, scheduled a
 * short random delay after the core reports hasReady(), so that message
 * deliveries and ticks interleave with it.
 */
import {
  encodeConfigChange,
  EntryKind,
  MessageType,
  RaftCore,
  type ClusterConfig,
  type CoreOptions,
  type Entry,
  type FaultInjection,
  type LogFetch,
  type Message,
  type NodeId,
  type ReadState,
  type Ready,
  type Snapshot,
} from '../../sidecar/src/core/index.ts';
import type { Checker } from './invariants.ts';
import type { DropReason, Network } from './network.ts';
import type { Rng } from './rng.ts';
import { TICK, type Scheduler } from './scheduler.ts';
import { KvStateMachine, type ApplyOutcome } from './statemachine.ts';
import { DurableStorage } from './storage.ts';
import { violation } from './violation.ts';

/** Delays are in virtual time units (see TICK); [min, max] inclusive. */
export interface DriverParams {
  /** Delay between hasReady() and the driver taking the Ready. */
  readyDelay: [number, number];
  /** How long a persist takes on a node with slow storage. */
  slowPersistDelay: [number, number];
  /** How long the driver takes to answer a log fetch. */
  fetchDelay: [number, number];
  /** Probability that a fetch is answered with no entries (the core must ask again). */
  fetchEmptyChance: number;
  /** Take a snapshot once this many entries were applied since the last one (0: never). */
  snapshotEvery: number;
}

export interface NodeHost {
  readonly scheduler: Scheduler;
  readonly network: Network;
  readonly rng: Rng;
  readonly checker: Checker;
  readonly params: DriverParams;
  readonly coreFaults: FaultInjection;
  coreOptions(id: NodeId, incarnation: number): Partial<CoreOptions> & Pick<CoreOptions, 'id' | 'random'>;
  /** The node applied an entry (the client learns that its proposal took effect). */
  applied(node: SimNode, entry: Entry, outcome: ApplyOutcome): void;
  /** The node served a linearizable read. */
  readServed(node: SimNode, read: ReadState): void;
}

export interface NodeStats {
  readies: number;
  slowPersists: number;
  entriesApplied: number;
  duplicatesSkipped: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  snapshotsSent: number;
  fetches: number;
  emptyFetches: number;
  crashes: number;
  readsServed: number;
}

export class SimNode {
  readonly id: NodeId;
  readonly storage: DurableStorage;
  readonly sm: KvStateMachine;
  core: RaftCore | null = null;
  /** Bumped at every start: events scheduled by an earlier incarnation do nothing. */
  incarnation = 0;
  /** Persists complete after a delay (Ready not advanced meanwhile). */
  slowStorage = false;
  /** Virtual time between two ticks of this node (clocks drift a little apart). */
  readonly tickPeriod: number;
  readonly stats: NodeStats = {
    readies: 0,
    slowPersists: 0,
    entriesApplied: 0,
    duplicatesSkipped: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    snapshotsSent: 0,
    fetches: 0,
    emptyFetches: 0,
    crashes: 0,
    readsServed: 0,
  };

  private inFlight: Ready | null = null;
  /** The Ready in flight whose messages already left when its slow persist began. */
  private sentEarly: Ready | null = null;
  private readyScheduled = false;
  private pendingReads: ReadState[] = [];

  constructor(
    id: NodeId,
    private readonly host: NodeHost,
    options: { ignoreDedupe?: boolean; tickPeriod?: number } = {},
  ) {
    this.id = id;
    this.storage = new DurableStorage();
    this.sm = new KvStateMachine(options.ignoreDedupe === true);
    this.tickPeriod = options.tickPeriod ?? TICK;
  }

  /**
   * What a founding member's driver does on empty storage before its first
   * start (as sidecar/src/node/raft-node.ts does): write the initial voters as
   * the log's first entry, index 1 of term 1, identical on every founder, and
   * committed by construction. Nodes that join later start empty and learn
   * the configuration from the log (or a snapshot).
   */
  bootstrap(voters: readonly NodeId[]): void {
    if (!this.storage.empty) return;
    const first: Entry = { index: 1, term: 1, kind: EntryKind.Config, data: encodeConfigChange({ type: 'bootstrap', voters: [...voters] }) };
    this.storage.persist({ snapshot: null, entries: [Object.freeze(first)], hardState: { term: 1, vote: null, commit: 1 } });
  }

  get up(): boolean {
    return this.core !== null;
  }

  /** True while a Ready is taken but not yet advanced (slow storage). */
  get persisting(): boolean {
    return this.inFlight !== null;
  }

  // ---------------------------------------------------------------- life cycle

  /** Starts (or restarts) the node from its durable state only. */
  start(): void {
    if (this.core !== null) return;
    this.incarnation++;
    const snapshot = this.storage.snapshot;
    if (snapshot !== null && this.sm.applied < snapshot.meta.index) {
      // Cannot happen with this driver (a snapshot is installed atomically with
      // its state), but a real driver must do this, so the simulator does too.
      this.sm.restore(snapshot.data);
    }
    const loaded = this.storage.load();
    if (this.sm.applied > loaded.lastIndex) {
      violation('ready-contract', `${this.id}: state machine applied ${this.sm.applied} beyond the durable log (${loaded.lastIndex})`);
    }
    this.core = new RaftCore(this.host.coreOptions(this.id, this.incarnation), { ...loaded, applied: this.sm.applied }, this.host.coreFaults);
    this.inFlight = null;
    this.readyScheduled = false;
    this.pendingReads = [];
    this.host.checker.nodeStarted(this);
    const incarnation = this.incarnation;
    // The first tick comes at a random phase, so nodes do not tick in lockstep.
    this.host.scheduler.schedule(this.host.rng.int(1, this.tickPeriod + 1), this.id, `tick ${this.id}`, () => this.tick(incarnation));
    this.kick();
  }

  /** Loses everything volatile: the core, an unfinished persist, pending reads. */
  crash(): void {
    if (this.core === null) return;
    this.core = null;
    this.inFlight = null;
    this.readyScheduled = false;
    this.pendingReads = [];
    this.stats.crashes++;
  }

  private tick(incarnation: number): void {
    if (incarnation !== this.incarnation || this.core === null) return;
    this.core.tick();
    this.host.scheduler.schedule(this.tickPeriod, this.id, `tick ${this.id}`, () => this.tick(incarnation));
    this.kick();
  }

  // ---------------------------------------------------------------- inputs

  /** A message arrives. Returns false when the node is down (the message is lost). */
  receive(message: Message): boolean {
    if (this.core === null) return false;
    this.core.step(message);
    this.kick();
    return true;
  }

  /** Proposes a command; throws the core's RaleError (NOT_LEADER...) when it refuses. */
  propose(data: Uint8Array): { index: number; term: number } {
    const result = this.requireCore().propose(data);
    this.kick();
    return result;
  }

  /** Runs `action` on the core (a membership change, a transfer, a read...), then looks for work. */
  withCore<T>(action: (core: RaftCore) => T): T {
    const result = action(this.requireCore());
    this.kick();
    return result;
  }

  private requireCore(): RaftCore {
    if (this.core === null) throw new Error(`node ${this.id} is down`);
    return this.core;
  }

  // ---------------------------------------------------------------- Ready processing

  /** Schedules Ready processing if the core has work and none is scheduled or in flight. */
  kick(): void {
    const core = this.core;
    if (core === null || this.inFlight !== null || this.readyScheduled || !core.hasReady()) return;
    this.readyScheduled = true;
    const incarnation = this.incarnation;
    const [lo, hi] = this.host.params.readyDelay;
    this.host.scheduler.schedule(this.host.rng.int(lo, hi + 1), this.id, `ready ${this.id}`, () => {
      if (incarnation !== this.incarnation) return;
      this.readyScheduled = false;
      this.processReady();
    });
  }

  private processReady(): void {
    const core = this.core;
    if (core === null || this.inFlight !== null || !core.hasReady()) return;
    const ready = core.ready();
    this.inFlight = ready;
    this.stats.readies++;
    const durable = ready.snapshot !== null || ready.entries.length > 0 || ready.hardState !== null;
    if (this.slowStorage && durable) {
      // The persist is under way: nothing else of this Ready happens until it
      // completes, and a crash before then loses all of it. Except a leader's
      // messages, which the core marks as free to leave in parallel with the
      // persist (sendBeforePersist): they go now, as the real driver sends them.
      this.stats.slowPersists++;
      if (ready.sendBeforePersist) {
        for (const message of ready.messages) this.send(message);
        this.sentEarly = ready;
      }
      const incarnation = this.incarnation;
      const [lo, hi] = this.host.params.slowPersistDelay;
      this.host.scheduler.schedule(this.host.rng.int(lo, hi + 1), this.id, `persisted ${this.id}`, () => {
        if (incarnation !== this.incarnation || this.inFlight !== ready) return;
        this.completeReady(ready);
      });
      return;
    }
    this.completeReady(ready);
  }

  private completeReady(ready: Ready): void {
    const core = this.core as RaftCore;
    const checker = this.host.checker;

    // 1. Persist.
    for (const entry of ready.entries) Object.freeze(entry); // shared with peers: nobody may mutate it
    this.storage.persist({ snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState });
    if (ready.hardState !== null && ready.hardState.commit > this.storage.lastIndex) {
      violation('ready-contract', `${this.id}: hard state commit ${ready.hardState.commit} beyond the durable log (${this.storage.lastIndex})`);
    }
    checker.persisted(this, ready.entries);

    // 2. Send (unless they left when the persist began).
    if (this.sentEarly !== ready) for (const message of ready.messages) this.send(message);
    this.sentEarly = null;

    // 3. Restore the snapshot, then apply.
    if (ready.snapshot !== null) {
      this.sm.restore(ready.snapshot.data);
      this.stats.snapshotsInstalled++;
      checker.snapshotInstalled(this, ready.snapshot.meta);
    }
    for (const entry of ready.committedEntries) this.apply(entry);

    // 4. Fetches are answered later.
    for (const fetch of ready.fetches) this.scheduleFetch(fetch);

    // 5. Reads wait until applied reaches their index.
    for (const read of ready.readStates) {
      checker.readState(this, read);
      this.pendingReads.push(read);
    }
    this.serveReads();

    core.advance(ready);
    this.inFlight = null;
    // The core's applied index runs ahead of the state machine only while a
    // received snapshot waits for the next Ready (it arrived during a slow persist).
    if (core.appliedIndex !== this.sm.applied && !(core.appliedIndex > this.sm.applied && core.hasReady())) {
      violation('ready-contract', `${this.id}: core applied ${core.appliedIndex} but the state machine applied ${this.sm.applied}`);
    }
    this.maybeSnapshot();
    this.kick();
  }

  private apply(entry: Entry): void {
    if (entry.index !== this.sm.applied + 1) {
      violation('ready-contract', `${this.id}: asked to apply entry ${entry.index} with ${this.sm.applied} applied`);
    }
    if (this.storage.termAt(entry.index) !== entry.term) {
      violation('ready-contract', `${this.id}: asked to apply entry ${entry.index}@${entry.term}, which is not durable in its log`);
    }
    const outcome = this.sm.apply(entry);
    this.stats.entriesApplied++;
    if (outcome.kind === 'duplicate') this.stats.duplicatesSkipped++;
    this.host.checker.applied(this, entry, outcome);
    this.host.applied(this, entry, outcome);
  }

  private serveReads(): void {
    if (this.pendingReads.length === 0) return;
    const waiting: ReadState[] = [];
    for (const read of this.pendingReads) {
      if (read.index <= this.sm.applied) {
        this.stats.readsServed++;
        this.host.readServed(this, read);
      } else {
        waiting.push(read);
      }
    }
    this.pendingReads = waiting;
  }

  private send(message: Message): void {
    let outgoing = message;
    if (message.type === MessageType.Snapshot) {
      // The core sends metadata only: attach the stored snapshot (and its own meta).
      const stored = this.storage.snapshot;
      if (stored === null) violation('ready-contract', `${this.id}: the core sent a snapshot but none is stored`);
      outgoing = { ...message, snapshot: stored };
      this.stats.snapshotsSent++;
    }
    const incarnation = this.incarnation;
    const to = message.to;
    const isSnapshot = message.type === MessageType.Snapshot;
    this.host.network.send(outgoing, (delivered: boolean, reason: DropReason | null) => {
      // The transport tells the core what it learned, a little later, if the core is still the same one.
      if (isSnapshot) {
        this.later(incarnation, `reportSnapshot ${this.id}>${to} ${delivered}`, (core) => core.reportSnapshot(to, delivered));
      } else if (reason === 'partition' || reason === 'down') {
        this.later(incarnation, `reportUnreachable ${this.id}>${to}`, (core) => core.reportUnreachable(to));
      }
    });
  }

  private later(incarnation: number, label: string, action: (core: RaftCore) => void): void {
    this.host.scheduler.schedule(this.host.rng.int(1, 20), this.id, label, () => {
      if (incarnation !== this.incarnation || this.core === null) return;
      action(this.core);
      this.kick();
    });
  }

  private scheduleFetch(fetch: LogFetch): void {
    this.stats.fetches++;
    const incarnation = this.incarnation;
    const [lo, hi] = this.host.params.fetchDelay;
    const empty = this.host.rng.chance(this.host.params.fetchEmptyChance);
    this.host.scheduler.schedule(this.host.rng.int(lo, hi + 1), this.id, `fetch ${this.id} ${fetch.lo}-${fetch.hi}${empty ? ' empty' : ''}`, () => {
      if (incarnation !== this.incarnation || this.core === null) return;
      if (empty) this.stats.emptyFetches++;
      // Read the durable log as it is now (it may have changed since the fetch was asked).
      const entries = empty ? [] : this.storage.read(fetch.lo, fetch.hi, fetch.maxBytes);
      this.core.entriesFetched(fetch, entries);
      this.kick();
    });
  }

  /**
   * Takes a snapshot of the state machine when enough was applied since the
   * last one: store it (durably), then let the core forget the entries.
   * Only between Readies, so that nothing in flight refers to compacted state.
   */
  private maybeSnapshot(): void {
    const every = this.host.params.snapshotEvery;
    // Not while a received snapshot waits to be installed either: the state machine is behind the core then.
    if (every <= 0 || this.inFlight !== null || this.core === null || this.core.appliedIndex !== this.sm.applied) return;
    if (this.sm.applied - this.storage.snapshotIndex >= every) this.takeSnapshot();
  }

  /** Snapshots the state machine at its applied index and compacts the log (also used by tests). */
  takeSnapshot(): void {
    const core = this.requireCore();
    if (this.inFlight !== null) throw new Error(`${this.id}: cannot snapshot while a Ready is in flight`);
    const index = this.sm.applied;
    if (index <= this.storage.snapshotIndex) return;
    const meta = core.snapshotMetaAt(index);
    const smConfig = this.sm.config;
    if (!sameConfig(meta.config, smConfig)) {
      // The core's configuration history and the applied config entries disagree.
      violation(
        'state-machine-safety',
        `${this.id}: configuration at ${index} is ${JSON.stringify(meta.config)} in the core but ${JSON.stringify(smConfig)} in the state machine`,
      );
    }
    const snapshot: Snapshot = { meta, data: this.sm.snapshot() };
    this.storage.saveSnapshot(snapshot);
    core.compact(index);
    this.stats.snapshotsTaken++;
  }
}

function sameConfig(a: ClusterConfig, b: ClusterConfig): boolean {
  const key = (c: ClusterConfig): string => JSON.stringify([[...c.voters].sort(), [...c.learners].sort()]);
  return key(a) === key(b);
}
