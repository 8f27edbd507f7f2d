import test from 'ava';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { GrpcPeerError, GrpcTransport } from '../../sidecar/src/transport/grpc.ts';
import { RaleError, isRaleError } from '../../sidecar/src/errors.ts';
import { EntryKind, MessageType, type Message } from '../../sidecar/src/core/types.ts';
import { client, memoryLog, startServer, waitFor } from './helpers.ts';

const bytes = (...values: number[]) => Uint8Array.from(values);

function append(from: string, to: string, n: number): Message {
  return {
    type: MessageType.Append,
    from,
    to,
    term: 3,
    prevIndex: n,
    prevTerm: 2,
    commit: n,
    entries: [
      { index: n + 1, term: 3, kind: EntryKind.Normal, data: bytes(n & 255, 0, 255), leader: from },
      { index: n + 2, term: 3, kind: EntryKind.Noop, data: new Uint8Array(0) },
    ],
  };
}

/** Every Uint8Array in `value` is a plain Uint8Array (not a Buffer): a state machine must not see Node types. */
function plainBytesOnly(value: unknown): boolean {
  if (value instanceof Uint8Array) return value.constructor === Uint8Array;
  if (Array.isArray(value)) return value.every(plainBytesOnly);
  if (typeof value === 'object' && value !== null) return Object.values(value).every(plainBytesOnly);
  return true;
}

test('every call type round-trips with its bytes, numbers and sender intact', async (t) => {
  const server = await startServer(t, 'b', { clusterSecret: 'sesame' });
  const a = client(t, { clusterSecret: 'sesame' });
  const conn = a.connect('a', 'b', server.address);

  const batch = [append('a', 'b', 7), { type: MessageType.Heartbeat, from: 'a', to: 'b', term: 3, commit: 9, context: 'read-1' } as Message];
  t.is(await conn.invoke('raft', batch), null, "'raft' answers nothing");

  const propose = { data: bytes(1, 2, 3, 250), hops: 1 };
  const submit = { payloads: [bytes(9), new Uint8Array(0), new Uint8Array(70_000).fill(7)], hops: 1 };
  const config = { change: { type: 'addVoter', node: 'd', context: '127.0.0.1:7000', id: 'chg-1' }, hops: 1 };
  const big = { index: 2 ** 40 + 3, negative: -5, fraction: 0.25, nothing: null, flag: false, nested: [{ deep: bytes(4) }] };
  for (const [type, args] of Object.entries({ propose, submit, config, read: big })) {
    const answer = (await conn.invoke(type, args)) as { type: string; args: unknown; from: string };
    t.deepEqual(answer, { type, args, from: 'a' }, `${type} comes back as sent`);
    t.true(plainBytesOnly(answer), `${type}: bytes are plain Uint8Arrays in the answer`);
  }

  t.is(server.received.length, 5);
  const [raft] = server.received;
  t.deepEqual(raft, { type: 'raft', args: batch, from: 'a' });
  t.true(server.received.every((r) => plainBytesOnly(r.args)), 'bytes are plain Uint8Arrays on the server');
  t.true(server.received.every((r) => r.from === 'a'));
  t.is(server.transport.stats().raftBatches, 1, "'raft' went over the stream");
  t.is(server.transport.stats().calls, 4, 'the others are unary calls');
});

test('a remote RaleError comes back with its code, message and details; other errors with their message', async (t) => {
  const server = await startServer(t, 'b', {}, async (type) => {
    if (type === 'propose') throw new RaleError('NOT_LEADER', 'node b is not the leader', { leader: 'c' });
    if (type === 'raft') throw new RaleError('STOPPED', 'node b stopped');
    throw new TypeError('cannot read properties of undefined');
  });
  const conn = client(t).connect('a', 'b', server.address);

  const notLeader = await t.throwsAsync(conn.invoke('propose', { data: bytes(1) }));
  t.true(isRaleError(notLeader, 'NOT_LEADER'));
  t.is(notLeader?.message, 'node b is not the leader');
  t.deepEqual((notLeader as RaleError).details, { leader: 'c' });

  const stopped = await t.throwsAsync(conn.invoke('raft', [append('a', 'b', 1)]));
  t.true(isRaleError(stopped, 'STOPPED'), 'an error on the stream comes back to that batch');

  const other = await t.throwsAsync(conn.invoke('config', {}));
  t.true(other instanceof GrpcPeerError);
  t.is((other as GrpcPeerError).remoteName, 'TypeError');
  t.regex(other?.message ?? '', /cannot read properties of undefined/);

  // The stream survived the refused batch.
  t.is((conn as unknown as { linkState: string }).linkState, 'up');
});

test('many raft batches stream in order over one stream', async (t) => {
  const seen: number[] = [];
  const server = await startServer(t, 'b', {}, async (_type, args) => {
    for (const m of args as Message[]) if (m.type === MessageType.Append) seen.push(m.prevIndex);
    return null;
  });
  // A generous liveness window: on a loaded CI machine 20,000 batches may stall longer than the 3 s default.
  const conn = client(t, { livenessTimeoutMs: 30_000 }).connect('a', 'b', server.address);
  const total = 20_000;
  const started = Date.now();
  // Keep a few hundred batches in flight, as a busy leader would.
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const n = next++;
      await conn.invoke('raft', [append('a', 'b', n)]);
    }
  };
  await Promise.all(Array.from({ length: 256 }, worker));
  const seconds = (Date.now() - started) / 1000;
  t.deepEqual(seen, Array.from({ length: total }, (_, i) => i), 'every batch arrived once, in order');
  const stats = server.transport.stats();
  t.is(stats.raftBatches, total);
  t.true(stats.raftFrames <= total, 'batches invoked together share frames');
  t.log(`${total} batches in ${seconds.toFixed(2)} s: ${Math.round(total / seconds)} batches/s in ${stats.raftFrames} frames`);
});

test('when the send queue overflows, the oldest batches are dropped and the newest delivered', async (t) => {
  const seen: number[] = [];
  const server = await startServer(t, 'b', {}, async (_type, args) => {
    for (const m of args as Message[]) if (m.type === MessageType.Append) seen.push(m.prevIndex);
    await new Promise((resolve) => setTimeout(resolve, 20)); // a slow peer
    return null;
  });
  const conn = client(t, { sendQueue: { maxBatches: 4, window: 1 } }).connect('a', 'b', server.address);
  await conn.invoke('raft', []);
  seen.length = 0;
  const outcomes = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => conn.invoke('raft', [append('a', 'b', i)])));
  const dropped = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [i] : []));
  const delivered = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : []));
  t.true(dropped.length >= 20 - 5, `at most queue + window batches survive: dropped ${dropped}`);
  t.deepEqual(delivered, Array.from({ length: delivered.length }, (_, k) => 20 - delivered.length + k), 'the newest survive');
  t.deepEqual(seen, delivered);
  for (const o of outcomes) if (o.status === 'rejected') t.regex((o.reason as Error).message, /send queue to node b is full/);
});

test('a 20 MiB snapshot goes in chunks and arrives whole', async (t) => {
  const server = await startServer(t, 'b', {}, async () => null);
  const conn = client(t).connect('a', 'b', server.address);
  const data = new Uint8Array(20 * 1024 * 1024);
  for (let i = 0; i < data.length; i += 4096) data[i] = (i / 4096) & 255;
  data[data.length - 1] = 42;
  const snapshot: Message = {
    type: MessageType.Snapshot,
    from: 'a',
    to: 'b',
    term: 5,
    snapshot: { meta: { index: 1000, term: 4, config: { voters: ['a', 'b', 'c'], learners: [] } }, data },
  };
  const started = Date.now();
  t.is(await conn.invoke('raft', [snapshot]), null, 'resolves once the peer has taken it');
  t.log(`20 MiB snapshot in ${Date.now() - started} ms`);
  const [got] = server.received;
  const m = (got?.args as Message[])[0] as Extract<Message, { type: MessageType.Snapshot }>;
  t.is(m.snapshot.data.length, data.length);
  t.true(m.snapshot.data.constructor === Uint8Array);
  const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
  t.is(digest(m.snapshot.data), digest(data));
  t.deepEqual(m.snapshot.meta, snapshot.snapshot.meta);
  const stats = server.transport.stats();
  t.is(stats.chunkedCalls, 1);
  t.true(stats.chunkedBytes > data.length);
  t.is(stats.raftBatches, 0, 'not over the stream');
});

test('oversized payloads are refused with RESOURCE_EXHAUSTED and a clear message', async (t) => {
  const server = await startServer(t, 'b', { maxMessageBytes: 2 * 1024 * 1024, maxChunkedBytes: 2 * 1024 * 1024 });
  const payload = { data: new Uint8Array(3 * 1024 * 1024) };

  // Chunked (the sender's limit is larger than the receiver's): refused on the declared total.
  const sender = client(t, { maxMessageBytes: 8 * 1024 * 1024 }).connect('a', 'b', server.address);
  const chunked = await t.throwsAsync(sender.invoke('raft', [{ ...append('a', 'b', 1), entries: [{ index: 2, term: 3, kind: 0, data: payload.data }] }]));
  t.true(chunked instanceof GrpcPeerError);
  t.is((chunked as GrpcPeerError).grpcCode, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(chunked?.message ?? '', /exceeds this node's maxChunkedBytes \(2097152\)/);

  // Unary (a sender that does not chunk below 4 MiB): grpc-js's own limit.
  const unchunked = client(t, { maxMessageBytes: 8 * 1024 * 1024, chunkBytes: 4 * 1024 * 1024 }).connect('a', 'b', server.address);
  const unary = await t.throwsAsync(unchunked.invoke('propose', payload));
  t.is((unary as GrpcPeerError).grpcCode, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(unary?.message ?? '', /larger than max/);

  // The sender's own limit: refused before anything is sent.
  const small = client(t, { maxMessageBytes: 1024 * 1024, maxChunkedBytes: 1024 * 1024 }).connect('a', 'b', server.address);
  const local = await t.throwsAsync(small.invoke('propose', payload));
  t.is((local as GrpcPeerError).grpcCode, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(local?.message ?? '', /not sent: its payload is \d+ bytes, above maxChunkedBytes/);

  t.is(server.received.length, 0, 'the handler never saw them');
  t.like(await unchunked.invoke('propose', { data: bytes(1) }), { type: 'propose' }, 'the server still serves');
});

test('a snapshot larger than maxMessageBytes travels in chunks up to maxChunkedBytes', async (t) => {
  // Answers null, as a RaftNode answers 'raft' calls (the echo would not fit in one frame).
  const server = await startServer(t, 'b', { maxMessageBytes: 1024 * 1024, maxChunkedBytes: 8 * 1024 * 1024 }, async () => null);
  const sender = client(t, { maxMessageBytes: 1024 * 1024, maxChunkedBytes: 8 * 1024 * 1024 }).connect('a', 'b', server.address);
  const data = new Uint8Array(3 * 1024 * 1024).map((_, k) => k % 251);
  await sender.invoke('raft', [{ ...append('a', 'b', 1), entries: [{ index: 2, term: 3, kind: 0, data }] }]);
  const got = (server.received[0]?.args as Array<{ entries: Array<{ data: Uint8Array }> }>)[0]?.entries[0]?.data;
  t.deepEqual(got, data);
  t.is(server.transport.stats().chunkedCalls, 1);
});

test('a down peer fails calls promptly, and the link comes back when the peer does', async (t) => {
  const first = await startServer(t, 'b');
  const port = first.port;
  const conn = client(t, { backoff: { initialMs: 20, maxMs: 200 } }).connect('a', 'b', first.address);
  await conn.invoke('raft', [append('a', 'b', 1)]);
  await first.transport.close();

  // The stream notices; from then on calls fail without waiting for a timeout.
  let started = Date.now();
  const unreachable = await t.throwsAsync(conn.invoke('raft', [append('a', 'b', 2)]));
  t.true(isRaleError(unreachable, 'NO_LEADER'), unreachable?.message);
  t.true((unreachable as RaleError).details.unreachable as boolean);
  t.true(Date.now() - started < 3000, 'failed promptly');
  started = Date.now();
  const again = await t.throwsAsync(conn.invoke('propose', { data: bytes(1) }));
  t.true(isRaleError(again, 'NO_LEADER'), again?.message);
  t.true(Date.now() - started < 3000, 'failed promptly');

  // The peer returns on the same port: the next calls after the backoff get through.
  const second = await startServer(t, 'b', { listen: { host: '127.0.0.1', port } });
  await waitFor('the link to come back', () => conn.invoke('raft', [append('a', 'b', 3)]).then(() => true, () => false));
  t.like(await conn.invoke('propose', { data: bytes(5) }), { type: 'propose', from: 'a' });
  t.is((conn as unknown as { linkState: string }).linkState, 'up');
  t.true(second.received.some((r) => r.type === 'raft'));
});

test('a peer that stops acknowledging counts as down after livenessTimeoutMs, and the stream is reopened', async (t) => {
  let calls = 0;
  const server = await startServer(t, 'b', {}, (type) => {
    // The first batch hangs for good, as on a wedged peer.
    if (type === 'raft' && ++calls === 1) return new Promise(() => {});
    return Promise.resolve(null);
  });
  const conn = client(t, { livenessTimeoutMs: 300, backoff: { initialMs: 20, maxMs: 100 } }).connect('a', 'b', server.address);
  const stalled = await t.throwsAsync(conn.invoke('raft', [append('a', 'b', 1)]));
  t.true(isRaleError(stalled, 'NO_LEADER'), stalled?.message);
  // Under load the stream may not even open within the window: both mean the peer counts as down.
  t.regex(stalled?.message ?? '', /no (acknowledgement|answer to the stream) within 300 ms/);
  await waitFor('a new stream to carry batches', () => conn.invoke('raft', [append('a', 'b', 2)]).then(() => true, () => false));
  t.true(calls >= 2);
});

test('a bound transport refuses calls until it listens; connect without an address fails clearly', async (t) => {
  const logs: string[] = [];
  const early = new GrpcTransport({ log: memoryLog(logs) });
  t.teardown(() => early.close());
  await early.bind();
  const conn = client(t).connect('a', 'b', early.address);
  const notReady = await t.throwsAsync(conn.invoke('propose', {}));
  t.regex(notReady?.message ?? '', /not ready/);
  await early.listen('b', async () => 'ready');
  // The link backs off after the refusal, briefly.
  t.is(await waitFor('the node to answer', () => conn.invoke('propose', {}).catch(() => null)), 'ready');

  const nowhere = await t.throwsAsync(client(t).connect('a', 'z').invoke('propose', {}));
  t.true(isRaleError(nowhere, 'INVALID_ARGUMENT'));
  t.regex(nowhere?.message ?? '', /no address is known for node z/);
  t.true(logs.some((l) => l.startsWith('warn: peer authentication is off')), 'running without authentication is logged');
});

test('bridges can add their own services before and after listen, with or without rale authentication', async (t) => {
  const json = {
    serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
    deserialize: (b: Buffer) => JSON.parse(b.toString('utf8')) as unknown,
  };
  const method = (path: string): grpc.MethodDefinition<unknown, unknown> => ({
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  });
  const kv = { Propose: method('/phalanx.KV/Propose') };
  const raftService = { AppendEntries: method('/coordinode.v1.replication.RaftService/AppendEntries') };
  const echoImpl = (tag: string) => ({
    [Object.keys(tag === 'kv' ? kv : raftService)[0] as string]: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, { tag, got: call.request }),
  });

  const transport = new GrpcTransport({ clusterSecret: 'sesame', log: () => {} });
  t.teardown(() => transport.close());
  transport.addService(kv, echoImpl('kv')); // before listen, open to foreign clients
  await transport.listen('b', async () => null);
  transport.addService(raftService, echoImpl('raft'), { authenticate: true }); // after listen, rale peers only

  const raw = new grpc.Client(transport.address, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const call = (path: string, metadata = new grpc.Metadata()) =>
    new Promise<unknown>((resolve, reject) =>
      raw.makeUnaryRequest(path, json.serialize, json.deserialize, { x: 1 }, metadata, (err, res) => (err ? reject(err) : resolve(res))),
    );
  t.deepEqual(await call('/phalanx.KV/Propose'), { tag: 'kv', got: { x: 1 } });
  const refused = await t.throwsAsync<grpc.ServiceError>(call('/coordinode.v1.replication.RaftService/AppendEntries'));
  t.is(refused?.code, grpc.status.UNAUTHENTICATED);
  const md = new grpc.Metadata();
  md.set('rale-cluster-secret', 'sesame');
  md.set('rale-node-id', 'a');
  md.set('rale-peer-protocol', '1');
  t.deepEqual(await call('/coordinode.v1.replication.RaftService/AppendEntries', md), { tag: 'raft', got: { x: 1 } });
  t.throws(() => transport.addService(kv, echoImpl('kv')), { message: /already provided/ });
});
