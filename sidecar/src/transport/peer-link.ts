/**
 * The client side of one peer: a Connection whose `invoke` picks the path
 * by call type and size.
 *
 *  - 'raft' batches up to `chunkBytes` are pipelined over one long-lived
 *    bidirectional stream (RaftStream). The peer acknowledges them
 *    cumulatively once its handler has taken them; `invoke` resolves then.
 *  - anything larger (a snapshot) goes over a client-streaming ChunkedCall
 *    in `chunkBytes` pieces and resolves with the peer's answer.
 *  - every other type is a unary Call with a deadline.
 *
 * Link states: idle (never used) -> connecting (stream opened, waiting for
 * the peer's response headers, which it sends once it has authenticated
 * us) -> up. Any failure -> down until a backoff delay passes; while down,
 * `invoke` fails at once (the driver then reports the peer unreachable) and
 * the first call after the delay reopens the stream. Reconnection is lazy:
 * a peer nobody talks to any more is not retried forever.
 *
 * Send queue: batches wait in a bounded queue until the stream is up and
 * the window of unacknowledged batches has room. When the queue is full the
 * OLDEST batch is dropped (its `invoke` rejects): Raft retransmits, and
 * newer messages (higher commit index, newer term) are worth more than
 * older ones.
 */
import * as grpc from '@grpc/grpc-js';
import { RaleError } from '../errors.ts';
import type { NodeId } from '../core/types.ts';
import type { Connection } from '../node/transport.ts';
import { Backoff } from './backoff.ts';
import {
  BROKEN_FRAME,
  GrpcPeerError,
  METHOD,
  MD,
  PEER_SERVICE,
  PROTOCOL_VERSION,
  errorFromBody,
  errorFromTrailer,
  isPlainObject,
  makeUnpacker,
  pack,
  packMap,
  packedBin,
  Packed,
  type InFrame,
  type OutFrame,
} from './wire.ts';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFn = (level: LogLevel, message: string, fields?: Record<string, unknown>) => void;

export interface PeerLinkOptions {
  localId: NodeId;
  peer: NodeId;
  address: string;
  credentials: grpc.ChannelCredentials;
  channelOptions: grpc.ChannelOptions;
  clusterSecret: string | undefined;
  /** This node's cluster id at the time a stream or call starts (null: none yet, none sent). */
  clusterId: () => string | null;
  maxMessageBytes: number;
  /** Largest payload sent in chunks (snapshots). */
  maxChunkedBytes: number;
  chunkBytes: number;
  timeoutMs: number;
  /** A peer that does not accept the stream, or acknowledge outstanding batches, for this long is down. */
  livenessTimeoutMs: number;
  backoff: { initialMs: number; maxMs: number };
  queue: { maxBatches: number; maxBytes: number; window: number };
  log: LogFn;
  /** Called once when the link is closed (the transport forgets it). */
  onClose: () => void;
}

type LinkState = 'idle' | 'connecting' | 'up' | 'down' | 'closed';

interface PendingBatch {
  bytes: Uint8Array;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** Assumed worst-case throughput when giving a chunked transfer its deadline. */
const MIN_BYTES_PER_SECOND = 1 << 20;

export class PeerLink implements Connection {
  private readonly o: PeerLinkOptions;
  private readonly client: grpc.Client;
  private readonly metadata: grpc.Metadata;
  private readonly backoff: Backoff;
  private readonly unpack: (bytes: Uint8Array) => unknown;
  private state: LinkState = 'idle';
  private stream: grpc.ClientDuplexStream<OutFrame, InFrame> | null = null;
  /** Runs while we wait for the peer: for its response headers, or for the acknowledgement of outstanding batches. */
  private livenessTimer: NodeJS.Timeout | null = null;
  /** While down: no attempt before this time. */
  private retryAt = 0;
  /** Why the link went down last, for the fail-fast errors. */
  private lastError: Error | null = null;
  private queue: PendingBatch[] = [];
  private queuedBytes = 0;
  /** Written, not yet acknowledged, by sequence number (ascending: insertion order). */
  private readonly inflight = new Map<number, PendingBatch>();
  private nextSeq = 1;
  /** False while the stream asks us to wait for 'drain'. */
  private writable = true;
  private pumpScheduled = false;
  private readonly calls = new Set<grpc.Call>();

  constructor(options: PeerLinkOptions) {
    this.o = options;
    this.client = new grpc.Client(options.address, options.credentials, options.channelOptions);
    this.backoff = new Backoff(options.backoff.initialMs, options.backoff.maxMs);
    this.unpack = makeUnpacker(options.maxMessageBytes);
    this.metadata = new grpc.Metadata();
    this.metadata.set(MD.protocol, PROTOCOL_VERSION);
    this.metadata.set(MD.nodeId, options.localId);
    this.metadata.set(MD.target, options.peer);
    if (options.clusterSecret !== undefined) this.metadata.set(MD.secret, options.clusterSecret);
  }

  /** The metadata of a new stream or call: rale's fixed fields and, once known, this node's cluster id. */
  private callMetadata(): grpc.Metadata {
    const metadata = this.metadata.clone();
    const clusterId = this.o.clusterId();
    if (clusterId !== null) metadata.set(MD.clusterId, clusterId);
    return metadata;
  }

  /** 'idle' | 'connecting' | 'up' | 'down' | 'closed', for status pages and tests. */
  get linkState(): LinkState {
    return this.state;
  }

  invoke(type: string, args: unknown): Promise<unknown> {
    if (this.state === 'closed') return Promise.reject(this.stopped());
    let payload: Uint8Array;
    try {
      payload = pack(args);
    } catch (err) {
      return Promise.reject(new RaleError('INVALID_ARGUMENT', `the arguments of '${type}' cannot be encoded as msgpack: ${(err as Error).message}`));
    }
    // Payloads above chunkBytes go in chunks, bounded by maxChunkedBytes; smaller ones in one frame.
    const [limit, option] = payload.length > this.o.chunkBytes ? [this.o.maxChunkedBytes, 'maxChunkedBytes'] : [this.o.maxMessageBytes, 'maxMessageBytes'];
    if (payload.length > limit) {
      return Promise.reject(
        new GrpcPeerError(
          grpc.status.RESOURCE_EXHAUSTED,
          this.o.peer,
          `'${type}' to node ${this.o.peer} not sent: its payload is ${payload.length} bytes, above ${option} (${limit})`,
        ),
      );
    }
    if (this.isBackingOff()) return Promise.reject(this.failFastError());
    this.ensureStream();
    if (payload.length > this.o.chunkBytes) return this.callChunked(type, payload);
    if (type === 'raft') return this.sendBatch(payload);
    return this.callUnary(type, payload);
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clearLiveness();
    const stream = this.stream;
    this.stream = null;
    stream?.cancel();
    for (const call of this.calls) call.cancel();
    this.rejectAll(this.stopped());
    this.client.close();
    this.o.onClose();
  }

  // ---------------------------------------------------------------- the raft stream

  private sendBatch(bytes: Uint8Array): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject });
      this.queuedBytes += bytes.length;
      const { maxBatches, maxBytes } = this.o.queue;
      while (this.queue.length > 1 && (this.queue.length > maxBatches || this.queuedBytes > maxBytes)) {
        const dropped = this.queue.shift() as PendingBatch;
        this.queuedBytes -= dropped.bytes.length;
        dropped.reject(
          new GrpcPeerError(
            grpc.status.RESOURCE_EXHAUSTED,
            this.o.peer,
            `send queue to node ${this.o.peer} is full (${maxBatches} batches / ${maxBytes} bytes): dropped its oldest batch`,
          ),
        );
      }
      this.schedulePump();
    });
  }

  /**
   * Writes on the next microtask rather than at once, so that the batches
   * invoked in one turn of the event loop leave in one frame: grpc-js costs
   * tens of microseconds per message, whatever its size.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private isBackingOff(): boolean {
    return this.state === 'down' && Date.now() < this.retryAt;
  }

  /** Opens the stream unless it is open or being opened (callers checked the backoff). */
  private ensureStream(): void {
    if (this.state !== 'idle' && this.state !== 'down') return;
    this.state = 'connecting';
    this.writable = true;
    const stream = this.client.makeBidiStreamRequest<OutFrame, InFrame>(
      METHOD.raftStream,
      PEER_SERVICE.RaftStream.requestSerialize,
      PEER_SERVICE.RaftStream.responseDeserialize,
      this.callMetadata(),
      {},
    );
    this.stream = stream;
    this.armLiveness(stream, 'no answer to the stream');
    // The peer sends its response headers once it has accepted us.
    stream.on('metadata', () => {
      if (this.stream !== stream) return;
      this.clearLiveness();
      const wasDown = this.lastError !== null;
      this.state = 'up';
      this.backoff.reset();
      this.lastError = null;
      this.o.log(wasDown ? 'info' : 'debug', `stream to ${this.o.peer} is up`, { peer: this.o.peer, address: this.o.address });
      this.pump();
    });
    stream.on('data', (frame: InFrame) => this.onAck(stream, frame));
    stream.on('drain', () => {
      if (this.stream !== stream) return;
      this.writable = true;
      this.pump();
    });
    // 'error' carries every non-OK end; a listener must exist anyway or Node would throw.
    stream.on('error', (err: grpc.ServiceError) => this.streamFailed(stream, this.translate(err)));
    stream.on('status', (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) this.streamFailed(stream, this.unreachable('the peer closed the stream'));
    });
  }

  /**
   * Moves queued batches into frames while the stream takes them and the
   * window has room. A frame is {seq, batches}: the sequence number of its
   * first batch and the batches' message arrays, spliced in as encoded.
   */
  private pump(): void {
    const stream = this.stream;
    if (this.state !== 'up' || stream === null) return;
    while (this.writable && this.queue.length > 0 && this.inflight.size < this.o.queue.window) {
      const first = this.nextSeq;
      const parts: Uint8Array[] = [];
      let bytes = 0;
      while (this.queue.length > 0 && this.inflight.size < this.o.queue.window) {
        const batch = this.queue[0] as PendingBatch;
        if (parts.length > 0 && bytes + batch.bytes.length > this.o.chunkBytes) break;
        this.queue.shift();
        this.queuedBytes -= batch.bytes.length;
        this.inflight.set(this.nextSeq++, batch);
        parts.push(batch.bytes);
        bytes += batch.bytes.length;
      }
      this.writable = stream.write(packMap([
        ['seq', first],
        ['batches', new Packed([arrayHeader(parts.length), ...parts])],
      ]));
      this.armLiveness(stream, 'no acknowledgement');
    }
  }

  /**
   * Starts the liveness timer unless it runs already. Keepalive pings would
   * notice a dead connection too, but only after 15 s; a peer that stops
   * acknowledging is treated as down after livenessTimeoutMs, so that calls
   * fail fast and the driver reports it unreachable.
   */
  private armLiveness(stream: grpc.ClientDuplexStream<OutFrame, InFrame>, waitingFor: string): void {
    if (this.livenessTimer !== null) return;
    this.livenessTimer = setTimeout(() => {
      this.livenessTimer = null;
      this.streamFailed(stream, this.unreachable(`${waitingFor} within ${this.o.livenessTimeoutMs} ms`));
    }, this.o.livenessTimeoutMs);
  }

  private onAck(stream: grpc.ClientDuplexStream<OutFrame, InFrame>, frame: InFrame): void {
    if (this.stream !== stream) return;
    let ack: unknown;
    try {
      ack = frame === BROKEN_FRAME ? null : this.unpack(frame);
    } catch {
      ack = null;
    }
    if (!isPlainObject(ack) || typeof ack.ack !== 'number') {
      stream.cancel();
      this.streamFailed(stream, new GrpcPeerError(grpc.status.INTERNAL, this.o.peer, `node ${this.o.peer} sent an unreadable acknowledgement`));
      return;
    }
    const before = this.inflight.size;
    if (ack.error !== undefined) {
      const failed = this.inflight.get(ack.ack);
      if (failed !== undefined) {
        this.inflight.delete(ack.ack);
        failed.reject(errorFromBody(ack.error, this.o.peer, grpc.status.UNKNOWN) ?? new Error(`node ${this.o.peer} rejected a raft batch`));
      }
    }
    for (const [seq, batch] of this.inflight) {
      if (seq > ack.ack) break;
      this.inflight.delete(seq);
      batch.resolve(null);
    }
    if (this.inflight.size < before) {
      // Progress: the peer is alive; time the batches still outstanding afresh.
      this.clearLiveness();
      if (this.inflight.size > 0) this.armLiveness(stream, 'no acknowledgement');
    }
    this.pump();
  }

  private streamFailed(stream: grpc.ClientDuplexStream<OutFrame, InFrame>, err: Error): void {
    if (this.stream !== stream) return;
    this.stream = null;
    this.clearLiveness();
    stream.cancel();
    if (this.state === 'closed') return;
    this.goDown(err);
    this.rejectAll(err);
  }

  private goDown(err: Error): void {
    const delay = this.backoff.next();
    const wasUp = this.state === 'up' || this.lastError === null;
    this.state = 'down';
    this.retryAt = Date.now() + delay;
    this.lastError = err;
    // Log transitions, not every failed attempt of a peer that stays down.
    if (wasUp) this.o.log('warn', `link to ${this.o.peer} is down: ${err.message}`, { peer: this.o.peer, address: this.o.address, retryInMs: Math.round(delay) });
    else this.o.log('debug', `link to ${this.o.peer} still down: ${err.message}`, { peer: this.o.peer, retryInMs: Math.round(delay) });
  }

  private rejectAll(err: Error): void {
    const pending = [...this.inflight.values(), ...this.queue];
    this.inflight.clear();
    this.queue = [];
    this.queuedBytes = 0;
    for (const p of pending) p.reject(err);
  }

  private clearLiveness(): void {
    if (this.livenessTimer !== null) clearTimeout(this.livenessTimer);
    this.livenessTimer = null;
  }

  // ---------------------------------------------------------------- request/response

  private callUnary(type: string, payload: Uint8Array): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const call = this.client.makeUnaryRequest<OutFrame, InFrame>(
        METHOD.call,
        PEER_SERVICE.Call.requestSerialize,
        PEER_SERVICE.Call.responseDeserialize,
        packMap([
          ['type', type],
          ['args', new Packed([payload])],
        ]),
        this.callMetadata(),
        { deadline: Date.now() + this.o.timeoutMs },
        (err, response) => {
          this.calls.delete(call);
          if (err) reject(this.callFailed(err));
          else this.settleResponse(response, resolve, reject);
        },
      );
      this.calls.add(call);
    });
  }

  private callChunked(type: string, payload: Uint8Array): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let finished = false;
      const deadline = Date.now() + this.o.timeoutMs + Math.ceil((payload.length / MIN_BYTES_PER_SECOND) * 1000);
      const call = this.client.makeClientStreamRequest<OutFrame, InFrame>(
        METHOD.chunkedCall,
        PEER_SERVICE.ChunkedCall.requestSerialize,
        PEER_SERVICE.ChunkedCall.responseDeserialize,
        this.callMetadata(),
        { deadline },
        (err, response) => {
          finished = true;
          this.calls.delete(call);
          call.emit('finished');
          if (err) reject(this.callFailed(err));
          else this.settleResponse(response, resolve, reject);
        },
      );
      this.calls.add(call);
      // The outcome arrives through the callback; this listener only keeps a
      // late local stream error (a write racing the end of the call) from
      // becoming an uncaught exception.
      call.on('error', () => {});
      const write = async () => {
        call.write(packMap([
          ['type', type],
          ['total', payload.length],
        ]));
        for (let offset = 0; offset < payload.length && !finished; offset += this.o.chunkBytes) {
          const chunk = payload.subarray(offset, offset + this.o.chunkBytes);
          // Respect the stream's backpressure: HTTP/2 flow control, not our memory, paces a snapshot.
          if (!call.write(packMap([['chunk', packedBin(chunk)]]))) await drainOrFinish(call);
        }
        if (!finished) call.end();
      };
      write().catch((err: unknown) => {
        call.cancel();
        reject(err instanceof Error ? err : new Error(String(err)));
      });
    });
  }

  private settleResponse(response: InFrame | undefined, resolve: (v: unknown) => void, reject: (e: Error) => void): void {
    let body: unknown;
    try {
      body = response === BROKEN_FRAME || response === undefined ? null : this.unpack(response);
    } catch {
      body = null;
    }
    if (!isPlainObject(body)) reject(new GrpcPeerError(grpc.status.INTERNAL, this.o.peer, `node ${this.o.peer} sent an unreadable answer`));
    else resolve(body.result);
  }

  /**
   * A failed request/response call. The link state is left to the stream,
   * which every invoke opens: if the peer is gone, the stream sees it too.
   */
  private callFailed(err: grpc.ServiceError): Error {
    return this.translate(err);
  }

  // ---------------------------------------------------------------- errors

  private translate(err: grpc.ServiceError): Error {
    const remote = errorFromTrailer(err, this.o.peer);
    if (remote !== null) return remote;
    if (this.state === 'closed') return this.stopped();
    switch (err.code) {
      case grpc.status.UNAVAILABLE:
      case grpc.status.CANCELLED:
        return this.unreachable(err.details);
      case grpc.status.DEADLINE_EXCEEDED:
        return new RaleError('TIMEOUT', `node ${this.o.peer} at ${this.o.address} did not answer in time: ${err.details}`, { peer: this.o.peer });
      default:
        return new GrpcPeerError(
          err.code,
          this.o.peer,
          `node ${this.o.peer} at ${this.o.address} refused the call with ${grpc.status[err.code] ?? err.code}: ${err.details}`,
        );
    }
  }

  private unreachable(reason: string): RaleError {
    return new RaleError('NO_LEADER', `node ${this.o.peer} at ${this.o.address} is unreachable: ${reason}`, {
      peer: this.o.peer,
      address: this.o.address,
      unreachable: true,
    });
  }

  /** What a call gets while the link backs off: the last failure, said again, without touching the network. */
  private failFastError(): Error {
    const wait = Math.max(0, Math.round(this.retryAt - Date.now()));
    const last = this.lastError;
    const reason = `${last?.message ?? 'the last attempt failed'} (next attempt in ${wait} ms)`;
    if (last instanceof GrpcPeerError) return new GrpcPeerError(last.grpcCode, this.o.peer, reason, last.remoteName);
    if (last instanceof RaleError && !isUnreachable(last)) return new RaleError(last.code, reason, last.details);
    return new RaleError('NO_LEADER', reason, { peer: this.o.peer, address: this.o.address, unreachable: true });
  }

  private stopped(): RaleError {
    return new RaleError('STOPPED', `the connection from ${this.o.localId} to ${this.o.peer} is closed`, { peer: this.o.peer });
  }
}

/** The msgpack header of an array of `n` elements. */
function arrayHeader(n: number): Uint8Array {
  if (n < 16) return Uint8Array.of(0x90 | n);
  if (n < 0x10000) return Uint8Array.of(0xdc, n >> 8, n & 0xff);
  return Uint8Array.of(0xdd, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

function isUnreachable(err: Error): boolean {
  return err instanceof RaleError && err.details.unreachable === true;
}

/** Resolves on 'drain', or when the call has finished (no drain would ever come). */
function drainOrFinish(call: grpc.ClientWritableStream<OutFrame>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off('drain', done);
      call.off('finished', done);
      resolve();
    };
    call.on('drain', done);
    call.on('finished', done);
  });
}
