/**
 * The safety checks, run after every simulation step.
 *
 * Each step (event) touches at most one node, and the core is pure, so
 * checking the touched node after each step sees every state every node is
 * ever in. The checks are incremental (each costs O(what changed)), which is
 * what lets CI run a thousand scenarios with a check after every step:
 *
 *  - election safety: `leaders` maps each term to the one node ever seen
 *    leading it, over the whole history;
 *  - log matching: every entry any node holds, in memory or durably, is
 *    checked against `entries`, which maps (index, term) to the first content
 *    and preceding term seen for it. Equal content for equal (index, term) and
 *    an equal preceding term give, by induction down to the snapshot, equal
 *    prefixes; `checkLogsPairwise` also compares whole durable logs literally;
 *  - leader append-only: a node that stays leader in one term never loses or
 *    replaces an entry of its log;
 *  - leader completeness: `committed` records each index the first time any
 *    node reports it committed, with that node's term; every leader of a later
 *    term must hold it (checked when a leader appears and when a record is made);
 *  - state machine safety: `applied` records the first entry applied at each
 *    index and the state machine's history hash after it; every other node
 *    must apply the same entry and reach the same history, including through
 *    snapshot installs. Applying an entry never reported committed is a violation;
 *  - monotonic commit (per incarnation) and applied (across restarts: the
 *    state machine is durable); applied <= commit <= lastIndex;
 *  - at most once: no proposal id changes a state machine twice;
 *  - ReadIndex: a read state's index is at least the highest index known
 *    committed anywhere when the read was asked, and is itself committed.
 */
import { Role, type Entry, type NodeId, type RaftCore, type ReadState, type SnapshotMeta } from '../../sidecar/src/core/index.ts';
import { describeEntry, entryDigest } from './codec.ts';
import type { SimNode } from './node.ts';
import type { ApplyOutcome } from './statemachine.ts';
import { violation } from './violation.ts';

interface EntryRecord {
  digest: string;
  prevTerm: number;
  node: NodeId;
}

interface CommitRecord {
  term: number;
  /** Term of the node that first reported the index committed: leaders of later terms must hold it. */
  commitTerm: number;
  node: NodeId;
}

interface AppliedRecord {
  term: number;
  digest: string;
  history: number;
  node: NodeId;
}

/** What the checker remembers about one node between steps. */
interface NodeTrack {
  incarnation: number;
  role: Role;
  term: number;
  commit: number;
  applied: number;
  /** Highest state-machine applied index ever seen (durable: must never go back). */
  smApplied: number;
  lastIndex: number;
  snapshotIndex: number;
  /** The entry objects last seen at each index of the node's in-memory log. */
  seen: Array<Entry | undefined>;
}

export interface CheckerStats {
  leadersElected: number;
  highestTerm: number;
  entriesChecked: number;
  committedIndexes: number;
  readsChecked: number;
}

export class Checker {
  private readonly leaders = new Map<number, NodeId>();
  private readonly entries = new Map<string, EntryRecord>();
  private readonly committed: Array<CommitRecord | undefined> = [];
  private readonly appliedAt: Array<AppliedRecord | undefined> = [];
  private readonly tracks = new Map<NodeId, NodeTrack>();
  private readonly reads = new Map<string, number>();
  /** Highest index any node has reported committed. */
  maxCommitted = 0;
  readonly stats: CheckerStats = { leadersElected: 0, highestTerm: 0, entriesChecked: 0, committedIndexes: 0, readsChecked: 0 };

  constructor(private readonly allNodes: () => Iterable<SimNode>) {}

  /** The leader seen for `term`, if any (for tests). */
  leaderOf(term: number): NodeId | undefined {
    return this.leaders.get(term);
  }

  // ---------------------------------------------------------------- per step

  /** A node (re)started from durable state: new baseline for the per-incarnation checks. */
  nodeStarted(node: SimNode): void {
    const core = node.core as RaftCore;
    const previous = this.tracks.get(node.id);
    const smApplied = previous?.smApplied ?? 0;
    if (node.sm.applied < smApplied) {
      violation('monotonic-applied', `${node.id} restarted with applied ${node.sm.applied}, below the ${smApplied} it had applied before`);
    }
    // What the (re)started core believes committed must agree with what the cluster committed.
    // Its durable commit index was reported when it was reached, except for the founders'
    // bootstrap entry, committed by construction: record what is not recorded yet.
    for (let i = core.log.firstIndex; i <= core.commitIndex; i++) {
      const record = this.committed[i];
      const term = core.log.termAt(i);
      if (term === undefined) continue;
      if (record === undefined) this.record(i, term, core.currentTerm, node.id);
      else if (record.term !== term) {
        violation('state-machine-safety', `${node.id} restarted holding ${i}@${term} as committed, but ${record.node} committed ${i}@${record.term}`);
      }
    }
    this.tracks.set(node.id, {
      incarnation: node.incarnation,
      role: core.currentRole,
      term: core.currentTerm,
      commit: core.commitIndex,
      applied: core.appliedIndex,
      smApplied: node.sm.applied,
      lastIndex: core.log.lastIndex,
      snapshotIndex: core.log.snapshotIndex,
      seen: [],
    });
  }

  /** Checks `node` after a step that may have changed it. */
  afterStep(node: SimNode): void {
    const core = node.core;
    if (core === null) return;
    const track = this.tracks.get(node.id);
    if (track === undefined || track.incarnation !== node.incarnation) {
      throw new Error(`checker: ${node.id} was started without nodeStarted()`);
    }
    const log = core.log;
    if (core.commitIndex < track.commit) {
      violation('monotonic-commit', `${node.id} commit went back from ${track.commit} to ${core.commitIndex}`);
    }
    if (core.appliedIndex < track.applied) {
      violation('monotonic-applied', `${node.id} applied went back from ${track.applied} to ${core.appliedIndex}`);
    }
    if (node.sm.applied < track.smApplied) {
      violation('monotonic-applied', `${node.id} state machine applied went back from ${track.smApplied} to ${node.sm.applied}`);
    }
    if (!(log.snapshotIndex <= log.applied && log.applied <= log.committed && log.committed <= log.lastIndex)) {
      violation(
        'index-order',
        `${node.id}: snapshot ${log.snapshotIndex}, applied ${log.applied}, commit ${log.committed}, last ${log.lastIndex} are out of order`,
      );
    }

    const role = core.currentRole;
    const term = core.currentTerm;
    if (term > this.stats.highestTerm) this.stats.highestTerm = term;
    if (role === Role.Leader) {
      const other = this.leaders.get(term);
      if (other !== undefined && other !== node.id) {
        violation('election-safety', `${node.id} and ${other} were both leader in term ${term}`);
      }
      if (other === undefined) {
        this.leaders.set(term, node.id);
        this.stats.leadersElected++;
      }
    }

    // After election safety (a second leader in a term breaks log matching too: report the cause).
    this.checkLogWindow(node, core, track);
    if (role === Role.Leader && (track.role !== Role.Leader || track.term !== term)) this.checkNewLeader(node, core);

    for (let i = track.commit + 1; i <= core.commitIndex; i++) this.recordCommitted(node, core, i);

    track.role = role;
    track.term = term;
    track.commit = core.commitIndex;
    track.applied = core.appliedIndex;
    track.smApplied = Math.max(track.smApplied, node.sm.applied);
  }

  /**
   * Entries not yet handed to the driver are exactly [pendingFrom, lastIndex]
   * (any append or truncation lowers pendingFrom to its first index), so
   * every entry a node ever holds passes through this window at least once,
   * in the very step that put it there.
   */
  private checkLogWindow(node: SimNode, core: RaftCore, track: NodeTrack): void {
    const log = core.log;
    const sameLeadership = track.role === Role.Leader && core.currentRole === Role.Leader && track.term === core.currentTerm;
    if (sameLeadership && log.lastIndex < track.lastIndex) {
      violation('leader-append-only', `${node.id} is leader of term ${core.currentTerm} and its log shrank from ${track.lastIndex} to ${log.lastIndex}`);
    }
    const from = Math.max(log.pendingFrom, log.snapshotIndex + 1);
    for (let i = from; i <= log.lastIndex; i++) {
      const entry = log.entryAt(i);
      if (entry === undefined) violation('index-order', `${node.id}: entry ${i} is not yet persisted but not in memory`);
      if (track.seen[i] === entry) continue;
      if (sameLeadership && i <= track.lastIndex) {
        violation('leader-append-only', `${node.id} is leader of term ${core.currentTerm} and replaced its entry ${i}`);
      }
      if (entry.index !== i) violation('log-matching', `${node.id} holds entry ${describeEntry(entry)} at index ${i}`);
      this.checkEntry(node.id, entry, log.termAt(i - 1) ?? -1);
      track.seen[i] = entry;
    }
    if (track.seen.length > log.lastIndex + 1) track.seen.length = log.lastIndex + 1;
    track.lastIndex = log.lastIndex;
    track.snapshotIndex = log.snapshotIndex;
  }

  private checkEntry(nodeId: NodeId, entry: Entry, prevTerm: number): void {
    this.stats.entriesChecked++;
    const key = `${entry.index}:${entry.term}`;
    const digest = entryDigest(entry);
    const record = this.entries.get(key);
    if (record === undefined) {
      this.entries.set(key, { digest, prevTerm, node: nodeId });
      return;
    }
    if (record.digest !== digest) {
      violation('log-matching', `${nodeId} and ${record.node} hold different entries at index ${entry.index} term ${entry.term}: ${describeEntry(entry)} vs ${record.digest}`);
    }
    if (record.prevTerm !== prevTerm) {
      violation(
        'log-matching',
        `${nodeId} holds ${entry.index}@${entry.term} after term ${prevTerm}, but ${record.node} holds it after term ${record.prevTerm}: the logs differ before it`,
      );
    }
  }

  private recordCommitted(node: SimNode, core: RaftCore, index: number): void {
    const term = core.log.termAt(index);
    if (term === undefined) return; // covered by a snapshot just installed: checked by its history
    const record = this.committed[index];
    if (record !== undefined) {
      if (record.term !== term) {
        violation('state-machine-safety', `${node.id} committed ${index}@${term} but ${record.node} had committed ${index}@${record.term}`);
      }
      return;
    }
    this.record(index, term, core.currentTerm, node.id);
    // Leaders of later terms that already exist must hold it too.
    for (const other of this.allNodes()) {
      const otherCore = other.core;
      if (otherCore === null || otherCore.currentRole !== Role.Leader || otherCore.currentTerm <= core.currentTerm) continue;
      this.checkHolds(other.id, otherCore, index, term, node.id, core.currentTerm);
    }
  }

  private record(index: number, term: number, commitTerm: number, nodeId: NodeId): void {
    this.committed[index] = { term, commitTerm, node: nodeId };
    this.stats.committedIndexes++;
    if (index > this.maxCommitted) this.maxCommitted = index;
  }

  private checkNewLeader(node: SimNode, core: RaftCore): void {
    for (let i = 1; i <= this.maxCommitted; i++) {
      const record = this.committed[i];
      if (record === undefined || record.commitTerm >= core.currentTerm) continue;
      this.checkHolds(node.id, core, i, record.term, record.node, record.commitTerm);
    }
  }

  private checkHolds(leader: NodeId, core: RaftCore, index: number, term: number, committer: NodeId, commitTerm: number): void {
    if (index < core.log.snapshotIndex) return; // compacted: only applied (hence checked) entries are compacted
    const held = core.log.termAt(index);
    if (held !== term) {
      violation(
        'leader-completeness',
        `${leader} leads term ${core.currentTerm} but holds ${held === undefined ? 'nothing' : `term ${held}`} at ${index}, ` +
          `which ${committer} reported committed as ${index}@${term} in term ${commitTerm}`,
      );
    }
  }

  // ---------------------------------------------------------------- driver hooks

  /** The node persisted `entries` (its durable log now holds them). */
  persisted(node: SimNode, entries: readonly Entry[]): void {
    for (const entry of entries) {
      const stored = node.storage.entryAt(entry.index);
      if (stored !== entry) violation('ready-contract', `${node.id}: persisted entry ${entry.index} is not in the durable log`);
      this.checkEntry(node.id, entry, node.storage.termAt(entry.index - 1) ?? -1);
    }
  }

  applied(node: SimNode, entry: Entry, outcome: ApplyOutcome): void {
    const commit = this.committed[entry.index];
    if (commit === undefined || commit.term !== entry.term) {
      violation('state-machine-safety', `${node.id} applied ${describeEntry(entry)}, which no node reported committed`);
    }
    const digest = entryDigest(entry);
    const history = node.sm.history;
    const record = this.appliedAt[entry.index];
    if (record === undefined) {
      this.appliedAt[entry.index] = { term: entry.term, digest, history, node: node.id };
    } else if (record.term !== entry.term || record.digest !== digest) {
      violation('state-machine-safety', `${node.id} applied ${describeEntry(entry)} but ${record.node} applied ${entry.index}@${record.term} ${record.digest}`);
    } else if (record.history !== history) {
      violation('state-machine-safety', `${node.id} and ${record.node} applied the same entry ${entry.index} after different histories`);
    }
    if (outcome.kind === 'write' && (node.sm.effects.get(outcome.id) ?? 0) > 1) {
      violation('at-most-once', `${node.id} applied proposal ${outcome.id} a second time (entry ${entry.index})`);
    }
  }

  /** The node installed a snapshot received from the leader. */
  snapshotInstalled(node: SimNode, meta: SnapshotMeta): void {
    if (node.sm.applied !== meta.index) {
      violation('ready-contract', `${node.id} installed a snapshot at ${meta.index} whose state is at ${node.sm.applied}`);
    }
    const record = this.appliedAt[meta.index];
    if (record === undefined) {
      violation('state-machine-safety', `${node.id} installed a snapshot at ${meta.index}, an index no node has applied`);
    }
    if (record.term !== meta.term || record.history !== node.sm.history) {
      violation('state-machine-safety', `${node.id} installed a snapshot at ${meta.index}@${meta.term} whose state differs from what ${record.node} applied`);
    }
  }

  readRequested(context: string): void {
    this.reads.set(context, this.maxCommitted);
  }

  readState(node: SimNode, read: ReadState): void {
    this.stats.readsChecked++;
    const floor = this.reads.get(read.context);
    if (floor === undefined) violation('read-linearizability', `${node.id} got a read state for ${read.context}, which nobody asked for`);
    if (read.index < floor) {
      violation('read-linearizability', `${node.id} got read index ${read.index} for ${read.context}, but ${floor} was already committed when it was asked`);
    }
    if (this.committed[read.index]?.term === undefined && read.index > 0) {
      violation('read-linearizability', `${node.id} got read index ${read.index} for ${read.context}, which no node reported committed`);
    }
  }

  // ---------------------------------------------------------------- whole-cluster checks

  /**
   * Log matching stated literally, on durable logs: for any two nodes, if
   * their logs hold the same (index, term), then they hold identical entries
   * at that index and at every index below it (down to the later of their
   * snapshots). O(nodes^2 * log), so it runs at the end of a scenario.
   */
  checkLogsPairwise(nodes: readonly SimNode[]): void {
    for (let x = 0; x < nodes.length; x++) {
      for (let y = x + 1; y < nodes.length; y++) {
        const a = nodes[x] as SimNode;
        const b = nodes[y] as SimNode;
        const low = Math.max(a.storage.snapshotIndex, b.storage.snapshotIndex) + 1;
        let top = Math.min(a.storage.lastIndex, b.storage.lastIndex);
        while (top >= low && a.storage.termAt(top) !== b.storage.termAt(top)) top--;
        for (let i = top; i >= low; i--) {
          const ea = a.storage.entryAt(i) as Entry;
          const eb = b.storage.entryAt(i) as Entry;
          if (ea.term !== eb.term || entryDigest(ea) !== entryDigest(eb)) {
            violation('log-matching', `${a.id} and ${b.id} agree on ${top}@${a.storage.termAt(top)} but differ at ${i}: ${describeEntry(ea)} vs ${describeEntry(eb)}`);
          }
        }
      }
    }
  }
}
