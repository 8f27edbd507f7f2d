/**
 * The connection to one Phalanx member (`phalanx://host:port`): turns the
 * core's outbound messages into Phalanx Consensus RPCs and the answers into
 * rale messages, handed back with `deliver`.
 *
 * A Phalanx member is a learner (see docs/bridges/phalanx.md for why): it
 * receives Append and Heartbeat only. Rules that keep it safe:
 *  - an accepted AppendEntries acknowledges prevIndex + len(entries), what the
 *    request proved matched, never Phalanx's LastLogIndex (which counts a
 *    possibly stale tail beyond it);
 *  - its LeaderCommit is at most prevIndex + len(entries) too: a follower
 *    that commits min(LeaderCommit, its last index) (the common Go rule)
 *    would otherwise commit a stale suffix of an older term that lies beyond
 *    the entries this request matched;
 *  - a Heartbeat becomes an AppendEntries without entries whose prev is the
 *    last (index, term) this node saw the member accept IN THE SAME TERM (the
 *    leader's log is append-only within its term, so that entry is still in
 *    it), and whose LeaderCommit is at most that index; without such a point
 *    prev is (0, 0), and Phalanx then advances no commit index at all;
 *  - a member that is a voter in the configuration is not spoken to, and
 *    nothing it could say reaches the core: it counts as down.
 * Messages are sent one at a time, in order (a bounded queue, oldest dropped
 * when full: the core resends what is not acknowledged).
 */
import { RaleError } from '../../sidecar/src/errors.ts';
import {
  MessageType,
  type AppendMessage,
  type HeartbeatMessage,
  type Message,
  type NodeId,
} from '../../sidecar/src/core/types.ts';
import type { Connection } from '../../sidecar/src/node/transport.ts';
import {
  decodeAppendEntriesResponse,
  encodeAppendEntriesRequest,
  type AppendEntriesRequest,
  type AppendEntriesResponse,
} from './codec.ts';
import { toPhalanxEntry } from './entries.ts';
import { GrpcJsonClient } from './grpc-json-client.ts';

export const APPEND_ENTRIES_PATH = '/phalanx.Consensus/AppendEntries';
export const REQUEST_VOTE_PATH = '/phalanx.Consensus/RequestVote';

export interface PeerHost {
  readonly localId: NodeId;
  deliver(from: NodeId, messages: Message[]): Promise<void>;
  /** The member's role in this node's current configuration. */
  roleOf(peer: NodeId): 'voter' | 'learner' | null;
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>): void;
  /** Counts a bug-like failure of the bridge (not a network failure). */
  reportError(err: unknown, where: string): void;
  /** Counts one RPC sent (Phalanx's messages_sent_total). */
  sent(): void;
}

export type PeerProblem = 'voter' | 'log-lost' | 'needs-snapshot';

export interface PeerState {
  peer: NodeId;
  address: string;
  /** The last (index, term) the member accepted, and the leader term it accepted it in. */
  matched: { index: number; term: number; leaderTerm: number } | null;
  problem: PeerProblem | null;
  problemDetail: string | null;
  /** The last failed RPC (network, deadline, bad answer), or null after a success. */
  lastRpcError: string | null;
  rpcs: number;
  dropped: number;
}

/** host:port of a `phalanx://host:port` address; throws a message saying what is wrong. */
export function phalanxAuthority(address: string): string {
  const match = /^phalanx:\/\/((?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5})\/?$/.exec(address);
  if (match === null) throw new Error(`the member address ${JSON.stringify(address)} is not phalanx://host:port (the Phalanx node's gRPC address)`);
  return match[1] as string;
}

export class PhalanxPeer implements Connection {
  readonly state: PeerState;
  private readonly client: GrpcJsonClient;
  private readonly queue: Message[] = [];
  private pumping = false;
  private closed = false;

  constructor(
    peer: NodeId,
    address: string,
    private readonly host: PeerHost,
    private readonly options: { rpcTimeoutMs: number; maxQueuedMessages: number },
  ) {
    this.client = new GrpcJsonClient(phalanxAuthority(address));
    this.state = { peer, address, matched: null, problem: null, problemDetail: null, lastRpcError: null, rpcs: 0, dropped: 0 };
  }

  invoke(type: string, args: unknown): Promise<unknown> {
    if (type !== 'raft') {
      // 'propose', 'read', 'submit': rale-to-rale forwarding to a leader; a Phalanx member never leads.
      return Promise.reject(new RaleError('NOT_LEADER', `member ${this.state.peer} is a Phalanx node (a learner): it never leads and takes no ${type} calls`));
    }
    if (!Array.isArray(args)) return Promise.reject(new RaleError('INVALID_ARGUMENT', `raft messages for ${this.state.peer} must be an array`));
    if (this.closed) return Promise.resolve();
    for (const m of args as Message[]) {
      this.queue.push(m);
      if (this.queue.length > this.options.maxQueuedMessages) {
        this.queue.shift();
        this.state.dropped++;
      }
    }
    if (!this.pumping) void this.pump();
    return Promise.resolve();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    this.client.close();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (!this.closed) {
        const m = this.queue.shift();
        if (m === undefined) break;
        try {
          await this.handle(m);
        } catch (err) {
          if (this.closed) break;
          this.state.lastRpcError = (err as Error)?.message ?? String(err);
          this.host.log('debug', `phalanx member ${this.state.peer}: ${this.state.lastRpcError}`);
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  private setProblem(problem: PeerProblem, detail: string): void {
    if (this.state.problem === problem && this.state.problemDetail === detail) return;
    this.state.problem = problem;
    this.state.problemDetail = detail;
    this.host.log('error', detail, { member: this.state.peer });
  }

  private clearProblem(...which: PeerProblem[]): void {
    if (this.state.problem !== null && which.includes(this.state.problem)) {
      this.host.log('info', `phalanx member ${this.state.peer}: ${this.state.problem} resolved`);
      this.state.problem = null;
      this.state.problemDetail = null;
    }
  }

  private async handle(m: Message): Promise<void> {
    if (this.host.roleOf(this.state.peer) === 'voter') {
      this.setProblem(
        'voter',
        `phalanx member ${this.state.peer} is a voter, but a Phalanx node must stay a learner (it keeps its log in memory only, so its acknowledgements and votes do not survive a restart); ` +
          `the bridge does not speak to it, so it counts as down. Remove it (DELETE /api/v1/cluster/nodes/${this.state.peer}) and add it again as a learner (POST /phalanx/members)`,
      );
      return;
    }
    this.clearProblem('voter');
    switch (m.type) {
      case MessageType.Append:
        await this.append(m);
        return;
      case MessageType.Heartbeat:
        await this.heartbeat(m);
        return;
      case MessageType.Snapshot:
        this.setProblem(
          'needs-snapshot',
          `phalanx member ${this.state.peer} needs entries up to ${m.snapshot.meta.index} that the leader has compacted into a snapshot, and Phalanx has no snapshot RPC; ` +
            'it cannot catch up: start the Phalanx node empty and add it again while the leader still holds the whole log (raise raft.snapshotEvery)',
        );
        return;
      default:
        // Vote, TimeoutNow, ReadIndex: the core sends them to voters and leaders only.
        this.host.log('debug', `phalanx member ${this.state.peer}: no Phalanx RPC for a ${m.type} message; dropped`);
    }
  }

  private async call(request: AppendEntriesRequest): Promise<AppendEntriesResponse> {
    this.host.sent();
    this.state.rpcs++;
    const answer = await this.client.unary(APPEND_ENTRIES_PATH, new TextEncoder().encode(encodeAppendEntriesRequest(request)), this.options.rpcTimeoutMs);
    const response = decodeAppendEntriesResponse(answer);
    this.state.lastRpcError = null;
    return response;
  }

  /** The answer names a higher term: tell the core, as any Raft peer's higher term does (it steps down). */
  private async termNotice(to: NodeId, term: number): Promise<void> {
    await this.host.deliver(this.state.peer, [
      { type: MessageType.AppendResponse, from: this.state.peer, to, term, reject: true, index: 0, hintIndex: 0, hintTerm: 0 },
    ]);
  }

  private async append(m: AppendMessage): Promise<void> {
    const entries = m.entries.map(toPhalanxEntry);
    const response = await this.call({
      Term: m.term,
      LeaderID: m.from,
      PrevLogIndex: m.prevIndex,
      PrevLogTerm: m.prevTerm,
      Entries: entries.length === 0 ? null : entries,
      // Never beyond what this very request proves the member holds: Phalanx-style followers
      // commit min(LeaderCommit, their LAST index), which may lie in a stale suffix after it.
      LeaderCommit: Math.min(m.commit, m.prevIndex + m.entries.length),
    });
    if (response.Term > m.term) {
      await this.termNotice(m.from, response.Term);
      return;
    }
    if (response.Success) {
      const last = m.entries.at(-1);
      const index = last?.index ?? m.prevIndex;
      const term = last?.term ?? m.prevTerm;
      const matched = this.state.matched;
      if (matched === null || matched.leaderTerm !== m.term || index >= matched.index) this.state.matched = { index, term, leaderTerm: m.term };
      this.clearProblem('log-lost', 'needs-snapshot');
      await this.host.deliver(this.state.peer, [
        { type: MessageType.AppendResponse, from: this.state.peer, to: m.from, term: m.term, reject: false, index, hintIndex: 0, hintTerm: 0 },
      ]);
      return;
    }
    this.noteLogLoss(m.term, response.LastLogIndex);
    // Phalanx's hint: the leader should retry at LastLogIndex + 1.
    await this.host.deliver(this.state.peer, [
      { type: MessageType.AppendResponse, from: this.state.peer, to: m.from, term: m.term, reject: true, index: m.prevIndex, hintIndex: Math.min(response.LastLogIndex, m.prevIndex - 1), hintTerm: 0 },
    ]);
  }

  private async heartbeat(m: HeartbeatMessage): Promise<void> {
    const matched = this.state.matched !== null && this.state.matched.leaderTerm === m.term ? this.state.matched : null;
    const prevIndex = matched?.index ?? 0;
    const response = await this.call({
      Term: m.term,
      LeaderID: m.from,
      PrevLogIndex: prevIndex,
      PrevLogTerm: matched?.term ?? 0,
      Entries: null,
      // Phalanx commits min(LeaderCommit, PrevLogIndex): never beyond the matched point.
      LeaderCommit: Math.min(m.commit, prevIndex),
    });
    if (response.Term > m.term) {
      await this.termNotice(m.from, response.Term);
      return;
    }
    if (!response.Success) this.noteLogLoss(m.term, response.LastLogIndex);
    // Same term: the member recognises this leader (a rejection is about the log, not leadership).
    await this.host.deliver(this.state.peer, [{ type: MessageType.HeartbeatResponse, from: this.state.peer, to: m.from, term: m.term, context: m.context }]);
  }

  /** A member whose log is now shorter than what it accepted in this term has restarted (Phalanx's log is not durable). */
  private noteLogLoss(term: number, lastLogIndex: number): void {
    const matched = this.state.matched;
    if (matched === null || matched.leaderTerm !== term || lastLogIndex >= matched.index) return;
    this.state.matched = null;
    this.setProblem(
      'log-lost',
      `phalanx member ${this.state.peer} had entries up to ${matched.index} and now reports ${lastLogIndex}: it restarted and lost its log (Phalanx keeps it in memory only); ` +
        `the leader will not resend what it already counted, so remove it (DELETE /api/v1/cluster/nodes/${this.state.peer}) and add it again (POST /phalanx/members)`,
    );
  }
}
