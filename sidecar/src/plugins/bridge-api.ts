/**
 * The bridge plugin interface, version 1.
 *
 * A bridge lets clients and Raft nodes of a foreign system work with a rale
 * cluster in their own wire protocol. It is a module that exports
 *
 *   export const bridge: BridgeModule = {
 *     apiVersion: 1,
 *     name: 'phalanx',
 *     create(ctx) { ...; return { start, stop, health } },
 *   };
 *
 * (or the same object as the default export). The sidecar loads the bridges
 * its configuration names, calls `create` and then `start` once the node is
 * up, and `stop` before the node stops. What a bridge may do goes through
 * its context, and only through it, so that a bridge never holds the node
 * itself:
 *  - client work: propose (resolved once applied on this node), reads
 *    (linearizable or local), status, membership, leadership transfer;
 *  - servers: add gRPC services to the node's peer server, mount HTTP
 *    routes on its REST server;
 *  - peer work: a member whose address has the scheme the bridge registered
 *    (`phalanx://host:port`) is reached through the bridge's connector,
 *    which encodes the core's outbound messages in the foreign protocol;
 *    `deliver` hands inbound foreign messages, decoded, to the core.
 *
 * Containment: every call into a bridge (create, start, stop, health,
 * connectors, handlers of its services and routes) runs under a time limit
 * and a catch. A bridge that throws or hangs is logged, counted in
 * rale_bridge_errors_total and shown by /health; consensus goes on.
 *
 * Compatibility: the sidecar refuses a module whose apiVersion it does not
 * implement. New optional members may be added to the context within a
 * version; removing or changing one is a new version.
 */
import type * as grpc from '@grpc/grpc-js';
import type { RequestHandler, Router } from 'express';
import type { ConfigChange, Message, NodeId, Role } from '../core/types.ts';
import type { ProposalOutcome } from '../node/raft-node.ts';
import type { Connection } from '../node/transport.ts';

export const BRIDGE_API_VERSION = 1;

export type BridgeLogLevel = 'debug' | 'info' | 'warn' | 'error';

/** A command of rale's key-value state machine, or a call of a registered SQL handler. */
export type BridgeCommand =
  | { op: 'set'; key: string; value: unknown }
  | { op: 'delete'; key: string }
  | { op: 'cas'; key: string; expected: unknown; value: unknown }
  | { handler: string; args?: unknown };

export interface KvRead {
  value: unknown;
  /** Log index of the entry that last wrote the key. */
  version: number;
}

export interface BridgeMember {
  id: NodeId;
  role: 'voter' | 'learner';
  /** Where the member is reached; a `scheme://` prefix names the bridge that speaks to it. */
  address: string | null;
}

export interface BridgeStatus {
  id: NodeId;
  /** 'leader', 'follower', 'candidate' or 'pre-candidate'. */
  role: Role;
  term: number;
  leader: NodeId | null;
  leaderAddress: string | null;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  members: BridgeMember[];
}

export interface BridgeContext {
  readonly apiVersion: typeof BRIDGE_API_VERSION;
  /** The bridge's name as loaded (its module's name). */
  readonly name: string;
  readonly nodeId: NodeId;
  /** The bridge's section of the configuration, as written there: the bridge validates it. */
  readonly options: Readonly<Record<string, unknown>>;
  log(level: BridgeLogLevel, message: string, fields?: Record<string, unknown>): void;

  // ---------------------------------------------------------- client work
  /**
   * Proposes a command (forwarded to the leader from a follower) and
   * resolves once it is applied on this node. `id` makes retries safe: the
   * same id is applied at most once. Rejects with a RaleError (code
   * NOT_LEADER, NO_LEADER, TIMEOUT, ENTRY_TOO_LARGE, ...).
   */
  propose(command: BridgeCommand, options?: { id?: string; timeoutMs?: number }): Promise<ProposalOutcome>;
  /** Reads a key of the replicated kv state; linearizable runs a read barrier first. null: no such key. */
  read(key: string, consistency: 'linearizable' | 'local', timeoutMs?: number): Promise<KvRead | null>;
  /**
   * This node's replicated kv state as applied here (no read barrier): how
   * many keys it holds and the first `limit` of them in key order. Optional
   * (added within version 1): for status pages such as Phalanx's /debug/status.
   */
  kvScan?(limit: number): Promise<{ size: number; entries: Array<{ key: string; value: unknown }> }>;
  status(): BridgeStatus;
  changeMembership(change: ConfigChange, timeoutMs?: number): Promise<ProposalOutcome>;
  transferLeadership(target: NodeId): void;
  /** Subscribes to the node's events; returns the unsubscribe function. */
  on(event: 'role' | 'leader' | 'applied', listener: (...args: unknown[]) => void): () => void;
  /**
   * The log as this node holds it: up to `limit` entries from index `from`
   * (fewer, or none, where the log is compacted or ends). Term and leader
   * only: foreign protocols whose log ids name the leader (openraft) need
   * the leader of an older entry the bridge has not seen. Optional: absent
   * on hosts without a log reader.
   */
  logEntries?(from: number, limit: number): Promise<Array<{ index: number; term: number; leader: NodeId | null }>>;

  // ---------------------------------------------------------- servers
  /** Adds a service to the node's gRPC (peer) server. Handlers are contained (errors counted and answered INTERNAL). */
  addGrpcService(definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): void;
  /** Mounts routes on the node's REST server under `path`; `auth: false` skips the bearer token (foreign clients do not send it). */
  mountHttp(path: string, handler: RequestHandler | Router, options?: { auth?: boolean }): void;

  // ---------------------------------------------------------- peer work
  /**
   * Members whose address starts with `<scheme>://` are reached through
   * `connect`: the node calls `invoke('raft', Message[])` on the connection
   * for the core's outbound messages (other call types are rale-to-rale
   * forwarding; a bridge may refuse them with NOT_LEADER). The connection's
   * invoke must not wait for the foreign answer to resolve: answers come back
   * through `deliver`.
   */
  registerPeerScheme(scheme: string, connect: (peer: NodeId, address: string) => Connection): void;
  /** Hands messages from a foreign member, decoded into rale's form, to the core. */
  deliver(from: NodeId, messages: Message[]): Promise<void>;
  /** Counts a failure of this bridge (also logged); shows in metrics and health. */
  reportError(err: unknown, where: string): void;

  // ---------------------------------------------------------- state
  /**
   * A consistent image of the replicated key-value state as this node has
   * applied it: every key with its value and version, and the index and term
   * of the last entry applied. Bridges hand it to a foreign follower that
   * starts from a state rather than from the log. Optional: absent on hosts
   * without it.
   */
  kvSnapshot?(): Promise<{ index: number; term: number; kv: Array<{ key: string; value: unknown; version: number }> }>;
}

export interface Bridge {
  /** Called once the node is running; may bind extra listeners. */
  start?(): Promise<void> | void;
  /** Called before the node stops; must release everything start took. */
  stop?(): Promise<void> | void;
  /** What /health shows for this bridge. */
  health?(): { ok: boolean; detail: string };
  /**
   * Called before this node proposes a membership change asked for through
   * its REST API (or `rale` CLI). Throw a RaleError (INVALID_ARGUMENT) saying
   * why to refuse it, e.g. promoting a member whose protocol cannot vote.
   * `members` is the current membership. Must be quick; other throws are
   * counted against the bridge and do not refuse the change.
   */
  checkMembershipChange?(change: ConfigChange, members: BridgeMember[]): void;
}

export interface BridgeModule {
  apiVersion: typeof BRIDGE_API_VERSION;
  name: string;
  create(ctx: BridgeContext): Bridge | Promise<Bridge>;
}
