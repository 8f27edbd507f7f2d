/**
 * The Phalanx bridge in process (no PostgreSQL): entry mapping, the
 * application/grpc+json client, replication to a fake Phalanx node, the KV
 * and Consensus services on a grpc-js server, the debug HTTP bodies, and
 * property-based fuzzing of every decoder and endpoint.
 */
import http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import fc from 'fast-check';
import { RaleError } from '../../sidecar/src/errors.ts';
import { EntryKind, MessageType, Role, type Entry, type Message } from '../../sidecar/src/core/types.ts';
import type { BridgeContext, BridgeStatus } from '../../sidecar/src/plugins/bridge-api.ts';
import {
  decodeAppendEntriesRequest,
  decodeAppendEntriesResponse,
  decodeCommand,
  decodeProposeResponse,
  decodeReadResponse,
  decodeRequestVoteResponse,
  encodeAppendEntriesRequest,
  encodeCommandBytes,
  encodeProposeRequest,
  encodeReadRequest,
  encodeRequestVoteRequest,
  EntryType,
  type LogEntry,
} from '../../bridges/phalanx/codec.ts';
import { fromPhalanxEntry, PhalanxEntryError, RALE_OP, toPhalanxEntry } from '../../bridges/phalanx/entries.ts';
import { GrpcCallError, GrpcJsonClient, unframe } from '../../bridges/phalanx/grpc-json-client.ts';
import { healthBody, startDebugServer, statusBody, type PhalanxNodeStatus } from '../../bridges/phalanx/debug-http.ts';
import { parsePhalanxOptions } from '../../bridges/phalanx/options.ts';
import { PhalanxPeer, type PeerHost } from '../../bridges/phalanx/peer.ts';
import { CONSENSUS_SERVICE, KV_SERVICE, LOST_QUORUM, PhalanxBridge } from '../../bridges/phalanx/index.ts';
import { FakePhalanxNode } from './phalanx-fake-node.ts';

const utf8 = (s: string) => new TextEncoder().encode(s);
const envelope = (command: unknown, id = 'c1') => utf8(JSON.stringify({ id, command }));

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// ---------------------------------------------------------------- entries

test('rale entries travel as Phalanx entries that Phalanx applies, and come back unchanged', (t) => {
  const set: Entry = { index: 5, term: 2, kind: EntryKind.Normal, data: envelope({ op: 'set', key: 'k', value: 'v' }) };
  const wire = toPhalanxEntry(set);
  t.is(wire.Type, EntryType.Command);
  // What Phalanx's fsm decodes from Data (unknown keys ignored): a plain SET.
  t.deepEqual(decodeCommand(wire.Data as Uint8Array), { op: 'SET', key: 'k', value: 'v' });
  t.deepEqual(fromPhalanxEntry(wire), set);

  const number = toPhalanxEntry({ index: 6, term: 2, kind: EntryKind.Normal, data: envelope({ op: 'set', key: 'n', value: { a: 1 } }) });
  t.deepEqual(decodeCommand(number.Data as Uint8Array), { op: 'SET', key: 'n', value: '{"a":1}' });
  const del = toPhalanxEntry({ index: 7, term: 2, kind: EntryKind.Normal, data: envelope({ op: 'delete', key: 'k' }) });
  t.deepEqual(decodeCommand(del.Data as Uint8Array), { op: 'DELETE', key: 'k', value: '' });
  const cas = toPhalanxEntry({ index: 8, term: 2, kind: EntryKind.Normal, data: envelope({ op: 'cas', key: 'k', expected: null, value: 1 }) });
  t.is(decodeCommand(cas.Data as Uint8Array).op, RALE_OP);

  t.deepEqual(toPhalanxEntry({ index: 9, term: 3, kind: EntryKind.Noop, data: new Uint8Array(0) }), { Index: 9, Term: 3, Data: null, Type: EntryType.Command });
  const config = toPhalanxEntry({ index: 10, term: 3, kind: EntryKind.Config, data: utf8('{"type":"addLearner","node":"p1","context":"phalanx://h:1"}') });
  t.is(config.Type, EntryType.ConfigChange);
  t.is(fromPhalanxEntry(config).kind, EntryKind.Config);

  // A Phalanx node's own entries: deterministic rale entries.
  const own = fromPhalanxEntry({ Index: 4, Term: 1, Data: encodeCommandBytes({ op: 'SET', key: 'a', value: 'b' }), Type: 0 });
  t.deepEqual(JSON.parse(new TextDecoder().decode(own.data)), { id: 'phalanx-1-4', command: { op: 'set', key: 'a', value: 'b' } });
  t.is(fromPhalanxEntry({ Index: 4, Term: 1, Data: null, Type: 0 }).kind, EntryKind.Noop);
  t.throws(() => fromPhalanxEntry({ Index: 4, Term: 1, Data: utf8('10.0.0.1:9000'), Type: 1 }), { instanceOf: PhalanxEntryError });
});

const entryArb: fc.Arbitrary<Entry> = fc.oneof(
  fc.record({ index: fc.nat(1e9), term: fc.nat(1e6), kind: fc.constant(EntryKind.Noop), data: fc.constant(new Uint8Array(0)) }),
  fc.record({ index: fc.nat(1e9), term: fc.nat(1e6), kind: fc.constant(EntryKind.Config), data: fc.jsonValue().map((v) => utf8(JSON.stringify({ type: 'addLearner', node: 'x', v }))) }),
  fc.record({
    index: fc.nat(1e9),
    term: fc.nat(1e6),
    kind: fc.constant(EntryKind.Normal),
    data: fc.oneof(
      fc.record({ op: fc.constantFrom('set', 'delete', 'cas'), key: fc.string(), value: fc.jsonValue() }).map((c) => envelope(c)),
      fc.uint8Array({ maxLength: 64 }),
    ),
  }),
);

test('property: every rale entry survives the trip through Phalanx; every Phalanx entry maps or is refused clearly', (t) => {
  fc.assert(
    fc.property(entryArb, (entry) => {
      const wire = toPhalanxEntry(entry);
      // What Phalanx's own decoder would do with it must not fail on JSON.
      if (wire.Type === EntryType.Command && wire.Data !== null) decodeCommand(wire.Data);
      // Through the wire, as a Phalanx node receives and would send it back.
      const request = decodeAppendEntriesRequest(encodeAppendEntriesRequest({ Term: 1, LeaderID: 'n1', PrevLogIndex: 0, PrevLogTerm: 0, Entries: [wire], LeaderCommit: 0 }));
      const back = fromPhalanxEntry(request.Entries?.[0] as LogEntry);
      return back.index === entry.index && back.term === entry.term && back.kind === entry.kind && Buffer.from(back.data).equals(Buffer.from(entry.data));
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.record({ Index: fc.nat(), Term: fc.nat(), Data: fc.option(fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.jsonValue().map((v) => utf8(JSON.stringify(v))))), Type: fc.nat(255) }), (wire) => {
      try {
        const entry = fromPhalanxEntry(wire);
        return entry.index === wire.Index && entry.term === wire.Term;
      } catch (err) {
        return err instanceof PhalanxEntryError;
      }
    }),
    { numRuns: 1000 },
  );
  t.pass();
});

// ---------------------------------------------------------------- the client

test('the client sends application/grpc+json, which a Phalanx-like server needs; grpc-js cannot', async (t) => {
  const node = new FakePhalanxNode('p1');
  await node.listen();
  const client = new GrpcJsonClient(`127.0.0.1:${node.port}`);
  t.teardown(async () => {
    client.close();
    await node.close();
  });
  const answer = await client.unary('/phalanx.Consensus/AppendEntries', utf8(encodeAppendEntriesRequest({ Term: 1, LeaderID: 'n1', PrevLogIndex: 0, PrevLogTerm: 0, Entries: null, LeaderCommit: 0 })), 2000);
  t.deepEqual(decodeAppendEntriesResponse(answer), { Term: 1, Success: true, LastLogIndex: 0 });
  t.deepEqual(node.contentTypes, ['application/grpc+json']);

  // grpc-js's client sends application/grpc, and the server refuses it as a proto codec would.
  const Client = grpc.makeGenericClientConstructor(CONSENSUS_SERVICE, 'Consensus');
  const jsClient = new Client(`127.0.0.1:${node.port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, (r: Buffer, cb: (e: grpc.ServiceError | null) => void) => void>;
  const err = await new Promise<grpc.ServiceError | null>((resolve) => (jsClient.AppendEntries as (r: Buffer, cb: (e: grpc.ServiceError | null) => void) => void).call(jsClient, Buffer.from('{}'), resolve));
  jsClient.close();
  t.is(err?.code, grpc.status.INTERNAL);
  t.is(node.contentTypes[1], 'application/grpc');

  // A gRPC error status comes back as a GrpcCallError; an unknown method too.
  const failed = await t.throwsAsync(client.unary('/phalanx.Consensus/Nope', utf8('{}'), 2000), { instanceOf: GrpcCallError });
  t.is(failed?.code, 12);
  // Nobody listening: UNAVAILABLE, not a hang.
  const nobody = new GrpcJsonClient('127.0.0.1:1');
  const down = await t.throwsAsync(nobody.unary('/x/y', utf8('{}'), 2000), { instanceOf: GrpcCallError });
  nobody.close();
  t.is(down?.code, 14);
});

test('property: unframe never throws', (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => typeof unframe(Buffer.from(bytes)) === 'object'));
  t.pass();
});

// ---------------------------------------------------------------- the peer connection

function peerHost(role: 'voter' | 'learner' = 'learner') {
  const delivered: Message[] = [];
  const logs: string[] = [];
  const host: PeerHost & { role: 'voter' | 'learner' } = {
    localId: 'n1',
    role,
    deliver: async (_from, messages) => void delivered.push(...messages),
    roleOf() {
      return this.role;
    },
    log: (_level, message) => void logs.push(message),
    reportError: () => {},
    sent: () => {},
  };
  return { host, delivered, logs };
}

const normal = (index: number, term: number, key: string, value: string): Entry => ({ index, term, kind: EntryKind.Normal, data: envelope({ op: 'set', key, value }, `id-${index}`) });

test('replication to a Phalanx member: acknowledgements, commit bounded by what matched, hints, higher terms, lost logs', async (t) => {
  const node = new FakePhalanxNode('p1');
  await node.listen();
  const { host, delivered } = peerHost();
  const peer = new PhalanxPeer('p1', `phalanx://127.0.0.1:${node.port}`, host, { rpcTimeoutMs: 2000, maxQueuedMessages: 64 });
  t.teardown(async () => {
    await peer.close();
    await node.close();
  });
  const base = { from: 'n1', to: 'p1', term: 2 } as const;

  // A probe past the member's end is rejected with Phalanx's hint (its last index).
  await peer.invoke('raft', [{ ...base, type: MessageType.Append, prevIndex: 3, prevTerm: 1, entries: [], commit: 0 }]);
  await waitFor('the reject', () => delivered.length === 1);
  t.like(delivered[0], { type: MessageType.AppendResponse, reject: true, index: 3, hintIndex: 0, term: 2 });

  const entries = [{ index: 1, term: 1, kind: EntryKind.Noop, data: new Uint8Array(0) }, normal(2, 1, 'a', 'x'), normal(3, 2, 'b', 'y')];
  await peer.invoke('raft', [{ ...base, type: MessageType.Append, prevIndex: 0, prevTerm: 0, entries, commit: 2 }]);
  await waitFor('the ack', () => delivered.length === 2);
  t.like(delivered[1], { type: MessageType.AppendResponse, reject: false, index: 3 });
  t.is(node.commitIndex, 2);
  t.deepEqual([...node.kv], [['a', 'x']]);

  // A heartbeat carries the matched point: commit 3 applies b.
  await peer.invoke('raft', [{ ...base, type: MessageType.Heartbeat, commit: 3, context: 'r1' }]);
  await waitFor('the heartbeat answer', () => delivered.length === 3);
  t.like(delivered[2], { type: MessageType.HeartbeatResponse, context: 'r1', term: 2 });
  t.like(node.received.at(-1), { PrevLogIndex: 3, PrevLogTerm: 2, Entries: null, LeaderCommit: 3 });
  t.deepEqual([...node.kv].sort(), [['a', 'x'], ['b', 'y']]);

  // A stale tail beyond what an Append proves is never acknowledged: prev 1 matches, the member holds 3.
  await peer.invoke('raft', [{ ...base, type: MessageType.Append, prevIndex: 1, prevTerm: 1, entries: [], commit: 3 }]);
  await waitFor('the ack', () => delivered.length === 4);
  t.like(delivered[3], { reject: false, index: 1 });

  // In a new term, a heartbeat has no matched point yet: prev (0, 0), and nothing commits.
  await peer.invoke('raft', [{ ...base, term: 3, type: MessageType.Heartbeat, commit: 3, context: '' }]);
  await waitFor('the heartbeat answer', () => delivered.length === 5);
  t.like(node.received.at(-1), { Term: 3, PrevLogIndex: 0, PrevLogTerm: 0, LeaderCommit: 0 });

  // A member at a higher term: the core hears of it as a term notice.
  node.term = 9;
  await peer.invoke('raft', [{ ...base, term: 3, type: MessageType.Heartbeat, commit: 0, context: '' }]);
  await waitFor('the notice', () => delivered.length === 6);
  t.like(delivered[5], { type: MessageType.AppendResponse, term: 9, reject: true, index: 0, hintIndex: 0, hintTerm: 0 });

  // A restarted member (log lost) is reported.
  await peer.invoke('raft', [{ ...base, term: 9, type: MessageType.Append, prevIndex: 3, prevTerm: 2, entries: [], commit: 3 }]);
  await waitFor('the ack', () => delivered.length === 7);
  node.restart();
  await peer.invoke('raft', [{ ...base, term: 9, type: MessageType.Heartbeat, commit: 3, context: '' }]);
  await waitFor('the log loss', () => peer.state.problem === 'log-lost');
  t.regex(peer.state.problemDetail ?? '', /lost its log/);

  // Snapshots cannot be sent: reported, nothing delivered.
  const before = delivered.length;
  await peer.invoke('raft', [{ ...base, term: 9, type: MessageType.Snapshot, snapshot: { meta: { index: 50, term: 9, config: { voters: ['n1'], learners: ['p1'] } }, data: new Uint8Array(0) } }]);
  await waitFor('the snapshot problem', () => peer.state.problem === 'needs-snapshot');
  t.is(delivered.length, before);

  // Forwarding calls are refused.
  await t.throwsAsync(peer.invoke('propose', {}), { instanceOf: RaleError });
});

test('a Phalanx member that became a voter is not spoken to and counts as down', async (t) => {
  const node = new FakePhalanxNode('p1');
  await node.listen();
  const { host, delivered } = peerHost('voter');
  const peer = new PhalanxPeer('p1', `phalanx://127.0.0.1:${node.port}`, host, { rpcTimeoutMs: 2000, maxQueuedMessages: 64 });
  t.teardown(async () => {
    await peer.close();
    await node.close();
  });
  await peer.invoke('raft', [{ type: MessageType.Append, from: 'n1', to: 'p1', term: 1, prevIndex: 0, prevTerm: 0, entries: [], commit: 0 }]);
  await waitFor('the voter problem', () => peer.state.problem === 'voter');
  t.is(delivered.length, 0);
  t.is(node.received.length, 0);
  t.throws(() => new PhalanxPeer('p2', 'phalanx://no port', host, { rpcTimeoutMs: 1, maxQueuedMessages: 1 }), { message: /not phalanx:\/\/host:port/ });
});

// ---------------------------------------------------------------- services on grpc-js

interface MockCtx {
  ctx: BridgeContext;
  proposals: unknown[];
  status: BridgeStatus;
  proposeImpl: (command: unknown) => Promise<unknown>;
  readImpl: (key: string) => Promise<{ value: unknown; version: number } | null>;
}

function mockCtx(options: Record<string, unknown> = {}): MockCtx {
  const m: MockCtx = {
    proposals: [],
    status: {
      id: 'n1',
      role: Role.Leader,
      term: 4,
      leader: 'n1',
      leaderAddress: null,
      commitIndex: 7,
      appliedIndex: 7,
      lastIndex: 7,
      members: [
        { id: 'n1', role: 'voter', address: '127.0.0.1:7001' },
        { id: 'n2', role: 'voter', address: '127.0.0.1:7002' },
        { id: 'p1', role: 'learner', address: 'phalanx://127.0.0.1:9000' },
      ],
    },
    proposeImpl: async () => ({ index: 8, term: 4 }),
    readImpl: async () => null,
    ctx: null as unknown as BridgeContext,
  };
  m.ctx = {
    apiVersion: 1,
    name: 'phalanx',
    nodeId: 'n1',
    options,
    log: () => {},
    propose: async (command) => {
      m.proposals.push(command);
      return (await m.proposeImpl(command)) as never;
    },
    read: (key) => m.readImpl(key),
    kvScan: async () => ({ size: 2, entries: [{ key: 'a', value: 'x' }, { key: 'n', value: 5 }] }),
    status: () => m.status,
    changeMembership: async () => ({ index: 9, term: 4 }) as never,
    transferLeadership: () => {},
    on: () => () => {},
    addGrpcService: () => {},
    mountHttp: () => {},
    registerPeerScheme: () => {},
    deliver: async () => {},
    reportError: () => {},
  };
  return m;
}

type Handler = (call: { request: Buffer }, cb: (err: grpc.ServiceError | null, value?: Buffer) => void) => void;

/** Calls a bridge handler directly; resolves with exactly one callback. */
function callHandler(handler: Handler, request: Uint8Array): Promise<{ err: grpc.ServiceError | null; value?: Buffer }> {
  return new Promise((resolve, reject) => {
    let calls = 0;
    try {
      handler({ request: Buffer.from(request) }, (err, value) => {
        calls++;
        if (calls > 1) reject(new Error('callback called twice'));
        resolve({ err, value });
      });
    } catch (err) {
      reject(err);
    }
  });
}

test('KV.Propose: SET and DELETE become rale commands; timeouts, redirects and bad commands get Phalanx answers', async (t) => {
  const m = mockCtx({ proposeTimeoutMs: 200 });
  const bridge = new PhalanxBridge(m.ctx);
  const propose = (cmd: string) => callHandler(bridge.propose as unknown as Handler, utf8(encodeProposeRequest({ data: utf8(cmd) })));
  const answer = async (cmd: string) => decodeProposeResponse((await propose(cmd)).value as Buffer);

  t.deepEqual(await answer('{"op":"SET","key":"k","value":"v"}'), { success: true, leader_addr: '', error: '' });
  t.deepEqual(await answer('{"op":"DELETE","key":"k"}'), { success: true, leader_addr: '', error: '' });
  t.deepEqual(m.proposals, [{ op: 'set', key: 'k', value: 'v' }, { op: 'delete', key: 'k' }]);
  t.regex((await answer('{"op":"INCR","key":"k"}')).error, /unknown op "INCR"/);
  t.regex((await answer('not json')).error, /^fsm: decode command/);
  t.regex((await answer('')).error, /empty command/);

  m.proposeImpl = () => new Promise(() => {});
  t.deepEqual(await answer('{"op":"SET","key":"k","value":"v"}'), { success: false, leader_addr: '', error: 'proposal timed out' });
  m.proposeImpl = async () => {
    throw new RaleError('NOT_LEADER', 'no');
  };
  m.status = { ...m.status, role: Role.Follower, leader: 'n2', leaderAddress: '127.0.0.1:7002' };
  t.deepEqual(await answer('{"op":"SET","key":"k","value":"v"}'), { success: false, leader_addr: '127.0.0.1:7002', error: 'not leader' });

  // Redirect mode: a follower answers as Phalanx does, without proposing.
  const r = mockCtx({ followers: 'redirect' });
  r.status = { ...r.status, role: Role.Follower, leader: 'n2', leaderAddress: '127.0.0.1:7002' };
  const redirect = new PhalanxBridge(r.ctx);
  const res = await callHandler(redirect.propose as unknown as Handler, utf8(encodeProposeRequest({ data: utf8('{"op":"SET","key":"k","value":"v"}') })));
  t.is(res.value?.toString(), '{"success":false,"leader_addr":"127.0.0.1:7002","error":"not leader"}');
  t.is(r.proposals.length, 0);

  // Undecodable request: grpc-go's own answer (INTERNAL).
  const bad = await callHandler(bridge.propose as unknown as Handler, utf8('{"data":5}'));
  t.is(bad.err?.code, grpc.status.INTERNAL);
  t.regex(bad.err?.details ?? '', /^grpc: error unmarshalling request/);
});

test('KV.Read: linearizable reads of rale values as strings; lost quorum and not-leader answers', async (t) => {
  const m = mockCtx();
  const bridge = new PhalanxBridge(m.ctx);
  const read = async (key: string) => decodeReadResponse((await callHandler(bridge.read as unknown as Handler, utf8(encodeReadRequest({ key })))).value as Buffer);
  m.readImpl = async (key) => (key === 's' ? { value: 'text', version: 3 } : key === 'o' ? { value: { a: [1] }, version: 4 } : null);
  t.deepEqual(await read('s'), { value: 'text', found: true, leader_addr: '', error: '' });
  t.deepEqual(await read('o'), { value: '{"a":[1]}', found: true, leader_addr: '', error: '' });
  t.deepEqual(await read('none'), { value: '', found: false, leader_addr: '', error: '' });
  m.readImpl = async () => {
    throw new RaleError('TIMEOUT', 'read barrier timed out');
  };
  t.deepEqual(await read('s'), { value: '', found: false, leader_addr: '', error: LOST_QUORUM });
  m.status = { ...m.status, role: Role.Follower, leader: null, leaderAddress: null };
  t.deepEqual(await read('s'), { value: '', found: false, leader_addr: '', error: 'not leader' });
});

test('Consensus: a Phalanx member bidding to lead is refused in protocol; strangers are refused with PERMISSION_DENIED', async (t) => {
  const m = mockCtx();
  const bridge = new PhalanxBridge(m.ctx);
  const vote = await callHandler(bridge.requestVote as unknown as Handler, utf8(encodeRequestVoteRequest({ Term: 9, CandidateID: 'p1', LastLogIndex: 100, LastLogTerm: 9, IsPreVote: true })));
  t.deepEqual(decodeRequestVoteResponse(vote.value as Buffer), { Term: 4, VoteGranted: false, IsPreVote: true });
  const append = await callHandler(bridge.appendEntries as unknown as Handler, utf8(encodeAppendEntriesRequest({ Term: 9, LeaderID: 'p1', PrevLogIndex: 0, PrevLogTerm: 0, Entries: null, LeaderCommit: 0 })));
  t.deepEqual(decodeAppendEntriesResponse(append.value as Buffer), { Term: 4, Success: false, LastLogIndex: 0 });
  for (const who of ['n2', 'stranger']) {
    const refused = await callHandler(bridge.requestVote as unknown as Handler, utf8(encodeRequestVoteRequest({ Term: 9, CandidateID: who, LastLogIndex: 0, LastLogTerm: 0, IsPreVote: false })));
    t.is(refused.err?.code, grpc.status.PERMISSION_DENIED);
  }
  t.regex(bridge.health().detail, /bidding to lead refused/);

  t.throws(() => bridge.checkMembershipChange({ type: 'promote', node: 'p1' }, m.status.members), { instanceOf: RaleError, message: /cannot become a voter/ });
  t.throws(() => bridge.checkMembershipChange({ type: 'addVoter', node: 'p2', context: 'phalanx://h:1' }, m.status.members), { instanceOf: RaleError });
  t.notThrows(() => bridge.checkMembershipChange({ type: 'promote', node: 'n2' }, m.status.members));
  t.notThrows(() => bridge.checkMembershipChange({ type: 'addLearner', node: 'p2', context: 'phalanx://h:1' }, m.status.members));
});

test('the services work on a grpc-js server, called by the application/grpc+json client', async (t) => {
  const m = mockCtx();
  const bridge = new PhalanxBridge(m.ctx);
  const server = new grpc.Server();
  server.addService(KV_SERVICE, { Propose: bridge.propose, Read: bridge.read } as unknown as grpc.UntypedServiceImplementation);
  server.addService(CONSENSUS_SERVICE, { AppendEntries: bridge.appendEntries, RequestVote: bridge.requestVote } as unknown as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const client = new GrpcJsonClient(`127.0.0.1:${port}`);
  t.teardown(() => {
    client.close();
    server.forceShutdown();
  });
  const answer = await client.unary('/phalanx.KV/Propose', utf8(encodeProposeRequest({ data: utf8('{"op":"SET","key":"a","value":"b"}') })), 2000);
  t.deepEqual(decodeProposeResponse(answer), { success: true, leader_addr: '', error: '' });
  const vote = await client.unary('/phalanx.Consensus/RequestVote', utf8(encodeRequestVoteRequest({ Term: 9, CandidateID: 'p1', LastLogIndex: 0, LastLogTerm: 0, IsPreVote: false })), 2000);
  t.false(decodeRequestVoteResponse(vote).VoteGranted);
  const bad = await t.throwsAsync(client.unary('/phalanx.KV/Read', utf8('[1,2'), 2000), { instanceOf: GrpcCallError });
  t.is(bad?.code, grpc.status.INTERNAL);
});

// ---------------------------------------------------------------- fuzzing the endpoints

const validRequests: Record<string, string[]> = {
  propose: [encodeProposeRequest({ data: utf8('{"op":"SET","key":"k","value":"v"}') }), encodeProposeRequest({ data: utf8('{"op":"DELETE","key":"k"}') })],
  read: [encodeReadRequest({ key: 'k' })],
  appendEntries: [
    encodeAppendEntriesRequest({ Term: 3, LeaderID: 'p1', PrevLogIndex: 1, PrevLogTerm: 1, Entries: [{ Index: 2, Term: 3, Data: utf8('{"op":"SET","key":"a","value":"b"}'), Type: 0 }], LeaderCommit: 1 }),
  ],
  requestVote: [encodeRequestVoteRequest({ Term: 3, CandidateID: 'p1', LastLogIndex: 1, LastLogTerm: 1, IsPreVote: true })],
};

const decoders: Record<string, (b: Buffer) => unknown> = {
  propose: decodeProposeResponse,
  read: decodeReadResponse,
  appendEntries: decodeAppendEntriesResponse,
  requestVote: decodeRequestVoteResponse,
};

/** Valid requests with characters replaced, inserted or dropped, plus random text and bytes. */
function inputArb(name: string): fc.Arbitrary<Uint8Array> {
  const valid = validRequests[name] as string[];
  const mutated = fc.tuple(fc.constantFrom(...valid), fc.nat(), fc.string({ maxLength: 4 }), fc.nat(3)).map(([text, at, insert, drop]) => {
    const i = at % (text.length + 1);
    return utf8(text.slice(0, i) + insert + text.slice(i + drop));
  });
  const structured = fc.jsonValue().map((v) => utf8(JSON.stringify(v)));
  return fc.oneof(mutated, structured, fc.uint8Array({ maxLength: 80 }), fc.string().map(utf8));
}

for (const name of Object.keys(validRequests)) {
  test(`property: ${name} answers every input with a Phalanx answer or grpc-go's INTERNAL, once, never a throw`, async (t) => {
    const m = mockCtx({ proposeTimeoutMs: 50 });
    m.readImpl = async (key) => (key.length % 2 === 0 ? { value: key, version: 1 } : null);
    const bridge = new PhalanxBridge(m.ctx);
    const handler = bridge[name as 'propose'] as unknown as Handler;
    await fc.assert(
      fc.asyncProperty(inputArb(name), async (input) => {
        const { err, value } = await callHandler(handler, input);
        if (err !== null) return err.code === grpc.status.INTERNAL || err.code === grpc.status.PERMISSION_DENIED;
        (decoders[name] as (b: Buffer) => unknown)(value as Buffer);
        return true;
      }),
      { numRuns: 300 },
    );
    t.pass();
  });
}

// ---------------------------------------------------------------- debug HTTP and options

const sampleStatus: PhalanxNodeStatus = {
  node_id: 'n1',
  state: 'LEADER',
  term: 4,
  leader_id: 'n1',
  commit_index: 7,
  applied_index: 7,
  log_length: 8,
  peers: ['n2', 'p1'],
  kv_size: 2,
  kv_data: { b: '<x>', a: '1' },
  metrics: { messages_sent_total: 3, election_count: 1, last_commit_index: 7, proposals_total: 2, reads_total: 1, applied_index: 7, current_state: 'LEADER' },
};

test('debug HTTP bodies are what Go\'s json.Encoder writes', async (t) => {
  t.is(healthBody('n1', 'LEADER'), '{"node":"n1","state":"LEADER","status":"ok"}\n');
  const expected = `{
  "node_id": "n1",
  "state": "LEADER",
  "term": 4,
  "leader_id": "n1",
  "commit_index": 7,
  "applied_index": 7,
  "log_length": 8,
  "peers": [
    "n2",
    "p1"
  ],
  "kv_size": 2,
  "kv_data": {
    "a": "1",
    "b": "\\u003cx\\u003e"
  },
  "metrics": {
    "messages_sent_total": 3,
    "election_count": 1,
    "last_commit_index": 7,
    "proposals_total": 2,
    "reads_total": 1,
    "applied_index": 7,
    "current_state": "LEADER"
  }
}
`;
  t.is(statusBody(sampleStatus), expected);
  // kv_data is omitempty; an empty peers list is [].
  const empty = JSON.parse(statusBody({ ...sampleStatus, peers: [], kv_data: {} })) as Record<string, unknown>;
  t.false('kv_data' in empty);
  t.deepEqual(empty.peers, []);
  fc.assert(
    fc.property(fc.dictionary(fc.string(), fc.string()), fc.array(fc.string()), (kv, peers) => {
      const parsed = JSON.parse(statusBody({ ...sampleStatus, kv_data: kv, peers })) as { kv_data?: Record<string, string>; peers: string[] };
      return JSON.stringify(parsed.peers) === JSON.stringify(peers) && JSON.stringify(Object.entries(parsed.kv_data ?? {}).sort()) === JSON.stringify(Object.entries(kv).sort());
    }),
  );

  const server = await startDebugServer({ host: '127.0.0.1', port: 0 }, { node: () => 'n1', state: () => 'FOLLOWER', status: async () => sampleStatus }, () => {});
  t.teardown(() => void server.close());
  const port = (server.address() as { port: number }).port;
  const get = (path: string) =>
    new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      }).on('error', reject);
    });
  t.deepEqual(await get('/health'), { status: 200, type: 'application/json', body: '{"node":"n1","state":"FOLLOWER","status":"ok"}\n' });
  t.deepEqual(await get('/debug/status'), { status: 200, type: 'application/json; charset=utf-8', body: expected });
  t.like(await get('/other'), { status: 404, body: '404 page not found\n' });
});

test('options are validated with errors naming the option', (t) => {
  t.deepEqual(parsePhalanxOptions({}).followers, 'forward');
  t.deepEqual(parsePhalanxOptions({ debugListen: '127.0.0.1:0' }).debugListen, { host: '127.0.0.1', port: 0 });
  t.throws(() => parsePhalanxOptions({ debugListen: 8080 }), { message: /option debugListen must be "host:port"/ });
  t.throws(() => parsePhalanxOptions({ followers: 'maybe' }), { message: /option followers/ });
  t.throws(() => parsePhalanxOptions({ proposeTimeoutMs: -1 }), { message: /option proposeTimeoutMs/ });
  t.throws(() => parsePhalanxOptions({ debuglisten: 'x' }), { message: /unknown option "debuglisten"/ });
});
