/**
 * A small CoordiNode-like node for the bridge tests, written with the codec:
 * a RaftService server with openraft's follower rules (vote comparison, log
 * id matching, truncation on conflict) over an in-memory log, and client
 * calls so that the test can make it campaign and lead.
 */
import * as grpc from '@grpc/grpc-js';
import {
  createCoordinodeCodec,
  decodeRaftPayload,
  encodeRaftPayload,
  msgpackValuePayload,
  type CoordinodeCodec,
  type Entry,
  type LeaderIdMode,
  type LogId,
  type MsgpackValue,
  type SnapshotTransferHeader,
  type Vote,
  type VoteRequest,
} from '../../bridges/coordinode/codec.ts';
import { RAFT_SERVICE, METHOD_PATHS } from '../../bridges/coordinode/service.ts';

export type WireEntry = Entry<MsgpackValue>;

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** LogId order: (term, node) then index; null is the smallest. */
export function compareLogId(a: LogId | null, b: LogId | null): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1;
  return cmpBig(a.leaderId.term, b.leaderId.term) || cmpBig(a.leaderId.nodeId ?? 0n, b.leaderId.nodeId ?? 0n) || cmpBig(a.index, b.index);
}

function sameLogId(a: LogId | null, b: LogId | null): boolean {
  return compareLogId(a, b) === 0 && (a?.leaderId.nodeId ?? null) === (b?.leaderId.nodeId ?? null);
}

export interface FakeOptions {
  id: bigint;
  mode: LeaderIdMode;
  /** Answer only every n-th StreamAppend frame (pipelining: fewer results than requests). Default 1. */
  resultEvery?: number;
  /**
   * With resultEvery: also answer frames still unanswered after this many ms,
   * as a real node does (it coalesces, never holds a result back for good).
   * Unset: hold them until the n-th frame (exact counts for unit tests).
   */
  flushAfterMs?: number;
  /**
   * After an Err, keep the StreamAppend stream open and ignore its later
   * frames instead of ending it: the end of the stream has not reached the
   * leader yet (seen with grpc-js under load).
   */
  lingerAfterErr?: boolean;
}

export class FakeCoordinode {
  readonly codec: CoordinodeCodec<MsgpackValue>;
  readonly server = new grpc.Server();
  port = 0;
  vote: Vote;
  log: WireEntry[] = [];
  committed: LogId | null = null;
  readonly votesGranted: VoteRequest[] = [];
  readonly snapshots: Array<{ header: SnapshotTransferHeader; data: Uint8Array }> = [];
  readonly transfers: bigint[] = [];
  streamFrames = 0;
  streamResults = 0;

  constructor(readonly options: FakeOptions) {
    this.codec = createCoordinodeCodec({ leaderIdMode: options.mode, payload: msgpackValuePayload });
    this.vote = { leaderId: { term: 0n, nodeId: options.mode === 'adv' ? 0n : null }, committed: false };
    this.server.addService(RAFT_SERVICE, {
      Vote: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => this.unary(call.request, cb, (p) => this.onVote(p)),
      AppendEntries: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        this.unary(call.request, cb, (p) => {
          const r = this.append(this.codec.decodeAppendEntriesRequest(p));
          return this.codec.encodeAppendEntriesResponse(r.ok ? { type: 'success' } : r.higher ? { type: 'higherVote', vote: this.vote } : { type: 'conflict' });
        }),
      StreamAppend: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        let pending = 0;
        let flushTimer: NodeJS.Timeout | null = null;
        let failed = false;
        call.on('data', (body: Buffer) => {
          if (failed) return;
          this.streamFrames++;
          const r = this.append(this.codec.decodeAppendEntriesRequest(decodeRaftPayload(body)));
          if (!r.ok) {
            const error = r.higher ? { type: 'higherVote' as const, vote: this.vote } : { type: 'conflict' as const, logId: r.conflict as LogId };
            call.write(Buffer.from(encodeRaftPayload(this.codec.encodeStreamAppendResult({ ok: false, error }))));
            failed = true;
            if (this.options.lingerAfterErr !== true) call.end();
            return;
          }
          pending++;
          const flush = () => {
            if (flushTimer !== null) clearTimeout(flushTimer);
            flushTimer = null;
            if (pending === 0) return;
            pending = 0;
            this.streamResults++;
            call.write(Buffer.from(encodeRaftPayload(this.codec.encodeStreamAppendResult({ ok: true, matching: this.lastLogId() }))));
          };
          if (pending >= (this.options.resultEvery ?? 1)) flush();
          else if (this.options.flushAfterMs !== undefined) flushTimer ??= setTimeout(flush, this.options.flushAfterMs);
        });
        call.on('end', () => {
          if (flushTimer !== null) clearTimeout(flushTimer);
          call.end();
        });
        call.on('error', () => {});
      },
      Snapshot: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        let header: SnapshotTransferHeader | null = null;
        const parts: Uint8Array[] = [];
        call.on('data', (body: Buffer) => {
          const frame = this.codec.decodeSnapshotChunkMessage(decodeRaftPayload(body));
          if (frame.type === 'header') header = frame.header;
          else parts.push(frame.data);
        });
        call.on('end', () => {
          const data = Buffer.concat(parts);
          if (header === null || BigInt(data.length) !== header.dataSize) return cb({ code: grpc.status.DATA_LOSS, details: 'size mismatch' });
          this.snapshots.push({ header, data });
          this.log = [];
          this.committed = header.meta.lastLogId;
          this.snapshotLast = header.meta.lastLogId;
          cb(null, Buffer.from(encodeRaftPayload(this.codec.encodeSnapshotResponse({ vote: this.vote }))));
        });
      },
      TransferLeader: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        this.unary(call.request, cb, (p) => {
          this.transfers.push(this.codec.decodeTransferLeaderRequest(p).toNodeId);
          return null;
        }),
    });
  }

  snapshotLast: LogId | null = null;

  async listen(): Promise<number> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    return this.port;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    this.server.forceShutdown();
  }

  private unary(body: Buffer, cb: grpc.sendUnaryData<Buffer>, handle: (payload: Uint8Array) => Uint8Array | null): void {
    try {
      const out = handle(decodeRaftPayload(body));
      cb(null, Buffer.from(out === null ? new Uint8Array(0) : encodeRaftPayload(out)));
    } catch (err) {
      cb({ code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message });
    }
  }

  lastLogId(): LogId | null {
    return this.log.at(-1)?.logId ?? this.snapshotLast;
  }

  /** Vote order as openraft: by term, then (adv) node id or (std) equal only when voted_for matches; committed last. */
  private voteGreaterOrEqual(a: Vote, b: Vote): boolean {
    const t = cmpBig(a.leaderId.term, b.leaderId.term);
    if (t !== 0) return t > 0;
    if (this.options.mode === 'adv') {
      const n = cmpBig(a.leaderId.nodeId ?? 0n, b.leaderId.nodeId ?? 0n);
      if (n !== 0) return n > 0;
    } else if (b.leaderId.nodeId !== null && a.leaderId.nodeId !== b.leaderId.nodeId) return false;
    return a.committed || !b.committed;
  }

  private onVote(payload: Uint8Array): Uint8Array {
    const req = this.codec.decodeVoteRequest(payload);
    const upToDate = compareLogId(req.lastLogId, this.lastLogId()) >= 0;
    const granted = upToDate && this.voteGreaterOrEqual(req.vote, this.vote);
    if (granted) {
      this.vote = req.vote;
      this.votesGranted.push(req);
    }
    return this.codec.encodeVoteResponse({ vote: this.vote, voteGranted: granted, lastLogId: this.lastLogId() });
  }

  private indexOf(logId: LogId): number {
    return this.log.findIndex((e) => sameLogId(e.logId, logId));
  }

  private append(req: { vote: Vote; prevLogId: LogId | null; entries: WireEntry[]; leaderCommit: LogId | null }): { ok: boolean; higher?: boolean; conflict?: LogId | null } {
    if (!this.voteGreaterOrEqual(req.vote, this.vote)) return { ok: false, higher: true };
    this.vote = req.vote;
    let base: number; // position in this.log after which entries go
    if (req.prevLogId === null || sameLogId(req.prevLogId, this.snapshotLast)) base = 0;
    else {
      const at = this.indexOf(req.prevLogId);
      if (at < 0) return { ok: false, conflict: req.prevLogId };
      base = at + 1;
    }
    for (const [k, e] of req.entries.entries()) {
      const existing = this.log[base + k];
      if (existing !== undefined && sameLogId(existing.logId, e.logId)) continue;
      this.log.length = base + k;
      this.log.push(e);
    }
    const lastInRequest = req.entries.at(-1)?.logId ?? req.prevLogId;
    if (req.leaderCommit !== null) {
      const upTo = compareLogId(req.leaderCommit, lastInRequest) <= 0 ? req.leaderCommit : lastInRequest;
      if (compareLogId(upTo, this.committed) > 0) this.committed = upTo;
    }
    return { ok: true };
  }

  // ------------------------------------------------------------ acting as candidate / leader

  client(port: number): grpc.Client {
    return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }

  static unaryCall(client: grpc.Client, path: string, body: Uint8Array): Promise<{ error: grpc.ServiceError | null; body: Uint8Array | null }> {
    return new Promise((resolve) => {
      client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(body), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (error, reply) =>
        resolve({ error: error ?? null, body: reply === undefined ? null : new Uint8Array(reply) }),
      );
    });
  }

  /** Asks `port` for a vote at `term`; true when granted. */
  async requestVote(client: grpc.Client, term: bigint, transfer: boolean): Promise<{ granted: boolean; vote: Vote }> {
    const vote: Vote = { leaderId: { term, nodeId: this.options.id }, committed: false };
    const body = encodeRaftPayload(this.codec.encodeVoteRequest({ vote, lastLogId: this.lastLogId(), leadershipTransfer: transfer }));
    const { error, body: reply } = await FakeCoordinode.unaryCall(client, METHOD_PATHS.Vote, body);
    if (error !== null) throw error;
    const r = this.codec.decodeVoteResponse(decodeRaftPayload(reply as Uint8Array));
    return { granted: r.voteGranted, vote: r.vote };
  }

  /** Sends AppendEntries as leader of `term` (std mode): entries after our log's current end. */
  async appendTo(client: grpc.Client, term: bigint, entries: WireEntry[], prevLogId: LogId | null, leaderCommit: LogId | null) {
    const body = encodeRaftPayload(this.codec.encodeAppendEntriesRequest({ vote: { leaderId: { term, nodeId: this.options.id }, committed: true }, prevLogId, entries, leaderCommit }));
    const { error, body: reply } = await FakeCoordinode.unaryCall(client, METHOD_PATHS.AppendEntries, body);
    if (error !== null) throw error;
    return this.codec.decodeAppendEntriesResponse(decodeRaftPayload(reply as Uint8Array));
  }
}
