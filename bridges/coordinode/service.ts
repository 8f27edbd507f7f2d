/**
 * CoordiNode's RaftService (package coordinode.v1.replication) as a grpc-js
 * service definition over raw bodies: the bridge encodes and decodes the
 * RaftPayload / RaftEmpty bytes itself (framing.ts), because the newest
 * CoordiNode compresses whole bodies with zstd outside gRPC's own
 * compression, which a protobuf serializer could not see.
 */
import type * as grpc from '@grpc/grpc-js';

export const SERVICE_NAME = 'coordinode.v1.replication.RaftService';

const raw = {
  requestSerialize: (body: Buffer) => body,
  requestDeserialize: (body: Buffer) => body,
  responseSerialize: (body: Buffer) => body,
  responseDeserialize: (body: Buffer) => body,
};

function method(name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> {
  return { path: `/${SERVICE_NAME}/${name}`, requestStream, responseStream, originalName: name, ...raw };
}

export const RAFT_SERVICE: grpc.ServiceDefinition = {
  Vote: method('Vote', false, false),
  AppendEntries: method('AppendEntries', false, false),
  StreamAppend: method('StreamAppend', true, true),
  Snapshot: method('Snapshot', true, false),
  TransferLeader: method('TransferLeader', false, false),
};

export const METHOD_PATHS = {
  Vote: RAFT_SERVICE.Vote!.path,
  AppendEntries: RAFT_SERVICE.AppendEntries!.path,
  StreamAppend: RAFT_SERVICE.StreamAppend!.path,
  Snapshot: RAFT_SERVICE.Snapshot!.path,
  TransferLeader: RAFT_SERVICE.TransferLeader!.path,
} as const;
