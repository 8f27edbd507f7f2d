/**
 * rale as a library. `Node` is the node-raft-shaped entry point; the lower
 * layers (the pure core, the driver, storage roles) are exported for those
 * who want to assemble their own.
 */
export { Node, type NodeOptions, type PeerDescription, type Callback } from './library.ts';
export { RaftNode, type RaftNodeOptions, type ProposalOutcome } from './node/raft-node.ts';
export { MemoryNetwork, fromCallbackTransport, type Transport, type Connection, type CallbackTransport, type InvokeHandler } from './node/transport.ts';
export { MemoryStateMachine, type MemoryStateMachineOptions, type ApplyFunction } from './node/memory-state-machine.ts';
export { encodeCommand, decodeCommand, type CommandEnvelope, type KvCommand } from './node/command.ts';
export { MemoryLogStorage } from './storage/memory.ts';
export type { LogStorage, StateMachine, ApplyResult, PersistBatch } from './storage/types.ts';
export { RaleError, ErrorCodes, isRaleError, type ErrorCode } from './errors.ts';
export * as core from './core/index.ts';
export { GrpcTransport, GrpcPeerError, type GrpcTransportOptions, type GrpcTlsOptions, type SecurityEvent } from './transport/grpc.ts';
export { PgNode, type PgNodeOptions } from './pg/node.ts';
export { createApi, API_BASE, type ApiBackend, type ApiOptions, type RaleApi } from './http/api.ts';
export { pgNodeBackend } from './http/node-api.ts';
