/**
 * The vocabulary of rale's Raft core: entries, messages, hard state, the Ready
 * batch the core hands its driver, and the storage summary it restarts from.
 *
 * Everything here is plain data (no classes, no I/O) so that it can be copied,
 * serialised by any transport and compared in tests.
 *
 * Indexes and terms are JavaScript numbers: exact up to 2^53, far beyond what
 * one cluster writes. Node ids are strings ("node1", "node-0"); bridges map
 * foreign numeric ids to them.
 */

export type NodeId = string;

/** What a log entry carries. */
export enum EntryKind {
  /** Application command: opaque bytes, interpreted by the state machine. */
  Normal = 0,
  /** Empty entry a new leader appends at the start of its term (commits older entries). */
  Noop = 1,
  /** Membership change: `data` is the JSON of a {@link ConfigChange}. */
  Config = 2,
}

export interface Entry {
  index: number;
  term: number;
  kind: EntryKind;
  /** Opaque payload; empty for Noop. */
  data: Uint8Array;
  /**
   * The leader that created the entry. In classic Raft one term has at most
   * one leader, so this is derivable, but foreign protocols (openraft's log id
   * is term + leader node) want it on every entry without a lookup.
   */
  leader?: NodeId;
}

/** Durable per-node state: must be on stable storage before any message that depends on it leaves. */
export interface HardState {
  term: number;
  /** Candidate voted for in `term`, or null. */
  vote: NodeId | null;
  /** Highest index known committed. Persisting it is an optimisation (faster restart), not a safety need. */
  commit: number;
}

/** A cluster configuration. Invariant: voters and learners are disjoint. */
export interface ClusterConfig {
  voters: NodeId[];
  learners: NodeId[];
}

/**
 * One membership change. rale changes voters one server at a time (Raft
 * thesis §4.1); see DESIGN.md for why that, and not joint consensus.
 */
export type ConfigChange = (
  | { type: 'addLearner'; node: NodeId; context?: string }
  | { type: 'promote'; node: NodeId }
  | { type: 'addVoter'; node: NodeId; context?: string }
  | { type: 'remove'; node: NodeId }
  /**
   * The first entry of a new cluster's log (index 1, term 1), written by the
   * driver identically on every founding node, so that the initial voters are
   * in the log that later members replicate. Valid only on an empty config.
   */
  | { type: 'bootstrap'; voters: NodeId[] }
) & {
  /** Id of the request that proposed the change, so its outcome can be recorded once (like a command id). */
  id?: string;
};

export interface SnapshotMeta {
  /** Index and term of the last entry the snapshot covers. */
  index: number;
  term: number;
  /** Configuration in force at `index`. */
  config: ClusterConfig;
}

export interface Snapshot {
  meta: SnapshotMeta;
  /** Application state, opaque to the core. */
  data: Uint8Array;
}

export enum MessageType {
  /** Leader -> follower: entries (possibly none) after (prevIndex, prevTerm). */
  Append = 'append',
  AppendResponse = 'appendResp',
  /** Leader -> follower: liveness and commit propagation; `context` carries a ReadIndex round. */
  Heartbeat = 'heartbeat',
  HeartbeatResponse = 'heartbeatResp',
  /** Candidate -> all: ask for a vote (`preVote` for the pre-vote phase, which changes no state). */
  Vote = 'vote',
  VoteResponse = 'voteResp',
  /** Leader -> follower that is behind the leader's first retained index. */
  Snapshot = 'snapshot',
  /** Leader -> transfer target: start an election now, ignoring leases. */
  TimeoutNow = 'timeoutNow',
  /** Follower -> leader: run a ReadIndex round on my behalf. */
  ReadIndex = 'readIndex',
  ReadIndexResponse = 'readIndexResp',
}

interface MessageBase {
  from: NodeId;
  to: NodeId;
  /** Sender's current term (for Vote with preVote: the term it would campaign in). */
  term: number;
}

export interface AppendMessage extends MessageBase {
  type: MessageType.Append;
  prevIndex: number;
  prevTerm: number;
  entries: Entry[];
  commit: number;
}

export interface AppendResponseMessage extends MessageBase {
  type: MessageType.AppendResponse;
  /**
   * Accepted: `index` is the last index the follower now matches.
   * Rejected: `index` is the prevIndex that failed, `hintIndex`/`hintTerm`
   * let the leader skip a whole conflicting term at once.
   */
  reject: boolean;
  index: number;
  hintIndex: number;
  hintTerm: number;
}

export interface HeartbeatMessage extends MessageBase {
  type: MessageType.Heartbeat;
  commit: number;
  /** Non-empty when the heartbeat is part of a ReadIndex round. */
  context: string;
}

export interface HeartbeatResponseMessage extends MessageBase {
  type: MessageType.HeartbeatResponse;
  context: string;
}

export interface VoteMessage extends MessageBase {
  type: MessageType.Vote;
  preVote: boolean;
  lastIndex: number;
  lastTerm: number;
  /** Set when the election follows a leadership transfer: voters ignore their leader lease. */
  transfer: boolean;
}

export interface VoteResponseMessage extends MessageBase {
  type: MessageType.VoteResponse;
  preVote: boolean;
  granted: boolean;
}

export interface SnapshotMessage extends MessageBase {
  type: MessageType.Snapshot;
  /**
   * The core emits the metadata only, with empty `data`: the driver attaches
   * the bytes of its stored snapshot (or a newer one) when it sends. Inbound,
   * `data` holds the whole snapshot.
   */
  snapshot: Snapshot;
}

export interface TimeoutNowMessage extends MessageBase {
  type: MessageType.TimeoutNow;
}

export interface ReadIndexMessage extends MessageBase {
  type: MessageType.ReadIndex;
  context: string;
}

export interface ReadIndexResponseMessage extends MessageBase {
  type: MessageType.ReadIndexResponse;
  context: string;
  /** 0 when the leader could not serve the read (it is no longer leader). */
  index: number;
}

export type Message =
  | AppendMessage
  | AppendResponseMessage
  | HeartbeatMessage
  | HeartbeatResponseMessage
  | VoteMessage
  | VoteResponseMessage
  | SnapshotMessage
  | TimeoutNowMessage
  | ReadIndexMessage
  | ReadIndexResponseMessage;

export enum Role {
  Follower = 'follower',
  PreCandidate = 'pre-candidate',
  Candidate = 'candidate',
  Leader = 'leader',
}

/** Volatile state worth reporting; never persisted. */
export interface SoftState {
  role: Role;
  leader: NodeId | null;
}

/** A linearizable read may be served locally once `applied >= index`. */
export interface ReadState {
  index: number;
  context: string;
}

/** A request for log entries the core does not hold in memory. */
export interface LogFetch {
  /** Inclusive range. */
  lo: number;
  hi: number;
  /** Soft limit on the total payload size to return (at least one entry is always returned). */
  maxBytes: number;
}

/**
 * Everything the core wants done since the last {@link Ready} was advanced.
 * The driver does it in this order, then calls `advance(ready)`:
 *  1. persist `snapshot` (if any), then `entries` (appending; an entry at an
 *     existing index replaces it and everything after it), then `hardState`
 *     (if any), durably;
 *  2. send `messages`;
 *  3. apply `committedEntries` in order (after restoring `snapshot` data if any);
 *  4. answer `fetches` (now or later) with `entriesFetched`;
 *  5. serve `readStates` once applied >= index.
 */
export interface Ready {
  softState: SoftState | null;
  hardState: HardState | null;
  entries: Entry[];
  snapshot: Snapshot | null;
  messages: Message[];
  /**
   * True when `messages` may leave before this Ready's persist completes (in
   * parallel with it): they are a leader's, and its term and vote were made
   * durable by an earlier Ready. The leader's own copy of `entries` counts
   * toward commit only after `advance`, so sending them early never lets an
   * entry commit without a durable majority. When false (votes, follower
   * acknowledgements, a new term), messages leave only after the persist.
   */
  sendBeforePersist: boolean;
  committedEntries: Entry[];
  readStates: ReadState[];
  fetches: LogFetch[];
}

/** What a driver loads from storage to restart a core. */
export interface StorageState {
  hardState: HardState;
  /** The latest snapshot's metadata; index 0 / term 0 with the bootstrap config when none. */
  snapshot: SnapshotMeta;
  /** Last index in the log (== snapshot.index when the log holds no entries after it). */
  lastIndex: number;
  /**
   * For each term present in the log after the snapshot, the index of its
   * first entry, ascending: `[[firstIndex, term], ...]`. Lets the core answer
   * "term at index i" without reading the log.
   */
  termStarts: Array<[number, number]>;
  /** Every Config entry in the log after the snapshot, ascending by index. */
  configEntries: Entry[];
  /** Index of the last entry the state machine has applied (>= snapshot.index). */
  applied: number;
}

/** Tunables of the core; times are in ticks. */
export interface CoreOptions {
  id: NodeId;
  /** A follower campaigns after a random timeout in [electionTicks, 2 * electionTicks). */
  electionTicks: number;
  heartbeatTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Most appends in flight to one follower before waiting for acknowledgements. */
  maxInflight: number;
  /** Soft byte limit of the entries in one Append message. */
  maxMessageBytes: number;
  /** Bytes of already-stable entries the core keeps in memory for replication. */
  entryCacheBytes: number;
  /** Largest payload of one proposal, in bytes. */
  maxEntryBytes: number;
  /** Seeded source of randomness: returns a float in [0, 1). */
  random: () => number;
}
