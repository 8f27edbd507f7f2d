import test from 'ava';
import fc from 'fast-check';
import * as grpc from '@grpc/grpc-js';
import { GrpcPeerError } from '../../sidecar/src/transport/grpc.ts';
import { encodeFrame, pack, packMap, Packed } from '../../sidecar/src/transport/wire.ts';
import { isRaleError } from '../../sidecar/src/errors.ts';
import { EntryKind, MessageType, type AppendMessage, type Message } from '../../sidecar/src/core/types.ts';
import { client, hasOpenssl, makePki, startServer, type TestServer } from './helpers.ts';

const heartbeat = (from: string, to: string): Message => ({ type: MessageType.Heartbeat, from, to, term: 1, commit: 0, context: '' });

function grpcCode(err: unknown): grpc.status | undefined {
  return err instanceof GrpcPeerError ? err.grpcCode : undefined;
}

// ---------------------------------------------------------------- cluster secret

test('a call without the cluster secret, or with a wrong one, is refused with UNAUTHENTICATED and reported', async (t) => {
  const server = await startServer(t, 'b', { clusterSecret: 'right secret' });
  const cases = [
    { name: 'missing', options: {}, reason: /carries no cluster secret/ },
    { name: 'wrong', options: { clusterSecret: 'wrong secret' }, reason: /cluster secret is wrong/ },
  ];
  for (const c of cases) {
    // A fresh link per call, so that each one reaches the server rather than failing fast on the link's backoff.
    const a = client(t, { ...c.options, chunkBytes: 1024 });
    const raft = await t.throwsAsync(a.connect('a', 'b', server.address).invoke('raft', [heartbeat('a', 'b')]));
    const unary = await t.throwsAsync(a.connect('a', 'b', server.address).invoke('propose', { data: new Uint8Array(8) }));
    const chunked = await t.throwsAsync(a.connect('a', 'b', server.address).invoke('propose', { data: new Uint8Array(4096) }));
    for (const [path, err] of Object.entries({ raft, unary, chunked })) {
      t.is(grpcCode(err), grpc.status.UNAUTHENTICATED, `${c.name} secret, ${path}: ${err?.message}`);
      t.regex(err?.message ?? '', c.reason);
    }
    const reported = server.events.filter((e) => e.kind === 'unauthenticated' && c.reason.test(e.reason));
    t.true(reported.length >= 1, `${c.name} secret is reported`);
    t.like(reported[0], { claimedId: 'a' });
    t.regex(reported[0]?.remote ?? '', /127\.0\.0\.1/);
  }
  t.deepEqual(server.received, [], 'the handler never ran');
  t.true(server.transport.stats().refused >= 6);
  // The right secret still works.
  t.like(await client(t, { clusterSecret: 'right secret' }).connect('a', 'b', server.address).invoke('propose', {}), { from: 'a' });
});

test('without an onSecurityEvent callback, refusals are logged as warnings (rate-limited)', async (t) => {
  const server = await startServer(t, 'b', { clusterSecret: 's', onSecurityEvent: undefined });
  const a = client(t, { clusterSecret: 'not s' });
  for (let i = 0; i < 5; i++) await t.throwsAsync(a.connect('a', 'b', server.address).invoke('propose', {}));
  const warnings = server.logs.filter((l) => l.startsWith('warn: refused a call to /rale.peer.v1.RalePeer/'));
  t.true(warnings.length >= 1, server.logs.join('\n'));
  t.regex(warnings[0] ?? '', /cluster secret is wrong/);
  t.true(warnings.length < 10, 'identical refusals within a second are counted, not logged one by one');
});

test('with a secret only, a message whose from is not the calling node is refused', async (t) => {
  const server = await startServer(t, 'b', { clusterSecret: 's' });
  const a = client(t, { clusterSecret: 's', chunkBytes: 1024 });
  const forged = await t.throwsAsync(a.connect('a', 'b', server.address).invoke('raft', [heartbeat('a', 'b'), heartbeat('c', 'b')]));
  t.is(grpcCode(forged), grpc.status.PERMISSION_DENIED, forged?.message);
  t.regex(forged?.message ?? '', /node a sent a message claiming to come from node c/);
  // The same through the chunked path (a forged snapshot).
  const snapshot: Message = {
    type: MessageType.Snapshot,
    from: 'c',
    to: 'b',
    term: 2,
    snapshot: { meta: { index: 9, term: 2, config: { voters: ['a', 'b', 'c'], learners: [] } }, data: new Uint8Array(10_000) },
  };
  const forgedSnapshot = await t.throwsAsync(a.connect('a', 'b', server.address).invoke('raft', [snapshot]));
  t.is(grpcCode(forgedSnapshot), grpc.status.PERMISSION_DENIED, forgedSnapshot?.message);
  t.deepEqual(server.received, []);
  t.true(server.events.some((e) => e.kind === 'sender-mismatch' && e.claimedId === 'a'));
});

test('a call meant for another node is refused with FAILED_PRECONDITION', async (t) => {
  const server = await startServer(t, 'b');
  const err = await t.throwsAsync(client(t).connect('a', 'x', server.address).invoke('propose', {}));
  t.is(grpcCode(err), grpc.status.FAILED_PRECONDITION);
  t.regex(err?.message ?? '', /this is node b, not x/);
  t.deepEqual(server.received, []);
});

// ---------------------------------------------------------------- mutual TLS

const openssl = hasOpenssl();
const pki = openssl ? makePki(['n1', 'n2', 'n3']) : null;
const tlsFor = (id: 'n1' | 'n2' | 'n3') => {
  const p = pki as NonNullable<typeof pki>;
  const pem = p.nodes[id] as { cert: string; key: string };
  return { cert: pem.cert, key: pem.key, ca: p.ca };
};

test('mTLS: members with cluster certificates talk; the sender is the node the certificate names', async (t) => {
  if (!openssl) return t.fail('openssl is needed to generate test certificates');
  const server = await startServer(t, 'n2', { tls: tlsFor('n2') });
  const n1 = client(t, { tls: tlsFor('n1'), chunkBytes: 1024 });
  const conn = n1.connect('n1', 'n2', server.address);
  t.like(await conn.invoke('propose', { data: Uint8Array.of(1) }), { from: 'n1' });
  t.is(await conn.invoke('raft', [heartbeat('n1', 'n2')]), null);
  t.like(await conn.invoke('submit', { payloads: [new Uint8Array(5000)] }), { from: 'n1' }, 'chunked over TLS');
  t.deepEqual(
    server.received.map((r) => [r.type, r.from]),
    [
      ['propose', 'n1'],
      ['raft', 'n1'],
      ['submit', 'n1'],
    ],
  );
  // mTLS names the peer: a message from anyone else is refused even on a good connection.
  const forged = await t.throwsAsync(n1.connect('n1', 'n2', server.address).invoke('raft', [heartbeat('n3', 'n2')]));
  t.is(grpcCode(forged), grpc.status.PERMISSION_DENIED);
  t.true(server.events.some((e) => e.kind === 'sender-mismatch'));
});

test('mTLS: a client with a certificate from another CA is refused, and so is a client without TLS', async (t) => {
  if (!openssl) return t.fail('openssl is needed to generate test certificates');
  const p = pki as NonNullable<typeof pki>;
  const server = await startServer(t, 'n2', { tls: tlsFor('n2') });
  const intruder = client(t, { tls: { ...p.intruder, ca: p.ca }, livenessTimeoutMs: 2000 });
  const err = await t.throwsAsync(intruder.connect('n1', 'n2', server.address).invoke('propose', {}));
  t.true(isRaleError(err, 'NO_LEADER'), `refused during the TLS handshake: ${err?.message}`);
  const plain = client(t, { livenessTimeoutMs: 2000 });
  const plainErr = await t.throwsAsync(plain.connect('n1', 'n2', server.address).invoke('raft', [heartbeat('n1', 'n2')]));
  t.truthy(plainErr);
  t.deepEqual(server.received, [], 'the handler never ran');
  t.is(server.transport.stats().calls, 0);
});

test('mTLS: a cluster certificate for one node cannot speak as another, and a client checks whom it reached', async (t) => {
  if (!openssl) return t.fail('openssl is needed to generate test certificates');
  const server = await startServer(t, 'n2', { tls: tlsFor('n2') });
  // Holds n3's certificate, claims to be n1.
  const impostor = client(t, { tls: tlsFor('n3') });
  const err = await t.throwsAsync(impostor.connect('n1', 'n2', server.address).invoke('propose', {}));
  t.is(grpcCode(err), grpc.status.PERMISSION_DENIED, err?.message);
  t.regex(err?.message ?? '', /certificate names \["n3"\] but the call claims to come from node n1/);
  t.true(server.events.some((e) => e.kind === 'permission-denied' && e.claimedId === 'n1'));
  // n1 means to reach n3 but the address serves n2's certificate: the client refuses the server.
  const n1 = client(t, { tls: tlsFor('n1'), livenessTimeoutMs: 2000 });
  const wrongServer = await t.throwsAsync(n1.connect('n1', 'n3', server.address).invoke('propose', {}));
  t.regex(wrongServer?.message ?? '', /the server certificate names \["n2"\], not node n3/);
  t.deepEqual(server.received, []);
});

// ---------------------------------------------------------------- garbage in

function peerMetadata(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('rale-peer-protocol', '1');
  md.set('rale-node-id', 'a');
  md.set('rale-target-id', 'b');
  md.set('rale-cluster-secret', 's');
  return md;
}

const raw = (b: Buffer) => b;

function rawUnary(c: grpc.Client, bytes: Uint8Array): Promise<grpc.status> {
  return new Promise((resolve) => {
    c.makeUnaryRequest('/rale.peer.v1.RalePeer/Call', raw, raw, Buffer.from(bytes), peerMetadata(), { deadline: Date.now() + 5000 }, (err) => resolve(err ? err.code : grpc.status.OK));
  });
}

function rawChunked(c: grpc.Client, frames: Uint8Array[]): Promise<grpc.status> {
  return new Promise((resolve) => {
    const call = c.makeClientStreamRequest('/rale.peer.v1.RalePeer/ChunkedCall', raw, raw, peerMetadata(), { deadline: Date.now() + 5000 }, (err) =>
      resolve(err ? err.code : grpc.status.OK),
    );
    call.on('error', () => {});
    for (const f of frames) call.write(Buffer.from(f));
    call.end();
  });
}

function rawStream(c: grpc.Client, frames: Uint8Array[]): Promise<grpc.status> {
  return new Promise((resolve) => {
    const call = c.makeBidiStreamRequest('/rale.peer.v1.RalePeer/RaftStream', raw, raw, peerMetadata(), { deadline: Date.now() + 5000 });
    call.on('data', () => {});
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => resolve(s.code));
    for (const f of frames) call.write(Buffer.from(f));
    call.end();
  });
}

const frame = (value: unknown) => encodeFrame([pack(value)]);

async function garbageServer(t: Parameters<typeof startServer>[0]): Promise<{ server: TestServer; raw: grpc.Client }> {
  const server = await startServer(t, 'b', { clusterSecret: 's', maxMessageBytes: 1024 * 1024, maxChunkedBytes: 1024 * 1024 });
  const c = new grpc.Client(server.address, grpc.credentials.createInsecure());
  t.teardown(() => c.close());
  return { server, raw: c };
}

test('fuzzed garbage gets INVALID_ARGUMENT, never reaches the handler, and the server keeps serving', async (t) => {
  const { server, raw: c } = await garbageServer(t);
  // Random bytes as the whole protobuf message, and random bytes inside a well-formed frame.
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.boolean(), async (bytes, framed) => {
      const code = await rawUnary(c, framed ? encodeFrame([bytes]) : bytes);
      return code === grpc.status.INVALID_ARGUMENT;
    }),
    { numRuns: 300 },
  );
  // Valid msgpack of the wrong shape as a 'raft' batch.
  await fc.assert(
    fc.asyncProperty(
      fc.anything().filter((v) => !(Array.isArray(v) && v.length === 0)),
      async (args) => (await rawUnary(c, encodeFrame(packMap([['type', 'raft'], ['args', args]])))) === grpc.status.INVALID_ARGUMENT,
    ),
    { numRuns: 200 },
  );
  // Garbage on the stream ends it with INVALID_ARGUMENT; garbage chunks end the chunked call so.
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 200 }), async (bytes) => (await rawStream(c, [bytes])) === grpc.status.INVALID_ARGUMENT),
    { numRuns: 50 },
  );
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => (await rawChunked(c, [bytes])) === grpc.status.INVALID_ARGUMENT),
    { numRuns: 50 },
  );
  t.deepEqual(server.received, [], 'no garbage reached the handler');
  const conn = client(t, { clusterSecret: 's' }).connect('a', 'b', server.address);
  t.like(await conn.invoke('propose', { data: Uint8Array.of(1) }), { type: 'propose' });
  t.is(await conn.invoke('raft', [heartbeat('a', 'b')]), null);
});

test('malformed Raft messages are refused field by field, and chunked calls must add up', async (t) => {
  const { server, raw: c } = await garbageServer(t);
  const good: AppendMessage = {
    type: MessageType.Append,
    from: 'a',
    to: 'b',
    term: 2,
    prevIndex: 1,
    prevTerm: 1,
    commit: 1,
    entries: [{ index: 2, term: 2, kind: EntryKind.Normal, data: Uint8Array.of(1) }],
  };
  const broken: Array<[string, unknown]> = [
    ['term', 'two'],
    ['term', -1],
    ['term', 1.5],
    ['prevIndex', null],
    ['type', 'gossip'],
    ['from', 7],
    ['entries', 'none'],
    ['entries', [{ index: 2, term: 2, kind: EntryKind.Normal, data: 'not bytes' }]],
    ['entries', [{ index: 2, term: 2, kind: 9, data: Uint8Array.of(1) }]],
  ];
  for (const [field, value] of broken) {
    const message = { ...good, [field]: value };
    t.is(await rawUnary(c, encodeFrame(packMap([['type', 'raft'], ['args', [message]]]))), grpc.status.INVALID_ARGUMENT, `${field} = ${JSON.stringify(value)}`);
  }
  // On the stream a malformed batch is refused with an error acknowledgement; the stream goes on.
  const conn = client(t, { clusterSecret: 's' }).connect('a', 'b', server.address);
  const err = await t.throwsAsync(conn.invoke('raft', [{ ...good, entries: [{ ...good.entries[0], data: 'x' }] }]));
  t.true(isRaleError(err, 'INVALID_ARGUMENT'), err?.message);
  t.regex(err?.message ?? '', /messages\[0\]\.entries\[0\]\.data: expected bytes/);
  t.is(await conn.invoke('raft', [good]), null);

  const header = (total: number) => encodeFrame(packMap([['type', 'propose'], ['total', total]]));
  const chunk = (n: number) => encodeFrame(packMap([['chunk', new Packed([Uint8Array.of(0xc4, n), new Uint8Array(n)])]]));
  t.is(await rawChunked(c, [header(10), chunk(20)]), grpc.status.INVALID_ARGUMENT, 'more than declared');
  t.is(await rawChunked(c, [header(30), chunk(20)]), grpc.status.INVALID_ARGUMENT, 'less than declared');
  t.is(await rawChunked(c, [header(2 * 1024 * 1024)]), grpc.status.RESOURCE_EXHAUSTED, 'declared above maxChunkedBytes');
  t.is(await rawChunked(c, [frame({ chunk: new Uint8Array(3) })]), grpc.status.INVALID_ARGUMENT, 'no header');
  t.is(await rawChunked(c, [header(3), encodeFrame([Uint8Array.of(0xc4, 3, 1, 2, 3)])]), grpc.status.INVALID_ARGUMENT, 'a chunk that is not {chunk}');
  t.is(await rawChunked(c, [header(3), chunk(3)]), grpc.status.INVALID_ARGUMENT, 'chunks that add up to something that is not msgpack');
  t.deepEqual(
    server.received.map((r) => r.type),
    ['raft'],
    'only the good batch reached the handler',
  );
});
