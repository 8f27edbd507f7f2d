/**
 * rale's engine as an embeddable library, in the shape of node-raft
 * (docs/protocols/node-raft.md): `new Node({ id, cluster, transport,
 * persistence, uuid })`, `join(peer)`, `leave(peer)`, `peers`,
 * `command(cmd)` and node-raft's events. Promise-based; every method that
 * node-raft gave a callback still takes one.
 *
 * Differences from node-raft, on purpose:
 *  - a node does not form a cluster by itself unless told to (`bootstrap`):
 *    two nodes that each elected themselves would be two clusters;
 *  - `command` on a follower is forwarded to the leader (skiff did this too)
 *    instead of failing with ENOTLEADER, unless `forward: false`;
 *  - `join` adds the peer as a learner, waits until it has caught up, then
 *    promotes it, so a new node never slows commits while it catches up.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { RaleError } from './errors.ts';
import { Role, type NodeId } from './core/types.ts';
import type { CoreStatus } from './core/raft.ts';
import type { LogStorage, StateMachine } from './storage/types.ts';
import { MemoryLogStorage } from './storage/memory.ts';
import { RaftNode, type ProposalOutcome } from './node/raft-node.ts';
import { MemoryStateMachine, type ApplyFunction } from './node/memory-state-machine.ts';
import type { Transport } from './node/transport.ts';
import { MAX_CLUSTER_TOKEN_LENGTH } from './node/cluster-id.ts';

export type Callback<T> = (err: Error | null, result?: T) => void;

/** A peer as `join` accepts it: its id, or its id and an address for the transport. */
export type PeerDescription = NodeId | { id: NodeId; address?: string };

export interface NodeOptions {
  /** This node's id; a fresh one from `uuid` when absent. */
  id?: NodeId;
  /**
   * Name of the cluster this node belongs to: carried in status, and part of
   * the cluster id with the founding voters (node/cluster-id.ts), so that
   * over a transport that checks ids (GrpcTransport) nodes founded under
   * different names refuse each other. At most 256 characters.
   */
  cluster?: string;
  transport: Transport;
  /** Where the log and hard state live. Default: in memory (lost when the process ends). */
  persistence?: LogStorage;
  /** The replicated state machine. Default: an in-memory key-value map, or `apply` when given. */
  stateMachine?: StateMachine;
  /** Shortcut for a custom deterministic command handler on the in-memory state machine. */
  apply?: ApplyFunction;
  /** Id generator (node ids and command ids). Default: crypto.randomUUID. */
  uuid?: () => string;
  /**
   * Form a new cluster: `true` for a cluster of this node alone, or the list
   * of all initial voters' ids. Leave unset on nodes that will be joined.
   */
  bootstrap?: boolean | NodeId[];
  /** node-raft's timing options, in milliseconds (defaults 150, 300, 50). */
  minElectionTimeout?: number;
  maxElectionTimeout?: number;
  heartbeatInterval?: number;
  /** Take a snapshot after this many applied entries (default 10,000). */
  snapshotEvery?: number;
  /** Addresses of known peers, for transports that need them. */
  addresses?: Record<NodeId, string>;
  /** Seed for election-timeout randomness (tests). */
  seed?: number;
}

function withCallback<T>(promise: Promise<T>, callback?: Callback<T>): Promise<T> {
  if (callback) {
    promise.then(
      (value) => callback(null, value),
      (err: Error) => callback(err),
    );
  }
  return promise;
}

/**
 * Events (node-raft names): 'state' (role name), 'leader' (this node became
 * leader), 'follower', 'candidate', 'leader changed' (leader id or null),
 * 'applied log' (entry, result), 'error' (err).
 */
export class Node extends EventEmitter {
  readonly id: NodeId;
  readonly cluster: string | undefined;
  private readonly raft: RaftNode;
  private readonly uuid: () => string;
  private started: Promise<void> | null = null;

  constructor(options: NodeOptions) {
    super();
    if (options === undefined || options.transport === undefined) {
      throw new RaleError('INVALID_ARGUMENT', 'new Node(options) needs options.transport (e.g. new MemoryNetwork().transport())');
    }
    this.uuid = options.uuid ?? randomUUID;
    this.id = options.id ?? this.uuid();
    this.cluster = options.cluster;
    const heartbeat = options.heartbeatInterval ?? 50;
    const minElection = options.minElectionTimeout ?? 150;
    if (!(heartbeat > 0) || !(minElection > heartbeat)) {
      throw new RaleError('INVALID_ARGUMENT', `minElectionTimeout (${minElection}) must exceed heartbeatInterval (${heartbeat}), both positive`);
    }
    if (options.maxElectionTimeout !== undefined && options.maxElectionTimeout < minElection) {
      throw new RaleError('INVALID_ARGUMENT', `maxElectionTimeout (${options.maxElectionTimeout}) must be at least minElectionTimeout (${minElection})`);
    }
    // One tick per heartbeat; the core draws election timeouts in
    // [electionTicks, 2 * electionTicks) ticks, i.e. [min, 2 * min) ms.
    const electionTicks = Math.max(2, Math.round(minElection / heartbeat));
    if (options.cluster !== undefined && (typeof options.cluster !== 'string' || options.cluster.length > MAX_CLUSTER_TOKEN_LENGTH)) {
      throw new RaleError('INVALID_ARGUMENT', `cluster must be a string of at most ${MAX_CLUSTER_TOKEN_LENGTH} characters`);
    }
    let bootstrap: NodeId[] | undefined;
    if (options.bootstrap === true) bootstrap = [this.id];
    else if (Array.isArray(options.bootstrap)) bootstrap = [...options.bootstrap];
    this.raft = new RaftNode({
      id: this.id,
      log: options.persistence ?? new MemoryLogStorage(),
      stateMachine: options.stateMachine ?? new MemoryStateMachine({ apply: options.apply }),
      transport: options.transport,
      bootstrap,
      ...(options.cluster !== undefined ? { clusterToken: options.cluster } : {}),
      addresses: options.addresses,
      tickMs: heartbeat,
      core: { electionTicks, heartbeatTicks: 1 },
      seed: options.seed,
      snapshotEvery: options.snapshotEvery,
    });
    this.raft.on('role', (role: Role) => {
      this.emit('state', role);
      if (role === Role.Leader) this.emit('leader');
      else if (role === Role.Follower) this.emit('follower');
      else this.emit('candidate');
    });
    this.raft.on('leader', (leader: NodeId | null) => this.emit('leader changed', leader));
    this.raft.on('applied', (entry, result) => this.emit('applied log', entry, result));
    this.raft.on('error', (err: Error) => this.emit('error', err));
  }

  /** Starts the node (idempotent). Every other method starts it too. */
  start(callback?: Callback<void>): Promise<void> {
    this.started ??= this.raft.start();
    return withCallback(this.started, callback);
  }

  /** Stops timers, the transport and storage use. */
  stop(callback?: Callback<void>): Promise<void> {
    return withCallback(this.raft.stop(), callback);
  }

  /** node-raft's name for stop. */
  close(callback?: Callback<void>): Promise<void> {
    return this.stop(callback);
  }

  get state(): Role {
    return this.raft.role;
  }

  isLeader(): boolean {
    return this.raft.isLeader();
  }

  /** Id of the current leader as this node knows it, or null. */
  leader(): NodeId | null {
    return this.raft.leader;
  }

  /** Ids of the other members (voters and learners). */
  get peers(): NodeId[] {
    const config = this.raft.status().config;
    return [...config.voters, ...config.learners].filter((id) => id !== this.id);
  }

  status(): CoreStatus & { cluster: string | undefined } {
    return { ...this.raft.status(), cluster: this.cluster };
  }

  /**
   * Submits a command and resolves with the state machine's result once it
   * is applied on this node. Fails with NOT_LEADER (carrying the leader id)
   * when `forward` is false and this node is not the leader, and with
   * APPLY_FAILED when the state machine rejected the command.
   */
  command(command: unknown, optionsOrCallback?: { forward?: boolean; id?: string; timeoutMs?: number } | Callback<unknown>, callback?: Callback<unknown>): Promise<unknown> {
    const opts = typeof optionsOrCallback === 'function' ? {} : (optionsOrCallback ?? {});
    const cb = typeof optionsOrCallback === 'function' ? optionsOrCallback : callback;
    const run = async (): Promise<unknown> => {
      await this.start();
      if (opts.forward === false && !this.raft.isLeader()) {
        const leader = this.raft.leader;
        throw new RaleError('NOT_LEADER', `node ${this.id} is not the leader` + (leader ? `; the leader is ${leader}` : ''), { leader });
      }
      const outcome: ProposalOutcome = await this.raft.command(command, { id: opts.id ?? this.uuid(), timeoutMs: opts.timeoutMs });
      if (outcome.status === 'failed') {
        throw new RaleError('APPLY_FAILED', `the command failed on apply: ${outcome.error ?? 'unknown error'}`, { index: outcome.index });
      }
      return outcome.result;
    };
    return withCallback(run(), cb);
  }

  /** Resolves when a read of the local state machine right after is linearizable. */
  readBarrier(callback?: Callback<number>): Promise<number> {
    return withCallback(
      this.start().then(() => this.raft.readBarrier()),
      callback,
    );
  }

  /**
   * Adds a peer (on the leader): as a learner first, then, once it has caught
   * up with the commit index, as a voter.
   */
  join(peer: PeerDescription, callback?: Callback<void>): Promise<void> {
    const { id, address } = typeof peer === 'string' ? { id: peer, address: undefined } : peer;
    const run = async (): Promise<void> => {
      await this.start();
      await this.raft.changeMembership({ type: 'addLearner', node: id, ...(address ? { context: address } : {}) });
      await this.waitCaughtUp(id, 30_000);
      await this.raft.changeMembership({ type: 'promote', node: id });
    };
    return withCallback(run(), callback);
  }

  /** Removes a peer, or this node itself (on the leader). */
  leave(peer: PeerDescription, callback?: Callback<void>): Promise<void> {
    const id = typeof peer === 'string' ? peer : peer.id;
    const run = async (): Promise<void> => {
      await this.start();
      await this.raft.changeMembership({ type: 'remove', node: id });
    };
    return withCallback(run(), callback);
  }

  /** Hands leadership to `peer` (on the leader). */
  transferLeadership(peer: NodeId): void {
    this.raft.transferLeadership(peer);
  }

  private async waitCaughtUp(peer: NodeId, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const status = this.raft.status();
      if (status.role !== Role.Leader) throw new RaleError('NOT_LEADER', `node ${this.id} lost leadership while ${peer} was catching up`, { leader: status.leader });
      const progress = status.progress[peer];
      if (progress !== undefined && progress.match >= status.commit) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new RaleError('TIMEOUT', `learner ${peer} did not catch up within ${timeoutMs} ms; it stays a learner`);
  }
}
