/**
 * A TCP proxy for one directed peer link (node A dials node B through it),
 * which a test can cut, heal and slow down.
 *
 * "A -> B" means the TCP connections A opens to B. Raft messages travel one
 * way on them (A's messages to B, B's acknowledgements back), and B's
 * messages to A travel on B's own connections through the B -> A proxy, so
 * cutting one direction gives an asymmetric partition and cutting both an
 * ordinary one.
 *
 * Two ways to cut:
 *  - 'blackhole' (default), what a real partition looks like to TCP: bytes
 *    stop flowing both ways but connections stay open. Reading from both
 *    sockets is paused, so the kernel buffers fill and the sender's writes
 *    stall; new connections are accepted but not connected onward. The
 *    peers' own timeouts (stream liveness, HTTP/2 keepalive) must notice.
 *    Healing resumes everything in order, as TCP would after a partition.
 *  - 'reset': every connection is reset (RST) and new ones are reset as soon
 *    as they arrive: what a crashed or firewalled peer with REJECT looks like.
 *    Healing lets new connections through.
 *
 * Latency delays every chunk by `latencyMs` in each direction, in order.
 */
import net from 'node:net';

export type CutMode = 'blackhole' | 'reset';

interface Pair {
  client: net.Socket;
  upstream: net.Socket | null;
  /** Chunks waiting for their latency to pass (or for the upstream connection), per direction. */
  queues: { toUpstream: Delayed[]; toClient: Delayed[] };
  /** The sender of that direction ended: end the receiver once its queue is written. */
  ending: { toUpstream: boolean; toClient: boolean };
}

interface Delayed {
  due: number;
  chunk: Buffer;
}

export interface LinkStats {
  /** Connections accepted since the proxy started. */
  accepted: number;
  /** Connections open now. */
  open: number;
  bytesToTarget: number;
  bytesFromTarget: number;
}

export class LinkProxy {
  private server: net.Server | null = null;
  private readonly pairs = new Set<Pair>();
  private cutMode: CutMode | null = null;
  private latency = 0;
  private closed = false;
  readonly stats: LinkStats = { accepted: 0, open: 0, bytesToTarget: 0, bytesFromTarget: 0 };

  constructor(
    /** For messages: "node1->node2". */
    readonly name: string,
    /** Where connections go: the target's peer port on 127.0.0.1. */
    private targetPort: number,
  ) {}

  /** Listens on 127.0.0.1 (port 0: the OS picks; pass the old port to reopen on it). Returns the port. */
  async listen(port = 0): Promise<number> {
    const server = net.createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    return this.port;
  }

  get port(): number {
    const address = this.server?.address();
    if (address === null || address === undefined || typeof address === 'string') throw new Error(`proxy ${this.name} is not listening`);
    return address.port;
  }

  get isCut(): boolean {
    return this.cutMode !== null;
  }

  /** Points the proxy at another port (a node restarted elsewhere); existing connections are reset. */
  retarget(port: number): void {
    this.targetPort = port;
    for (const pair of [...this.pairs]) this.destroy(pair, true);
  }

  cut(mode: CutMode = 'blackhole'): void {
    if (this.cutMode === mode) return;
    this.cutMode = mode;
    for (const pair of [...this.pairs]) {
      if (mode === 'reset') this.destroy(pair, true);
      else {
        pair.client.pause();
        pair.upstream?.pause();
      }
    }
  }

  heal(): void {
    if (this.cutMode === null) return;
    this.cutMode = null;
    for (const pair of [...this.pairs]) {
      if (pair.upstream === null) this.connectUpstream(pair);
      else {
        pair.upstream.resume();
        pair.client.resume();
      }
      this.flush(pair);
    }
  }

  /** Delay added to every chunk, each way. 0 removes it. */
  setLatency(ms: number): void {
    this.latency = Math.max(0, ms);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const pair of [...this.pairs]) this.destroy(pair, false);
    const server = this.server;
    this.server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  // ---------------------------------------------------------------- internals

  private accept(client: net.Socket): void {
    this.stats.accepted++;
    if (this.closed || this.cutMode === 'reset') {
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const pair: Pair = { client, upstream: null, queues: { toUpstream: [], toClient: [] }, ending: { toUpstream: false, toClient: false } };
    this.pairs.add(pair);
    this.stats.open++;
    client.setNoDelay(true);
    client.on('error', () => this.destroy(pair, true));
    client.on('close', () => this.destroy(pair, false));
    client.on('data', (chunk: Buffer) => {
      this.stats.bytesToTarget += chunk.length;
      this.forward(pair, 'toUpstream', chunk);
    });
    client.on('end', () => {
      pair.ending.toUpstream = true;
      this.flush(pair);
    });
    // A blackholed link holds new connections: accepted (the kernel did that already), never connected onward until healed.
    if (this.cutMode === 'blackhole') client.pause();
    else this.connectUpstream(pair);
  }

  private connectUpstream(pair: Pair): void {
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    pair.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on('error', () => this.destroy(pair, true));
    upstream.on('close', () => this.destroy(pair, false));
    upstream.on('data', (chunk: Buffer) => {
      this.stats.bytesFromTarget += chunk.length;
      this.forward(pair, 'toClient', chunk);
    });
    upstream.on('end', () => {
      pair.ending.toClient = true;
      this.flush(pair);
    });
    // Bytes the client sent before the upstream existed are queued in toUpstream.
    upstream.on('connect', () => this.flush(pair));
    pair.client.resume();
  }

  private forward(pair: Pair, direction: 'toUpstream' | 'toClient', chunk: Buffer): void {
    pair.queues[direction].push({ due: Date.now() + this.latency, chunk });
    // A chunk read just before a blackhole cut was already on the wire: it stays queued until healed.
    this.flush(pair);
  }

  /** Writes every due chunk, in order; schedules itself for the next one when latency holds some back. */
  private flush(pair: Pair): void {
    if (this.cutMode !== null || !this.pairs.has(pair)) return;
    const upstream = pair.upstream;
    if (upstream === null || upstream.connecting) return;
    const now = Date.now();
    let next = Infinity;
    for (const [direction, socket, source] of [
      ['toUpstream', upstream, pair.client],
      ['toClient', pair.client, upstream],
    ] as const) {
      const queue = pair.queues[direction];
      while (queue.length > 0 && (queue[0] as Delayed).due <= now) {
        // Backpressure: a receiver that cannot keep up pauses its sender until it drains.
        if (!socket.write((queue.shift() as Delayed).chunk)) {
          source.pause();
          socket.once('drain', () => {
            if (this.cutMode === null) source.resume();
          });
        }
      }
      if (queue.length > 0) next = Math.min(next, (queue[0] as Delayed).due);
      else if (pair.ending[direction]) socket.end();
    }
    if (next !== Infinity) setTimeout(() => this.flush(pair), next - now).unref();
  }

  private destroy(pair: Pair, reset: boolean): void {
    if (!this.pairs.delete(pair)) return;
    this.stats.open--;
    for (const socket of [pair.client, pair.upstream]) {
      if (socket === null || socket.destroyed) continue;
      socket.on('error', () => {});
      // Resetting a socket whose shutdown (asked by end()) is still pending
      // fails in libuv (EINVAL); seen here as a test worker that never exited,
      // spinning at 100% CPU in Node's exit-time handle cleanup. A socket
      // already ended (or still connecting) is past resetting: plain destroy().
      if (reset && !socket.writableEnded && !socket.connecting) socket.resetAndDestroy();
      else socket.destroy();
    }
  }
}

/**
 * Every directed link between the nodes of a cluster: `link(a, b)` is the
 * proxy node a dials to reach node b.
 */
export class ProxyMesh {
  private readonly links = new Map<string, LinkProxy>();

  static key(from: string, to: string): string {
    return `${from}->${to}`;
  }

  /** Creates (or returns) the proxy from -> to, aimed at the target's peer port. */
  async add(from: string, to: string, targetPort: number): Promise<LinkProxy> {
    const key = ProxyMesh.key(from, to);
    const existing = this.links.get(key);
    if (existing !== undefined) return existing;
    const proxy = new LinkProxy(key, targetPort);
    await proxy.listen();
    this.links.set(key, proxy);
    return proxy;
  }

  link(from: string, to: string): LinkProxy {
    const proxy = this.links.get(ProxyMesh.key(from, to));
    if (proxy === undefined) throw new Error(`no proxy for the link ${from} -> ${to}; the links are ${[...this.links.keys()].join(', ')}`);
    return proxy;
  }

  has(from: string, to: string): boolean {
    return this.links.has(ProxyMesh.key(from, to));
  }

  all(): LinkProxy[] {
    return [...this.links.values()];
  }

  /** Links leaving or reaching `id`. */
  touching(id: string): LinkProxy[] {
    return [...this.links.entries()].filter(([key]) => key.startsWith(`${id}->`) || key.endsWith(`->${id}`)).map(([, p]) => p);
  }

  healAll(): void {
    for (const proxy of this.links.values()) proxy.heal();
  }

  async close(): Promise<void> {
    await Promise.all([...this.links.values()].map((p) => p.close()));
    this.links.clear();
  }
}
