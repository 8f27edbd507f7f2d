/**
 * The Phalanx bridge: Phalanx clients and Phalanx nodes work with a rale
 * cluster in Phalanx's own protocol (JSON over gRPC, docs/protocols/phalanx.md).
 *
 *  - /phalanx.KV/Propose and /phalanx.KV/Read on the node's peer gRPC server:
 *    SET / DELETE become rale kv commands, Read reads rale's kv state
 *    linearizably;
 *  - /phalanx.Consensus/* on the same server, for Phalanx members that send
 *    us RPCs (they are learners: their bids to lead are refused, see below);
 *  - a connector for members at `phalanx://host:port`, replicating rale's log
 *    to them as Phalanx AppendEntries (peer.ts);
 *  - Phalanx's debug HTTP server (/health, /debug/status) on its own
 *    listener, when `debugListen` is set;
 *  - POST /phalanx/members on the REST API: adds a Phalanx node as a learner.
 *
 * Design, mapping and the safety argument: docs/bridges/phalanx.md.
 */
import type http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import express from 'express';
import { RaleError } from '../../sidecar/src/errors.ts';
import { Role, type ConfigChange, type NodeId } from '../../sidecar/src/core/types.ts';
import type { Bridge, BridgeContext, BridgeMember, BridgeModule, BridgeStatus } from '../../sidecar/src/plugins/bridge-api.ts';
import {
  CommandOp,
  decodeAppendEntriesRequest,
  decodeCommand,
  decodeProposeRequest,
  decodeReadRequest,
  decodeRequestVoteRequest,
  encodeAppendEntriesResponse,
  encodeProposeResponse,
  encodeReadResponse,
  encodeRequestVoteResponse,
  PhalanxDecodeError,
  type ProposeResponse,
  type ReadResponse,
} from './codec.ts';
import { startDebugServer, type PhalanxNodeStatus } from './debug-http.ts';
import { phalanxValue } from './entries.ts';
import { parsePhalanxOptions, type PhalanxOptions } from './options.ts';
import { APPEND_ENTRIES_PATH, phalanxAuthority, PhalanxPeer, REQUEST_VOTE_PATH } from './peer.ts';

export const SCHEME = 'phalanx';
export const NOT_LEADER = 'not leader';
export const PROPOSAL_TIMED_OUT = 'proposal timed out';
export const LOST_QUORUM = 'leader lost quorum — cannot serve linearizable read';

// Messages travel as raw bytes through grpc-js: the handlers decode them, so
// that a malformed request gets Phalanx's own answer instead of a grpc-js failure.
const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const method = (path: string) => ({
  path,
  requestStream: false,
  responseStream: false,
  requestSerialize: bytes.serialize,
  requestDeserialize: bytes.deserialize,
  responseSerialize: bytes.serialize,
  responseDeserialize: bytes.deserialize,
});

export const KV_SERVICE: grpc.ServiceDefinition = {
  Propose: method('/phalanx.KV/Propose'),
  Read: method('/phalanx.KV/Read'),
};

export const CONSENSUS_SERVICE: grpc.ServiceDefinition = {
  AppendEntries: method(APPEND_ENTRIES_PATH),
  RequestVote: method(REQUEST_VOTE_PATH),
};

type Unary = (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => void;

/** What grpc-go answers when its codec cannot unmarshal a request (codes.Internal). */
function unmarshalError(err: PhalanxDecodeError): grpc.ServiceError {
  return Object.assign(new Error(err.message), { code: grpc.status.INTERNAL, details: `grpc: error unmarshalling request: ${err.message}`, metadata: new grpc.Metadata() });
}

function grpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/** Phalanx's state names. A pre-candidate is campaigning too (its pre-vote round): CANDIDATE. */
export function phalanxState(role: Role | string): string {
  if (role === Role.Leader) return 'LEADER';
  if (role === Role.Candidate || role === Role.PreCandidate) return 'CANDIDATE';
  return 'FOLLOWER';
}

const schemeOf = (address: string | null) => (address?.startsWith(`${SCHEME}://`) ? SCHEME : null);

/** The address a Phalanx client should dial for the leader: its peer gRPC address (where this bridge serves KV), or "". */
function leaderAddr(s: BridgeStatus): string {
  if (s.leader === null || s.leader === s.id) return '';
  const address = s.leaderAddress ?? '';
  return address.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
}

export class PhalanxBridge implements Bridge {
  readonly options: PhalanxOptions;
  private readonly peers = new Map<NodeId, PhalanxPeer>();
  private debugServer: http.Server | null = null;
  private readonly unsubscribe: Array<() => void> = [];
  private readonly metrics = { sent: 0, elections: 0, proposals: 0, reads: 0, refusedLeaderRpcs: 0 };
  private lastRefusal: string | null = null;

  constructor(private readonly ctx: BridgeContext) {
    this.options = parsePhalanxOptions(ctx.options);
    ctx.addGrpcService(KV_SERVICE, { Propose: this.propose, Read: this.read });
    ctx.addGrpcService(CONSENSUS_SERVICE, { AppendEntries: this.appendEntries, RequestVote: this.requestVote });
    ctx.registerPeerScheme(SCHEME, (peer, address) => {
      const connection = new PhalanxPeer(
        peer,
        address,
        {
          localId: ctx.nodeId,
          deliver: (from, messages) => ctx.deliver(from, messages),
          roleOf: (id) => {
            try {
              return ctx.status().members.find((m) => m.id === id)?.role ?? null;
            } catch {
              return null;
            }
          },
          log: (level, message, fields) => ctx.log(level, message, fields),
          reportError: (err, where) => ctx.reportError(err, where),
          sent: () => void this.metrics.sent++,
        },
        this.options,
      );
      this.peers.get(peer)?.close().catch(() => {});
      this.peers.set(peer, connection);
      return {
        invoke: (type, args) => connection.invoke(type, args),
        close: async () => {
          if (this.peers.get(peer) === connection) this.peers.delete(peer);
          await connection.close();
        },
      };
    });
    this.mountAdmin();
  }

  // ------------------------------------------------------------- KV service

  private notLeaderAnswer(): ProposeResponse {
    return { success: false, leader_addr: leaderAddr(this.ctx.status()), error: NOT_LEADER };
  }

  private isLeader(): boolean {
    return this.ctx.status().role === Role.Leader;
  }

  readonly propose: Unary = (call, callback) => {
    this.metrics.proposals++;
    let data: Uint8Array | null;
    try {
      data = decodeProposeRequest(call.request).data;
    } catch (err) {
      if (err instanceof PhalanxDecodeError) return callback(unmarshalError(err));
      throw err;
    }
    const answer = (response: ProposeResponse) => callback(null, Buffer.from(encodeProposeResponse(response)));
    void this.proposeCommand(data).then(answer, (err: unknown) => {
      this.ctx.reportError(err, 'KV.Propose');
      answer({ success: false, leader_addr: '', error: (err as Error)?.message ?? String(err) });
    });
  };

  private async proposeCommand(data: Uint8Array | null): Promise<ProposeResponse> {
    const failure = (error: string): ProposeResponse => ({ success: false, leader_addr: '', error });
    let status: BridgeStatus;
    try {
      status = this.ctx.status();
    } catch (err) {
      return failure((err as Error).message);
    }
    if (this.options.followers === 'redirect' && status.role !== Role.Leader) return this.notLeaderAnswer();
    if (data === null || data.length === 0) return failure('empty command: data must hold the JSON of a Command {"op":"SET"|"DELETE","key":...,"value":...}');
    let command;
    try {
      command = decodeCommand(data);
    } catch (err) {
      if (err instanceof PhalanxDecodeError) return failure(`fsm: decode command: ${err.message}`);
      throw err;
    }
    let proposal;
    if (command.op === CommandOp.Set) proposal = { op: 'set' as const, key: command.key, value: command.value };
    else if (command.op === CommandOp.Delete) proposal = { op: 'delete' as const, key: command.key };
    else return failure(`fsm: unknown op ${JSON.stringify(command.op)} (Phalanx commands are SET and DELETE)`);

    const timeoutMs = this.options.proposeTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      const outcome = await Promise.race([this.ctx.propose(proposal, { timeoutMs }), timedOut]);
      if (outcome === 'timeout') return failure(PROPOSAL_TIMED_OUT);
      return { success: true, leader_addr: '', error: '' };
    } catch (err) {
      if (err instanceof RaleError) {
        if (err.code === 'TIMEOUT') return failure(PROPOSAL_TIMED_OUT);
        if (err.code === 'NOT_LEADER' || err.code === 'NO_LEADER') return this.notLeaderAnswer();
        return failure(`${err.message} (${err.code})`);
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  readonly read: Unary = (call, callback) => {
    this.metrics.reads++;
    let key: string;
    try {
      key = decodeReadRequest(call.request).key;
    } catch (err) {
      if (err instanceof PhalanxDecodeError) return callback(unmarshalError(err));
      throw err;
    }
    const answer = (response: ReadResponse) => callback(null, Buffer.from(encodeReadResponse(response)));
    void this.readKey(key).then(answer, (err: unknown) => {
      this.ctx.reportError(err, 'KV.Read');
      answer({ value: '', found: false, leader_addr: '', error: (err as Error)?.message ?? String(err) });
    });
  };

  private async readKey(key: string): Promise<ReadResponse> {
    const notLeader = (): ReadResponse => ({ value: '', found: false, leader_addr: leaderAddr(this.ctx.status()), error: NOT_LEADER });
    let status: BridgeStatus;
    try {
      status = this.ctx.status();
    } catch (err) {
      return { value: '', found: false, leader_addr: '', error: (err as Error).message };
    }
    if (this.options.followers === 'redirect' && status.role !== Role.Leader) return notLeader();
    try {
      const entry = await this.ctx.read(key, 'linearizable', this.options.readTimeoutMs);
      return entry === null ? { value: '', found: false, leader_addr: '', error: '' } : { value: phalanxValue(entry.value), found: true, leader_addr: '', error: '' };
    } catch (err) {
      if (!(err instanceof RaleError)) throw err;
      // A leader that could not confirm its leadership in time: Phalanx's lost-quorum answer.
      let leader = false;
      try {
        leader = this.isLeader();
      } catch {
        leader = false;
      }
      if (leader || status.role === Role.Leader) return { value: '', found: false, leader_addr: '', error: LOST_QUORUM };
      return notLeader();
    }
  }

  // ------------------------------------------------------ Consensus service

  /** Who may send us Consensus RPCs: members at phalanx:// addresses. Returns an error for others. */
  private checkSender(from: string, rpc: string): { term: number } | grpc.ServiceError {
    let status: BridgeStatus;
    try {
      status = this.ctx.status();
    } catch (err) {
      return grpcError(grpc.status.UNAVAILABLE, (err as Error).message);
    }
    const member = status.members.find((m) => m.id === from);
    if (member === undefined || schemeOf(member.address) !== SCHEME) {
      return grpcError(
        grpc.status.PERMISSION_DENIED,
        `${rpc} from ${JSON.stringify(from)} refused: it is not a ${SCHEME}:// member of this rale cluster (node ${status.id}); ` +
          'add the Phalanx node first with POST /phalanx/members {"node_id": ..., "address": "host:port"}',
      );
    }
    return { term: status.term };
  }

  private refuse(what: string): void {
    this.metrics.refusedLeaderRpcs++;
    if (this.lastRefusal !== what) this.ctx.log('warn', `${what}: refused, Phalanx members are learners and never lead (see docs/bridges/phalanx.md)`);
    this.lastRefusal = what;
  }

  readonly appendEntries: Unary = (call, callback) => {
    let request;
    try {
      request = decodeAppendEntriesRequest(call.request);
    } catch (err) {
      if (err instanceof PhalanxDecodeError) return callback(unmarshalError(err));
      throw err;
    }
    const sender = this.checkSender(request.LeaderID, 'AppendEntries');
    if (sender instanceof Error) return callback(sender);
    // A Phalanx node believes it leads term request.Term: it may not (its log is not durable and it
    // knows nothing of rale's membership), so its entries never reach the core.
    this.refuse(`phalanx member ${request.LeaderID} sent AppendEntries as leader of term ${request.Term}`);
    callback(null, Buffer.from(encodeAppendEntriesResponse({ Term: sender.term, Success: false, LastLogIndex: 0 })));
  };

  readonly requestVote: Unary = (call, callback) => {
    let request;
    try {
      request = decodeRequestVoteRequest(call.request);
    } catch (err) {
      if (err instanceof PhalanxDecodeError) return callback(unmarshalError(err));
      throw err;
    }
    const sender = this.checkSender(request.CandidateID, 'RequestVote');
    if (sender instanceof Error) return callback(sender);
    this.refuse(`phalanx member ${request.CandidateID} asked for a ${request.IsPreVote ? 'pre-vote' : 'vote'} in term ${request.Term}`);
    callback(null, Buffer.from(encodeRequestVoteResponse({ Term: sender.term, VoteGranted: false, IsPreVote: request.IsPreVote })));
  };

  // ------------------------------------------------------------ admin route

  /** POST /phalanx/members {"node_id", "address"}: adds a Phalanx node as a learner (REST join would promote it). */
  private mountAdmin(): void {
    const router = express.Router();
    router.post('/members', express.json(), async (req, res) => {
      const body = (req.body ?? {}) as { node_id?: unknown; address?: unknown };
      const nodeId = body.node_id;
      if (typeof nodeId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(nodeId)) {
        res.status(400).json({ code: 'INVALID_ARGUMENT', message: `node_id must be the Phalanx node's id (letters, digits, . _ -; at most 63), not ${JSON.stringify(nodeId)}` });
        return;
      }
      const raw = typeof body.address === 'string' ? body.address : '';
      const address = raw.startsWith(`${SCHEME}://`) ? raw : `${SCHEME}://${raw}`;
      try {
        phalanxAuthority(address);
      } catch (err) {
        res.status(400).json({ code: 'INVALID_ARGUMENT', message: `address: ${(err as Error).message}` });
        return;
      }
      try {
        const existing = this.ctx.status().members.find((m) => m.id === nodeId);
        if (existing !== undefined) {
          res.status(existing.address === address && existing.role === 'learner' ? 200 : 409).json({ node_id: nodeId, address: existing.address, role: existing.role, changed: false });
          return;
        }
        const outcome = await this.ctx.changeMembership({ type: 'addLearner', node: nodeId, context: address });
        res.json({ node_id: nodeId, address, role: 'learner', changed: true, index: outcome.index, term: outcome.term });
      } catch (err) {
        const code = err instanceof RaleError ? err.code : 'INTERNAL';
        res.status(code === 'NOT_LEADER' || code === 'NO_LEADER' ? 421 : code === 'INVALID_CONFIG_CHANGE' || code === 'CONFIG_CHANGE_PENDING' ? 409 : 503).json({
          code,
          message: (err as Error).message,
          ...(err instanceof RaleError ? { hint: err.hint, ...err.details } : {}),
        });
      }
    });
    try {
      this.ctx.mountHttp('/phalanx', router);
    } catch (err) {
      // A node without a REST API: members are then added with rale's own tools.
      this.ctx.log('warn', `POST /phalanx/members is not served: ${(err as Error).message}`);
    }
  }

  /** Refuses (REST / CLI) changes that would make a Phalanx member a voter. */
  checkMembershipChange(change: ConfigChange, members: BridgeMember[]): void {
    const why =
      'a Phalanx node keeps its log in memory only (it persists term and vote, not entries), so its acknowledgements and votes do not survive a restart; ' +
      'it stays a learner: it receives every entry and applies SET/DELETE, but does not vote or count toward commit';
    if (change.type === 'promote') {
      const member = members.find((m) => m.id === change.node);
      if (member !== undefined && schemeOf(member.address) === SCHEME) {
        throw new RaleError('INVALID_ARGUMENT', `member ${change.node} (${member.address}) cannot become a voter: ${why}`);
      }
    }
    if (change.type === 'addVoter' && schemeOf(change.context ?? null) === SCHEME) {
      throw new RaleError('INVALID_ARGUMENT', `${change.node} at ${change.context} cannot join as a voter: ${why}; add it with POST /phalanx/members`);
    }
  }

  // ------------------------------------------------------------ debug HTTP

  private async debugStatus(): Promise<PhalanxNodeStatus> {
    const s = this.ctx.status();
    const kv_data: Record<string, string> = {};
    let kv_size = 0;
    if (this.ctx.kvScan !== undefined) {
      const scan = await this.ctx.kvScan(this.options.kvDataLimit);
      kv_size = scan.size;
      for (const { key, value } of scan.entries) kv_data[key] = phalanxValue(value);
    }
    const state = phalanxState(s.role);
    return {
      node_id: s.id,
      state,
      term: s.term,
      leader_id: s.leader ?? '',
      commit_index: s.commitIndex,
      applied_index: s.appliedIndex,
      // Phalanx counts its index-0 sentinel: len(log) = last index + 1.
      log_length: s.lastIndex + 1,
      peers: s.members.map((m) => m.id).filter((id) => id !== s.id),
      kv_size,
      kv_data,
      metrics: {
        messages_sent_total: this.metrics.sent,
        election_count: this.metrics.elections,
        last_commit_index: s.commitIndex,
        proposals_total: this.metrics.proposals,
        reads_total: this.metrics.reads,
        applied_index: s.appliedIndex,
        current_state: state,
      },
    };
  }

  /** The debug server's address once started (tests, logs). */
  debugAddress(): { host: string; port: number } | null {
    const address = this.debugServer?.address();
    return address !== null && typeof address === 'object' ? { host: address.address, port: address.port } : null;
  }

  // ------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    this.unsubscribe.push(
      this.ctx.on('role', (role) => {
        if (role === Role.Candidate) this.metrics.elections++;
      }),
    );
    const listen = this.options.debugListen;
    if (listen !== null) {
      this.debugServer = await startDebugServer(
        listen,
        { node: () => this.ctx.nodeId, state: () => phalanxState(this.ctx.status().role), status: () => this.debugStatus() },
        (err) => this.ctx.log('warn', `/debug/status failed: ${(err as Error)?.message ?? String(err)}`),
      );
      const address = this.debugAddress();
      this.ctx.log('info', `Phalanx debug HTTP (/health, /debug/status) on ${address?.host}:${address?.port}`);
    }
  }

  async stop(): Promise<void> {
    for (const off of this.unsubscribe.splice(0)) off();
    await Promise.all([...this.peers.values()].map((p) => p.close()));
    this.peers.clear();
    const server = this.debugServer;
    this.debugServer = null;
    if (server !== null) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  health(): { ok: boolean; detail: string } {
    const problems = [...this.peers.values()].filter((p) => p.state.problem !== null).map((p) => p.state.problemDetail as string);
    const members = [...this.peers.values()].map((p) => `${p.state.peer}${p.state.lastRpcError === null ? '' : ' (unreachable: ' + p.state.lastRpcError + ')'}`);
    const debug = this.debugAddress();
    const parts = [
      `phalanx members: ${members.length === 0 ? 'none' : members.join(', ')}`,
      `debug HTTP: ${debug === null ? 'off' : `${debug.host}:${debug.port}`}`,
      `KV calls: ${this.metrics.proposals} propose, ${this.metrics.reads} read`,
    ];
    if (this.metrics.refusedLeaderRpcs > 0) parts.push(`${this.metrics.refusedLeaderRpcs} RPC(s) from Phalanx members bidding to lead refused`);
    if (problems.length > 0) return { ok: false, detail: [...problems, ...parts].join('; ') };
    return { ok: true, detail: parts.join('; ') };
  }
}

export const bridge: BridgeModule = {
  apiVersion: 1,
  name: 'phalanx',
  create: (ctx) => new PhalanxBridge(ctx),
};

export default bridge;
