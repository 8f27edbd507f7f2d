/**
 * How nodes reach each other, in the shape of node-raft's transport:
 * `connect(...)` gives a connection with `invoke(type, args)`, and
 * `listen(handler)` receives `(type, args)` and answers. rale uses three call
 * types between nodes:
 *  - 'raft'     args: Message[]          answer: nothing (responses travel as messages)
 *  - 'propose'  args: ForwardedProposal  answer: ForwardedOutcome (a follower forwarding to the leader)
 *  - 'read'     args: { }                answer: { index } (a follower asking the leader for a read index)
 *
 * Promise-based; node-raft's callback style is accepted too (see
 * fromCallbackTransport).
 */
import { RaleError } from '../errors.ts';
import type { NodeId } from '../core/types.ts';

export type InvokeHandler = (type: string, args: unknown, from: NodeId) => Promise<unknown>;

export interface Connection {
  invoke(type: string, args: unknown): Promise<unknown>;
  close(): Promise<void>;
}

export interface Transport {
  /** Starts accepting calls for `localId`. */
  listen(localId: NodeId, handler: InvokeHandler): Promise<void>;
  /** A connection from `localId` to `peer` (at `address` when the transport needs one). */
  connect(localId: NodeId, peer: NodeId, address?: string): Connection;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
  /**
   * Optional: calls `listener` when a peer's connection to this node broke
   * abruptly (its process died: the kernel reset the connection), as opposed
   * to going quiet. A hint for faster failover, never needed for safety.
   * Returns the unsubscribe function.
   */
  onPeerDown?(listener: (peer: NodeId) => void): () => void;
  /**
   * Optional: ties the transport to the node's cluster id (node/cluster-id.ts),
   * before listen. A transport that carries it sends it with every call and
   * refuses calls that carry another; when the node has none yet (it joins),
   * the first id a peer sends is handed to `adopt`.
   */
  bindClusterId?(binding: ClusterIdBinding): void;
}

/** What a transport needs of the node's cluster identity (see Transport.bindClusterId). */
export interface ClusterIdBinding {
  /** The node's cluster id, or null while it has none. */
  current(): string | null;
  /** A peer sent `id` while current() was null. */
  adopt(id: string): void;
}

/**
 * An in-process network for tests and the embeddable library. Calls are
 * delivered asynchronously (never re-entrantly) and arguments are cloned, as
 * a real wire would. Links can be cut to simulate partitions.
 */
export class MemoryNetwork {
  private readonly handlers = new Map<NodeId, InvokeHandler>();
  private readonly cut = new Set<string>();

  transport(): Transport {
    const handlers = this.handlers;
    const deliver = (from: NodeId, to: NodeId, type: string, args: unknown) => this.deliver(from, to, type, args);
    let listeningAs: NodeId | null = null;
    return {
      async listen(localId, handler) {
        if (handlers.has(localId)) throw new RaleError('INVALID_ARGUMENT', `node ${localId} is already listening on this network`);
        handlers.set(localId, handler);
        listeningAs = localId;
      },
      connect(localId, peer) {
        return {
          invoke: (type, args) => deliver(localId, peer, type, args),
          close: async () => {},
        };
      },
      async close() {
        if (listeningAs !== null) handlers.delete(listeningAs);
        listeningAs = null;
      },
    };
  }

  /** Cuts the link in both directions (or one, with `oneWay`). */
  partition(a: NodeId, b: NodeId, oneWay = false): void {
    this.cut.add(`${a}->${b}`);
    if (!oneWay) this.cut.add(`${b}->${a}`);
  }

  /** Cuts `node` off from everyone. */
  isolate(node: NodeId): void {
    for (const other of this.handlers.keys()) if (other !== node) this.partition(node, other);
  }

  heal(): void {
    this.cut.clear();
  }

  private async deliver(from: NodeId, to: NodeId, type: string, args: unknown): Promise<unknown> {
    await new Promise((resolve) => setImmediate(resolve));
    const handler = this.handlers.get(to);
    if (handler === undefined || this.cut.has(`${from}->${to}`)) {
      throw new RaleError('NO_LEADER', `node ${to} is unreachable from ${from}`, { peer: to });
    }
    const answer = await handler(type, structuredClone(args), from);
    if (this.cut.has(`${to}->${from}`)) throw new RaleError('NO_LEADER', `the answer from ${to} to ${from} was lost`, { peer: to });
    return structuredClone(answer);
  }
}

/** node-raft's callback-style transport, as the original library defined it. */
export interface CallbackTransport {
  listen(localId: NodeId, handler: (type: string, args: unknown, reply: (err: Error | null, result?: unknown) => void) => void): void;
  connect(localId: NodeId, peer: NodeId, address?: string): {
    invoke(type: string, args: unknown, callback: (err: Error | null, result?: unknown) => void): void;
    close(callback: (err: Error | null) => void): void;
  };
  close(callback: (err: Error | null) => void): void;
}

/** Adapts a callback-style transport to rale's promise-based one. */
export function fromCallbackTransport(t: CallbackTransport): Transport {
  return {
    listen: async (localId, handler) =>
      t.listen(localId, (type, args, reply) => {
        handler(type, args, '').then(
          (result) => reply(null, result),
          (err: Error) => reply(err),
        );
      }),
    connect(localId, peer, address) {
      const c = t.connect(localId, peer, address);
      return {
        invoke: (type, args) => new Promise((resolve, reject) => c.invoke(type, args, (err, result) => (err ? reject(err) : resolve(result)))),
        close: () => new Promise((resolve, reject) => c.close((err) => (err ? reject(err) : resolve()))),
      };
    },
    close: () => new Promise((resolve, reject) => t.close((err) => (err ? reject(err) : resolve()))),
  };
}
