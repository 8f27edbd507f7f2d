/**
 * The transport a sidecar's RaftNode uses: rale's gRPC transport for rale
 * members, and a bridge's connector for members whose address has the
 * bridge's scheme (`coordinode://10.0.0.5:5001`).
 *
 * It outlives the RaftNode: when the node stops because its PostgreSQL went
 * away and starts again once it is back, the gRPC server keeps its port and
 * the services bridges added to it. While no node is attached, inbound calls
 * are refused with STOPPED.
 */
import { RaleError } from '../errors.ts';
import type { Message, NodeId } from '../core/types.ts';
import type { GrpcTransport } from '../transport/grpc.ts';
import type { Connection, InvokeHandler, Transport } from '../node/transport.ts';

export type PeerConnector = (peer: NodeId, address: string) => Connection;

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//;

/** The scheme of a member address (`phalanx` in `phalanx://host:port`), or null for a rale member (`host:port`). */
export function addressScheme(address: string | undefined): string | null {
  if (address === undefined) return null;
  const match = SCHEME.exec(address);
  return match === null ? null : (match[1] as string);
}

/** The peer call that asks a sidecar about itself. */
export const INFO_CALL = 'info';

/** What a sidecar tells a peer about itself ('info' call). */
export interface NodeInfo {
  /** Its REST API's base URL, or null when it serves none. */
  api: string | null;
}

/** A peer's answer to 'info', checked: only an http(s) URL of sane length is taken. */
export function checkNodeInfo(value: unknown): NodeInfo | null {
  if (value === null || typeof value !== 'object') return null;
  const api = (value as Record<string, unknown>).api;
  if (typeof api !== 'string' || api.length > 2048) return null;
  try {
    const url = new URL(api);
    return url.protocol === 'http:' || url.protocol === 'https:' ? { api: api.replace(/\/+$/, '') } : null;
  } catch {
    return null;
  }
}

export class SidecarTransport implements Transport {
  private handler: InvokeHandler | null = null;
  private opened = false;
  /**
   * Checked for every call from a rale peer, not only when its connection
   * opens: a raft stream lives on, and a member removed meanwhile must not
   * go on appending or voting over it. Return a reason to refuse.
   */
  authorizePeer: ((peer: NodeId) => string | null) | null = null;
  /**
   * Answers a peer's 'info' call (this node's REST API URL, so that a node
   * that only knows this one's peer address can relay to it), served by the
   * sidecar itself: it works while the node restarts.
   */
  nodeInfo: (() => NodeInfo) | null = null;
  private readonly schemes = new Map<string, { connect: PeerConnector; owner: string }>();

  constructor(
    readonly base: GrpcTransport,
    private readonly localId: NodeId,
    /** Reports a connector that threw: the bridge is at fault, not the node. */
    private readonly onConnectorError: (owner: string, err: unknown) => void,
    /** How long a bridge connection's invoke or close may take before it counts as failed. */
    private readonly connectorTimeoutMs = 10_000,
  ) {}

  /**
   * The Transport one node runs on. Its close() detaches that node only: a
   * node whose stop finishes after its successor started (a hung database
   * can hold a stop for long) must not leave the successor deaf.
   */
  forNode(): Transport {
    let own: InvokeHandler | null = null;
    return {
      listen: async (localId, handler) => {
        await this.listen(localId, handler);
        own = handler;
      },
      connect: (localId, peer, address) => this.connect(localId, peer, address),
      onPeerDown: (listener) => this.base.onPeerDown(listener),
      // The id is the same for every node this sidecar runs; the latest binding serves.
      bindClusterId: (binding) => this.base.bindClusterId(binding),
      close: async () => {
        if (own !== null && this.handler === own) this.handler = null;
        own = null;
      },
    };
  }

  /** Starts the gRPC server's rale service for good (once). */
  async open(): Promise<void> {
    if (this.opened) return;
    this.opened = true;
    await this.base.listen(this.localId, (type, args, from) => {
      const refusal = this.authorizePeer?.(from) ?? null;
      if (refusal !== null) return Promise.reject(new RaleError('INVALID_ARGUMENT', refusal, { peer: from }));
      if (type === INFO_CALL) return Promise.resolve(this.nodeInfo?.() ?? { api: null });
      return this.dispatch(type, args, from);
    });
  }

  registerScheme(scheme: string, owner: string, connect: PeerConnector): void {
    if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) throw new RaleError('INVALID_ARGUMENT', `bridge ${owner}: ${JSON.stringify(scheme)} is not a URL scheme (lower-case letters, digits, + . -)`);
    const existing = this.schemes.get(scheme);
    if (existing !== undefined) throw new RaleError('INVALID_ARGUMENT', `bridge ${owner}: the address scheme ${scheme}:// is already registered by bridge ${existing.owner}`);
    this.schemes.set(scheme, { connect, owner });
  }

  /** Hands inbound messages to the attached node, as if they had arrived over rale's own transport. */
  async deliver(from: NodeId, messages: Message[]): Promise<void> {
    await this.dispatch('raft', messages, from);
  }

  private dispatch(type: string, args: unknown, from: NodeId): Promise<unknown> {
    const handler = this.handler;
    if (handler === null) return Promise.reject(new RaleError('STOPPED', `node ${this.localId} is not running (it restarts once its PostgreSQL answers)`));
    return handler(type, args, from);
  }

  async listen(localId: NodeId, handler: InvokeHandler): Promise<void> {
    if (localId !== this.localId) throw new RaleError('INVALID_ARGUMENT', `this transport serves node ${this.localId}, not ${localId}`);
    await this.open();
    this.handler = handler;
  }

  connect(localId: NodeId, peer: NodeId, address?: string): Connection {
    const scheme = addressScheme(address);
    if (scheme === null) return this.base.connect(localId, peer, address);
    const entry = this.schemes.get(scheme);
    if (entry === undefined) {
      const error = new RaleError('INVALID_ARGUMENT', `member ${peer} is at ${address}, but no loaded bridge speaks ${scheme}://; add that bridge to this node's configuration`);
      return { invoke: () => Promise.reject(error), close: async () => {} };
    }
    let inner: Connection;
    try {
      inner = entry.connect(peer, address as string);
    } catch (err) {
      this.onConnectorError(entry.owner, err);
      const error = new RaleError('STORAGE', `bridge ${entry.owner} could not connect to ${peer}: ${(err as Error).message}`);
      return { invoke: () => Promise.reject(error), close: async () => {} };
    }
    // A bridge's connection is contained: a throw, or no answer in time, becomes a rejected call, counted
    // against the bridge (a lost message to Raft); a close that hangs does not hold the node's stop.
    return {
      invoke: async (type, args) => {
        try {
          return await this.bounded(() => inner.invoke(type, args), `bridge ${entry.owner}: ${type} to ${peer}`);
        } catch (err) {
          if (!(err instanceof RaleError) || err.code === 'TIMEOUT') this.onConnectorError(entry.owner, err);
          throw err;
        }
      },
      close: async () => {
        try {
          await this.bounded(() => inner.close(), `bridge ${entry.owner}: close of the connection to ${peer}`);
        } catch (err) {
          this.onConnectorError(entry.owner, err);
        }
      },
    };
  }

  private async bounded<T>(work: () => Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        Promise.resolve().then(work),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new RaleError('TIMEOUT', `${what} did not answer within ${this.connectorTimeoutMs} ms`)), this.connectorTimeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Detaches the node; the gRPC server stays up for the next node (see closeForGood). */
  async close(): Promise<void> {
    this.handler = null;
  }

  async closeForGood(): Promise<void> {
    this.handler = null;
    await this.base.close();
  }
}
