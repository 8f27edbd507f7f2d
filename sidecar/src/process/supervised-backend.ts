/**
 * The REST API's backend while the node underneath may come and go: the
 * sidecar keeps its API (and /health) up while the node is stopped because
 * its PostgreSQL is unreachable, and attaches the new node once it is back.
 * Events of every attached node reach the listeners registered here, so
 * metrics and bridges subscribe once.
 */
import { EventEmitter } from 'node:events';
import { RaleError } from '../errors.ts';
import type { ConfigChange, NodeId } from '../core/types.ts';
import type { ApiBackend } from '../http/api.ts';
import type { PgNode } from '../pg/node.ts';
import { pgNodeBackend } from '../http/node-api.ts';

const EVENTS = ['role', 'leader', 'applied'] as const;
type NodeEvent = (typeof EVENTS)[number];

export class SupervisedBackend implements ApiBackend {
  private current: { node: PgNode; backend: ApiBackend; relays: Array<[NodeEvent, (...args: unknown[]) => void]> } | null = null;
  private readonly events = new EventEmitter();
  /** Consulted before every membership change asked for here (the bridges' vetoes); throws to refuse. */
  membershipGuard: ((change: ConfigChange) => void) | null = null;
  /** Why there is no node, for errors while detached. */
  private reason = 'it is starting';

  constructor(readonly id: NodeId) {
    this.events.setMaxListeners(100);
  }

  get node(): PgNode | null {
    return this.current?.node ?? null;
  }

  attach(node: PgNode): void {
    this.detach('it is restarting');
    const relays = EVENTS.map((event): [NodeEvent, (...args: unknown[]) => void] => [event, (...args: unknown[]) => this.events.emit(event, ...args)]);
    for (const [event, relay] of relays) node.raft.on(event, relay);
    this.current = { node, backend: pgNodeBackend(node), relays };
    this.events.emit('role');
  }

  detach(reason: string): void {
    this.reason = reason;
    const current = this.current;
    if (current === null) return;
    for (const [event, relay] of current.relays) current.node.raft.off(event, relay);
    this.current = null;
    this.events.emit('role');
  }

  private need(): ApiBackend {
    if (this.current === null) throw new RaleError('STOPPED', `node ${this.id} cannot serve: ${this.reason}`);
    return this.current.backend;
  }

  status: ApiBackend['status'] = () => this.need().status();
  addressOf: ApiBackend['addressOf'] = (id) => this.current?.backend.addressOf(id);
  clusterId = (): string | null => this.current?.backend.clusterId?.() ?? null;
  waitForLeader: ApiBackend['waitForLeader'] = (t) => this.need().waitForLeader(t);
  checkCommand: ApiBackend['checkCommand'] = (c) => this.need().checkCommand(c);
  propose: ApiBackend['propose'] = (c, id, t) => this.need().propose(c, id, t);
  changeMembership: ApiBackend['changeMembership'] = async (c, t) => {
    this.membershipGuard?.(c);
    return this.need().changeMembership(c, t);
  };
  promotionRefusal = (id: NodeId): string | null => {
    try {
      this.membershipGuard?.({ type: 'promote', node: id });
      return null;
    } catch (err) {
      return (err as Error).message;
    }
  };
  readIndex: ApiBackend['readIndex'] = (t) => this.need().readIndex(t);
  readBarrier: ApiBackend['readBarrier'] = (t) => this.need().readBarrier(t);
  transferLeadership: ApiBackend['transferLeadership'] = (target) => this.need().transferLeadership(target);
  readKey: ApiBackend['readKey'] = (key) => this.need().readKey(key);
  logEntries: ApiBackend['logEntries'] = (from, limit) => this.need().logEntries(from, limit);
  pingDatabase: ApiBackend['pingDatabase'] = async (timeoutMs) => {
    if (this.current === null) throw new Error(`not connected: ${this.reason}`);
    return this.current.backend.pingDatabase(timeoutMs);
  };
  on(event: NodeEvent, listener: (...args: unknown[]) => void): this {
    this.events.on(event, listener);
    return this;
  }
  off(event: NodeEvent, listener: (...args: unknown[]) => void): this {
    this.events.off(event, listener);
    return this;
  }
}
