/**
 * The coordinode bridge: CoordiNode / openraft nodes as members of a rale
 * cluster, over CoordiNode's RaftService (docs/protocols/coordinode-raftservice.md).
 *
 *  - inbound: the five RaftService methods on the node's gRPC server. A call
 *    is decoded into rale messages, handed to the core with ctx.deliver, and
 *    answered when the core's reply to that member comes out through this
 *    bridge's connector (matched to the pending call), or refused after
 *    replyTimeoutMs.
 *  - outbound: members at `coordinode://host:port` are reached through the
 *    connector: Appends go over one StreamAppend stream per peer (pipelined),
 *    heartbeats over unary AppendEntries, votes over Vote, snapshots over
 *    Snapshot (Header + DataChunk frames), leadership transfer over
 *    TransferLeader. Answers become rale messages delivered to the core.
 *
 * Safety (docs/bridges/coordinode.md): in adv mode (openraft's default) one
 * term may have several openraft leaders, so a CoordiNode node's vote cannot
 * be counted and it cannot lead: the bridge never forwards vote requests to
 * it (answers "not granted" itself) and refuses its Vote / AppendEntries /
 * StreamAppend / Snapshot / TransferLeader calls as a leader. It replicates
 * rale's log and its acknowledgements count toward commit. In std mode
 * (one leader per term, one vote per term, as in rale) it is a full member.
 */
import * as grpc from '@grpc/grpc-js';
import { MessageType, type AppendResponseMessage, type ClusterConfig, type Message, type NodeId, type VoteResponseMessage } from '../../sidecar/src/core/types.ts';
import { RaleError } from '../../sidecar/src/errors.ts';
import type { Connection } from '../../sidecar/src/node/transport.ts';
import type { Bridge, BridgeContext, BridgeModule } from '../../sidecar/src/plugins/bridge-api.ts';
import { addressScheme } from '../../sidecar/src/plugins/sidecar-transport.ts';
import { checkRaftBatch } from '../../sidecar/src/transport/validate.ts';
import {
  CoordinodeDecodeError,
  createCoordinodeCodec,
  msgpackValuePayload,
  type AppendEntriesRequest,
  type AppendEntriesResponse,
  type CoordinodeCodec,
  type LogId,
  type Membership,
  type MsgpackValue,
  type SnapshotTransferHeader,
  type StreamAppendResult,
  type Vote,
} from './codec.ts';
import { decodeEmptyBody, decodePayloadBody, encodeBody, isZstdFrame } from './framing.ts';
import { EntryMapper, IdMap, NO_LEADER, toNumber } from './mapping.ts';
import { MAX_CHUNK_BYTES, parseOptions, type CoordinodeOptions, type PeerSettings } from './options.ts';
import { METHOD_PATHS, RAFT_SERVICE } from './service.ts';

export const SCHEME = 'coordinode';

/** A gRPC status error with a message that says what was wrong. */
class StatusError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

function statusOf(err: unknown): { code: grpc.status; details: string } {
  if (err instanceof StatusError) return { code: err.code, details: err.message };
  if (err instanceof CoordinodeDecodeError) return { code: grpc.status.INVALID_ARGUMENT, details: `undecodable RaftService payload: ${err.message}` };
  if (err instanceof RaleError && err.code === 'INVALID_ARGUMENT') return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  if (err instanceof RaleError && err.code === 'STOPPED') return { code: grpc.status.UNAVAILABLE, details: err.message };
  return { code: grpc.status.INTERNAL, details: (err as Error)?.message ?? String(err) };
}

interface Pending<T> {
  accepts(m: T): boolean;
  resolve(m: T | null): void;
}

function parseHostPort(address: string): string {
  const rest = address.slice(`${SCHEME}://`.length).replace(/\/+$/, '');
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/.test(rest)) {
    throw new RaleError('INVALID_ARGUMENT', `${JSON.stringify(address)} is not a CoordiNode address: write coordinode://host:port`);
  }
  return rest;
}

/** One outbound CoordiNode peer. */
class PeerLink {
  readonly client: grpc.Client;
  /** Outbound messages leave in the order the core produced them. */
  chain: Promise<void> = Promise.resolve();
  stream: grpc.ClientDuplexStream<Buffer, Buffer> | null = null;
  streamTerm = 0;
  /** The highest log id this peer is known to hold (from its answers), for heartbeats and transfers. */
  matched: LogId | null = null;
  matchedTerm = 0;
  closed = false;

  constructor(
    readonly peer: NodeId,
    readonly u64: bigint,
    readonly target: string,
    readonly settings: PeerSettings,
  ) {
    this.client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 8 * MAX_CHUNK_BYTES,
      'grpc.max_send_message_length': 8 * MAX_CHUNK_BYTES,
    });
  }

  close(): void {
    this.closed = true;
    this.stream?.cancel();
    this.stream = null;
    this.client.close();
  }
}

export class CoordinodeBridge implements Bridge {
  readonly options: CoordinodeOptions;
  private readonly ids: IdMap;
  private readonly codec: CoordinodeCodec<MsgpackValue>;
  private readonly mapper: EntryMapper;
  private readonly selfU64: bigint;
  private readonly links = new Map<NodeId, PeerLink>();
  private readonly pendingVotes = new Map<NodeId, Pending<VoteResponseMessage>[]>();
  private readonly pendingAppends = new Map<NodeId, Pending<AppendResponseMessage>[]>();
  /** Inbound append-like calls of one peer reach the core one at a time, so replies match calls. */
  private readonly inboundChains = new Map<NodeId, Promise<unknown>>();
  /** Leader of each term's entries (adv log ids), learned from entries seen and the log. */
  private readonly termLeaders = new Map<number, NodeId | null>();
  private readonly unsubscribe: Array<() => void> = [];
  private lastProblem: string | null = null;

  constructor(private readonly ctx: BridgeContext) {
    this.options = parseOptions(ctx.options, ctx.nodeId);
    this.ids = new IdMap(this.options.byU64, this.options.byRale);
    this.codec = createCoordinodeCodec({ leaderIdMode: this.options.leaderIdMode, payload: msgpackValuePayload });
    this.mapper = new EntryMapper(this.options.leaderIdMode, this.ids, this.codec);
    this.selfU64 = this.ids.u64(ctx.nodeId);
    ctx.addGrpcService(RAFT_SERVICE, this.implementation());
    ctx.registerPeerScheme(SCHEME, (peer, address) => this.connect(peer, address));
  }

  start(): void {
    this.unsubscribe.push(
      this.ctx.on('applied', (entry) => {
        const e = entry as { term?: number; leader?: NodeId };
        if (typeof e?.term === 'number' && e.leader !== undefined) this.termLeaders.set(e.term, e.leader);
      }),
    );
  }

  stop(): void {
    for (const off of this.unsubscribe.splice(0)) off();
    for (const link of this.links.values()) link.close();
    this.links.clear();
    for (const map of [this.pendingVotes, this.pendingAppends] as Array<Map<NodeId, Pending<never>[]>>) {
      for (const list of map.values()) for (const p of list.splice(0)) p.resolve(null);
    }
  }

  health(): { ok: boolean; detail: string } {
    const parts = [`${this.options.leaderIdMode} mode`, `${this.links.size} CoordiNode peer(s)`];
    if (this.options.leaderIdMode === 'adv') {
      try {
        const voters = this.ctx.status().members.filter((m) => m.role === 'voter' && addressScheme(m.address ?? undefined) === SCHEME);
        if (voters.length > 0) parts.push(`warning: ${voters.map((v) => v.id).join(', ')} are voters, but in adv mode a CoordiNode node never votes (it counts toward commit only); keep CoordiNode nodes learners or use leaderIdMode "std"`);
      } catch {
        // the node is restarting: nothing to say about members
      }
    }
    if (this.lastProblem !== null) parts.push(`last problem: ${this.lastProblem}`);
    return { ok: true, detail: parts.join('; ') };
  }

  // ================================================================ votes (ours, in openraft form)

  /**
   * This node's vote as openraft shows it. rale does not expose whom it voted
   * for, so the leader it follows stands in: [term, leader] committed once a
   * leader is known; in std mode [term, nil] before that.
   */
  private ourVote(): Vote {
    const s = this.ctx.status();
    const term = BigInt(s.term);
    if (s.leader !== null) {
      const leader = this.safeU64(s.leader);
      return { leaderId: { term, nodeId: leader ?? (this.options.leaderIdMode === 'adv' ? NO_LEADER : null) }, committed: true };
    }
    return { leaderId: { term, nodeId: this.options.leaderIdMode === 'adv' ? this.selfU64 : null }, committed: false };
  }

  private safeU64(id: NodeId): bigint | null {
    return this.options.byRale.get(id) ?? null;
  }

  // ================================================================ inbound

  private implementation(): grpc.UntypedServiceImplementation {
    const guard = (name: string) => {
      if (this.options.throwInHandler === name) throw new Error(`coordinode bridge: ${name} handler throws on purpose (option throwInHandler)`);
    };
    return {
      Vote: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        guard('Vote');
        this.unary(call.request, callback, (body, zstd) => this.onVote(body, zstd));
      },
      AppendEntries: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        guard('AppendEntries');
        this.unary(call.request, callback, (body, zstd) => this.onAppendEntries(body, zstd));
      },
      StreamAppend: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        guard('StreamAppend');
        this.onStreamAppend(call);
      },
      Snapshot: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        guard('Snapshot');
        this.onSnapshot(call, callback);
      },
      TransferLeader: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        guard('TransferLeader');
        this.unary(call.request, callback, (body, zstd) => this.onTransferLeader(body, zstd));
      },
    };
  }

  private unary(body: Buffer, callback: grpc.sendUnaryData<Buffer>, handle: (body: Uint8Array, zstd: boolean) => Promise<Buffer>): void {
    const zstd = isZstdFrame(body);
    handle(body, zstd).then(
      (reply) => callback(null, reply),
      (err: unknown) => callback(this.failure(err)),
    );
  }

  private failure(err: unknown): grpc.ServiceError {
    const { code, details } = statusOf(err);
    // A refusal we chose (StatusError) is the protocol's answer; anything else INTERNAL is a fault of the bridge.
    if (code === grpc.status.INTERNAL && !(err instanceof StatusError)) this.ctx.reportError(err, 'inbound RaftService call');
    else this.lastProblem = details;
    return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() }) as grpc.ServiceError;
  }

  private payload(body: Uint8Array): Uint8Array {
    return decodePayloadBody(body, this.options.maxSnapshotBytes);
  }

  /** The rale id of the CoordiNode node `u64`, which must be a member at a coordinode:// address. */
  private sender(u64: bigint | null, what: string): NodeId {
    if (u64 === null) throw new StatusError(grpc.status.INVALID_ARGUMENT, `${what} names no node (nil node id in the vote)`);
    const id = this.options.byU64.get(u64);
    if (id === undefined) {
      throw new StatusError(grpc.status.PERMISSION_DENIED, `node ${u64} is not in the coordinode bridge's nodeIds option on ${this.ctx.nodeId}; add it there (e.g. "${u64}": "cn${u64}") and join it to the cluster`);
    }
    const member = this.ctx.status().members.find((m) => m.id === id);
    if (member === undefined || addressScheme(member.address ?? undefined) !== SCHEME) {
      throw new StatusError(
        grpc.status.PERMISSION_DENIED,
        `node ${u64} (${id}) is not a member of this rale cluster at a coordinode:// address; join it first (POST /api/v1/cluster/join {"node_id": "${id}", "address": "coordinode://host:port"})`,
      );
    }
    return id;
  }

  private refuseAdvLeader(what: string): never {
    throw new StatusError(
      grpc.status.FAILED_PRECONDITION,
      `${what} refused: in openraft adv mode a term can have two leaders, so CoordiNode nodes replicate rale's log but cannot lead it; set leaderIdMode "std" on every node (and on the CoordiNode side) to let them lead`,
    );
  }

  private async deliver(from: NodeId, messages: Message[]): Promise<void> {
    await this.ctx.deliver(from, checkRaftBatch(messages));
  }

  private waitFor<T>(map: Map<NodeId, Pending<T>[]>, peer: NodeId, accepts: (m: T) => boolean): { promise: Promise<T | null>; cancel: () => void } {
    let list = map.get(peer);
    if (list === undefined) map.set(peer, (list = []));
    let settle!: (m: T | null) => void;
    const promise = new Promise<T | null>((resolve) => (settle = resolve));
    const timer = setTimeout(() => pending.resolve(null), this.options.replyTimeoutMs);
    const pending: Pending<T> = {
      accepts,
      resolve: (m) => {
        clearTimeout(timer);
        const at = (list as Pending<T>[]).indexOf(pending);
        if (at >= 0) (list as Pending<T>[]).splice(at, 1);
        settle(m);
      },
    };
    list.push(pending);
    return { promise, cancel: () => pending.resolve(null) };
  }

  /**
   * Hands `messages` to the core and waits for its AppendResponse to `from` (null: none in time).
   *
   * Which reply answers this call: one of the call's own term (an
   * acknowledgement at or after prevIndex, or a rejection of prevIndex), or a
   * term notice (rejection at index 0) naming a higher term. A reply of
   * another term is a late answer to an earlier call that timed out: taking
   * it would, for instance, answer "success" to a new leader's entries on the
   * strength of an acknowledgement of an older leader's entries at the same
   * indexes, before the core has even persisted (or accepted) the new ones.
   */
  private appendRoundTrip(from: NodeId, messages: Message[], prevIndex: number, term: number): Promise<AppendResponseMessage | null> {
    const previous = this.inboundChains.get(from) ?? Promise.resolve();
    const run = previous.then(async () => {
      const wait = this.waitFor(this.pendingAppends, from, (m) =>
        m.reject && m.index === 0 && m.hintIndex === 0 && m.hintTerm === 0 ? m.term > term : m.term === term && (m.reject ? m.index === prevIndex : m.index >= prevIndex),
      );
      try {
        await this.deliver(from, messages);
      } catch (err) {
        wait.cancel();
        throw err;
      }
      return wait.promise;
    });
    this.inboundChains.set(
      from,
      run.catch(() => undefined),
    );
    return run;
  }

  private noAnswer(what: string): StatusError {
    return new StatusError(grpc.status.UNAVAILABLE, `${what}: no answer from ${this.ctx.nodeId}'s Raft core within ${this.options.replyTimeoutMs} ms (it may be restarting or busy); retry`);
  }

  private async onVote(body: Uint8Array, zstd: boolean): Promise<Buffer> {
    const request = this.codec.decodeVoteRequest(this.payload(body));
    const from = this.sender(request.vote.leaderId.nodeId, 'VoteRequest');
    const term = toNumber(request.vote.leaderId.term, 'vote.leaderId.term');
    const refuse = () => encodeBody(this.codec.encodeVoteResponse({ vote: this.ourVote(), voteGranted: false, lastLogId: null }), zstd);
    // adv: a CoordiNode voter may grant two candidates of one term; its candidacy cannot be allowed (see the safety notes).
    if (this.options.leaderIdMode === 'adv') return refuse();
    const last = request.lastLogId;
    const vote: Message = {
      type: MessageType.Vote,
      from,
      to: this.ctx.nodeId,
      term,
      preVote: false,
      lastIndex: last === null ? 0 : toNumber(last.index, 'lastLogId.index'),
      lastTerm: last === null ? 0 : toNumber(last.leaderId.term, 'lastLogId.leaderId.term'),
      transfer: request.leadershipTransfer,
    };
    // The core's answer to THIS request: a grant names the request's term; a refusal names the
    // core's term, at least the request's. A late grant of an earlier request (a lower term) that
    // timed out must never answer this one: the core has not granted this term, and may grant it to
    // another candidate (two leaders in one term).
    const wait = this.waitFor(this.pendingVotes, from, (m) => !m.preVote && (m.granted ? m.term === term : m.term >= term));
    try {
      await this.deliver(from, [vote]);
    } catch (err) {
      wait.cancel();
      throw err;
    }
    const reply = await wait.promise;
    // No answer: the core ignored the request (it follows a live leader): not granted.
    if (reply === null || !reply.granted) return refuse();
    return encodeBody(this.codec.encodeVoteResponse({ vote: { leaderId: request.vote.leaderId, committed: false }, voteGranted: true, lastLogId: null }), zstd);
  }

  /** An openraft AppendEntriesRequest as a rale Append (std mode). */
  private toAppend(from: NodeId, request: AppendEntriesRequest<MsgpackValue>): Message {
    const term = toNumber(request.vote.leaderId.term, 'vote.leaderId.term');
    const prev = request.prevLogId;
    const entries = request.entries.map((e) => this.mapper.fromWire(e));
    return {
      type: MessageType.Append,
      from,
      to: this.ctx.nodeId,
      term,
      prevIndex: prev === null ? 0 : toNumber(prev.index, 'prevLogId.index'),
      prevTerm: prev === null ? 0 : toNumber(prev.leaderId.term, 'prevLogId.leaderId.term'),
      entries,
      commit: request.leaderCommit === null ? 0 : toNumber(request.leaderCommit.index, 'leaderCommit.index'),
    };
  }

  /** The log id of index `i` among those a request names (prev and its entries). */
  private logIdInRequest(request: AppendEntriesRequest<MsgpackValue>, index: number): LogId | null {
    if (index === 0) return null;
    for (const e of request.entries) if (e.logId.index === BigInt(index)) return e.logId;
    return request.prevLogId;
  }

  private async appendExchange(request: AppendEntriesRequest<MsgpackValue>, what: string): Promise<{ reply: AppendResponseMessage; append: Message & { type: MessageType.Append } }> {
    if (this.options.leaderIdMode === 'adv') this.refuseAdvLeader(what);
    const from = this.sender(request.vote.leaderId.nodeId, what);
    const append = this.toAppend(from, request) as Message & { type: MessageType.Append };
    const reply = await this.appendRoundTrip(from, [append], append.prevIndex, append.term);
    if (reply === null) throw this.noAnswer(what);
    return { reply, append };
  }

  private async onAppendEntries(body: Uint8Array, zstd: boolean): Promise<Buffer> {
    const request = this.codec.decodeAppendEntriesRequest(this.payload(body));
    const { reply, append } = await this.appendExchange(request, 'AppendEntries');
    let response: AppendEntriesResponse;
    if (reply.reject) response = reply.index === 0 && reply.term > append.term ? { type: 'higherVote', vote: this.ourVote() } : { type: 'conflict' };
    else {
      const last = append.prevIndex + append.entries.length;
      response = reply.index >= last ? { type: 'success' } : { type: 'partialSuccess', matching: this.logIdInRequest(request, reply.index) };
    }
    return encodeBody(this.codec.encodeAppendEntriesResponse(response), zstd);
  }

  private onStreamAppend(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    let chain: Promise<void> = Promise.resolve();
    let ended = false;
    const finish = (err?: unknown) => {
      if (ended) return;
      ended = true;
      if (err === undefined) call.end();
      else call.emit('error', this.failure(err)); // grpc-js ends the stream with this status
    };
    call.on('error', () => (ended = true));
    call.on('data', (body: Buffer) => {
      chain = chain.then(async () => {
        if (ended) return;
        const zstd = isZstdFrame(body);
        let request: AppendEntriesRequest<MsgpackValue>;
        try {
          request = this.codec.decodeAppendEntriesRequest(this.payload(body));
        } catch (err) {
          // As CoordiNode: a frame that cannot be decoded is dropped, the stream goes on.
          this.lastProblem = `StreamAppend dropped an undecodable frame: ${(err as Error).message}`;
          return;
        }
        try {
          const { reply, append } = await this.appendExchange(request, 'StreamAppend');
          let result: StreamAppendResult;
          if (reply.reject) {
            result =
              reply.index === 0 && reply.term > append.term
                ? { ok: false, error: { type: 'higherVote', vote: this.ourVote() } }
                : { ok: false, error: { type: 'conflict', logId: request.prevLogId ?? { leaderId: { term: 0n, nodeId: null }, index: 0n } } };
          } else {
            const last = append.prevIndex + append.entries.length;
            result = { ok: true, matching: this.logIdInRequest(request, Math.min(reply.index, last)) };
          }
          if (ended) return;
          call.write(encodeBody(this.codec.encodeStreamAppendResult(result), zstd));
          if (!result.ok) finish(); // the stream ends after an Err
        } catch (err) {
          finish(err);
        }
      });
    });
    call.on('end', () => void chain.then(() => finish()));
  }

  private onSnapshot(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    let header: SnapshotTransferHeader | null = null;
    let zstd = false;
    const chunks: Uint8Array[] = [];
    let received = 0;
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      callback(this.failure(err));
    };
    call.on('error', () => (failed = true));
    call.on('data', (body: Buffer) => {
      if (failed) return;
      try {
        const frame = this.codec.decodeSnapshotChunkMessage(this.payload(body));
        if (frame.type === 'header') {
          if (header !== null) throw new StatusError(grpc.status.INVALID_ARGUMENT, 'a second Header frame in one Snapshot stream');
          zstd = isZstdFrame(body);
          if (this.options.leaderIdMode === 'adv') this.refuseAdvLeader('Snapshot');
          this.sender(frame.header.vote.leaderId.nodeId, 'Snapshot');
          if (frame.header.dataSize > BigInt(this.options.maxSnapshotBytes)) {
            throw new StatusError(grpc.status.RESOURCE_EXHAUSTED, `snapshot of ${frame.header.dataSize} bytes is larger than maxSnapshotBytes (${this.options.maxSnapshotBytes}); raise that option`);
          }
          if (frame.header.sinceTs !== null) throw new StatusError(grpc.status.INVALID_ARGUMENT, 'incremental snapshots (since_ts set) cannot be installed into rale; send a full snapshot');
          header = frame.header;
          return;
        }
        if (header === null) throw new StatusError(grpc.status.INVALID_ARGUMENT, 'a DataChunk frame before the Header frame');
        if (frame.data.length > MAX_CHUNK_BYTES) throw new StatusError(grpc.status.INVALID_ARGUMENT, `a DataChunk of ${frame.data.length} bytes (at most ${MAX_CHUNK_BYTES})`);
        received += frame.data.length;
        if (BigInt(received) > header.dataSize) throw new StatusError(grpc.status.DATA_LOSS, `snapshot data exceeds the header's data_size ${header.dataSize}`);
        chunks.push(frame.data);
      } catch (err) {
        fail(err);
      }
    });
    call.on('end', () => {
      if (failed) return;
      this.installSnapshot(header, chunks, received, zstd).then(
        (reply) => callback(null, reply),
        (err: unknown) => fail(err),
      );
    });
  }

  private async installSnapshot(header: SnapshotTransferHeader | null, chunks: Uint8Array[], received: number, zstd: boolean): Promise<Buffer> {
    if (header === null) throw new StatusError(grpc.status.INVALID_ARGUMENT, 'the Snapshot stream had no Header frame');
    if (BigInt(received) !== header.dataSize) throw new StatusError(grpc.status.DATA_LOSS, `snapshot data is ${received} bytes, the header announced ${header.dataSize}`);
    const from = this.sender(header.vote.leaderId.nodeId, 'Snapshot');
    const last = header.meta.lastLogId;
    if (last === null) throw new StatusError(grpc.status.INVALID_ARGUMENT, 'a snapshot without last_log_id covers nothing');
    const data = new Uint8Array(received);
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.length;
    }
    const index = toNumber(last.index, 'meta.lastLogId.index');
    const message: Message = {
      type: MessageType.Snapshot,
      from,
      to: this.ctx.nodeId,
      term: toNumber(header.vote.leaderId.term, 'vote.leaderId.term'),
      snapshot: { meta: { index, term: toNumber(last.leaderId.term, 'meta.lastLogId.leaderId.term'), config: this.configOf(header.meta.lastMembership.membership) }, data },
    };
    const reply = await this.appendRoundTrip(from, [message], index, message.term);
    if (reply === null) throw this.noAnswer('Snapshot');
    return encodeBody(this.codec.encodeSnapshotResponse({ vote: this.ourVote() }), zstd);
  }

  /** openraft Membership -> rale config; joint configurations have no rale form. */
  private configOf(membership: Membership): ClusterConfig {
    if (membership.configs.length !== 1) {
      throw new StatusError(grpc.status.INVALID_ARGUMENT, `the snapshot's membership is a joint configuration (${membership.configs.length} sets); rale changes one voter at a time and installs only a single configuration`);
    }
    const voters = (membership.configs[0] as bigint[]).map((id) => this.ids.rale(id));
    const learners = [...membership.nodes.keys()].map((id) => this.ids.rale(id)).filter((id) => !voters.includes(id));
    return { voters, learners };
  }

  private async onTransferLeader(body: Uint8Array, zstd: boolean): Promise<Buffer> {
    const request = this.codec.decodeTransferLeaderRequest(this.payload(body));
    const refuse = (why: string) => new StatusError(grpc.status.INTERNAL, `TransferLeader refused by ${this.ctx.nodeId}: ${why}`);
    if (this.options.leaderIdMode === 'adv') throw refuse('in adv mode CoordiNode nodes cannot lead rale (see the bridge documentation)');
    const from = this.sender(request.fromLeader.leaderId.nodeId, 'TransferLeader');
    const s = this.ctx.status();
    const term = toNumber(request.fromLeader.leaderId.term, 'fromLeader.leaderId.term');
    if (s.leader !== from || s.term !== term) throw refuse(`${from} is not the leader of term ${term} here (this node follows ${s.leader ?? 'no leader'} in term ${s.term})`);
    if (request.toNodeId === this.selfU64) {
      if (!s.members.some((m) => m.id === this.ctx.nodeId && m.role === 'voter')) throw refuse('this node is a learner and cannot take leadership');
      await this.deliver(from, [{ type: MessageType.TimeoutNow, from, to: this.ctx.nodeId, term }]);
    }
    return encodeBody(null, zstd);
  }

  // ================================================================ outbound

  private connect(peer: NodeId, address: string): Connection {
    const target = parseHostPort(address);
    const u64 = this.ids.u64(peer);
    const link = new PeerLink(peer, u64, target, this.options.peers.get(u64) ?? this.options.defaults);
    this.links.get(peer)?.close();
    this.links.set(peer, link);
    return {
      invoke: async (type, args) => {
        if (type !== 'raft') throw new RaleError('NOT_LEADER', `${peer} is a CoordiNode node: it serves no rale '${type}' calls (proposals and reads go to a rale node)`);
        const waits: Promise<void>[] = [];
        for (const m of args as Message[]) {
          if (this.answerInbound(peer, m)) continue;
          const sent = link.chain.then(() => this.send(link, m));
          link.chain = sent.catch((err: unknown) => this.outboundFailed(link, err));
          if (m.type === MessageType.Snapshot) waits.push(sent); // the driver waits for a snapshot to land
        }
        await Promise.all(waits);
        return null;
      },
      close: async () => {
        link.close();
        if (this.links.get(peer) === link) this.links.delete(peer);
      },
    };
  }

  private outboundFailed(link: PeerLink, err: unknown): void {
    if (link.closed) return;
    const message = (err as Error)?.message ?? String(err);
    this.lastProblem = `to ${link.peer} at ${link.target}: ${message}`;
    if (!(err instanceof StatusError) && !(err instanceof RaleError) && (err as { code?: unknown })?.code === undefined) this.ctx.reportError(err, `sending to ${link.peer}`);
  }

  /** Replies of the core to inbound calls: true when `m` answered one. */
  private answerInbound(peer: NodeId, m: Message): boolean {
    if (m.type === MessageType.VoteResponse) {
      this.settle(this.pendingVotes, peer, m);
      return true;
    }
    if (m.type === MessageType.AppendResponse) {
      this.settle(this.pendingAppends, peer, m);
      return true;
    }
    return m.type === MessageType.HeartbeatResponse || m.type === MessageType.ReadIndexResponse;
  }

  private settle<T>(map: Map<NodeId, Pending<T>[]>, peer: NodeId, m: T): void {
    const list = map.get(peer);
    const pending = list?.find((p) => p.accepts(m));
    pending?.resolve(m); // a reply nobody waits for (timed out) is dropped
  }

  private local(messages: Message[]): void {
    this.ctx.deliver(messages[0]?.from ?? '', messages).catch((err: unknown) => (this.lastProblem = (err as Error).message));
  }

  private leaderVote(term: number): Vote {
    return { leaderId: { term: BigInt(term), nodeId: this.selfU64 }, committed: true };
  }

  /** Leader of `term`'s entries, for adv log ids: the cache, else the log at `index`. */
  private async leaderAt(index: number, term: number): Promise<NodeId | null> {
    if (this.options.leaderIdMode === 'std' || index === 0) return null;
    const known = this.termLeaders.get(term);
    if (known !== undefined) return known;
    const rows = (await this.ctx.logEntries?.(index, 1)) ?? [];
    const row = rows[0];
    if (row !== undefined && row.index === index && row.term === term) {
      if (row.leader !== null) this.termLeaders.set(term, row.leader);
      return row.leader;
    }
    return null; // compacted away: the bootstrap-style "no leader" id
  }

  private async logIdAt(index: number, term: number): Promise<LogId | null> {
    return this.mapper.logId(index, term, await this.leaderAt(index, term));
  }

  /** Log id of `index` when only the index is known (a commit index below an Append's prev). */
  private async logIdOfIndex(index: number): Promise<LogId | null> {
    if (index === 0) return null;
    const row = ((await this.ctx.logEntries?.(index, 1)) ?? [])[0];
    if (row === undefined || row.index !== index) return null;
    return this.mapper.logId(index, row.term, row.leader);
  }

  private async send(link: PeerLink, m: Message): Promise<void> {
    if (link.closed) return;
    const adv = this.options.leaderIdMode === 'adv';
    switch (m.type) {
      case MessageType.Vote: {
        if (adv || m.preVote) {
          // adv: a CoordiNode node's vote is never counted (two votes per term are possible there).
          // std pre-vote: openraft has no pre-vote; answering "yes" changes nothing (the real vote decides).
          this.local([{ type: MessageType.VoteResponse, from: link.peer, to: this.ctx.nodeId, term: m.term, preVote: m.preVote, granted: !adv }]);
          return;
        }
        const request = this.codec.encodeVoteRequest(
          {
            vote: { leaderId: { term: BigInt(m.term), nodeId: this.selfU64 }, committed: false },
            lastLogId: await this.logIdAt(m.lastIndex, m.lastTerm),
            // alpha.20 peers have no such field; without it they may refuse while they follow a live leader.
            leadershipTransfer: link.settings.voteRequestFields === 3 && m.transfer,
          },
          { layout: link.settings.voteRequestFields === 3 ? 'with-leadership-transfer' : 'without-leadership-transfer' },
        );
        const response = this.codec.decodeVoteResponse(await this.call(link, METHOD_PATHS.Vote, request));
        const theirTerm = toNumber(response.vote.leaderId.term, 'vote.leaderId.term');
        const granted = response.voteGranted && theirTerm === m.term;
        this.local([{ type: MessageType.VoteResponse, from: link.peer, to: this.ctx.nodeId, term: granted ? m.term : Math.max(m.term, theirTerm), preVote: false, granted }]);
        return;
      }
      case MessageType.Append:
        return this.sendAppend(link, m);
      case MessageType.Heartbeat: {
        const prev = link.matchedTerm === m.term ? link.matched : null;
        let commit: LogId | null = null;
        if (prev !== null) commit = BigInt(m.commit) >= prev.index ? prev : await this.logIdOfIndex(m.commit);
        const request = this.codec.encodeAppendEntriesRequest({ vote: this.leaderVote(m.term), prevLogId: prev, entries: [], leaderCommit: commit });
        const response = this.codec.decodeAppendEntriesResponse(await this.call(link, METHOD_PATHS.AppendEntries, request));
        if (response.type === 'higherVote') return this.termNotice(link, response.vote, m.term);
        if (response.type === 'conflict') link.matched = null;
        this.local([{ type: MessageType.HeartbeatResponse, from: link.peer, to: this.ctx.nodeId, term: m.term, context: m.context }]);
        return;
      }
      case MessageType.Snapshot:
        return this.sendSnapshot(link, m);
      case MessageType.TimeoutNow: {
        if (adv) return; // never a voter that could take over (see health())
        const request = this.codec.encodeTransferLeaderRequest({ fromLeader: this.leaderVote(m.term), toNodeId: link.u64, lastLogId: link.matched });
        decodeEmptyBody(await this.callRaw(link, METHOD_PATHS.TransferLeader, encodeBody(request, link.settings.zstd)), this.options.maxSnapshotBytes);
        return;
      }
      case MessageType.ReadIndex:
        // openraft has no ReadIndex call: the read cannot be served through a CoordiNode leader.
        this.local([{ type: MessageType.ReadIndexResponse, from: link.peer, to: this.ctx.nodeId, term: m.term, context: m.context, index: 0 }]);
        return;
      default:
        return;
    }
  }

  private termNotice(link: PeerLink, vote: Vote, ourTerm: number): void {
    const term = toNumber(vote.leaderId.term, 'vote.leaderId.term');
    if (term <= ourTerm) return; // adv: same term, other node: nothing rale can act on
    this.local([{ type: MessageType.AppendResponse, from: link.peer, to: this.ctx.nodeId, term, reject: true, index: 0, hintIndex: 0, hintTerm: 0 }]);
  }

  private async sendAppend(link: PeerLink, m: Message & { type: MessageType.Append }): Promise<void> {
    for (const e of m.entries) if (e.leader !== undefined) this.termLeaders.set(e.term, e.leader);
    const prevLogId = await this.logIdAt(m.prevIndex, m.prevTerm);
    const entries = [];
    for (const e of m.entries) {
      // Entries from rale's core name their leader; one that does not (from an older store) is looked up.
      const leader = e.leader !== undefined || this.options.leaderIdMode === 'std' ? e.leader : await this.leaderAt(e.index, e.term);
      entries.push(this.mapper.toWire(leader === e.leader || leader === null ? e : { ...e, leader }));
    }
    const last = m.prevIndex + m.entries.length;
    // Never tell a follower a commit index beyond what this very request makes it hold.
    const commitIndex = Math.min(m.commit, last);
    let leaderCommit: LogId | null;
    if (commitIndex > m.prevIndex) leaderCommit = (entries[commitIndex - m.prevIndex - 1] as { logId: LogId }).logId;
    else if (commitIndex === m.prevIndex) leaderCommit = prevLogId;
    else leaderCommit = await this.logIdOfIndex(commitIndex);
    const body = encodeBody(this.codec.encodeAppendEntriesRequest({ vote: this.leaderVote(m.term), prevLogId, entries, leaderCommit }), link.settings.zstd);
    const stream = this.appendStream(link, m.term);
    stream.write(body);
  }

  private appendStream(link: PeerLink, term: number): grpc.ClientDuplexStream<Buffer, Buffer> {
    if (link.stream !== null && link.streamTerm === term) return link.stream;
    link.stream?.cancel();
    const stream = link.client.makeBidiStreamRequest(METHOD_PATHS.StreamAppend, (b: Buffer) => b, (b: Buffer) => b);
    link.stream = stream;
    link.streamTerm = term;
    const drop = () => {
      if (link.stream === stream) link.stream = null;
    };
    stream.on('data', (body: Buffer) => {
      try {
        const result = this.codec.decodeStreamAppendResult(this.payload(body));
        if (!result.ok) {
          // openraft ends the stream after an Err, and frames written after it
          // are lost without a word (grpc-js may not report the end for a
          // while, seen under load: the follower's probe then stalled for
          // good). Drop it before the core answers, so that the next Append
          // opens a fresh stream.
          drop();
          stream.cancel();
        }
        this.onStreamResult(link, term, result);
      } catch (err) {
        this.outboundFailed(link, err);
        drop();
        stream.cancel();
      }
    });
    stream.on('error', (err: Error) => {
      drop();
      if ((err as grpc.ServiceError).code !== grpc.status.CANCELLED) this.outboundFailed(link, err);
    });
    stream.on('end', drop);
    return stream;
  }

  private onStreamResult(link: PeerLink, term: number, result: StreamAppendResult): void {
    if (result.ok) {
      // Pipelining: one Ok may answer several requests; it names the highest log id matched so far.
      const index = result.matching === null ? 0 : toNumber(result.matching.index, 'matching.index');
      if (link.matched === null || link.matchedTerm !== term || (result.matching !== null && result.matching.index >= link.matched.index)) {
        link.matched = result.matching;
        link.matchedTerm = term;
      }
      this.local([{ type: MessageType.AppendResponse, from: link.peer, to: this.ctx.nodeId, term, reject: false, index, hintIndex: 0, hintTerm: 0 }]);
      return;
    }
    if (result.error.type === 'higherVote') {
      this.termNotice(link, result.error.vote, term);
      return;
    }
    const at = toNumber(result.error.logId.index, 'conflict.index');
    // The follower lacks `at`; it holds what it last acknowledged, so probing can jump there.
    const known = link.matched !== null && link.matchedTerm === term && link.matched.index < BigInt(at) ? Number(link.matched.index) : Math.max(0, at - 1);
    this.local([{ type: MessageType.AppendResponse, from: link.peer, to: this.ctx.nodeId, term, reject: true, index: at, hintIndex: known, hintTerm: 0 }]);
  }

  private async sendSnapshot(link: PeerLink, m: Message & { type: MessageType.Snapshot }): Promise<void> {
    const meta = m.snapshot.meta;
    const lastLogId = await this.logIdAt(meta.index, meta.term);
    const members = this.ctx.status().members;
    const addr = (id: NodeId) => {
      const address = members.find((x) => x.id === id)?.address ?? '';
      return `http://${address.replace(/^[a-z][a-z0-9+.-]*:\/\//, '')}`;
    };
    const nodes = new Map<bigint, { addr: string }>();
    for (const id of [...meta.config.voters, ...meta.config.learners].sort()) nodes.set(this.ids.u64(id), { addr: addr(id) });
    const sortedNodes = new Map([...nodes.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
    const membership: Membership = { configs: [meta.config.voters.map((id) => this.ids.u64(id)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))], nodes: sortedNodes };
    const data = m.snapshot.data;
    const frames: Buffer[] = [
      encodeBody(
        this.codec.encodeSnapshotChunkMessage({
          type: 'header',
          header: {
            vote: this.leaderVote(m.term),
            // The membership's own log id is not known here; the snapshot's last log id bounds it.
            meta: { lastLogId, lastMembership: { logId: lastLogId, membership }, snapshotId: `rale-${meta.term}-${meta.index}` },
            dataSize: BigInt(data.length),
            sinceTs: null,
          },
        }),
        link.settings.zstd,
      ),
    ];
    for (let at = 0; at < data.length; at += this.options.snapshotChunkBytes) {
      frames.push(encodeBody(this.codec.encodeSnapshotChunkMessage({ type: 'dataChunk', data: data.subarray(at, at + this.options.snapshotChunkBytes) }), link.settings.zstd));
    }
    const body = await new Promise<Buffer>((resolve, reject) => {
      const call = link.client.makeClientStreamRequest(
        METHOD_PATHS.Snapshot,
        (b: Buffer) => b,
        (b: Buffer) => b,
        new grpc.Metadata(),
        { deadline: Date.now() + this.options.rpcTimeoutMs + Math.ceil(data.length / 65536) * 10 },
        (err, reply) => (err ? reject(err) : resolve(reply as Buffer)),
      );
      for (const f of frames) call.write(f);
      call.end();
    });
    const response = this.codec.decodeSnapshotResponse(this.payload(body));
    const theirTerm = toNumber(response.vote.leaderId.term, 'vote.leaderId.term');
    if (theirTerm > m.term) return this.termNotice(link, response.vote, m.term);
    this.local([{ type: MessageType.AppendResponse, from: link.peer, to: this.ctx.nodeId, term: m.term, reject: false, index: meta.index, hintIndex: 0, hintTerm: 0 }]);
  }

  private async call(link: PeerLink, path: string, msgpack: Uint8Array): Promise<Uint8Array> {
    return this.payload(await this.callRaw(link, path, encodeBody(msgpack, link.settings.zstd)));
  }

  private callRaw(link: PeerLink, path: string, body: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      link.client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, body, new grpc.Metadata(), { deadline: Date.now() + this.options.rpcTimeoutMs }, (err, reply) =>
        err ? reject(err) : resolve(reply as Buffer),
      );
    });
  }
}

export const bridge: BridgeModule = {
  apiVersion: 1,
  name: 'coordinode',
  create: (ctx) => new CoordinodeBridge(ctx),
};

export default bridge;
