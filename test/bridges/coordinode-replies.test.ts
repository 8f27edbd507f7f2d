/**
 * Inbound CoordiNode calls (std mode) are answered with the Raft core's own
 * reply to THAT call. The core here is a stand-in that answers only when the
 * test says so, so a late reply (to an earlier call that timed out) can be
 * released while a later call from the same peer waits: it must not be taken
 * as the later call's answer.
 */
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { MessageType, type Message, type NodeId } from '../../sidecar/src/core/types.ts';
import type { BridgeContext, BridgeMember } from '../../sidecar/src/plugins/bridge-api.ts';
import type { Connection } from '../../sidecar/src/node/transport.ts';
import { CoordinodeBridge } from '../../bridges/coordinode/index.ts';
import { createCoordinodeCodec, decodeRaftPayload, encodeRaftPayload, msgpackValuePayload } from '../../bridges/coordinode/codec.ts';
import { METHOD_PATHS } from '../../bridges/coordinode/service.ts';

const codec = createCoordinodeCodec({ leaderIdMode: 'std', payload: msgpackValuePayload });

async function harness(t: { teardown(fn: () => unknown): void }) {
  const server = new grpc.Server();
  const delivered: Message[] = [];
  const members: BridgeMember[] = [
    { id: 'node1', role: 'voter', address: '127.0.0.1:1' },
    { id: 'node2', role: 'voter', address: '127.0.0.1:2' },
    { id: 'cn7', role: 'voter', address: 'coordinode://127.0.0.1:3' },
  ];
  let connect: ((peer: NodeId, address: string) => Connection) | null = null;
  const ctx: BridgeContext = {
    apiVersion: 1,
    name: 'coordinode',
    nodeId: 'node1',
    options: { nodeIds: { '1': 'node1', '2': 'node2', '7': 'cn7' }, leaderIdMode: 'std', replyTimeoutMs: 300 },
    log: () => {},
    propose: () => Promise.reject(new Error('not in this test')),
    read: () => Promise.reject(new Error('not in this test')),
    status: () => ({ id: 'node1', role: 'follower' as never, term: 3, leader: null, leaderAddress: null, commitIndex: 0, appliedIndex: 0, lastIndex: 0, members }),
    changeMembership: () => Promise.reject(new Error('not in this test')),
    transferLeadership: () => {},
    on: () => () => {},
    addGrpcService: (definition, implementation) => server.addService(definition, implementation),
    mountHttp: () => {},
    registerPeerScheme: (_scheme, c) => (connect = c),
    // The core answers nothing by itself: the test releases each reply.
    deliver: async (_from, messages) => void delivered.push(...messages),
    reportError: () => {},
  };
  const bridge = new CoordinodeBridge(ctx);
  bridge.start();
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const connection = (connect as unknown as (peer: NodeId, address: string) => Connection)('cn7', 'coordinode://127.0.0.1:9');
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    bridge.stop();
    await connection.close();
    server.forceShutdown();
  });
  /** The core's reply to cn7, as it leaves through the bridge's connector. */
  const coreReplies = (m: Message) => connection.invoke('raft', [m]);
  const call = (path: string, body: Uint8Array) =>
    new Promise<{ code: number; details: string; body: Uint8Array | null }>((resolve) => {
      client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(encodeRaftPayload(body)), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, reply) =>
        resolve(err ? { code: err.code, details: err.details, body: null } : { code: 0, details: '', body: decodeRaftPayload(new Uint8Array(reply as Buffer)) }),
      );
    });
  return { delivered, coreReplies, call };
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a late vote grant for an earlier term never answers a later vote request (no vote the core did not give)', async (t) => {
  const h = await harness(t);
  const vote = (term: bigint) => codec.encodeVoteRequest({ vote: { leaderId: { term, nodeId: 7n }, committed: false }, lastLogId: null, leadershipTransfer: false });

  // Term 4: the core is slow; the call times out and is answered "not granted".
  const first = await h.call(METHOD_PATHS.Vote, vote(4n));
  t.false(codec.decodeVoteResponse(first.body as Uint8Array).voteGranted);

  // Term 5: the core does not answer it (it follows a live leader, say). Meanwhile its late grant of term 4 comes out.
  const second = h.call(METHOD_PATHS.Vote, vote(5n));
  await until('the second request reaches the core', () => h.delivered.filter((m) => m.type === MessageType.Vote).length === 2);
  await h.coreReplies({ type: MessageType.VoteResponse, from: 'node1', to: 'cn7', term: 4, preVote: false, granted: true });
  const answer = codec.decodeVoteResponse((await second).body as Uint8Array);
  t.false(answer.voteGranted, 'the term-4 grant was taken as a grant of term 5');
});

test('a late acknowledgement of an older leader\'s entries never answers a new leader\'s entries at the same indexes', async (t) => {
  const h = await harness(t);
  const append = (term: bigint, data: number) =>
    codec.encodeAppendEntriesRequest({
      vote: { leaderId: { term, nodeId: 7n }, committed: true },
      prevLogId: null,
      entries: [{ logId: { leaderId: { term, nodeId: null }, index: 1n }, payload: { kind: 'normal', data: `cmd-${data}` } }],
      leaderCommit: null,
    });

  // cn7 led term 5: its entry 1 reaches the core, which is slow to persist it; the call times out.
  const first = await h.call(METHOD_PATHS.AppendEntries, append(5n, 1));
  t.is(first.code, grpc.status.UNAVAILABLE);

  // cn7 leads term 7 with a different entry 1. While it waits, the core's late acknowledgement of term 5's entry 1 comes out.
  const second = h.call(METHOD_PATHS.AppendEntries, append(7n, 2));
  await until('the second request reaches the core', () => h.delivered.filter((m) => m.type === MessageType.Append).length === 2);
  await h.coreReplies({ type: MessageType.AppendResponse, from: 'node1', to: 'cn7', term: 5, reject: false, index: 1, hintIndex: 0, hintTerm: 0 });
  const answer = await second;
  t.not(answer.code, 0, `term 7's entry was acknowledged on the strength of term 5's: ${answer.body === null ? '' : JSON.stringify(codec.decodeAppendEntriesResponse(answer.body))}`);

  // The core's own answer to term 7 is taken.
  const third = h.call(METHOD_PATHS.AppendEntries, append(7n, 2));
  await until('the third request reaches the core', () => h.delivered.filter((m) => m.type === MessageType.Append).length === 3);
  await h.coreReplies({ type: MessageType.AppendResponse, from: 'node1', to: 'cn7', term: 7, reject: false, index: 1, hintIndex: 0, hintTerm: 0 });
  const ok = await third;
  t.is(ok.code, 0, ok.details);
  t.deepEqual(codec.decodeAppendEntriesResponse(ok.body as Uint8Array), { type: 'success' });
});
