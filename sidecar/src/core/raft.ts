/**
 * rale's Raft core: a synchronous, deterministic state machine with no I/O.
 *
 * Inputs: `tick()` (time, in ticks), `step(message)` (from peers), and the
 * local requests `propose`, `proposeConfigChange`, `readIndex`,
 * `transferLeadership`, `campaign`. Output: a {@link Ready} batch that the
 * driver persists, sends and applies in order, then acknowledges with
 * `advance(ready)`. The core never touches sockets, timers, storage, the
 * clock or a global random source; randomness comes from `options.random`.
 *
 * Features: pre-vote, check-quorum, leader stickiness (a node that heard from
 * a leader within an election timeout ignores vote requests), a no-op entry
 * at the start of each term, commit by counting current-term entries only,
 * per-follower progress (probe / replicate / snapshot) with a bounded
 * in-flight window and byte-limited batches, fast conflict backtracking by
 * term, ReadIndex, leadership transfer, single-server membership changes with
 * learners, snapshots, and log reads that the driver answers asynchronously.
 *
 * Invariants (checked by the simulator at every step):
 *  - at most one leader per term (election safety);
 *  - a leader never overwrites or deletes entries in its log;
 *  - committed entries are never truncated; commit and applied never decrease;
 *  - applied <= committed <= lastIndex.
 */
import { RaleError } from '../errors.ts';
import {
  applyConfigChange,
  cloneConfig,
  decodeConfigChange,
  encodeConfigChange,
  isMember,
  isVoter,
  members,
} from './config.ts';
import { entrySize, RaftLog } from './log.ts';
import { Progress, ProgressState } from './progress.ts';
import { committedIndex, hasQuorum, tallyVotes } from './quorum.ts';
import {
  EntryKind,
  MessageType,
  Role,
  type AppendMessage,
  type AppendResponseMessage,
  type ClusterConfig,
  type ConfigChange,
  type CoreOptions,
  type Entry,
  type HardState,
  type HeartbeatMessage,
  type HeartbeatResponseMessage,
  type LogFetch,
  type Message,
  type NodeId,
  type ReadState,
  type Ready,
  type Snapshot,
  type SnapshotMessage,
  type SnapshotMeta,
  type SoftState,
  type StorageState,
  type VoteMessage,
  type VoteResponseMessage,
} from './types.ts';

export const DEFAULT_CORE_OPTIONS: Omit<CoreOptions, 'id' | 'random'> = {
  electionTicks: 10,
  heartbeatTicks: 1,
  preVote: true,
  checkQuorum: true,
  maxInflight: 64,
  maxMessageBytes: 1 << 20,
  entryCacheBytes: 16 << 20,
  maxEntryBytes: 1 << 20,
};

/**
 * Test-only switches that break Raft on purpose, so the simulator can show it
 * catches each kind of bug. Never set outside tests.
 */
export interface FaultInjection {
  /** Commit an entry of an older term by counting replicas (the bug §5.4.2 forbids). */
  commitOldTerms?: boolean;
  /** Grant votes without checking that the candidate's log is up to date. */
  skipVoteLogCheck?: boolean;
  /** Grant a second vote in the same term. */
  voteTwice?: boolean;
  /** Count the leader's own entries toward commit before they are persisted (while its Appends leave in parallel). */
  countUnpersistedSelf?: boolean;
}

export interface ProposeResult {
  index: number;
  term: number;
}

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
  recentlyActive: boolean;
}

export interface CoreStatus {
  id: NodeId;
  role: Role;
  term: number;
  vote: NodeId | null;
  leader: NodeId | null;
  commit: number;
  applied: number;
  firstIndex: number;
  lastIndex: number;
  lastTerm: number;
  persisted: number;
  config: ClusterConfig;
  /** Leader only: replication state of every other member. */
  progress: Record<NodeId, ProgressStatus>;
  transferTarget: NodeId | null;
}

interface PendingRead {
  context: string;
  index: number;
  /** Who asked: this node or a follower. */
  requester: NodeId;
  /** Id of the heartbeat round that confirms this read. */
  round: string;
  acks: Set<NodeId>;
}

interface ConfigRecord {
  index: number;
  term: number;
  config: ClusterConfig;
}

export class RaftCore {
  readonly id: NodeId;
  private readonly options: CoreOptions;
  private readonly faults: FaultInjection;

  private term: number;
  private vote: NodeId | null;
  private role = Role.Follower;
  private leader: NodeId | null = null;
  readonly log: RaftLog;

  /** Configuration history since the snapshot: [0] is the snapshot's; the last is in force. */
  private configs: ConfigRecord[];

  /** Monotonic tick counter: the core's only notion of time. */
  private now = 0;
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;

  private votes = new Map<NodeId, boolean>();
  private progress = new Map<NodeId, Progress>();
  /** Index of this leader's no-op: reads and config changes wait until it commits. */
  private termStartIndex = 0;
  private transferTarget: NodeId | null = null;
  private transferElapsed = 0;

  private pendingReads: PendingRead[] = [];
  private readsAwaitingTermCommit: Array<{ context: string; requester: NodeId }> = [];
  private readCounter = 0;

  private outbox: Message[] = [];
  private readStates: ReadState[] = [];
  private receivedSnapshot: Snapshot | null = null;
  private fetchRequests: LogFetch[] = [];
  private outstandingFetches = new Set<number>();
  /** New entries (or a new commit index) wait for the next ready() to go out in one batch per follower. */
  private broadcastPending = false;
  private commitBroadcastPending = false;

  private lastSoft: SoftState;
  private lastHard: HardState;
  private readyOutstanding = false;

  constructor(options: Partial<CoreOptions> & Pick<CoreOptions, 'id' | 'random'>, storage: StorageState, faults: FaultInjection = {}) {
    this.options = { ...DEFAULT_CORE_OPTIONS, ...options };
    validateOptions(this.options);
    this.id = this.options.id;
    this.faults = faults;
    this.term = storage.hardState.term;
    this.vote = storage.hardState.vote;
    const snapshotTerm = storage.snapshot.term;
    this.log = new RaftLog({
      snapshotIndex: storage.snapshot.index,
      snapshotTerm,
      lastIndex: storage.lastIndex,
      termStarts: storage.termStarts,
      committed: storage.hardState.commit,
      applied: storage.applied,
    });
    this.configs = [{ index: storage.snapshot.index, term: snapshotTerm, config: cloneConfig(storage.snapshot.config) }];
    this.recordConfigEntries(storage.configEntries);
    this.lastSoft = { role: this.role, leader: this.leader };
    this.lastHard = { term: this.term, vote: this.vote, commit: this.log.committed };
    this.resetRandomizedElectionTimeout();
  }

  // ---------------------------------------------------------------- queries

  get currentTerm(): number {
    return this.term;
  }
  get currentRole(): Role {
    return this.role;
  }
  get currentLeader(): NodeId | null {
    return this.leader;
  }
  get config(): ClusterConfig {
    return cloneConfig(this.currentConfig());
  }
  get commitIndex(): number {
    return this.log.committed;
  }
  get appliedIndex(): number {
    return this.log.applied;
  }

  status(): CoreStatus {
    const progress: Record<NodeId, ProgressStatus> = {};
    if (this.role === Role.Leader) {
      for (const [id, pr] of this.progress) {
        progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          recentlyActive: this.now - pr.lastActiveTick < this.options.electionTicks,
        };
      }
    }
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      vote: this.vote,
      leader: this.leader,
      commit: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex,
      lastIndex: this.log.lastIndex,
      lastTerm: this.log.lastTerm,
      persisted: this.log.persisted,
      config: this.config,
      progress,
      transferTarget: this.transferTarget,
    };
  }

  private currentConfig(): ClusterConfig {
    return (this.configs[this.configs.length - 1] as ConfigRecord).config;
  }

  private configAt(index: number): ClusterConfig {
    for (let k = this.configs.length - 1; k >= 0; k--) {
      const record = this.configs[k] as ConfigRecord;
      if (record.index <= index) return record.config;
    }
    return (this.configs[0] as ConfigRecord).config;
  }

  /**
   * Metadata for a snapshot of the state machine taken at `index` (which must
   * be applied and still in the log): its term and the configuration then.
   */
  snapshotMetaAt(index: number): SnapshotMeta {
    const term = this.log.termAt(index);
    if (term === undefined || index > this.log.applied) {
      throw new RaleError('INVALID_ARGUMENT', `no snapshot can be taken at index ${index} (applied ${this.log.applied}, first ${this.log.firstIndex})`);
    }
    return { index, term, config: cloneConfig(this.configAt(index)) };
  }

  /** Only voters campaign: learners, removed nodes and nodes that have not joined yet wait. */
  private promotable(): boolean {
    return isVoter(this.currentConfig(), this.id);
  }

  // ---------------------------------------------------------------- time

  tick(): void {
    this.now++;
    if (this.role === Role.Leader) this.tickLeader();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign();
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.options.checkQuorum && !this.quorumRecentlyActive()) {
      // Cut off from a majority for a whole election timeout: stop serving so
      // that clients find the leader the majority has (or will have) elected.
      this.becomeFollower(this.term, null);
      return;
    }
    if (this.transferTarget !== null && ++this.transferElapsed >= this.options.electionTicks) {
      this.transferTarget = null; // the target did not take over in time: keep leading
    }
    if (this.heartbeatElapsed >= this.options.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat('');
    }
  }

  private quorumRecentlyActive(): boolean {
    return hasQuorum(this.currentConfig().voters, (id) => {
      if (id === this.id) return true;
      const pr = this.progress.get(id);
      return pr !== undefined && this.now - pr.lastActiveTick < this.options.electionTicks;
    });
  }

  private resetRandomizedElectionTimeout(): void {
    const base = this.options.electionTicks;
    this.randomizedElectionTimeout = base + Math.floor(this.options.random() * base);
  }

  /** True while this node trusts a live leader: it then ignores vote requests (leader stickiness). */
  private inLease(): boolean {
    if (this.role === Role.Leader) return true;
    return this.leader !== null && this.electionElapsed < this.options.electionTicks;
  }

  // ---------------------------------------------------------------- role changes

  private becomeFollower(term: number, leader: NodeId | null): void {
    if (term !== this.term) {
      this.term = term;
      this.vote = null;
    }
    this.role = Role.Follower;
    this.leader = leader;
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.resetLeaderState();
  }

  private resetLeaderState(): void {
    this.votes.clear();
    this.progress.clear();
    this.transferTarget = null;
    this.pendingReads = [];
    this.readsAwaitingTermCommit = [];
    this.broadcastPending = false;
    this.commitBroadcastPending = false;
  }

  /**
   * The driver learned that `peer`'s connection broke abruptly (its process
   * died). If that peer is this follower's leader, the follower stops
   * trusting it at once: it drops the lease (so it grants the pre-votes of
   * the other followers, which learned the same) and moves its election
   * timer close to expiry, leaving a random 1 to electionTicks/2 ticks so
   * that the followers rarely campaign in the same tick (if they do, the
   * split vote costs one ordinary election timeout).
   *
   * Only timing changes: elections are safe at any time. If the hint was
   * wrong (the leader lives), its next heartbeat restores the lease before
   * the timer fires, or the pre-vote fails against the followers still in
   * lease and nothing is disturbed.
   */
  leaderUnreachable(peer: NodeId): void {
    if (this.role !== Role.Follower || this.leader !== peer) return;
    this.leader = null;
    const spread = Math.max(1, Math.floor(this.options.electionTicks / 2));
    const remaining = 1 + Math.floor(this.options.random() * spread);
    this.electionElapsed = Math.max(this.electionElapsed, this.randomizedElectionTimeout - remaining);
  }

  /**
   * Starts an election now (pre-vote first when enabled). `transfer` marks an
   * election that a leader asked for, which voters grant despite their lease.
   */
  campaign(transfer = false): void {
    if (!this.promotable() || this.role === Role.Leader) return;
    if (this.options.preVote && !transfer) this.becomePreCandidate();
    else this.becomeCandidate(transfer);
  }

  private becomePreCandidate(): void {
    // Pre-vote changes neither term nor vote: a node that cannot win (cut off,
    // or behind) never disturbs the cluster with a higher term.
    this.role = Role.PreCandidate;
    this.leader = null;
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.resetLeaderState();
    this.votes.set(this.id, true);
    this.requestVotes(true, false);
    this.checkElection();
  }

  private becomeCandidate(transfer: boolean): void {
    this.term++;
    this.vote = this.id;
    this.role = Role.Candidate;
    this.leader = null;
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.resetLeaderState();
    this.votes.set(this.id, true);
    this.requestVotes(false, transfer);
    this.checkElection();
  }

  private requestVotes(preVote: boolean, transfer: boolean): void {
    for (const voter of this.currentConfig().voters) {
      if (voter === this.id) continue;
      this.send({
        type: MessageType.Vote,
        from: this.id,
        to: voter,
        term: preVote ? this.term + 1 : this.term,
        preVote,
        lastIndex: this.log.lastIndex,
        lastTerm: this.log.lastTerm,
        transfer,
      });
    }
  }

  private checkElection(): void {
    const outcome = tallyVotes(this.currentConfig().voters, this.votes);
    if (outcome === 'won') {
      if (this.role === Role.PreCandidate) this.becomeCandidate(false);
      else this.becomeLeader();
    } else if (outcome === 'lost') {
      this.becomeFollower(this.term, null);
    }
  }

  private becomeLeader(): void {
    this.role = Role.Leader;
    this.leader = this.id;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetLeaderState();
    for (const id of members(this.currentConfig())) {
      if (id !== this.id) this.progress.set(id, new Progress(this.log.lastIndex + 1, this.now));
    }
    // A no-op of the new term: committing it commits everything before it
    // (§5.4.2) and lets reads and membership changes proceed.
    this.termStartIndex = this.log.lastIndex + 1;
    this.appendLocal([{ index: this.termStartIndex, term: this.term, kind: EntryKind.Noop, data: new Uint8Array(0), leader: this.id }]);
  }

  // ---------------------------------------------------------------- local requests

  /** Appends a command on the leader. Throws NOT_LEADER elsewhere. */
  propose(data: Uint8Array): ProposeResult {
    return this.proposeBatch([data])[0] as ProposeResult;
  }

  /** Appends several commands at once (one log append, one broadcast). */
  proposeBatch(payloads: Uint8Array[]): ProposeResult[] {
    this.assertCanPropose();
    for (const data of payloads) this.checkEntrySize(data);
    const entries = payloads.map((data, k) => ({
      index: this.log.lastIndex + 1 + k,
      term: this.term,
      kind: EntryKind.Normal,
      data,
      leader: this.id,
    }));
    this.appendLocal(entries);
    return entries.map((e) => ({ index: e.index, term: e.term }));
  }

  /** Appends a membership change on the leader. See config.ts for the rules. */
  proposeConfigChange(change: ConfigChange): ProposeResult {
    this.assertCanPropose();
    const lastConfig = this.configs[this.configs.length - 1] as ConfigRecord;
    if (this.log.committed < this.termStartIndex || lastConfig.index > this.log.committed) {
      throw new RaleError('CONFIG_CHANGE_PENDING', 'a membership change is already in progress, or this leader is still committing its first entry');
    }
    applyConfigChange(this.currentConfig(), change); // validates; throws INVALID_CONFIG_CHANGE
    const data = encodeConfigChange(change);
    this.checkEntrySize(data);
    const entry: Entry = { index: this.log.lastIndex + 1, term: this.term, kind: EntryKind.Config, data, leader: this.id };
    this.appendLocal([entry]);
    return { index: entry.index, term: entry.term };
  }

  private assertCanPropose(): void {
    if (this.role !== Role.Leader) {
      throw new RaleError('NOT_LEADER', `node ${this.id} is not the leader` + (this.leader ? `; the leader is ${this.leader}` : ''), {
        leader: this.leader,
      });
    }
    if (this.transferTarget !== null) {
      throw new RaleError('TRANSFER_IN_PROGRESS', `leadership is being transferred to ${this.transferTarget}`, { leader: this.transferTarget });
    }
  }

  private checkEntrySize(data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw new RaleError('INVALID_ARGUMENT', 'a proposal payload must be a Uint8Array');
    if (data.length > this.options.maxEntryBytes) {
      throw new RaleError('ENTRY_TOO_LARGE', `payload of ${data.length} bytes exceeds the limit of ${this.options.maxEntryBytes} bytes`, {
        size: data.length,
        limit: this.options.maxEntryBytes,
      });
    }
  }

  /**
   * Asks for a linearizable read point. The answer arrives as a ReadState
   * with the same `context` in a later Ready: the read may then be served
   * from the local state machine once applied >= its index. Throws NO_LEADER
   * when no leader is known.
   */
  readIndex(context: string): void {
    if (this.role === Role.Leader) {
      this.serveRead(context, this.id);
      return;
    }
    if (this.leader === null) throw new RaleError('NO_LEADER', `node ${this.id} knows no leader to confirm a read with`);
    this.send({ type: MessageType.ReadIndex, from: this.id, to: this.leader, term: this.term, context });
  }

  private serveRead(context: string, requester: NodeId): void {
    if (this.log.committed < this.termStartIndex) {
      // The commit index of a new leader is not yet known to be current.
      this.readsAwaitingTermCommit.push({ context, requester });
      return;
    }
    const voters = this.currentConfig().voters;
    if (voters.length === 1 && voters[0] === this.id) {
      this.answerRead(context, requester, this.log.committed);
      return;
    }
    // Confirm leadership with a quorum round: a heartbeat carrying a fresh
    // round id; acknowledgements for it prove no newer leader existed when
    // the read arrived.
    const round = `r${this.term}.${++this.readCounter}`;
    this.pendingReads.push({ context, index: this.log.committed, requester, round, acks: new Set([this.id]) });
    this.broadcastHeartbeat(round);
  }

  private answerRead(context: string, requester: NodeId, index: number): void {
    if (requester === this.id) this.readStates.push({ index, context });
    else this.send({ type: MessageType.ReadIndexResponse, from: this.id, to: requester, term: this.term, context, index });
  }

  /** Hands leadership to `target`, which must be a voter. Proposals are refused until it completes or times out. */
  transferLeadership(target: NodeId): void {
    if (this.role !== Role.Leader) {
      throw new RaleError('NOT_LEADER', `node ${this.id} is not the leader and cannot transfer leadership`, { leader: this.leader });
    }
    if (target === this.id) return;
    if (!isVoter(this.currentConfig(), target)) {
      throw new RaleError('INVALID_ARGUMENT', `node ${target} is not a voter; leadership can only go to a voter`);
    }
    if (this.transferTarget === target) return;
    this.transferTarget = target;
    this.transferElapsed = 0;
    const pr = this.progress.get(target) as Progress;
    if (pr.match === this.log.lastIndex) this.sendTimeoutNow(target);
    else this.sendAppend(target, false);
  }

  private sendTimeoutNow(target: NodeId): void {
    this.send({ type: MessageType.TimeoutNow, from: this.id, to: target, term: this.term });
  }

  // ---------------------------------------------------------------- messages

  step(m: Message): void {
    if (m.to !== this.id) return;
    if (m.term > this.term) {
      if (m.type === MessageType.Vote) {
        // Leader stickiness: a live leader's followers do not help depose it,
        // unless the leader itself asked for the election (transfer).
        if (!m.transfer && this.inLease()) return;
        if (!m.preVote) this.becomeFollower(m.term, null);
      } else if (m.type === MessageType.VoteResponse && m.preVote && m.granted) {
        // A granted pre-vote carries the term the candidate will run in: not ours to adopt.
      } else {
        const fromLeader = m.type === MessageType.Append || m.type === MessageType.Heartbeat || m.type === MessageType.Snapshot;
        this.becomeFollower(m.term, fromLeader ? m.from : null);
      }
    } else if (m.term < this.term) {
      if (m.type === MessageType.Append || m.type === MessageType.Heartbeat) {
        // A deposed leader: tell it our term so that it steps down. Needed with
        // pre-vote and check-quorum, where it might otherwise never learn it.
        this.send({ type: MessageType.AppendResponse, from: this.id, to: m.from, term: this.term, reject: true, index: 0, hintIndex: 0, hintTerm: 0 });
      } else if (m.type === MessageType.Vote && m.preVote) {
        this.send({ type: MessageType.VoteResponse, from: this.id, to: m.from, term: this.term, preVote: true, granted: false });
      }
      return;
    }

    switch (m.type) {
      case MessageType.Vote:
        this.handleVote(m);
        return;
      case MessageType.VoteResponse:
        this.handleVoteResponse(m);
        return;
      case MessageType.Append:
      case MessageType.Heartbeat:
      case MessageType.Snapshot:
        if (this.role === Role.Leader) return; // another leader in our term cannot exist; ignore defensively
        if (this.role !== Role.Follower) this.becomeFollower(m.term, m.from);
        this.leader = m.from;
        this.electionElapsed = 0;
        if (m.type === MessageType.Append) this.handleAppend(m);
        else if (m.type === MessageType.Heartbeat) this.handleHeartbeat(m);
        else this.handleSnapshot(m);
        return;
      case MessageType.AppendResponse:
        if (this.role === Role.Leader) this.handleAppendResponse(m);
        return;
      case MessageType.HeartbeatResponse:
        if (this.role === Role.Leader) this.handleHeartbeatResponse(m);
        return;
      case MessageType.TimeoutNow:
        if (this.role !== Role.Leader) this.campaign(true);
        return;
      case MessageType.ReadIndex:
        if (this.role === Role.Leader) this.serveRead(m.context, m.from);
        else this.send({ type: MessageType.ReadIndexResponse, from: this.id, to: m.from, term: this.term, context: m.context, index: 0 });
        return;
      case MessageType.ReadIndexResponse:
        if (m.index > 0) this.readStates.push({ index: m.index, context: m.context });
        return;
    }
  }

  private handleVote(m: VoteMessage): void {
    const sameVote = this.vote === m.from;
    const freeToVote = this.vote === null && this.leader === null;
    const canVote = m.preVote ? m.term > this.term : sameVote || freeToVote || this.faults.voteTwice === true;
    const upToDate = this.faults.skipVoteLogCheck === true || this.log.isUpToDate(m.lastIndex, m.lastTerm);
    const granted = canVote && upToDate;
    if (granted && !m.preVote) {
      this.vote = m.from;
      this.electionElapsed = 0;
    }
    this.send({
      type: MessageType.VoteResponse,
      from: this.id,
      to: m.from,
      term: granted && m.preVote ? m.term : this.term,
      preVote: m.preVote,
      granted,
    });
  }

  private handleVoteResponse(m: VoteResponseMessage): void {
    const expecting = (this.role === Role.PreCandidate && m.preVote) || (this.role === Role.Candidate && !m.preVote);
    if (!expecting) return;
    this.votes.set(m.from, m.granted);
    this.checkElection();
  }

  private handleAppend(m: AppendMessage): void {
    const reply = (reject: boolean, index: number, hintIndex = 0, hintTerm = 0): void =>
      this.send({ type: MessageType.AppendResponse, from: this.id, to: m.from, term: this.term, reject, index, hintIndex, hintTerm });
    if (m.prevIndex < this.log.committed) {
      // Everything up to our commit index is already known to match.
      reply(false, this.log.committed);
      return;
    }
    const lastNew = this.log.maybeAppend(m.prevIndex, m.prevTerm, m.entries);
    if (lastNew === null) {
      // Hint: skip every entry of a term above the leader's prevTerm at once.
      const hintIndex = this.log.findConflictByTerm(Math.min(m.prevIndex, this.log.lastIndex), m.prevTerm);
      reply(true, m.prevIndex, hintIndex, this.log.termAt(hintIndex) ?? 0);
      return;
    }
    this.recordConfigEntries(m.entries);
    this.log.commitTo(Math.min(m.commit, lastNew));
    reply(false, lastNew);
  }

  private handleHeartbeat(m: HeartbeatMessage): void {
    // The leader sends min(our match, its commit), so this never commits beyond what we hold.
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex));
    this.send({ type: MessageType.HeartbeatResponse, from: this.id, to: m.from, term: this.term, context: m.context });
  }

  private handleSnapshot(m: SnapshotMessage): void {
    const meta = m.snapshot.meta;
    const reply = (index: number): void =>
      this.send({ type: MessageType.AppendResponse, from: this.id, to: m.from, term: this.term, reject: false, index, hintIndex: 0, hintTerm: 0 });
    if (meta.index <= this.log.committed) {
      reply(this.log.committed);
      return;
    }
    if (this.log.matchTerm(meta.index, meta.term)) {
      // We already hold the snapshot's last entry: just learn that it is committed.
      this.log.commitTo(meta.index);
      reply(meta.index);
      return;
    }
    this.log.restore(meta.index, meta.term);
    this.configs = [{ index: meta.index, term: meta.term, config: cloneConfig(meta.config) }];
    this.receivedSnapshot = m.snapshot;
    reply(meta.index);
  }

  private handleAppendResponse(m: AppendResponseMessage): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.lastActiveTick = this.now;
    if (m.reject) {
      if (m.index === 0 && m.hintIndex === 0 && m.hintTerm === 0) return; // a term notice, not a log answer
      const nextProbe = m.hintTerm > 0 ? this.log.findConflictByTerm(m.hintIndex, m.hintTerm) : m.hintIndex;
      if (pr.maybeDecrease(m.index, nextProbe + 1)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.sendAppend(m.from, false);
      }
      return;
    }
    const matchedProbe = pr.state === ProgressState.Probe && pr.match === m.index;
    if (pr.maybeUpdate(m.index) || matchedProbe) {
      if (pr.state === ProgressState.Probe) pr.becomeReplicate();
      else if (pr.state === ProgressState.Snapshot && pr.match >= pr.pendingSnapshot) pr.becomeReplicate();
      else pr.freeInflightTo(m.index);
      if (this.maybeCommit()) this.commitBroadcastPending = true;
      this.sendAppend(m.from, false);
      if (m.from === this.transferTarget && pr.match === this.log.lastIndex) this.sendTimeoutNow(m.from);
    } else {
      pr.freeInflightTo(m.index);
    }
  }

  private handleHeartbeatResponse(m: HeartbeatResponseMessage): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.lastActiveTick = this.now;
    pr.probeSent = false; // a probe may have been lost: the heartbeat round lets us send another
    // Fix (found by the simulator; test/sim-tests/regressions.test.ts): in
    // replicate state nothing ever resent a lost Append, so one loss stalled
    // the follower for good once the in-flight window was full, or when no new
    // entry followed. As etcd does: a live follower frees one window slot, and
    // the append goes out even if empty; the follower then acknowledges (match
    // advances) or rejects (the leader probes from match + 1).
    if (pr.state === ProgressState.Replicate && pr.isPaused(this.options.maxInflight)) pr.inflight.shift();
    if (pr.match < this.log.lastIndex) this.sendAppend(m.from, true);
    if (m.context !== '') this.acknowledgeRead(m.context, m.from);
  }

  private acknowledgeRead(round: string, from: NodeId): void {
    const position = this.pendingReads.findIndex((read) => read.round === round);
    if (position < 0) return;
    const read = this.pendingReads[position] as PendingRead;
    read.acks.add(from);
    if (!hasQuorum(this.currentConfig().voters, read.acks)) return;
    // Leadership was confirmed after every earlier read arrived too: answer them all.
    const served = this.pendingReads.splice(0, position + 1);
    for (const r of served) this.answerRead(r.context, r.requester, r.index);
  }

  // ---------------------------------------------------------------- replication

  /**
   * Sends `to` what it is missing, if its progress allows. In replicate state
   * it keeps sending batches until the in-flight window is full (pipelining).
   */
  private sendAppend(to: NodeId, sendIfEmpty: boolean): void {
    const pr = this.progress.get(to);
    if (pr === undefined) return;
    let sentOne = false;
    while (!pr.isPaused(this.options.maxInflight) && !pr.awaitingFetch) {
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.termAt(prevIndex);
      if (prevTerm === undefined) {
        this.sendSnapshot(to, pr);
        return;
      }
      let entries: Entry[] = [];
      if (pr.next <= this.log.lastIndex) {
        const slice = this.log.slice(pr.next, this.log.lastIndex, this.options.maxMessageBytes);
        if (slice === null) {
          pr.awaitingFetch = true;
          this.requestFetch(pr.next);
          return;
        }
        entries = slice;
      }
      if (entries.length === 0 && (sentOne || !sendIfEmpty) && pr.state === ProgressState.Replicate) return;
      const commit = this.log.committed;
      this.send({ type: MessageType.Append, from: this.id, to, term: this.term, prevIndex, prevTerm, entries, commit });
      const last = entries.length > 0 ? (entries[entries.length - 1] as Entry).index : prevIndex;
      pr.sentEntries(last, entries.length);
      sentOne = true;
      if (pr.state !== ProgressState.Replicate || entries.length === 0) return;
    }
  }

  private sendSnapshot(to: NodeId, pr: Progress): void {
    const meta = { index: this.log.snapshotIndex, term: this.log.snapshotTerm, config: cloneConfig(this.configAt(this.log.snapshotIndex)) };
    pr.becomeSnapshot(meta.index);
    this.send({ type: MessageType.Snapshot, from: this.id, to, term: this.term, snapshot: { meta, data: new Uint8Array(0) } });
  }

  private broadcastAppend(sendIfEmpty: boolean): void {
    for (const id of this.progress.keys()) this.sendAppend(id, sendIfEmpty);
  }

  private broadcastHeartbeat(context: string): void {
    for (const [id, pr] of this.progress) {
      this.send({ type: MessageType.Heartbeat, from: this.id, to: id, term: this.term, commit: Math.min(pr.match, this.log.committed), context });
    }
  }

  private requestFetch(lo: number): void {
    if (this.outstandingFetches.has(lo)) return;
    this.outstandingFetches.add(lo);
    this.fetchRequests.push({ lo, hi: this.log.lastIndex, maxBytes: this.options.maxMessageBytes * 4 });
  }

  /**
   * The driver's answer to a LogFetch. Entries that no longer match the log
   * (it changed meanwhile) are ignored; an empty answer means "try again".
   */
  entriesFetched(fetch: LogFetch, entries: Entry[]): void {
    this.outstandingFetches.delete(fetch.lo);
    this.log.addFetched(entries);
    if (this.role !== Role.Leader) return;
    for (const [id, pr] of this.progress) {
      if (pr.awaitingFetch) {
        pr.awaitingFetch = false;
        this.sendAppend(id, false);
      }
    }
  }

  /** Commits the highest index a quorum holds, if it is of this term (§5.4.2). Returns whether commit moved. */
  private maybeCommit(): boolean {
    const config = this.currentConfig();
    const self = this.faults.countUnpersistedSelf === true ? this.log.lastIndex : this.log.persisted;
    const index = committedIndex(config.voters, (id) => (id === this.id ? self : (this.progress.get(id)?.match ?? 0)));
    if (index <= this.log.committed) return false;
    if (this.log.termAt(index) !== this.term && this.faults.commitOldTerms !== true) return false;
    this.log.commitTo(index);
    this.afterCommit();
    return true;
  }

  private afterCommit(): void {
    if (this.log.committed >= this.termStartIndex && this.readsAwaitingTermCommit.length > 0) {
      const waiting = this.readsAwaitingTermCommit;
      this.readsAwaitingTermCommit = [];
      for (const r of waiting) this.serveRead(r.context, r.requester);
    }
    const lastConfig = this.configs[this.configs.length - 1] as ConfigRecord;
    if (!isVoter(lastConfig.config, this.id) && this.log.committed >= lastConfig.index) {
      // This leader's removal is committed: hand over to the most up-to-date
      // voter at once instead of leaving the cluster to time out.
      let best: NodeId | null = null;
      let bestMatch = -1;
      for (const voter of lastConfig.config.voters) {
        const match = this.progress.get(voter)?.match ?? -1;
        if (match > bestMatch) {
          best = voter;
          bestMatch = match;
        }
      }
      this.broadcastAppend(true); // let everyone learn the commit first
      if (best !== null && bestMatch === this.log.lastIndex) this.sendTimeoutNow(best);
      this.becomeFollower(this.term, null);
    }
  }

  // ---------------------------------------------------------------- log and configuration

  private appendLocal(entries: Entry[]): void {
    this.log.append(entries);
    this.recordConfigEntries(entries);
    this.broadcastPending = true;
  }

  /**
   * Keeps the configuration history in step with the log: a configuration
   * takes effect as soon as its entry is in the log (committed or not), and is
   * undone if that entry is truncated. A change that does not apply (only a
   * foreign or corrupt leader could send one) leaves the configuration as it
   * was, identically on every node.
   */
  private recordConfigEntries(entries: Entry[]): void {
    while (this.configs.length > 1) {
      const last = this.configs[this.configs.length - 1] as ConfigRecord;
      if (this.log.termAt(last.index) === last.term) break;
      this.configs.pop();
    }
    const before = this.currentConfig();
    for (const entry of entries) {
      if (entry.kind !== EntryKind.Config) continue;
      const lastRecord = this.configs[this.configs.length - 1] as ConfigRecord;
      if (entry.index <= lastRecord.index || this.log.termAt(entry.index) !== entry.term) continue;
      let config = lastRecord.config;
      try {
        config = applyConfigChange(lastRecord.config, decodeConfigChange(entry.data));
      } catch {
        // keep the previous configuration
      }
      this.configs.push({ index: entry.index, term: entry.term, config });
    }
    if (this.currentConfig() !== before) this.onConfigChanged();
  }

  private onConfigChanged(): void {
    const config = this.currentConfig();
    if (this.role !== Role.Leader) return;
    for (const id of [...this.progress.keys()]) {
      if (!isMember(config, id)) this.progress.delete(id);
    }
    for (const id of members(config)) {
      if (id !== this.id && !this.progress.has(id)) this.progress.set(id, new Progress(this.log.lastIndex + 1, this.now));
    }
    if (this.transferTarget !== null && !isVoter(config, this.transferTarget)) this.transferTarget = null;
    this.broadcastPending = true;
  }

  /**
   * The driver stored a snapshot of the state machine at `index` (<= applied):
   * forget the entries it covers. Followers that need them get the snapshot.
   */
  compact(index: number): void {
    this.log.compact(index);
    let base = 0;
    for (let k = 0; k < this.configs.length; k++) if ((this.configs[k] as ConfigRecord).index <= index) base = k;
    this.configs = this.configs.slice(base);
  }

  /** The transport could not reach `peer`: stop streaming to it optimistically. */
  reportUnreachable(peer: NodeId): void {
    const pr = this.progress.get(peer);
    if (pr !== undefined && pr.state === ProgressState.Replicate) pr.becomeProbe();
  }

  /** The driver finished (or failed) sending a snapshot to `peer`. */
  reportSnapshot(peer: NodeId, ok: boolean): void {
    const pr = this.progress.get(peer);
    if (pr === undefined || pr.state !== ProgressState.Snapshot) return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer (or the next heartbeat) before probing again.
    pr.probeSent = true;
  }

  // ---------------------------------------------------------------- Ready

  private send(m: Message): void {
    this.outbox.push(m);
  }

  hasReady(): boolean {
    if (this.readyOutstanding) return false;
    return (
      this.role !== this.lastSoft.role ||
      this.leader !== this.lastSoft.leader ||
      this.term !== this.lastHard.term ||
      this.vote !== this.lastHard.vote ||
      this.log.pendingFrom <= this.log.lastIndex ||
      this.outbox.length > 0 ||
      this.readStates.length > 0 ||
      this.receivedSnapshot !== null ||
      this.fetchRequests.length > 0 ||
      (this.broadcastPending && this.role === Role.Leader) ||
      (this.log.hasEntriesToApply() && !this.outstandingFetches.has(this.log.applying + 1))
    );
  }

  /**
   * Collects the work for the driver. Must be followed by `advance(ready)`
   * before the next call. New entries are broadcast here, so that proposals
   * made since the last Ready travel in one Append per follower.
   */
  ready(): Ready {
    if (this.readyOutstanding) throw new Error('ready() called again before advance()');
    if (this.role === Role.Leader && (this.broadcastPending || this.commitBroadcastPending)) {
      this.broadcastAppend(this.commitBroadcastPending);
    }
    this.broadcastPending = false;
    this.commitBroadcastPending = false;

    const entries = this.log.takeUnpersisted();
    let committedEntries: Entry[] = [];
    if (!this.outstandingFetches.has(this.log.applying + 1)) {
      const toApply = this.log.takeCommittedToApply(this.options.maxMessageBytes * 4);
      if (toApply === null) this.requestFetch(this.log.applying + 1);
      else committedEntries = toApply;
    }
    const soft: SoftState = { role: this.role, leader: this.leader };
    const softChanged = soft.role !== this.lastSoft.role || soft.leader !== this.lastSoft.leader;
    // The commit index rides along whenever something else is written; alone
    // it is not worth a disk write (it is only a restart optimisation).
    const hardChanged = this.term !== this.lastHard.term || this.vote !== this.lastHard.vote;
    const hardState = hardChanged || entries.length > 0 || this.receivedSnapshot !== null ? { term: this.term, vote: this.vote, commit: this.log.committed } : null;

    // A leader whose term and vote are already durable (written by an earlier
    // Ready, advanced before this one was taken) sends only messages that
    // depend on nothing this Ready persists: its Appends may go out while it
    // writes the same entries to its own disk (thesis 10.2.1). Its own match
    // is `log.persisted`, moved by advance(), so maybeCommit never counts an
    // unpersisted self. Any term or vote change (a step down, a vote) makes
    // every message of the Ready wait for the persist.
    const sendBeforePersist = this.role === Role.Leader && !hardChanged && this.receivedSnapshot === null;

    const ready: Ready = {
      softState: softChanged ? soft : null,
      hardState,
      entries,
      snapshot: this.receivedSnapshot,
      messages: this.outbox,
      sendBeforePersist,
      committedEntries,
      readStates: this.readStates,
      fetches: this.fetchRequests,
    };
    this.lastSoft = soft;
    if (hardState !== null) this.lastHard = hardState;
    this.outbox = [];
    this.readStates = [];
    this.fetchRequests = [];
    this.receivedSnapshot = null;
    this.readyOutstanding = true;
    return ready;
  }

  /** The driver did everything `ready` asked. */
  advance(ready: Ready): void {
    this.readyOutstanding = false;
    const lastEntry = ready.entries[ready.entries.length - 1];
    if (lastEntry !== undefined) {
      this.log.persistedTo(lastEntry.index, lastEntry.term);
      if (this.role === Role.Leader && this.maybeCommit()) this.commitBroadcastPending = true;
    }
    const lastApplied = ready.committedEntries[ready.committedEntries.length - 1];
    if (lastApplied !== undefined) this.log.appliedTo(lastApplied.index);
    this.log.evict(this.options.entryCacheBytes, this.options.entryCacheBytes);
  }

  /** Bytes of a hypothetical entry with this payload, as counted against message limits. */
  static sizeOf(data: Uint8Array): number {
    return entrySize({ index: 0, term: 0, kind: EntryKind.Normal, data });
  }
}

function validateOptions(o: CoreOptions): void {
  const positive = (name: keyof CoreOptions): void => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new RaleError('INVALID_ARGUMENT', `core option ${name} must be a positive integer, got ${String(v)}`);
    }
  };
  positive('electionTicks');
  positive('heartbeatTicks');
  positive('maxInflight');
  positive('maxMessageBytes');
  positive('entryCacheBytes');
  positive('maxEntryBytes');
  if (o.heartbeatTicks >= o.electionTicks) {
    throw new RaleError('INVALID_ARGUMENT', `heartbeatTicks (${o.heartbeatTicks}) must be below electionTicks (${o.electionTicks})`);
  }
  if (typeof o.id !== 'string' || o.id.length === 0) throw new RaleError('INVALID_ARGUMENT', 'the node id must be a non-empty string');
  if (typeof o.random !== 'function') throw new RaleError('INVALID_ARGUMENT', 'options.random must be a seeded generator function');
}
