/**
 * GrpcTransport: rale's peer transport over gRPC (grpc-js), one per node.
 * It is both the server peers call (listen) and the factory of connections
 * to peers (connect). See DESIGN.md next to this file for the choices and
 * proto/rale_peer.proto for the wire.
 *
 * Server side, every call is authenticated before anything is decoded:
 * the cluster secret (metadata, compared in constant time), then, with
 * mutual TLS, the client certificate must name the node the call claims to
 * come from. Raft messages whose `from` is not that node are refused, so an
 * outsider can neither vote nor append.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { RaleError } from '../errors.ts';
import type { Message, NodeId } from '../core/types.ts';
import type { ClusterIdBinding, Connection, InvokeHandler, Transport } from '../node/transport.ts';
import { isClusterId } from '../node/cluster-id.ts';
import { PeerLink, type LogFn } from './peer-link.ts';
import { checkRaftBatch } from './validate.ts';
import {
  BROKEN_FRAME,
  FRAME_OVERHEAD,
  MD,
  PEER_SERVICE,
  PROTOCOL_VERSION,
  errorBody,
  handlerErrorStatus,
  isPlainObject,
  makeUnpacker,
  packMap,
  type InFrame,
  type OutFrame,
} from './wire.ts';

export { GrpcPeerError, PEER_SERVICE, SERVICE_NAME } from './wire.ts';
export type { LogFn, LogLevel } from './peer-link.ts';

export interface GrpcTlsOptions {
  /** This node's certificate (PEM): served to peers and presented to them as a client. */
  cert: string | Buffer;
  key: string | Buffer;
  /** The cluster CA (PEM): peers' certificates must chain to it. */
  ca: string | Buffer;
  /** Mutual TLS: peers must present a certificate from the cluster CA. Default true. */
  requireClientCert?: boolean;
  /**
   * Certificates name nodes (CN or a DNS/URI subjectAltName equals the node
   * id): a server accepts a call only from the node its client certificate
   * names, and a client accepts a server only if its certificate names the
   * peer it meant to reach. Default true; false for one certificate shared
   * by the whole cluster (then the CA alone is checked).
   */
  peerIdFromCert?: boolean;
}

export interface GrpcTransportOptions {
  /** Where to listen. host default 127.0.0.1; port 0 (default) lets the OS pick: read `port` after listen/bind. */
  listen?: { host?: string; port?: number };
  tls?: GrpcTlsOptions;
  /** Shared by all members; every call carries it and the server refuses calls without it. */
  clusterSecret?: string;
  /** Largest payload (msgpack bytes) of one call that is not sent in chunks. Default 64 MiB. */
  maxMessageBytes?: number;
  /**
   * Largest payload sent in chunks (a snapshot for a lagging follower: the
   * whole replicated state). It is held in memory once on each side.
   * Default 1 GiB; at least maxMessageBytes, below 2 GiB.
   */
  maxChunkedBytes?: number;
  /** Payloads above this go in chunks of this size over a client-streaming call. Default 1 MiB. */
  chunkBytes?: number;
  /** Deadline of a request/response call. Default 10,000 ms (a forwarded proposal waits for its commit). */
  timeoutMs?: number;
  /** A peer that takes longer than this to accept the raft stream, or to acknowledge outstanding batches, counts as down. Default 3,000 ms. */
  livenessTimeoutMs?: number;
  /** Reconnect backoff: exponential from initialMs (default 50) to maxMs (default 1,000), with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Send queue per peer: batches waiting (default 1,024 / 16 MiB; oldest dropped beyond) and unacknowledged batches in flight (default 256). */
  sendQueue?: { maxBatches?: number; maxBytes?: number; window?: number };
  /** Addresses (host:port) of peers, for `connect` calls that give none. */
  peers?: Record<NodeId, string>;
  /** Membership check after authentication: return false to refuse an authenticated node (PERMISSION_DENIED). */
  authorizePeer?: (id: NodeId) => boolean;
  /** Refused calls (bad secret, certificate naming another node, forged `from`). Default: logged as warnings. */
  onSecurityEvent?: (event: SecurityEvent) => void;
  /** Log sink. Default: warnings and errors to console.warn, the rest dropped. */
  log?: LogFn;
  /** Seconds-scale liveness of idle connections: HTTP/2 ping interval (default 10,000 ms); a ping unanswered for 5,000 ms drops the connection. */
  keepaliveMs?: number;
}

export interface SecurityEvent {
  kind: 'unauthenticated' | 'permission-denied' | 'sender-mismatch' | 'cluster-mismatch';
  /** The gRPC method path. */
  method: string;
  /** The caller's address as gRPC reports it (ip:port). */
  remote: string;
  /** The node id the call claimed (metadata rale-node-id), if any. */
  claimedId: string | null;
  reason: string;
  /** Identical events (same kind, address, claim and reason) dropped since the last report: at most one per second each. */
  suppressed: number;
}

export interface AddServiceOptions {
  /**
   * Require rale's peer authentication (cluster secret, certificate naming)
   * on this service's calls too. Default false: bridge services talk to
   * foreign peers that do not send rale's metadata.
   */
  authenticate?: boolean;
}

/** Counters of what this node's server received, for status pages and tests. */
export interface GrpcTransportStats {
  /** RaftStream frames and the batches in them. */
  raftFrames: number;
  raftBatches: number;
  /** Unary calls and chunked calls that passed authentication. */
  calls: number;
  chunkedCalls: number;
  /** Payload bytes received through chunked calls. */
  chunkedBytes: number;
  /** Calls refused by authentication or authorization. */
  refused: number;
}

type AuthResult = { peerId: NodeId } | { status: grpc.StatusObject };

interface AuthenticatableCall {
  metadata: grpc.Metadata;
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null;
}

/** A gRPC status to answer with, thrown through the dispatch code. */
class StatusError extends Error {
  constructor(readonly status: grpc.StatusObject) {
    super(status.details);
  }
}

function statusOf(code: grpc.status, details: string): grpc.StatusObject {
  return { code, details, metadata: new grpc.Metadata() };
}

const SECURITY_REPORT_INTERVAL_MS = 1000;
/** Batches buffered per inbound stream before we stop reading it (HTTP/2 flow control then holds the sender). */
const MAX_PENDING_BATCHES = 64;
/** Msgpack around a chunk's bytes: the map header, the key and the bin header. */
const CHUNK_FRAME_OVERHEAD = 64;

/** Chunked transfers received at once, each up to maxMessageBytes of memory. */
const MAX_CONCURRENT_CHUNKED = 4;
const SHUTDOWN_GRACE_MS = 1000;

const defaultLog: LogFn = (level, message, fields) => {
  if (level === 'warn' || level === 'error') console.warn(`rale transport: ${message}`, fields ?? '');
};

export class GrpcTransport implements Transport {
  private readonly server: grpc.Server;
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly maxMessageBytes: number;
  private readonly maxChunkedBytes: number;
  private readonly unpackChunked: (bytes: Uint8Array) => unknown;
  private readonly chunkBytes: number;
  private readonly timeoutMs: number;
  private readonly livenessTimeoutMs: number;
  private readonly backoff: { initialMs: number; maxMs: number };
  private readonly queue: { maxBatches: number; maxBytes: number; window: number };
  private readonly keepaliveMs: number;
  private readonly tls: GrpcTlsOptions | undefined;
  private readonly secretDigest: Buffer | null;
  private readonly clusterSecret: string | undefined;
  private readonly peers: Map<NodeId, string>;
  private readonly authorizePeer: ((id: NodeId) => boolean) | undefined;
  private readonly onSecurityEvent: ((event: SecurityEvent) => void) | undefined;
  private readonly log: LogFn;
  private readonly unpack: (bytes: Uint8Array) => unknown;
  private boundPort: number | null = null;
  private binding: Promise<number> | null = null;
  private localId: NodeId | null = null;
  private handler: InvokeHandler | null = null;
  private closed = false;
  private readonly links = new Set<PeerLink>();
  /** The node's cluster id (see bindClusterId), if the node gave it. */
  private clusterBinding: ClusterIdBinding | null = null;
  private readonly peerDownListeners = new Set<(peer: NodeId) => void>();
  private readonly liveStreams = new Set<grpc.ServerDuplexStream<InFrame, OutFrame>>();
  private chunkedInProgress = 0;
  private readonly securityReports = new Map<string, { last: number; suppressed: number }>();
  private readonly inputReports = new Map<string, { last: number; suppressed: number }>();
  private readonly counters: GrpcTransportStats = { raftFrames: 0, raftBatches: 0, calls: 0, chunkedCalls: 0, chunkedBytes: 0, refused: 0 };

  constructor(options: GrpcTransportOptions = {}) {
    this.host = options.listen?.host ?? '127.0.0.1';
    this.requestedPort = options.listen?.port ?? 0;
    this.maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    this.maxChunkedBytes = Math.max(options.maxChunkedBytes ?? 1024 * 1024 * 1024, this.maxMessageBytes);
    this.chunkBytes = Math.min(options.chunkBytes ?? 1024 * 1024, this.maxMessageBytes);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.livenessTimeoutMs = options.livenessTimeoutMs ?? 3_000;
    this.backoff = { initialMs: options.backoff?.initialMs ?? 50, maxMs: options.backoff?.maxMs ?? 1_000 };
    this.queue = {
      maxBatches: options.sendQueue?.maxBatches ?? 1024,
      maxBytes: options.sendQueue?.maxBytes ?? 16 * 1024 * 1024,
      window: options.sendQueue?.window ?? 256,
    };
    this.keepaliveMs = options.keepaliveMs ?? 10_000;
    for (const [name, value] of Object.entries({
      maxMessageBytes: this.maxMessageBytes,
      chunkBytes: this.chunkBytes,
      timeoutMs: this.timeoutMs,
      livenessTimeoutMs: this.livenessTimeoutMs,
      'sendQueue.maxBatches': this.queue.maxBatches,
      'sendQueue.window': this.queue.window,
    })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RaleError('INVALID_ARGUMENT', `GrpcTransport option ${name} must be a positive integer, got ${value}`);
    }
    if (this.maxMessageBytes > 2 ** 31 - 1 - FRAME_OVERHEAD) throw new RaleError('INVALID_ARGUMENT', 'GrpcTransport option maxMessageBytes must stay below 2 GiB');
    if (!Number.isSafeInteger(this.maxChunkedBytes) || this.maxChunkedBytes > 2 ** 31 - 1) {
      throw new RaleError('INVALID_ARGUMENT', `GrpcTransport option maxChunkedBytes must be an integer below 2 GiB, got ${this.maxChunkedBytes}`);
    }
    // gRPC metadata values are printable ASCII.
    if (options.clusterSecret !== undefined && !/^[\x20-\x7e]+$/.test(options.clusterSecret)) {
      throw new RaleError('INVALID_ARGUMENT', 'clusterSecret must be a non-empty string of printable ASCII characters');
    }
    this.tls = options.tls;
    this.clusterSecret = options.clusterSecret;
    this.secretDigest = options.clusterSecret === undefined ? null : sha256(options.clusterSecret);
    this.peers = new Map(Object.entries(options.peers ?? {}));
    this.authorizePeer = options.authorizePeer;
    this.onSecurityEvent = options.onSecurityEvent;
    this.log = options.log ?? defaultLog;
    this.unpack = makeUnpacker(this.maxMessageBytes);
    this.unpackChunked = makeUnpacker(this.maxChunkedBytes);
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': this.maxMessageBytes + FRAME_OVERHEAD,
      'grpc.max_send_message_length': this.maxMessageBytes + FRAME_OVERHEAD,
      'grpc.keepalive_time_ms': this.keepaliveMs,
      'grpc.keepalive_timeout_ms': 5_000,
    });
    this.server.addService(PEER_SERVICE, {
      RaftStream: (call: grpc.ServerDuplexStream<InFrame, OutFrame>) => this.onRaftStream(call),
      Call: (call: grpc.ServerUnaryCall<InFrame, OutFrame>, callback: grpc.sendUnaryData<OutFrame>) => this.onCall(call, callback),
      ChunkedCall: (call: grpc.ServerReadableStream<InFrame, OutFrame>, callback: grpc.sendUnaryData<OutFrame>) => this.onChunkedCall(call, callback),
    });
  }

  /** The port the server is bound to (after `bind` or `listen`). */
  get port(): number {
    if (this.boundPort === null) throw new RaleError('INVALID_ARGUMENT', 'the transport is not bound yet: call bind() or listen() first');
    return this.boundPort;
  }

  stats(): GrpcTransportStats {
    return { ...this.counters };
  }

  /** host:port to give peers (after `bind` or `listen`). */
  get address(): string {
    return `${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /**
   * Binds the server without attaching a handler yet, so that the port is
   * known before the node starts (peers' address books need it). Calls that
   * arrive before `listen` are refused with UNAVAILABLE. Idempotent.
   */
  bind(): Promise<number> {
    if (this.closed) return Promise.reject(new RaleError('STOPPED', 'the transport is closed'));
    this.binding ??= new Promise<number>((resolve, reject) => {
      const credentials =
        this.tls === undefined
          ? grpc.ServerCredentials.createInsecure()
          : grpc.ServerCredentials.createSsl(
              toBuffer(this.tls.ca),
              [{ cert_chain: toBuffer(this.tls.cert), private_key: toBuffer(this.tls.key) }],
              this.tls.requireClientCert ?? true,
            );
      const host = this.host.includes(':') ? `[${this.host}]` : this.host;
      this.server.bindAsync(`${host}:${this.requestedPort}`, credentials, (err, port) => {
        if (err) reject(new RaleError('INVALID_ARGUMENT', `cannot listen on ${host}:${this.requestedPort}: ${err.message}`));
        else {
          this.boundPort = port;
          resolve(port);
        }
      });
    });
    return this.binding;
  }

  async listen(localId: NodeId, handler: InvokeHandler): Promise<void> {
    if (this.handler !== null) throw new RaleError('INVALID_ARGUMENT', `this transport already listens as ${this.localId}`);
    await this.bind();
    if (this.closed) throw new RaleError('STOPPED', 'the transport is closed');
    this.localId = localId;
    this.handler = handler;
    if (this.secretDigest === null && (this.tls === undefined || this.tls.requireClientCert === false)) {
      this.log('warn', `peer authentication is off: anything that can reach ${this.address} can vote and append as any node (set clusterSecret and/or tls)`);
    }
    this.log('info', `node ${localId} listening on ${this.address}`, { tls: this.tls !== undefined, secret: this.secretDigest !== null });
  }

  connect(localId: NodeId, peer: NodeId, address?: string): Connection {
    const target = address ?? this.peers.get(peer);
    const failing = (error: RaleError): Connection => ({ invoke: () => Promise.reject(error), close: async () => {} });
    if (this.closed) return failing(new RaleError('STOPPED', 'the transport is closed'));
    if (target === undefined) {
      return failing(new RaleError('INVALID_ARGUMENT', `no address is known for node ${peer}: pass one to connect() or list it in the transport's peers`, { peer }));
    }
    // Node ids travel in metadata, which takes printable ASCII only.
    if (!/^[\x20-\x7e]+$/.test(localId) || !/^[\x20-\x7e]+$/.test(peer)) {
      return failing(new RaleError('INVALID_ARGUMENT', `node ids must be printable ASCII to travel over gRPC: ${JSON.stringify(localId)} -> ${JSON.stringify(peer)}`));
    }
    const link: PeerLink = new PeerLink({
      localId,
      peer,
      address: target,
      credentials: this.channelCredentials(peer),
      channelOptions: this.channelOptions(peer),
      clusterSecret: this.clusterSecret,
      clusterId: () => this.clusterBinding?.current() ?? null,
      maxMessageBytes: this.maxMessageBytes,
      maxChunkedBytes: this.maxChunkedBytes,
      chunkBytes: this.chunkBytes,
      timeoutMs: this.timeoutMs,
      livenessTimeoutMs: this.livenessTimeoutMs,
      backoff: this.backoff,
      queue: this.queue,
      log: this.log,
      onClose: () => this.links.delete(link),
    });
    this.links.add(link);
    return link;
  }

  /**
   * Sends the node's cluster id with every stream and call, and refuses
   * calls that carry another (FAILED_PRECONDITION, reported like a refused
   * secret). A call without one (an older peer) passes; a node without one
   * (it joins) adopts the first one a peer sends.
   */
  bindClusterId(binding: ClusterIdBinding): void {
    this.clusterBinding = binding;
  }

  onPeerDown(listener: (peer: NodeId) => void): () => void {
    this.peerDownListeners.add(listener);
    return () => void this.peerDownListeners.delete(listener);
  }

  private emitPeerDown(peer: NodeId): void {
    for (const listener of this.peerDownListeners) {
      try {
        listener(peer);
      } catch (err) {
        this.log('warn', `a peer-down listener failed: ${(err as Error).message}`);
      }
    }
  }

  /** Adds or replaces a peer's address for later `connect` calls without one. */
  setPeerAddress(peer: NodeId, address: string): void {
    this.peers.set(peer, address);
  }

  /**
   * Registers another gRPC service on this node's server (bridges: e.g.
   * `/phalanx.KV/Propose` with JSON serializers). Works before and after
   * listen: grpc-js (>= 1.10) looks handlers up per call, so a service added
   * to a bound server answers from its next call on (a test covers both).
   * A path already registered throws. With `authenticate`, its calls are
   * checked like rale's own.
   */
  addService(definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation, options: AddServiceOptions = {}): void {
    if (this.closed) throw new RaleError('STOPPED', 'the transport is closed');
    this.server.addService(definition, options.authenticate ? this.authenticated(definition, implementation) : implementation);
  }

  removeService(definition: grpc.ServiceDefinition): void {
    this.server.removeService(definition);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.handler = null;
    for (const link of [...this.links]) await link.close();
    // Peers see their stream end and back off; their calls then fail fast.
    for (const stream of this.liveStreams) stream.end();
    this.liveStreams.clear();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  // ---------------------------------------------------------------- client credentials

  private channelCredentials(peer: NodeId): grpc.ChannelCredentials {
    const tls = this.tls;
    if (tls === undefined) return grpc.credentials.createInsecure();
    const namesPeers = tls.peerIdFromCert ?? true;
    return grpc.credentials.createSsl(toBuffer(tls.ca), toBuffer(tls.key), toBuffer(tls.cert), {
      // The CA check is TLS's own; this replaces the hostname check: the
      // server must be the node we meant to reach, whatever its address.
      checkServerIdentity: (_host, cert) => {
        if (!namesPeers) return undefined;
        const names = certificateNames(cert);
        return names.includes(peer) ? undefined : new Error(`the server certificate names ${JSON.stringify(names)}, not node ${peer}`);
      },
    });
  }

  private channelOptions(peer: NodeId): grpc.ChannelOptions {
    const options: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': this.maxMessageBytes + FRAME_OVERHEAD,
      'grpc.max_send_message_length': this.maxMessageBytes + FRAME_OVERHEAD,
      'grpc.keepalive_time_ms': this.keepaliveMs,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      // grpc-js backs off reconnecting channels too (1 s to 120 s by default): keep it within ours.
      'grpc.initial_reconnect_backoff_ms': this.backoff.initialMs,
      'grpc.max_reconnect_backoff_ms': this.backoff.maxMs,
      // One connection per link: links to the same address do not share fate.
      'grpc.use_local_subchannel_pool': 1,
    };
    // TLS server name: the peer id when it is a DNS name (SNI must not be an IP address).
    if (this.tls !== undefined) options['grpc.ssl_target_name_override'] = DNS_NAME.test(peer) && !/^[\d.]+$/.test(peer) ? peer : 'rale-peer';
    return options;
  }

  // ---------------------------------------------------------------- authentication

  private authenticate(call: AuthenticatableCall, method: string): AuthResult {
    const first = (key: string): string | undefined => {
      const v = call.metadata.get(key)[0];
      return typeof v === 'string' ? v : undefined;
    };
    const claimed = first(MD.nodeId) ?? null;
    const deny = (code: grpc.status, kind: SecurityEvent['kind'], reason: string): AuthResult => {
      this.counters.refused++;
      this.securityEvent({ kind, method, remote: call.getPeer(), claimedId: claimed, reason });
      return { status: statusOf(code, reason) };
    };
    if (this.secretDigest !== null) {
      const given = first(MD.secret);
      if (given === undefined) return deny(grpc.status.UNAUTHENTICATED, 'unauthenticated', `the call carries no cluster secret (metadata ${MD.secret})`);
      // Digests have equal lengths, so the comparison time says nothing about the secret.
      if (!timingSafeEqual(sha256(given), this.secretDigest)) return deny(grpc.status.UNAUTHENTICATED, 'unauthenticated', 'the cluster secret is wrong');
    }
    const mtls = this.tls !== undefined && (this.tls.requireClientCert ?? true);
    if (mtls && (this.tls?.peerIdFromCert ?? true)) {
      const cert = call.getAuthContext()?.sslPeerCertificate;
      if (cert === undefined) return deny(grpc.status.UNAUTHENTICATED, 'unauthenticated', 'the call came without a client certificate');
      const names = certificateNames(cert);
      if (claimed === null || !names.includes(claimed)) {
        return deny(grpc.status.PERMISSION_DENIED, 'permission-denied', `the client certificate names ${JSON.stringify(names)} but the call claims to come from node ${claimed ?? '(none)'}`);
      }
    }
    if (claimed === null || claimed === '') return deny(grpc.status.UNAUTHENTICATED, 'unauthenticated', `the call does not say which node it comes from (metadata ${MD.nodeId})`);
    const protocol = first(MD.protocol);
    if (protocol !== PROTOCOL_VERSION) {
      return { status: statusOf(grpc.status.FAILED_PRECONDITION, `node ${claimed} speaks peer protocol ${protocol ?? '(none)'}; this node speaks ${PROTOCOL_VERSION}`) };
    }
    if (this.authorizePeer !== undefined && !this.authorizePeer(claimed)) {
      return deny(grpc.status.PERMISSION_DENIED, 'permission-denied', `node ${claimed} is not allowed to call this node`);
    }
    const target = first(MD.target);
    if (target !== undefined && this.localId !== null && target !== this.localId) {
      return { status: statusOf(grpc.status.FAILED_PRECONDITION, `this is node ${this.localId}, not ${target}: the caller's address book is out of date`) };
    }
    // Last: only a caller that passed every other check may give a joining node its id.
    const theirCluster = first(MD.clusterId);
    if (theirCluster !== undefined && this.clusterBinding !== null) {
      if (!isClusterId(theirCluster)) {
        return deny(grpc.status.INVALID_ARGUMENT, 'cluster-mismatch', `node ${claimed} sent a malformed cluster id (metadata ${MD.clusterId}: ${JSON.stringify(String(theirCluster).slice(0, 40))}; expected 16 hex digits)`);
      }
      const ours = this.clusterBinding.current();
      if (ours === null) this.clusterBinding.adopt(theirCluster);
      else if (ours !== theirCluster) {
        return deny(
          grpc.status.FAILED_PRECONDITION,
          'cluster-mismatch',
          `node ${claimed} belongs to cluster ${theirCluster}, this node (${this.localId ?? '?'}) to cluster ${ours}: ` +
            'they were founded with different cluster.bootstrap lists or cluster.token values, or a peer address points at another cluster. ' +
            'Check cluster.bootstrap, cluster.token and cluster.peers on both nodes (rale.cluster_id() in SQL shows a node\'s id)',
        );
      }
    }
    return { peerId: claimed };
  }

  /** Reports a refused call, at most once per second for identical ones (a misconfigured peer retries a lot). */
  private securityEvent(event: Omit<SecurityEvent, 'suppressed'>): void {
    const host = event.remote.replace(/:\d+$/, '');
    const key = `${event.kind}|${host}|${event.claimedId}|${event.reason}`;
    const now = Date.now();
    const seen = this.securityReports.get(key);
    if (seen !== undefined && now - seen.last < SECURITY_REPORT_INTERVAL_MS) {
      seen.suppressed++;
      return;
    }
    if (this.securityReports.size > 1000) this.securityReports.clear();
    this.securityReports.set(key, { last: now, suppressed: 0 });
    const full: SecurityEvent = { ...event, suppressed: seen?.suppressed ?? 0 };
    if (this.onSecurityEvent !== undefined) {
      try {
        this.onSecurityEvent(full);
      } catch (err) {
        this.log('error', `onSecurityEvent threw: ${(err as Error).message}`);
      }
    } else {
      this.log('warn', `refused a call to ${event.method} from ${event.remote}: ${event.reason}`, { ...full });
    }
  }

  /**
   * Logs a refused payload (broken framing, bad msgpack, a malformed message)
   * as a warning naming the peer and the reason, at most once per second per
   * peer and kind of refusal: a broken peer retries all the time.
   */
  private refusedInput(peerId: NodeId | null, method: string, reason: string): void {
    const key = `${peerId}|${method}|${reason.replace(/\d+/g, '#').slice(0, 80)}`;
    const now = Date.now();
    const seen = this.inputReports.get(key);
    if (seen !== undefined && now - seen.last < SECURITY_REPORT_INTERVAL_MS) {
      seen.suppressed++;
      return;
    }
    if (this.inputReports.size > 1000) this.inputReports.clear();
    this.inputReports.set(key, { last: now, suppressed: 0 });
    const suppressed = seen?.suppressed ?? 0;
    this.log('warn', `refused malformed input from node ${peerId ?? '(unknown)'} on ${method}: ${reason}${suppressed > 0 ? ` (${suppressed} similar refusals not logged)` : ''}`, { peer: peerId, method });
  }

  /** `from` of every message must be the authenticated caller: nobody speaks for another node. */
  private checkSenders(messages: Message[], peerId: NodeId, method: string, remote: string): void {
    const forged = messages.find((m) => m.from !== peerId);
    if (forged === undefined) return;
    const reason = `node ${peerId} sent a message claiming to come from node ${forged.from}`;
    this.securityEvent({ kind: 'sender-mismatch', method, remote, claimedId: peerId, reason });
    throw new StatusError(statusOf(grpc.status.PERMISSION_DENIED, reason));
  }

  private readyHandler(): InvokeHandler {
    if (this.handler === null) throw new StatusError(statusOf(grpc.status.UNAVAILABLE, 'this node is not ready: it is not listening (not started yet, or stopped)'));
    return this.handler;
  }

  private decode(frame: InFrame, what: string, limit = this.maxMessageBytes, unpack = limit > this.maxMessageBytes ? this.unpackChunked : this.unpack): unknown {
    if (frame === BROKEN_FRAME) throw new StatusError(statusOf(grpc.status.INVALID_ARGUMENT, `${what}: the protobuf framing is broken`));
    if (frame.length > limit) {
      const option = limit === this.maxChunkedBytes ? 'maxChunkedBytes' : 'maxMessageBytes';
      throw new StatusError(statusOf(grpc.status.RESOURCE_EXHAUSTED, `${what} is ${frame.length} bytes, above this node's ${option} (${limit})`));
    }
    try {
      return unpack(frame);
    } catch (err) {
      throw new StatusError(statusOf(grpc.status.INVALID_ARGUMENT, `${what} is not valid msgpack: ${(err as Error).message}`));
    }
  }

  /** Runs a request/response call: validation, the handler, the encoded answer. Rejects with a StatusError. */
  private async dispatch(type: string, args: unknown, peerId: NodeId, method: string, remote: string): Promise<OutFrame> {
    const handler = this.readyHandler();
    let result: unknown;
    try {
      try {
        if (type === 'raft') this.checkSenders(checkRaftBatch(args), peerId, method, remote);
      } catch (err) {
        if (!(err instanceof StatusError)) this.refusedInput(peerId, method, (err as Error).message);
        throw err;
      }
      result = await handler(type, args, peerId);
    } catch (err) {
      if (err instanceof StatusError) throw err;
      throw new StatusError(handlerErrorStatus(err));
    }
    try {
      return packMap([['result', result]]);
    } catch (err) {
      throw new StatusError(statusOf(grpc.status.INTERNAL, `the answer to '${type}' cannot be encoded as msgpack: ${(err as Error).message}`));
    }
  }

  // ---------------------------------------------------------------- server handlers

  private onCall(call: grpc.ServerUnaryCall<InFrame, OutFrame>, callback: grpc.sendUnaryData<OutFrame>): void {
    const auth = this.authenticate(call, PEER_SERVICE.Call.path);
    if ('status' in auth) return callback(auth.status);
    this.counters.calls++;
    let type: string;
    let args: unknown;
    try {
      const request = this.decode(call.request, 'the call');
      if (!isPlainObject(request) || typeof request.type !== 'string') throw new StatusError(statusOf(grpc.status.INVALID_ARGUMENT, 'a call is a map {type: string, args}'));
      type = request.type;
      args = request.args;
    } catch (err) {
      this.refusedInput(auth.peerId, PEER_SERVICE.Call.path, (err as StatusError).status.details);
      return callback((err as StatusError).status);
    }
    this.dispatch(type, args, auth.peerId, PEER_SERVICE.Call.path, call.getPeer()).then(
      (answer) => callback(null, answer),
      (err: StatusError) => callback(err.status),
    );
  }

  /**
   * A payload in chunks: a header {type, total} then {chunk} frames. The
   * declared total is checked against maxChunkedBytes before anything is
   * kept, and the chunks may not exceed it.
   */
  private onChunkedCall(call: grpc.ServerReadableStream<InFrame, OutFrame>, callback: grpc.sendUnaryData<OutFrame>): void {
    const method = PEER_SERVICE.ChunkedCall.path;
    const auth = this.authenticate(call, method);
    if ('status' in auth) return callback(auth.status);
    if (this.chunkedInProgress >= MAX_CONCURRENT_CHUNKED) {
      return callback(statusOf(grpc.status.RESOURCE_EXHAUSTED, `this node already receives ${MAX_CONCURRENT_CHUNKED} chunked transfers; retry later`));
    }
    this.chunkedInProgress++;
    this.counters.chunkedCalls++;
    let done = false;
    let header: { type: string; total: number } | null = null;
    let chunks: Uint8Array[] = [];
    let received = 0;
    const finish = (err: grpc.StatusObject | null, answer?: OutFrame) => {
      if (done) return;
      done = true;
      chunks = [];
      this.chunkedInProgress--;
      if (err !== null) callback(err);
      else callback(null, answer);
    };
    call.on('cancelled', () => finish(statusOf(grpc.status.CANCELLED, 'cancelled')));
    call.on('error', () => finish(statusOf(grpc.status.CANCELLED, 'the stream failed')));
    call.on('data', (frame: InFrame) => {
      if (done) return;
      try {
        // A chunk frame holds up to chunkBytes (at most maxMessageBytes) plus a few bytes of msgpack around it.
        const body = this.decode(frame, 'a chunk frame', this.maxMessageBytes + CHUNK_FRAME_OVERHEAD);
        if (header === null) {
          if (!isPlainObject(body) || typeof body.type !== 'string' || typeof body.total !== 'number' || !Number.isSafeInteger(body.total) || body.total < 0) {
            throw new StatusError(statusOf(grpc.status.INVALID_ARGUMENT, 'a chunked call starts with {type: string, total: bytes}'));
          }
          if (body.total > this.maxChunkedBytes) {
            throw new StatusError(
              statusOf(grpc.status.RESOURCE_EXHAUSTED, `a '${body.type}' payload of ${body.total} bytes exceeds this node's maxChunkedBytes (${this.maxChunkedBytes})`),
            );
          }
          header = { type: body.type, total: body.total };
          return;
        }
        if (!isPlainObject(body) || !(body.chunk instanceof Uint8Array)) throw new StatusError(statusOf(grpc.status.INVALID_ARGUMENT, 'a chunk frame is {chunk: bytes}'));
        received += body.chunk.length;
        this.counters.chunkedBytes += body.chunk.length;
        if (received > header.total) {
          throw new StatusError(statusOf(grpc.status.INVALID_ARGUMENT, `the chunks exceed the declared total of ${header.total} bytes`));
        }
        chunks.push(body.chunk);
      } catch (err) {
        this.refusedInput(auth.peerId, method, (err as StatusError).status.details);
        finish((err as StatusError).status);
      }
    });
    call.on('end', () => {
      if (done) return;
      const h = header;
      if (h === null || received !== h.total) {
        this.refusedInput(auth.peerId, method, h === null ? 'a chunked call without a header' : `got ${received} of ${h.total} bytes`);
        return finish(statusOf(grpc.status.INVALID_ARGUMENT, h === null ? 'a chunked call without a header' : `got ${received} of ${h.total} bytes`));
      }
      let args: unknown;
      try {
        args = this.decode(concat(chunks, h.total), `the '${h.type}' payload`, this.maxChunkedBytes, this.unpackChunked);
      } catch (err) {
        this.refusedInput(auth.peerId, method, (err as StatusError).status.details);
        return finish((err as StatusError).status);
      }
      chunks = [];
      this.dispatch(h.type, args, auth.peerId, method, call.getPeer()).then(
        (answer) => finish(null, answer),
        (err: StatusError) => finish(err.status),
      );
    });
  }

  /**
   * The raft stream: frames {seq, batches} in (batch i has number seq + i);
   * cumulative acknowledgements {ack} out once the handler has taken every
   * batch up to `ack` (in order: one handler call at a time per stream), and
   * {ack, error} for a batch the handler or validation refused. Undecodable
   * input or a forged sender ends the stream with INVALID_ARGUMENT /
   * PERMISSION_DENIED.
   */
  private onRaftStream(call: grpc.ServerDuplexStream<InFrame, OutFrame>): void {
    const method = PEER_SERVICE.RaftStream.path;
    const auth = this.authenticate(call, method);
    if ('status' in auth) {
      call.emit('error', auth.status);
      return;
    }
    if (this.handler === null) {
      // Not listening (yet, or any more): the caller counts us down and backs off.
      call.emit('error', statusOf(grpc.status.UNAVAILABLE, 'this node is not ready: it is not listening (not started yet, or stopped)'));
      return;
    }
    const peerId = auth.peerId;
    const remote = call.getPeer();
    let ended = false;
    let halfClosed = false;
    const end = (status?: grpc.StatusObject) => {
      if (ended) return;
      ended = true;
      this.liveStreams.delete(call);
      if (status === undefined) call.end();
      else call.emit('error', status);
    };
    call.on('cancelled', () => {
      ended = true;
      this.liveStreams.delete(call);
      // The peer's end of the stream went away without closing it: its process
      // died or its connection was reset. (A transport closing cleanly ends the
      // stream instead.) Tell the node, which may stop trusting that leader.
      if (!this.closed) this.emitPeerDown(peerId);
    });
    this.liveStreams.add(call);
    // Response headers now: the client counts the stream up when they arrive.
    call.sendMetadata(new grpc.Metadata());

    const pending: Array<{ seq: number; messages: Message[] | null; error?: unknown }> = [];
    let running = false;
    let paused = false;
    let acked = 0;
    let ackScheduled = false;
    const write = (entries: ReadonlyArray<readonly [string, unknown]>) => {
      if (!ended) call.write(packMap(entries));
    };
    const flushAck = () => {
      ackScheduled = false;
      write([['ack', acked]]);
    };
    const run = async () => {
      if (running) return;
      running = true;
      while (pending.length > 0 && !ended) {
        const item = pending.shift() as (typeof pending)[number];
        let error = item.error;
        if (item.messages !== null) {
          try {
            await this.readyHandler()('raft', item.messages, peerId);
          } catch (err) {
            error = err instanceof StatusError ? new RaleError('STOPPED', err.message) : err;
          }
        }
        acked = item.seq;
        if (error !== undefined) {
          write([
            ['ack', acked],
            ['error', errorBody(error)],
          ]);
        } else if (!ackScheduled) {
          // Coalesced: one acknowledgement covers every batch handled in this turn.
          ackScheduled = true;
          setImmediate(flushAck);
        }
        if (paused && pending.length < MAX_PENDING_BATCHES / 4) {
          paused = false;
          call.resume();
        }
      }
      running = false;
      if (halfClosed && pending.length === 0) end();
    };
    call.on('data', (frame: InFrame) => {
      if (ended) return;
      const items: typeof pending = [];
      try {
        const body = this.decode(frame, 'a raft frame');
        if (!isPlainObject(body) || typeof body.seq !== 'number' || !Number.isSafeInteger(body.seq) || !Array.isArray(body.batches)) {
          throw new StatusError(statusOf(grpc.status.INVALID_ARGUMENT, 'a raft frame is {seq: integer, batches: [[message, ...], ...]}'));
        }
        const seq = body.seq;
        body.batches.forEach((batch: unknown, i) => {
          let messages: Message[];
          try {
            messages = checkRaftBatch(batch);
          } catch (err) {
            // Well-framed but malformed: refuse this batch, keep the stream.
            this.refusedInput(peerId, method, (err as Error).message);
            items.push({ seq: seq + i, messages: null, error: err });
            return;
          }
          this.checkSenders(messages, peerId, method, remote);
          items.push({ seq: seq + i, messages });
        });
      } catch (err) {
        const status = (err as StatusError).status;
        if (status.code !== grpc.status.PERMISSION_DENIED) this.refusedInput(peerId, method, status.details);
        end(status);
        return;
      }
      this.counters.raftFrames++;
      this.counters.raftBatches += items.length;
      pending.push(...items);
      if (!paused && pending.length >= MAX_PENDING_BATCHES) {
        paused = true;
        call.pause();
      }
      void run();
    });
    call.on('end', () => {
      halfClosed = true;
      if (!running && pending.length === 0) end();
    });
  }

  /** Wraps a bridge service's handlers with rale's authentication. */
  private authenticated(definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): grpc.UntypedServiceImplementation {
    const wrapped: grpc.UntypedServiceImplementation = {};
    for (const [name, method] of Object.entries(definition)) {
      const original = (implementation[name] ?? (typeof method.originalName === 'string' ? implementation[method.originalName] : undefined)) as
        | ((...args: unknown[]) => void)
        | undefined;
      if (original === undefined) continue;
      if (method.responseStream) {
        wrapped[name] = (call: AuthenticatableCall & NodeJS.EventEmitter) => {
          const auth = this.authenticate(call, method.path);
          if ('status' in auth) call.emit('error', auth.status);
          else original.call(implementation, call);
        };
      } else {
        wrapped[name] = (call: AuthenticatableCall, callback: grpc.sendUnaryData<unknown>) => {
          const auth = this.authenticate(call, method.path);
          if ('status' in auth) callback(auth.status);
          else original.call(implementation, call, callback);
        };
      }
    }
    return wrapped;
  }
}

const DNS_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The names a certificate gives its holder: the subject CN and the DNS and URI subjectAltNames. */
export function certificateNames(cert: PeerCertificate): string[] {
  const names = new Set<string>();
  const cn: unknown = cert.subject?.CN;
  if (typeof cn === 'string') names.add(cn);
  else if (Array.isArray(cn)) for (const n of cn) if (typeof n === 'string') names.add(n);
  for (const part of (cert.subjectaltname ?? '').split(', ')) {
    const m = /^(DNS|URI):(.*)$/.exec(part);
    if (m?.[2] !== undefined) names.add(m[2].replace(/^"(.*)"$/, '$1'));
  }
  return [...names];
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function toBuffer(pem: string | Buffer): Buffer {
  return typeof pem === 'string' ? Buffer.from(pem) : pem;
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}
