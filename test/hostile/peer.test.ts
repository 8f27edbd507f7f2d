/**
 * Hostile input at the gRPC peer transport: random bytes and broken
 * protobuf framing, random msgpack, valid Raft messages with one field
 * mutated to a wrong type, a negative or fractional number or a gap in the
 * entries, random arguments of the other call types, wrong secrets, forged
 * senders. The victim is one RaftNode whose peers never answer: with
 * pre-vote it stays a follower in its term, so its core state (term, vote,
 * log, commit) is constant unless a message changes it. Properties:
 *  - every piece of garbage is refused (a gRPC error, or an error
 *    acknowledgement on the raft stream) and logged as a warning;
 *  - the core's state is exactly what it was;
 *  - the node never crashes and keeps serving: a well-formed Append from a
 *    member is accepted afterwards.
 */
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import * as grpc from '@grpc/grpc-js';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';
import { MemoryStateMachine } from '../../sidecar/src/node/memory-state-machine.ts';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { GrpcTransport } from '../../sidecar/src/transport/grpc.ts';
import { Encoder } from '@msgpack/msgpack';
import { METHOD, MD, PROTOCOL_VERSION, encodeFrame } from '../../sidecar/src/transport/wire.ts';
import { EntryKind, MessageType } from '../../sidecar/src/core/types.ts';
import { memoryLog, waitFor } from '../transport/helpers.ts';
import { fuzz, hostileJson } from './support.ts';

const SECRET = 'hostile peer secret';
const identity = (b: Buffer) => b;

interface Victim {
  node: RaftNode;
  transport: GrpcTransport;
  logs: string[];
  /** What must not change: term, vote, log bounds, commit, applied. */
  state(): string;
}

async function victim(t: ExecutionContext): Promise<Victim> {
  const logs: string[] = [];
  const transport = new GrpcTransport({ clusterSecret: SECRET, log: memoryLog(logs), maxMessageBytes: 1 << 20, chunkBytes: 64 * 1024 });
  await transport.bind();
  const node = new RaftNode({
    id: 'n1',
    log: new MemoryLogStorage(),
    stateMachine: new MemoryStateMachine(),
    transport,
    bootstrap: ['n1', 'n2', 'n3'],
    // Peers that never answer: pre-vote fails, so the term never moves by itself.
    addresses: { n2: '127.0.0.1:1', n3: '127.0.0.1:1' },
    tickMs: 20,
    core: { electionTicks: 5, heartbeatTicks: 1 },
    seed: 1,
  });
  await node.start();
  await waitFor('the bootstrap entry to apply', () => node.status().applied >= 1);
  t.teardown(async () => {
    await node.stop().catch(() => {});
    await transport.close();
  });
  const state = () => {
    const s = node.status();
    return JSON.stringify([s.term, s.vote, s.firstIndex, s.lastIndex, s.lastTerm, s.commit, s.applied, s.config]);
  };
  return { node, transport, logs, state };
}

/** A raw gRPC client that sends exactly the bytes it is given, with the metadata it is given. */
function rawClient(t: ExecutionContext, address: string): grpc.Client {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  return client;
}

function metadata(from = 'n2', secret: string | null = SECRET): grpc.Metadata {
  const md = new grpc.Metadata();
  if (secret !== null) md.set(MD.secret, secret);
  md.set(MD.nodeId, from);
  md.set(MD.target, 'n1');
  md.set(MD.protocol, PROTOCOL_VERSION);
  return md;
}

/** One unary Call with these exact bytes; resolves with the gRPC status (OK included). */
function unary(client: grpc.Client, bytes: Buffer, md = metadata()): Promise<grpc.StatusObject & { answer?: Buffer }> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(METHOD.call, identity, identity, bytes, md, { deadline: Date.now() + 5000 }, (err, answer) => {
      if (err) resolve({ code: err.code, details: err.details, metadata: err.metadata });
      else resolve({ code: grpc.status.OK, details: '', metadata: new grpc.Metadata(), answer });
    });
  });
}

/** Frames on a fresh raft stream; resolves with what came back (acks, errors) once the stream ends. */
function stream(client: grpc.Client, frames: Buffer[], md = metadata()): Promise<{ status: grpc.StatusObject | null; replies: Buffer[] }> {
  return new Promise((resolve) => {
    const call = client.makeBidiStreamRequest(METHOD.raftStream, identity, identity, md, { deadline: Date.now() + 5000 });
    const replies: Buffer[] = [];
    let status: grpc.StatusObject | null = null;
    call.on('data', (b: Buffer) => replies.push(b));
    call.on('error', (e: grpc.ServiceError) => void (status = { code: e.code, details: e.details, metadata: e.metadata }));
    call.on('status', (s: grpc.StatusObject) => {
      status ??= s;
      resolve({ status, replies });
    });
    for (const f of frames) call.write(f);
    call.end();
  });
}

/** The attacker's encoder: no depth limit of its own (rale's encoder stops at 100). */
const attacker = new Encoder({ maxDepth: 100_000 });
const frame = (value: unknown) => encodeFrame([attacker.encode(value)]);
const bytes = (s: string) => new TextEncoder().encode(s);

/** Valid messages from n2 to n1 (term 1: the victim's own, so that nothing about them alone changes its term). */
function validMessages(term: number, lastIndex: number): Array<Record<string, unknown>> {
  const base = { from: 'n2', to: 'n1', term };
  return [
    { ...base, type: MessageType.Append, prevIndex: lastIndex, prevTerm: term, commit: 0, entries: [{ index: lastIndex + 1, term, kind: EntryKind.Normal, data: bytes('{"id":"x","command":{"op":"set","key":"k","value":1}}') }] },
    { ...base, type: MessageType.AppendResponse, reject: false, index: lastIndex, hintIndex: 0, hintTerm: 0 },
    { ...base, type: MessageType.Heartbeat, commit: 0, context: '' },
    { ...base, type: MessageType.Vote, preVote: true, lastIndex, lastTerm: term, transfer: false },
    { ...base, type: MessageType.VoteResponse, preVote: false, granted: true },
    { ...base, type: MessageType.ReadIndexResponse, context: 'c', index: 1 },
    { ...base, type: MessageType.Snapshot, snapshot: { meta: { index: 5, term, config: { voters: ['n1', 'n2', 'n3'], learners: [] } }, data: bytes('{}') } },
  ];
}

/** Values of the wrong shape for a numeric, boolean, string or bytes field. */
const badValue = fc.oneof(
  fc.constantFrom(-1, -0.5, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 2 ** 64, '1', '', null, true, [], {}, [1], { a: 1 }),
  hostileJson.filter((v) => typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0),
);

/** A valid message with one field replaced by a value of the wrong shape, deleted, or a gap in its entries. */
function mutated(term: number, lastIndex: number): fc.Arbitrary<Record<string, unknown>> {
  return fc.tuple(fc.constantFrom(...validMessages(term, lastIndex)), fc.nat(), badValue, fc.constantFrom('replace', 'delete', 'entry', 'gap')).map(([message, pick, value, how]) => {
    const m: Record<string, unknown> = structuredClone(message);
    const fields = Object.keys(m).filter((k) => k !== 'from' && k !== 'to' && !(k === 'type' && how === 'delete'));
    if ((how === 'entry' || how === 'gap') && m.type === MessageType.Append) {
      const entry = (m.entries as Array<Record<string, unknown>>)[0]!;
      if (how === 'gap') entry.index = lastIndex + 2 + (pick % 5);
      else entry[['index', 'term', 'kind', 'data', 'leader'][pick % 5]!] = value;
      return m;
    }
    if (m.type === MessageType.Snapshot && pick % 3 === 0) {
      const meta = (m.snapshot as { meta: Record<string, unknown> }).meta;
      meta[['index', 'term', 'config'][pick % 3]!] = value;
      return m;
    }
    const field = fields[pick % fields.length]!;
    // Only values of the wrong shape: a different string type or a boolean flipped would be a valid message.
    if (field === 'type' && typeof value === 'string' && Object.values(MessageType).includes(value as MessageType)) m[field] = 42;
    else if (how === 'delete') delete m[field];
    else if (['context'].includes(field) && typeof value === 'string') m[field] = 7;
    else if (['reject', 'preVote', 'granted', 'transfer'].includes(field) && typeof value === 'boolean') m[field] = 'yes';
    else m[field] = value;
    return m;
  });
}

test('garbage on every path is refused and logged; the core state does not move; good peers are still served', async (t) => {
  const v = await victim(t);
  await waitFor('the victim to settle as a follower', () => v.node.status().lastIndex >= 1);
  await new Promise((resolve) => setTimeout(resolve, 300)); // a few failed pre-votes: nothing changes after them
  const { term, lastIndex } = v.node.status();
  const client = rawClient(t, v.transport.address);
  const before = v.state();

  const garbage = fc.oneof(
    // Bytes that are not a protobuf message, or not msgpack inside one.
    fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => ({ path: 'call' as const, payload: Buffer.from(b) })),
    fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => ({ path: 'call' as const, payload: encodeFrame([b]) })),
    fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => ({ path: 'stream' as const, payload: Buffer.from(b) })),
    // Well-framed msgpack of the wrong shape.
    hostileJson.map((value) => ({ path: 'call' as const, payload: frame(value) })),
    fc.record({ type: fc.constantFrom('raft', 'nonsense', ''), args: hostileJson }).map((value) => ({ path: 'call' as const, payload: frame(value) })),
    fc
      .record({ seq: fc.oneof(fc.nat(), badValue), batches: fc.oneof(hostileJson, fc.array(hostileJson, { maxLength: 3 })) })
      // A frame of empty batches is valid (nothing to do), not garbage.
      .filter(({ seq, batches }) => !(Number.isSafeInteger(seq) && Array.isArray(batches) && batches.every((b) => Array.isArray(b) && b.length === 0)))
      .map((value) => ({ path: 'stream' as const, payload: frame(value) })),
    // Valid messages with one field of the wrong shape, on both paths.
    mutated(term, lastIndex).map((m) => ({ path: 'call' as const, payload: frame({ type: 'raft', args: [m] }) })),
    mutated(term, lastIndex).map((m) => ({ path: 'stream' as const, payload: frame({ seq: 1, batches: [[m]] }) })),
  );

  await fc.assert(
    fc.asyncProperty(garbage, async ({ path, payload }) => {
      const logsBefore = v.logs.length;
      let refused: string;
      if (path === 'call') {
        const answer = await unary(client, payload);
        if (answer.code === grpc.status.OK) throw new Error(`garbage answered OK: ${payload.toString('hex').slice(0, 200)}`);
        if (answer.code === grpc.status.INTERNAL || answer.code === grpc.status.UNKNOWN) throw new Error(`not a clear refusal: ${grpc.status[answer.code]} ${answer.details}`);
        refused = answer.details;
      } else {
        const { status, replies } = await stream(client, [payload]);
        const errorAck = replies.some((r) => r.includes(Buffer.from('error')));
        if (!errorAck && status?.code === grpc.status.OK) throw new Error(`garbage on the stream acknowledged without error: ${payload.toString('hex').slice(0, 200)}`);
        refused = errorAck ? `error acknowledgement: ${Buffer.concat(replies).toString('latin1')}` : (status?.details ?? '');
      }
      if (refused.length < 8) throw new Error(`refusal without a reason: ${refused}`);
      // Give the node a moment: anything that reached the core would show now.
      await new Promise((resolve) => setImmediate(resolve));
      const after = v.state();
      if (after !== before) throw new Error(`the core state moved: ${before} -> ${after} (${refused})`);
      if (v.logs.length === logsBefore && !v.logs.some((l) => l.includes('refused malformed input'))) throw new Error(`refusal not logged: ${refused}`);
    }),
    fuzz(300),
  );
  t.true(v.logs.some((l) => /^warn: refused malformed input from node n2/.test(l)), 'refusals are logged with the peer');
  t.is(v.state(), before);

  // Still serving: a well-formed Append from a member is taken (the log grows by one).
  const good = validMessages(term, lastIndex)[0]!;
  const ok = await unary(client, frame({ type: 'raft', args: [good] }));
  t.is(ok.code, grpc.status.OK, ok.details);
  await waitFor('the good entry', () => v.node.status().lastIndex === lastIndex + 1);
});

test('wrong, missing or oversized credentials and sizes: refused before anything is decoded', async (t) => {
  const v = await victim(t);
  await waitFor('the victim to settle', () => v.node.status().lastIndex >= 1);
  const client = rawClient(t, v.transport.address);
  const before = v.state();
  const good = frame({ type: 'raft', args: [validMessages(v.node.status().term, v.node.status().lastIndex)[2]] });
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.constant(null), fc.string({ unit: fc.constantFrom(...'abcdefgh !~'), maxLength: 40 }).filter((s) => s !== SECRET)), async (secret) => {
      const answer = await unary(client, good, metadata('n2', secret));
      if (answer.code !== grpc.status.UNAUTHENTICATED) throw new Error(`secret ${JSON.stringify(secret)}: ${grpc.status[answer.code]}`);
    }),
    fuzz(30),
  );
  // A sender that is not the authenticated caller.
  const forged = await unary(client, frame({ type: 'raft', args: [{ ...validMessages(1, 1)[2], from: 'n3' }] }));
  t.is(forged.code, grpc.status.PERMISSION_DENIED);
  // Above maxMessageBytes (1 MiB here): refused by size, whatever it holds.
  const big = await unary(client, encodeFrame([new Uint8Array((1 << 20) + 2048)]));
  t.is(big.code, grpc.status.RESOURCE_EXHAUSTED, big.details);
  t.is(v.state(), before);
});

// ---------------------------------------------------------------- named regressions

// The driver (RaftNode.handleCall) used to destructure forwarded calls' arguments before checking
// them: a peer's null arguments came back as a remote TypeError, and a 'config' change reached the
// core unchecked.
test('regression: forwarded calls (propose, submit, config) with null or malformed arguments get INVALID_ARGUMENT, not a TypeError', async (t) => {
  const v = await victim(t);
  const client = rawClient(t, v.transport.address);
  for (const value of [
    { type: 'propose', args: null },
    { type: 'submit', args: 5 },
    { type: 'config', args: { change: null } },
    { type: 'config', args: { change: { type: 'addVoter' } } },
    { type: 'propose', args: { data: new Uint8Array(2), hops: -1 } },
    { type: 'submit', args: [] },
  ]) {
    const answer = await unary(client, frame(value));
    t.is(answer.code, grpc.status.INVALID_ARGUMENT, `${JSON.stringify(value)}: ${grpc.status[answer.code]} ${answer.details}`);
  }
});

test('regression: an Append whose entries do not follow prevIndex (a gap) is refused before the core sees it', async (t) => {
  const v = await victim(t);
  await waitFor('the victim to settle', () => v.node.status().lastIndex >= 1);
  const client = rawClient(t, v.transport.address);
  const { term, lastIndex } = v.node.status();
  const before = v.state();
  const append = validMessages(term, lastIndex)[0] as { entries: Array<{ index: number; term: number }> };
  for (const entries of [
    [{ ...append.entries[0]!, index: lastIndex + 5 }],
    [append.entries[0]!, { ...append.entries[0]!, index: lastIndex + 3 }],
    [{ ...append.entries[0]!, term: term + 1 }],
    [{ ...append.entries[0]!, term: 0 }],
  ]) {
    const answer = await unary(client, frame({ type: 'raft', args: [{ ...append, entries }] }));
    t.is(answer.code, grpc.status.INVALID_ARGUMENT, answer.details);
    t.regex(answer.details, /messages\[0\]\.entries\[\d\]\.(index|term)/);
  }
  t.is(v.state(), before);
});
