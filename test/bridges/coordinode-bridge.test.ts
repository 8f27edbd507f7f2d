/**
 * The coordinode bridge in one process, around a stand-in for the node (a
 * fake BridgeContext whose "core" answers like rale's): option validation,
 * the lossless entry mapping (property-based), fuzzing of every RaftService
 * endpoint, outbound pipelining with fewer results than requests, snapshot
 * framing errors and the adv-mode restrictions.
 */
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { EntryKind, MessageType, type Entry, type Message, type NodeId } from '../../sidecar/src/core/types.ts';
import type { BridgeContext, BridgeMember } from '../../sidecar/src/plugins/bridge-api.ts';
import type { Connection } from '../../sidecar/src/node/transport.ts';
import { CoordinodeBridge } from '../../bridges/coordinode/index.ts';
import { parseOptions, zstdAvailable } from '../../bridges/coordinode/options.ts';
import { EntryMapper, IdMap } from '../../bridges/coordinode/mapping.ts';
import { ByteVec, createCoordinodeCodec, encodeRaftPayload, MsgpackMap, msgpackValuePayload, type LeaderIdMode, type MsgpackValue } from '../../bridges/coordinode/codec.ts';
import { METHOD_PATHS } from '../../bridges/coordinode/service.ts';
import { FakeCoordinode, type WireEntry } from './coordinode-fake.ts';

const NODE_IDS = { '1': 'node1', '2': 'node2', '7': 'cn7' };

interface Harness {
  bridge: CoordinodeBridge;
  port: number;
  delivered: Message[];
  errors: unknown[];
  connect: (peer: NodeId, address: string) => Connection;
  members: BridgeMember[];
  close(): Promise<void>;
}

/**
 * A bridge on a real gRPC server, with a context whose core answers every
 * delivered request through the bridge's own connector, as rale's does.
 */
async function harness(options: Record<string, unknown>, opts: { answer?: boolean; log?: Entry[] } = {}): Promise<Harness> {
  const server = new grpc.Server();
  const delivered: Message[] = [];
  const errors: unknown[] = [];
  const members: BridgeMember[] = [
    { id: 'node1', role: 'voter', address: '127.0.0.1:1' },
    { id: 'node2', role: 'voter', address: '127.0.0.1:2' },
    { id: 'cn7', role: 'voter', address: 'coordinode://127.0.0.1:3' },
  ];
  let connect: ((peer: NodeId, address: string) => Connection) | null = null;
  const connections = new Map<NodeId, Connection>();
  const coreAnswer = (m: Message): Message | null => {
    const base = { from: 'node1', to: m.from, term: m.term };
    switch (m.type) {
      case MessageType.Vote:
        return { ...base, type: MessageType.VoteResponse, preVote: m.preVote, granted: m.term >= 3 };
      case MessageType.Append:
        return { ...base, type: MessageType.AppendResponse, reject: false, index: m.prevIndex + m.entries.length, hintIndex: 0, hintTerm: 0 };
      case MessageType.Snapshot:
        return { ...base, type: MessageType.AppendResponse, reject: false, index: m.snapshot.meta.index, hintIndex: 0, hintTerm: 0 };
      default:
        return null;
    }
  };
  const ctx: BridgeContext = {
    apiVersion: 1,
    name: 'coordinode',
    nodeId: 'node1',
    options,
    log: () => {},
    propose: () => Promise.reject(new Error('not in this test')),
    read: () => Promise.reject(new Error('not in this test')),
    status: () => ({ id: 'node1', role: 'follower' as never, term: 3, leader: 'node2', leaderAddress: null, commitIndex: 0, appliedIndex: 0, lastIndex: 0, members }),
    changeMembership: () => Promise.reject(new Error('not in this test')),
    transferLeadership: () => {},
    on: () => () => {},
    logEntries: async (from) => (opts.log ?? []).filter((e) => e.index === from).map((e) => ({ index: e.index, term: e.term, leader: e.leader ?? null })),
    addGrpcService: (definition, implementation) => server.addService(definition, implementation),
    mountHttp: () => {},
    registerPeerScheme: (_scheme, c) => (connect = c),
    deliver: async (from, messages) => {
      delivered.push(...messages);
      if (opts.answer === false) return;
      for (const m of messages) {
        const reply = coreAnswer(m);
        if (reply === null || connect === null) continue;
        let c = connections.get(from);
        if (c === undefined) connections.set(from, (c = connect(from, 'coordinode://127.0.0.1:9')));
        setImmediate(() => void c.invoke('raft', [reply]));
      }
    },
    reportError: (err) => errors.push(err),
  };
  const bridge = new CoordinodeBridge(ctx);
  bridge.start();
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return {
    bridge,
    port,
    delivered,
    errors,
    members,
    connect: (peer, address) => (connect as (p: NodeId, a: string) => Connection)(peer, address),
    close: async () => {
      bridge.stop();
      for (const c of connections.values()) await c.close();
      server.forceShutdown();
    },
  };
}

function call(port: number, path: string, body: Uint8Array): Promise<{ code: number; details: string; body: Uint8Array | null }> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(body), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, reply) => {
      client.close();
      resolve(err ? { code: err.code, details: err.details, body: null } : { code: 0, details: '', body: new Uint8Array(reply as Buffer) });
    });
  });
}

function streamCall(port: number, path: string, frames: Uint8Array[], bidi: boolean): Promise<{ code: number; details: string; results: Uint8Array[] }> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    const results: Uint8Array[] = [];
    const done = (code: number, details: string) => {
      client.close();
      resolve({ code, details, results });
    };
    const deadline = { deadline: Date.now() + 5_000 };
    if (bidi) {
      const s = client.makeBidiStreamRequest(path, (b: Buffer) => b, (b: Buffer) => b, new grpc.Metadata(), deadline);
      s.on('data', (b: Buffer) => results.push(new Uint8Array(b)));
      s.on('status', (st: grpc.StatusObject) => done(st.code, st.details));
      s.on('error', () => {});
      for (const f of frames) s.write(Buffer.from(f));
      s.end();
    } else {
      const s = client.makeClientStreamRequest(path, (b: Buffer) => b, (b: Buffer) => b, new grpc.Metadata(), deadline, (err, reply) => {
        if (reply !== undefined) results.push(new Uint8Array(reply));
        done(err ? err.code : 0, err ? err.details : '');
      });
      s.on('error', () => {});
      for (const f of frames) s.write(Buffer.from(f));
      s.end();
    }
  });
}

// ------------------------------------------------------------------ options

test('options: nodeIds is required, must name this node, and errors name the option', (t) => {
  t.throws(() => parseOptions({}, 'node1'), { message: /option nodeIds: is required/ });
  t.throws(() => parseOptions({ nodeIds: { '2': 'node2' } }, 'node1'), { message: /nodeIds: has no entry for this node \(node1\)/ });
  t.throws(() => parseOptions({ nodeIds: { x: 'node1' } }, 'node1'), { message: /"x" is not a u64 node id/ });
  t.throws(() => parseOptions({ nodeIds: { '1': 'node1', '2': 'node1' } }, 'node1'), { message: /node1 is mapped from both/ });
  t.throws(() => parseOptions({ nodeIds: NODE_IDS, voteRequestFields: 4 }, 'node1'), { message: /option voteRequestFields: must be 3/ });
  t.throws(() => parseOptions({ nodeIds: NODE_IDS, leaderIdMode: 'joint' }, 'node1'), { message: /option leaderIdMode/ });
  t.throws(() => parseOptions({ nodeIds: NODE_IDS, peers: { '9': {} } }, 'node1'), { message: /peers.9: node 9 has no entry in nodeIds/ });
  t.throws(() => parseOptions({ nodeIds: NODE_IDS, colour: 1 }, 'node1'), { message: /unknown option "colour"/ });
  const parsed = parseOptions({ nodeIds: NODE_IDS, peers: { '7': { voteRequestFields: 2 } } }, 'node1');
  t.is(parsed.leaderIdMode, 'adv');
  t.is(parsed.peers.get(7n)?.voteRequestFields, 2);
  t.is(parsed.byU64.get(7n), 'cn7');
});

test('options: zstd framing works where node:zlib has zstd, else the error says which Node.js is needed', (t) => {
  if (zstdAvailable()) {
    t.true(parseOptions({ nodeIds: NODE_IDS, zstd: true }, 'node1').defaults.zstd);
  } else {
    t.throws(() => parseOptions({ nodeIds: NODE_IDS, zstd: true }, 'node1'), { message: /option zstd: zstd framing needs Node.js >= 22.15 or >= 23.8/ });
    t.throws(() => parseOptions({ nodeIds: NODE_IDS, peers: { '7': { zstd: true } } }, 'node1'), { message: /option peers.7.zstd: zstd framing needs/ });
  }
});

// ------------------------------------------------------------------ entry mapping

const ids = new IdMap(new Map([[1n, 'node1'], [2n, 'node2'], [7n, 'cn7']]), new Map([['node1', 1n], ['node2', 2n], ['cn7', 7n]]));

const raleEntry = fc.record({
  index: fc.integer({ min: 1, max: 1_000_000 }),
  term: fc.integer({ min: 1, max: 1_000 }),
  kind: fc.constantFrom(EntryKind.Normal, EntryKind.Noop, EntryKind.Config),
  data: fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.constant(new Uint8Array([0])), fc.string().map((s) => new TextEncoder().encode(`{"id":"x","command":${JSON.stringify(s)}}`))),
  leader: fc.constantFrom<NodeId | undefined>('node1', 'node2', undefined),
});

const msgpackValue: fc.Arbitrary<MsgpackValue> = fc.letrec<{ v: MsgpackValue }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.integer({ min: -1000, max: 100_000 }),
    fc.string(),
    fc.uint8Array({ maxLength: 8 }).map((b) => new ByteVec(b)),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.uniqueArray(fc.tuple(fc.string({ maxLength: 4 }), tie('v')), { maxLength: 3, selector: (e) => e[0] }).map((e) => new MsgpackMap(e)),
  ),
})).v;

for (const mode of ['adv', 'std'] as LeaderIdMode[]) {
  const codec = createCoordinodeCodec({ leaderIdMode: mode, payload: msgpackValuePayload });
  const mapper = new EntryMapper(mode, ids, codec);

  test(`mapping (${mode}): a rale entry travels through openraft's Entry and back unchanged`, (t) => {
    fc.assert(
      fc.property(raleEntry, (e) => {
        const entry: Entry = { index: e.index, term: e.term, kind: e.kind, data: e.kind === EntryKind.Noop ? new Uint8Array(0) : e.data };
        if (e.leader !== undefined) entry.leader = e.leader;
        const back = mapper.fromWire(codec.decodeEntry(codec.encodeEntry(mapper.toWire(entry))));
        const expected = { ...entry };
        if (mode === 'std') delete expected.leader; // std log ids do not name the leader
        t.deepEqual({ ...back, data: [...back.data] }, { ...expected, data: [...expected.data] });
      }),
    );
  });

  test(`mapping (${mode}): a foreign openraft entry travels through rale and back byte for byte`, (t) => {
    const payload = fc.oneof(
      fc.constant({ kind: 'blank' as const }),
      msgpackValue.map((data) => ({ kind: 'normal' as const, data })),
      fc.uniqueArray(fc.constantFrom(1n, 2n, 7n), { minLength: 1 }).map((voters) => ({
        kind: 'membership' as const,
        membership: { configs: [voters.sort((a, b) => Number(a - b))], nodes: new Map(voters.map((v) => [v, { addr: `http://h${v}:1` }])) },
      })),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1e6 }), fc.integer({ min: 1, max: 1e3 }), fc.constantFrom(1n, 2n, 7n), payload, (index, term, node, p) => {
        const wire: WireEntry = { logId: { leaderId: { term: BigInt(term), nodeId: mode === 'adv' ? node : null }, index: BigInt(index) }, payload: p };
        const bytes = codec.encodeEntry(wire);
        const rale = mapper.fromWire(codec.decodeEntry(bytes));
        t.deepEqual([...codec.encodeEntry(mapper.toWire(rale))], [...bytes]);
      }),
    );
  });
}

// ------------------------------------------------------------------ fuzzing every endpoint

const ALLOWED = new Set([grpc.status.OK, grpc.status.INVALID_ARGUMENT, grpc.status.PERMISSION_DENIED, grpc.status.FAILED_PRECONDITION, grpc.status.UNAVAILABLE, grpc.status.DATA_LOSS, grpc.status.RESOURCE_EXHAUSTED]);

function validPayloads(mode: LeaderIdMode): Record<keyof typeof METHOD_PATHS, Uint8Array[]> {
  const codec = createCoordinodeCodec({ leaderIdMode: mode, payload: msgpackValuePayload });
  const node = mode === 'adv' ? 7n : 7n;
  const vote = { leaderId: { term: 3n, nodeId: node }, committed: true };
  const logId = (term: bigint, index: bigint) => ({ leaderId: { term, nodeId: mode === 'adv' ? 7n : null }, index });
  const entries: WireEntry[] = [{ logId: logId(3n, 1n), payload: { kind: 'blank' } }, { logId: logId(3n, 2n), payload: { kind: 'normal', data: new ByteVec(new Uint8Array([123, 125])) } }];
  return {
    Vote: [codec.encodeVoteRequest({ vote: { ...vote, committed: false }, lastLogId: logId(2n, 5n), leadershipTransfer: false })],
    AppendEntries: [codec.encodeAppendEntriesRequest({ vote, prevLogId: null, entries, leaderCommit: logId(3n, 1n) })],
    StreamAppend: [codec.encodeAppendEntriesRequest({ vote, prevLogId: logId(3n, 2n), entries: [], leaderCommit: null })],
    Snapshot: [
      codec.encodeSnapshotChunkMessage({
        type: 'header',
        header: { vote, meta: { lastLogId: logId(3n, 9n), lastMembership: { logId: null, membership: { configs: [[1n, 7n]], nodes: new Map([[1n, { addr: 'http://a:1' }], [7n, { addr: 'http://b:1' }]]) } }, snapshotId: 's' }, dataSize: 3n, sinceTs: null },
      }),
      codec.encodeSnapshotChunkMessage({ type: 'dataChunk', data: new Uint8Array([1, 2, 3]) }),
    ],
    TransferLeader: [codec.encodeTransferLeaderRequest({ fromLeader: vote, toNodeId: 1n, lastLogId: null })],
  };
}

const mutated = (valid: Uint8Array) =>
  fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.tuple(fc.nat(valid.length), fc.integer({ min: 0, max: 255 })).map(([at, byte]) => {
      const copy = valid.slice();
      if (copy.length > 0) copy[at % copy.length] = byte;
      return copy;
    }),
    fc.nat(valid.length).map((n) => valid.slice(0, n)),
  );

for (const mode of ['std', 'adv'] as LeaderIdMode[]) {
  test(`fuzz (${mode}): every RaftService method answers random and mutated input with a status, never a crash`, async (t) => {
    const h = await harness({ nodeIds: NODE_IDS, leaderIdMode: mode, replyTimeoutMs: 200 });
    t.teardown(() => h.close());
    const valid = validPayloads(mode);
    for (const method of Object.keys(METHOD_PATHS) as Array<keyof typeof METHOD_PATHS>) {
      const path = METHOD_PATHS[method];
      const frames = valid[method];
      await fc.assert(
        fc.asyncProperty(fc.array(mutated(frames[0] as Uint8Array), { minLength: 1, maxLength: 3 }), fc.boolean(), async (payloads, wrap) => {
          const bodies = payloads.map((p) => (wrap ? encodeRaftPayload(p) : p));
          const result =
            method === 'StreamAppend' || method === 'Snapshot' ? await streamCall(h.port, path, bodies, method === 'StreamAppend') : await call(h.port, path, bodies[0] as Uint8Array);
          const refusedTransfer = method === 'TransferLeader' && result.code === grpc.status.INTERNAL && /TransferLeader refused/.test(result.details);
          t.true(ALLOWED.has(result.code) || refusedTransfer, `${method}: ${result.code} ${result.details}`);
        }),
        { numRuns: 40 },
      );
      // The valid call still works afterwards.
      const ok = method === 'StreamAppend' || method === 'Snapshot' ? await streamCall(h.port, path, frames.map(encodeRaftPayload), method === 'StreamAppend') : await call(h.port, path, encodeRaftPayload(frames[0] as Uint8Array));
      if (mode === 'std' || method === 'Vote') t.is(ok.code, method === 'TransferLeader' ? grpc.status.INTERNAL : grpc.status.OK, `${method}: ${ok.details}`);
      else t.is(ok.code, method === 'TransferLeader' ? grpc.status.INTERNAL : grpc.status.FAILED_PRECONDITION, `${method}: ${ok.details}`);
    }
    t.deepEqual(h.errors, [], 'nothing escaped as a bridge error');
  });
}

test('undecodable payloads are INVALID_ARGUMENT; unknown or non-member senders are PERMISSION_DENIED', async (t) => {
  const h = await harness({ nodeIds: { ...NODE_IDS, '8': 'cn8' }, leaderIdMode: 'std' });
  t.teardown(() => h.close());
  const bad = await call(h.port, METHOD_PATHS.Vote, encodeRaftPayload(new Uint8Array([0xc1])));
  t.is(bad.code, grpc.status.INVALID_ARGUMENT);
  t.regex(bad.details, /undecodable RaftService payload/);
  const codec = createCoordinodeCodec({ leaderIdMode: 'std', payload: msgpackValuePayload });
  for (const [node, pattern] of [[9n, /node 9 is not in the coordinode bridge's nodeIds option/], [8n, /node 8 \(cn8\) is not a member of this rale cluster/]] as const) {
    const r = await call(h.port, METHOD_PATHS.Vote, encodeRaftPayload(codec.encodeVoteRequest({ vote: { leaderId: { term: 4n, nodeId: node }, committed: false }, lastLogId: null, leadershipTransfer: false })));
    t.is(r.code, grpc.status.PERMISSION_DENIED);
    t.regex(r.details, pattern);
  }
});

test('std: an inbound vote reaches the core and its answer comes back (granted, then refused at an older term)', async (t) => {
  const h = await harness({ nodeIds: NODE_IDS, leaderIdMode: 'std', peers: { '7': { voteRequestFields: 2 } } });
  t.teardown(() => h.close());
  const codec = createCoordinodeCodec({ leaderIdMode: 'std', payload: msgpackValuePayload });
  const ask = async (term: bigint, layout: 'with-leadership-transfer' | 'without-leadership-transfer') => {
    const body = codec.encodeVoteRequest({ vote: { leaderId: { term, nodeId: 7n }, committed: false }, lastLogId: { leaderId: { term: 2n, nodeId: null }, index: 4n }, leadershipTransfer: layout === 'with-leadership-transfer' }, { layout });
    const r = await call(h.port, METHOD_PATHS.Vote, encodeRaftPayload(body));
    t.is(r.code, 0, r.details);
    return codec.decodeVoteResponse(new Uint8Array(r.body as Uint8Array).subarray(2));
  };
  const yes = await ask(4n, 'without-leadership-transfer');
  t.true(yes.voteGranted);
  t.deepEqual(yes.vote.leaderId, { term: 4n, nodeId: 7n });
  const no = await ask(2n, 'with-leadership-transfer'); // the stand-in core refuses terms below 3
  t.false(no.voteGranted);
  const votes = h.delivered.filter((m) => m.type === MessageType.Vote);
  t.like(votes[0], { from: 'cn7', term: 4, lastIndex: 4, lastTerm: 2, transfer: false });
  t.like(votes[1], { term: 2, transfer: true });
});

test('snapshot stream: DATA_LOSS on a size mismatch, INVALID_ARGUMENT on a chunk before the header; a whole one installs', async (t) => {
  const h = await harness({ nodeIds: NODE_IDS, leaderIdMode: 'std' });
  t.teardown(() => h.close());
  const [header, chunk] = validPayloads('std').Snapshot as [Uint8Array, Uint8Array];
  const codec = createCoordinodeCodec({ leaderIdMode: 'std', payload: msgpackValuePayload });
  const short = codec.encodeSnapshotChunkMessage({ type: 'dataChunk', data: new Uint8Array([1, 2]) });
  t.is((await streamCall(h.port, METHOD_PATHS.Snapshot, [header, short].map(encodeRaftPayload), false)).code, grpc.status.DATA_LOSS);
  t.is((await streamCall(h.port, METHOD_PATHS.Snapshot, [header, chunk, chunk].map(encodeRaftPayload), false)).code, grpc.status.DATA_LOSS);
  t.is((await streamCall(h.port, METHOD_PATHS.Snapshot, [chunk, header].map(encodeRaftPayload), false)).code, grpc.status.INVALID_ARGUMENT);
  const ok = await streamCall(h.port, METHOD_PATHS.Snapshot, [header, chunk].map(encodeRaftPayload), false);
  t.is(ok.code, 0, ok.details);
  const installed = h.delivered.find((m) => m.type === MessageType.Snapshot);
  t.like(installed, { from: 'cn7', term: 3, snapshot: { meta: { index: 9, term: 3, config: { voters: ['node1', 'cn7'], learners: [] } } } });
});

test('adv: CoordiNode nodes cannot lead or vote: inbound votes refused, appends FAILED_PRECONDITION, outbound votes answered "no" locally', async (t) => {
  const h = await harness({ nodeIds: NODE_IDS });
  t.teardown(() => h.close());
  const fake = new FakeCoordinode({ id: 7n, mode: 'adv' });
  await fake.listen();
  t.teardown(() => fake.close());
  const valid = validPayloads('adv');
  const vote = await call(h.port, METHOD_PATHS.Vote, encodeRaftPayload(valid.Vote[0] as Uint8Array));
  t.is(vote.code, 0);
  const codec = createCoordinodeCodec({ leaderIdMode: 'adv', payload: msgpackValuePayload });
  t.false(codec.decodeVoteResponse((vote.body as Uint8Array).subarray(2)).voteGranted);
  const append = await call(h.port, METHOD_PATHS.AppendEntries, encodeRaftPayload(valid.AppendEntries[0] as Uint8Array));
  t.is(append.code, grpc.status.FAILED_PRECONDITION);
  t.regex(append.details, /adv mode a term can have two leaders/);
  t.deepEqual(h.delivered, [], 'nothing reached the core');
  const c = h.connect('cn7', `coordinode://127.0.0.1:${fake.port}`);
  t.teardown(() => c.close());
  await c.invoke('raft', [{ type: MessageType.Vote, from: 'node1', to: 'cn7', term: 5, preVote: false, lastIndex: 0, lastTerm: 0, transfer: false }]);
  await new Promise((r) => setTimeout(r, 100));
  t.like(h.delivered[0], { type: MessageType.VoteResponse, from: 'cn7', granted: false });
  t.is(fake.votesGranted.length, 0, 'the vote request never left');
});

test('outbound: pipelined StreamAppend with fewer results than requests; adv log ids name each entry\'s leader', async (t) => {
  const log: Entry[] = Array.from({ length: 12 }, (_, k) => ({ index: k + 1, term: k < 6 ? 2 : 3, kind: EntryKind.Normal, data: new TextEncoder().encode(`{"n":${k}}`), leader: k < 6 ? 'node2' : 'node1' }));
  const h = await harness({ nodeIds: NODE_IDS }, { log });
  t.teardown(() => h.close());
  const fake = new FakeCoordinode({ id: 7n, mode: 'adv', resultEvery: 3 });
  await fake.listen();
  t.teardown(() => fake.close());
  const c = h.connect('cn7', `coordinode://127.0.0.1:${fake.port}`);
  t.teardown(() => c.close());
  const appends: Message[] = [];
  for (let k = 0; k < 6; k++) {
    const slice = log.slice(k * 2, k * 2 + 2).map((e) => ({ ...e, leader: undefined as unknown as string }));
    for (const e of slice) delete (e as Partial<Entry>).leader; // leaders come from the log lookup, not the message
    appends.push({ type: MessageType.Append, from: 'node1', to: 'cn7', term: 3, prevIndex: k * 2, prevTerm: k === 0 ? 0 : (log[k * 2 - 1] as Entry).term, entries: k < 3 ? log.slice(k * 2, k * 2 + 2) : slice, commit: 12 });
  }
  await c.invoke('raft', appends);
  const acks = () => h.delivered.filter((m): m is Extract<Message, { type: MessageType.AppendResponse }> => m.type === MessageType.AppendResponse);
  for (let i = 0; i < 100 && acks().at(-1)?.index !== 12; i++) await new Promise((r) => setTimeout(r, 20));
  t.is(fake.streamFrames, 6);
  t.is(fake.streamResults, 2, 'one result per three requests');
  t.deepEqual(acks().map((a) => a.index), [6, 12], 'each result names the highest log id matched so far');
  t.is(fake.log.length, 12);
  t.deepEqual(fake.log.map((e) => e.logId.leaderId.nodeId), [...Array(6).fill(2n), ...Array(6).fill(1n)]);
  t.deepEqual(fake.committed, fake.log[11]?.logId);
});

test('outbound: after an Err result the next Append goes on a fresh stream, even while the old one has not ended (regression: the probe stalled under load)', async (t) => {
  const log: Entry[] = Array.from({ length: 4 }, (_, k) => ({ index: k + 1, term: 3, kind: EntryKind.Normal, data: new TextEncoder().encode(`{"n":${k}}`) }));
  const h = await harness({ nodeIds: NODE_IDS, leaderIdMode: 'std' }, { log });
  t.teardown(() => h.close());
  const fake = new FakeCoordinode({ id: 7n, mode: 'std', lingerAfterErr: true });
  await fake.listen();
  t.teardown(() => fake.close());
  const c = h.connect('cn7', `coordinode://127.0.0.1:${fake.port}`);
  t.teardown(() => c.close());
  const responses = () => h.delivered.filter((m): m is Extract<Message, { type: MessageType.AppendResponse }> => m.type === MessageType.AppendResponse);
  const until = async (done: () => boolean) => {
    for (let i = 0; i < 150 && !done(); i++) await new Promise((r) => setTimeout(r, 20));
  };
  // The empty follower cannot match index 4: Err Conflict, and the fake keeps that stream open.
  await c.invoke('raft', [{ type: MessageType.Append, from: 'node1', to: 'cn7', term: 3, prevIndex: 4, prevTerm: 3, entries: [], commit: 4 }]);
  await until(() => responses().length > 0);
  t.like(responses()[0], { reject: true, index: 4 });
  // The probe from the start must reach the follower.
  await c.invoke('raft', [{ type: MessageType.Append, from: 'node1', to: 'cn7', term: 3, prevIndex: 0, prevTerm: 0, entries: log, commit: 4 }]);
  await until(() => responses().length > 1);
  t.like(responses()[1], { reject: false, index: 4 });
  t.is(fake.log.length, 4);
  t.is(fake.streamFrames, 2);
});
