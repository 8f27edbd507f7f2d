/**
 * rale's leader acting as a clusterconsensus master toward one participant.
 *
 * The participant is a learner of rale's membership (address
 * `clusterc://host:port`); the RaftNode sends it the core's messages through
 * this connection like to any member. The link turns them into
 * clusterconsensus calls and answers the core as a learner would:
 *
 * - Append: its entries are held here; those at or below the leader's commit
 *   index are sent to the participant as accepts (committed entries only: a
 *   participant applies a staged change when the next accept arrives and can
 *   never take it back, so nothing uncommitted may reach it). The core is
 *   answered with an AppendResp acknowledging what the link holds, so the
 *   leader streams on and shows the participant's progress.
 * - Heartbeat: answered at once; its commit index releases held entries.
 * - Snapshot (the participant needs entries the leader compacted): the link
 *   resynchronises the participant from the kv state, see below.
 * - Vote, TimeoutNow, ReadIndex: never answered. A participant grants no vote
 *   and counts toward no quorum (it is a learner; promotion is refused).
 *
 * Sessions. The first leader message of a term, and any failed call, starts
 * a new session: prepare(instance) with instance in the leader's term's
 * range (term * INSTANCES_PER_TERM, then one above what was used or what the
 * participant holds, never beyond the range: see INSTANCES_PER_TERM), a pure accept(instance, 0) to
 * take the participant out of its pending-master state (the reference's start
 * refuses that state, and the first accept of a new instance resets the
 * sequence to 0 anyway), then start(instance, 0, snapshot) with the leader's
 * kv state at an applied index S. From then on each batch of committed
 * entries is accept(instance, sequence + 1, changes), and when nothing else
 * is waiting a pure accept(instance, sequence + 1, []) makes the participant
 * apply it. Membership entries about other participants become addmember /
 * rmmember (each takes a sequence number of its own).
 *
 * All calls to one participant run one at a time, in order (a queue).
 */
import { RaleError } from '../../sidecar/src/errors.ts';
import { decodeConfigChange } from '../../sidecar/src/core/config.ts';
import { EntryKind, MessageType, type Entry, type Message, type NodeId } from '../../sidecar/src/core/types.ts';
import type { Connection } from '../../sidecar/src/node/transport.ts';
import type { BridgeContext } from '../../sidecar/src/plugins/bridge-api.ts';
import { ConsensusCallError, ParticipantClient } from './client.ts';
import { encodeStateSnapshot, entryToChange, participantUrl, PARTICIPANT_SCHEME } from './changes.ts';

export interface MasterSettings {
  clusterId: string;
  /** This node's URL as participants reach its /_clusterc endpoints (the Master address). */
  advertiseUrl: string;
  requestTimeoutMs: number;
  /** Least time between two resynchronisation attempts of one participant. */
  retryMs: number;
  /** Most entries held for a participant before the link stops acknowledging more. */
  maxHeldEntries: number;
  /** Most changes in one accept. */
  maxBatchChanges: number;
}

/** What the link needs of the bridge context (a subset, so tests can fake it). */
export type MasterContext = Pick<BridgeContext, 'nodeId' | 'status' | 'deliver' | 'log' | 'reportError' | 'kvSnapshot'>;

interface Session {
  instance: number;
  sequence: number;
  /** Last rale index whose change the participant holds (applied, or staged and about to be). */
  delivered: number;
  /** Whether the last call staged something the participant has not applied yet. */
  staged: boolean;
  /** The participants (besides the master) the participant was told about, by rale node id. */
  members: Map<NodeId, string>;
}

/** Messages queued beyond this are dropped (the core resends). */
const MAX_QUEUED = 1_000;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/**
 * Instances are partitioned by rale term: the leader of term T masters with
 * instances in [T * INSTANCES_PER_TERM, (T + 1) * INSTANCES_PER_TERM - 1] and
 * never above. A deposed leader (term T, not yet aware) therefore can never
 * reach the instances of the leader of term T + 1, which the participant
 * refuses it from then on (start and accept refuse an older instance). Were
 * the bump unbounded (instance + 1 after a failed call, or "what the
 * participant holds + 1" after a denied prepare), a stale master could take
 * the new leader's instance; and since prepare answers its own instance both
 * to grant (when it was lower) and to deny (when equal), the stale master
 * would read a grant and start the participant from its older state.
 */
export const INSTANCES_PER_TERM = 2 ** 20;

/** The instances the leader of `term` may use. */
export function instanceRange(term: number): { lo: number; hi: number } {
  const lo = term * INSTANCES_PER_TERM;
  const hi = lo + INSTANCES_PER_TERM - 1;
  if (!Number.isSafeInteger(hi) || hi >= MAX_SAFE) throw new RaleError('INVALID_ARGUMENT', `term ${term} is too large for clusterconsensus instances (term * ${INSTANCES_PER_TERM} must stay below 2^53)`);
  return { lo, hi };
}

export class ParticipantLink implements Connection {
  readonly url: string;
  private readonly client: ParticipantClient;
  private queue: Promise<void> = Promise.resolve();
  private queued = 0;
  /** Bumped when this node stops leading: queued work of the old reign is dropped. */
  private generation = 0;
  /** Term of the leader messages being followed (this node's term as leader). */
  private term = 0;
  private session: Session | null = null;
  /** Entries after session.delivered, contiguous, acknowledged to the core, not yet sent. */
  private held: Entry[] = [];
  /** The highest commit index the leader told us. */
  private commit = 0;
  /** Floor for the next session's snapshot: the participant already held up to here. */
  private floor = 0;
  private nextAttempt = 0;
  private removed = false;
  private closed = false;
  lastError: string | null = null;

  constructor(
    private readonly ctx: MasterContext,
    private readonly settings: MasterSettings,
    readonly peer: NodeId,
    address: string,
    /**
     * Highest instance used per participant, shared by the bridge's links so
     * that a link made again in the same term (the transport reconnects) goes
     * higher: start refuses an older instance/sequence, and prepare's answer
     * to an instance equal to the participant's own reads as a grant.
     */
    private readonly instances: Map<NodeId, number> = new Map(),
  ) {
    this.url = participantUrl(address);
    this.client = new ParticipantClient(this.url, settings.clusterId, settings.requestTimeoutMs);
  }

  invoke(type: string, args: unknown): Promise<unknown> {
    if (type !== 'raft') {
      return Promise.reject(new RaleError('NOT_LEADER', `${this.peer} is a clusterconsensus participant: it serves no rale ${type} calls`));
    }
    if (this.closed || this.queued >= MAX_QUEUED) return Promise.resolve();
    const messages = args as Message[];
    this.enqueue((generation) => this.handle(messages, generation));
    return Promise.resolve();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.reset();
  }

  /** This node stopped leading: forget the session (the next leader resynchronises the participant). */
  reset(): void {
    this.generation++;
    this.session = null;
    this.held = [];
    this.commit = 0;
    this.term = 0;
    this.floor = 0;
    this.nextAttempt = 0;
  }

  /** The participant's removal committed: tell it (rmmember of itself, then a commit), so it stops participating. */
  notifyRemoved(): void {
    this.enqueue(async (generation) => {
      const s = this.session;
      if (s === null || this.removed || generation !== this.generation) return;
      try {
        await this.client.removeMember({ Instance: s.instance, Sequence: s.sequence + 1, Mem: { Addr: this.url } });
        s.sequence++;
        await this.client.accept({ Instance: s.instance, Sequence: s.sequence + 1, Changes: [] });
        s.sequence++;
      } catch (err) {
        this.ctx.log('warn', `could not tell participant ${this.peer} (${this.url}) of its removal: ${(err as Error).message}`);
      }
      this.removed = true;
      this.session = null;
    });
  }

  /** For health: where this participant is. */
  describe(): string {
    const s = this.session;
    if (this.removed) return `${this.peer} (${this.url}): removed`;
    if (s !== null) return `${this.peer} (${this.url}): at index ${s.delivered}, instance ${s.instance}, sequence ${s.sequence}`;
    return `${this.peer} (${this.url}): not synchronised${this.lastError !== null ? ` (${this.lastError})` : ''}`;
  }

  get healthy(): boolean {
    return this.session !== null || this.term === 0 || this.removed;
  }

  private enqueue(work: (generation: number) => Promise<void>): void {
    this.queued++;
    const generation = this.generation;
    this.queue = this.queue
      .then(() => work(generation))
      .catch((err: unknown) => this.ctx.reportError(err, `participant ${this.peer}`))
      .finally(() => {
        this.queued--;
      });
  }

  private reply(message: Message): void {
    this.ctx.deliver(this.peer, [message]).catch(() => {
      // The node is stopping or restarting: the core resends what matters.
    });
  }

  private lastReceived(): number {
    const last = this.held[this.held.length - 1];
    return last !== undefined ? last.index : (this.session?.delivered ?? 0);
  }

  private async handle(messages: Message[], generation: number): Promise<void> {
    for (const m of messages) {
      if (generation !== this.generation || this.removed) return;
      if (m.type !== MessageType.Append && m.type !== MessageType.Heartbeat && m.type !== MessageType.Snapshot) continue; // votes etc.: a participant takes no part
      if (m.term < this.term) continue;
      if (m.term > this.term) {
        // A new reign of this node: the participant's state is unknown to it.
        this.term = m.term;
        this.session = null;
        this.held = [];
        this.commit = 0;
        this.floor = 0;
        this.nextAttempt = 0;
      }
      const base = { from: this.peer, to: m.from, term: m.term };
      switch (m.type) {
        case MessageType.Heartbeat:
          this.commit = Math.max(this.commit, m.commit);
          this.reply({ ...base, type: MessageType.HeartbeatResponse, context: m.context });
          await this.ensureSession(generation, 0);
          break;
        case MessageType.Append: {
          if (!(await this.ensureSession(generation, 0))) break; // no answer: the core asks again after the next heartbeat
          const received = this.lastReceived();
          if (m.prevIndex > received) {
            // A gap: ask the leader to go back to what we hold.
            this.reply({ ...base, type: MessageType.AppendResponse, reject: true, index: m.prevIndex, hintIndex: received, hintTerm: 0 });
            break;
          }
          let last = received;
          for (const e of m.entries) {
            if (e.index <= last) continue; // held or delivered already (same leader, same entries)
            if (e.index !== last + 1 || this.held.length >= this.settings.maxHeldEntries) break;
            this.held.push(e);
            last = e.index;
          }
          this.commit = Math.max(this.commit, m.commit);
          this.reply({ ...base, type: MessageType.AppendResponse, reject: false, index: last, hintIndex: 0, hintTerm: 0 });
          break;
        }
        case MessageType.Snapshot: {
          // The entries we need are compacted away on the leader: start again from its state, at least that recent.
          this.session = null;
          this.held = [];
          this.nextAttempt = 0;
          if (!(await this.ensureSession(generation, m.snapshot.meta.index))) break;
          const s = this.session as Session | null;
          if (s !== null) this.reply({ ...base, type: MessageType.AppendResponse, reject: false, index: s.delivered, hintIndex: 0, hintTerm: 0 });
          break;
        }
      }
      await this.flush(generation);
    }
  }

  /** A session with the participant, starting one if none (at most once per retryMs). */
  private async ensureSession(generation: number, minIndex: number): Promise<boolean> {
    if (this.session !== null) return true;
    if (Date.now() < this.nextAttempt) return false;
    if (this.ctx.status().role !== 'leader') return false;
    try {
      await this.resync(generation, Math.max(minIndex, this.floor));
      this.lastError = null;
      return this.session !== null;
    } catch (err) {
      this.fail(err, 'start');
      return false;
    }
  }

  private fail(err: unknown, what: string): void {
    this.lastError = `${what} failed: ${(err as Error).message}`;
    this.nextAttempt = Date.now() + this.settings.retryMs;
    if (this.session !== null) this.floor = Math.max(this.floor, this.session.delivered);
    this.session = null;
    if (!(err instanceof ConsensusCallError) && !(err instanceof RaleError)) this.ctx.reportError(err, `participant ${this.peer}`);
    else this.ctx.log('warn', `participant ${this.peer} (${this.url}): ${this.lastError}`);
  }

  private async resync(generation: number, need: number): Promise<void> {
    const snapshotOf = this.ctx.kvSnapshot;
    if (snapshotOf === undefined) throw new RaleError('INVALID_ARGUMENT', 'this rale host offers no kv snapshots to bridges: upgrade the sidecar');
    // 1. prepare: become the participant's master for an instance above anything it holds,
    //    within this term's range (see INSTANCES_PER_TERM): never one a later leader may use.
    const { lo, hi } = instanceRange(this.term);
    const used = this.instances.get(this.peer) ?? 0;
    let instance = used >= lo ? used + 1 : lo;
    let unjoined = false;
    for (let attempt = 0; ; attempt++) {
      if (instance > hi) throw new ConsensusCallError('prepare', { Code: 'ERR_DENIED', Err: `no instance of term ${this.term} is left for this participant` });
      this.instances.set(this.peer, Math.max(this.instances.get(this.peer) ?? 0, instance));
      const answer = await this.client.prepare(instance, this.settings.advertiseUrl);
      if (answer.Err.Code === 'ERR_STATE') {
        unjoined = true; // never started (or removed): start tells
        break;
      }
      if (answer.Accepted === instance) break;
      if (answer.Accepted < instance) throw new ConsensusCallError('prepare', { Code: answer.Err.Code || 'ERR_DENIED', Err: `answered instance ${answer.Accepted} to prepare(${instance}) ${answer.Err.Err}`.trim() });
      if (answer.Accepted >= hi) {
        // A newer master (a later rale leader, whose term this node has not heard of yet): never overtake it.
        throw new ConsensusCallError('prepare', {
          Code: 'ERR_DENIED',
          Err: `the participant holds instance ${answer.Accepted}, beyond term ${this.term}'s instances (up to ${hi}): a newer master drives it; this node's leadership is stale`,
        });
      }
      if (attempt >= 3) throw new ConsensusCallError('prepare', { Code: 'ERR_DENIED', Err: `the participant holds instance ${answer.Accepted}, above ours (${instance})` });
      instance = answer.Accepted + 1;
    }
    if (generation !== this.generation) return;
    // 2. The first accept of the instance: leaves the pending-master state (and resets the sequence, the reference's quirk).
    if (!unjoined) await this.client.accept({ Instance: instance, Sequence: 0, Changes: [] });
    // 3. The state, at least as recent as what the participant held before.
    const snapshot = await this.snapshotAtLeast(snapshotOf, need);
    if (generation !== this.generation) return;
    const members = new Map<NodeId, string>();
    for (const m of this.ctx.status().members) {
      if (m.address === null || !m.address.startsWith(`${PARTICIPANT_SCHEME}://`)) continue;
      try {
        members.set(m.id, m.id === this.peer ? this.url : participantUrl(m.address));
      } catch {
        // an unusable address: that member's own link reports it
      }
    }
    members.set(this.peer, this.url);
    await this.client.start({
      Instance: instance,
      Sequence: 0,
      Cluster: this.settings.clusterId,
      Self: { Addr: this.url },
      Master: { Addr: this.settings.advertiseUrl },
      Participants: [{ Addr: this.settings.advertiseUrl }, ...[...members.values()].map((Addr) => ({ Addr }))],
      Snapshot: encodeStateSnapshot(snapshot),
    });
    if (generation !== this.generation) return;
    members.delete(this.peer);
    this.session = { instance, sequence: 0, delivered: snapshot.index, staged: false, members };
    this.held = this.held.filter((e) => e.index > snapshot.index);
    if (this.held.length > 0 && (this.held[0] as Entry).index !== snapshot.index + 1) this.held = []; // not contiguous: the core resends
    this.ctx.log('info', `participant ${this.peer} (${this.url}) started at index ${snapshot.index}, instance ${instance}`);
  }

  private async snapshotAtLeast(snapshotOf: NonNullable<MasterContext['kvSnapshot']>, need: number) {
    const deadline = Date.now() + this.settings.requestTimeoutMs;
    for (;;) {
      if (this.ctx.status().appliedIndex >= need) {
        const snapshot = await snapshotOf();
        if (snapshot.index >= need) return snapshot;
      }
      if (Date.now() >= deadline) throw new RaleError('TIMEOUT', `this node did not apply index ${need} within ${this.settings.requestTimeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Sends the committed held entries, then a pure commit so that the participant applies them. */
  private async flush(generation: number): Promise<void> {
    try {
      for (;;) {
        const s = this.session;
        if (s === null || generation !== this.generation) return;
        const first = this.held[0];
        if (first === undefined || first.index > this.commit) break;
        const changes: Uint8Array[] = [];
        let taken = 0;
        let membership: { op: 'add' | 'remove'; id: NodeId; url: string } | null = null;
        for (const e of this.held) {
          if (e.index > this.commit || changes.length >= this.settings.maxBatchChanges) break;
          if (e.kind === EntryKind.Config) {
            const op = this.membershipOp(e, s);
            if (op !== null) {
              if (changes.length === 0) {
                membership = op;
                taken++;
              }
              break; // a membership call takes a sequence number of its own
            }
          } else {
            const change = entryToChange(e);
            if (change !== null) changes.push(change);
          }
          taken++;
        }
        const lastIndex = (this.held[taken - 1] as Entry).index;
        if (membership !== null) {
          const request = { Instance: s.instance, Sequence: s.sequence + 1, Mem: { Addr: membership.url } };
          if (membership.op === 'add') await this.client.addMember(request);
          else await this.client.removeMember(request);
          s.sequence++;
          s.staged = true;
          if (membership.op === 'add') s.members.set(membership.id, membership.url);
          else s.members.delete(membership.id);
        } else if (changes.length > 0) {
          await this.client.accept({ Instance: s.instance, Sequence: s.sequence + 1, Changes: changes });
          s.sequence++;
          s.staged = true;
        }
        if (generation !== this.generation) return;
        s.delivered = lastIndex;
        this.held.splice(0, taken);
      }
      const s = this.session;
      if (s !== null && s.staged && generation === this.generation) {
        await this.client.accept({ Instance: s.instance, Sequence: s.sequence + 1, Changes: [] });
        s.sequence++;
        s.staged = false;
      }
    } catch (err) {
      this.fail(err, 'replication');
    }
  }

  /** The addmember / rmmember a membership entry means for this participant, or null (nothing to tell it). */
  private membershipOp(e: Entry, s: Session): { op: 'add' | 'remove'; id: NodeId; url: string } | null {
    let change;
    try {
      change = decodeConfigChange(e.data);
    } catch {
      return null;
    }
    if ((change.type === 'addLearner' || change.type === 'addVoter') && change.node !== this.peer && change.context?.startsWith(`${PARTICIPANT_SCHEME}://`)) {
      if (s.members.has(change.node)) return null;
      try {
        return { op: 'add', id: change.node, url: participantUrl(change.context) };
      } catch {
        return null;
      }
    }
    if (change.type === 'remove' && change.node !== this.peer) {
      const url = s.members.get(change.node);
      return url === undefined ? null : { op: 'remove', id: change.node, url };
    }
    return null;
  }
}
