import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decode as plainMsgpackDecode, encode as plainMsgpackEncode } from '@msgpack/msgpack';

import {
  byteVecPayload,
  ByteVec,
  CoordinodeDecodeError,
  createCoordinodeCodec,
  decodeRaftEmpty,
  decodeRaftPayload,
  encodeMsgpack,
  encodeRaftEmpty,
  encodeRaftPayload,
  MsgpackMap,
  msgpackValuePayload,
  type AppendEntriesRequest,
  type AppendEntriesResponse,
  type CoordinodeCodec,
  type Entry,
  type LeaderIdMode,
  type LogId,
  type Membership,
  type MsgpackValue,
  type SnapshotChunkMessage,
  type SnapshotMeta,
  type StreamAppendResult,
  type Vote,
  type VoteRequest,
} from '../../bridges/coordinode/codec.ts';
import { WireEncodeError } from '../../bridges/shared/wire-errors.ts';

interface HexVector {
  name: string;
  value: unknown;
  hex: string;
}

const vectors = JSON.parse(readFileSync(new URL('../fixtures/vectors/coordinode-msgpack.json', import.meta.url), 'utf8')) as HexVector[];

const fromHex = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));
const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const utf8Hex = (text: string): string => Buffer.from(text, 'utf8').toString('hex');

const adv = createCoordinodeCodec({ leaderIdMode: 'adv' });
const std = createCoordinodeCodec({ leaderIdMode: 'std' });

// Short builders for the "T5-N1.10" notation of the vector names.
const leader = (term: bigint, nodeId: bigint | null) => ({ term, nodeId });
const vote = (term: bigint, nodeId: bigint | null, committed: boolean): Vote => ({ leaderId: leader(term, nodeId), committed });
const logId = (term: bigint, nodeId: bigint | null, index: bigint): LogId => ({ leaderId: leader(term, nodeId), index });

interface VectorCase {
  decode(bytes: Uint8Array): unknown;
  encodeExpected(): Uint8Array;
  expected: unknown;
}

function vectorCase<T>(decode: (bytes: Uint8Array) => T, encode: (value: T) => Uint8Array, expected: T): VectorCase {
  return { decode, encodeExpected: () => encode(expected), expected };
}

// Every vector's typed value, written out by hand from its name (all adv mode, D = String).
const vectorCases: Record<string, VectorCase> = {
  'adv VoteRequest{vote:T5-N1 uncommitted,last_log_id:T4-N2.10,leadership_transfer:false}': vectorCase(
    adv.decodeVoteRequest,
    (v) => adv.encodeVoteRequest(v),
    { vote: vote(5n, 1n, false), lastLogId: logId(4n, 2n, 10n), leadershipTransfer: false },
  ),
  'adv VoteResponse{vote:T5-N1,vote_granted:true,last_log_id:T4-N2.10}': vectorCase(adv.decodeVoteResponse, adv.encodeVoteResponse, {
    vote: vote(5n, 1n, false),
    voteGranted: true,
    lastLogId: logId(4n, 2n, 10n),
  }),
  'adv AppendEntriesRequest with D=String (openraft default) Normal("set x=1")': vectorCase(
    adv.decodeAppendEntriesRequest,
    adv.encodeAppendEntriesRequest,
    {
      vote: vote(5n, 1n, true),
      prevLogId: logId(5n, 1n, 10n),
      entries: [{ logId: logId(5n, 1n, 11n), payload: { kind: 'normal', data: 'set x=1' } }],
      leaderCommit: logId(5n, 1n, 10n),
    },
  ),
  'adv heartbeat AppendEntriesRequest{prev:None,entries:[],commit:None}': vectorCase(adv.decodeAppendEntriesRequest, adv.encodeAppendEntriesRequest, {
    vote: vote(5n, 1n, true),
    prevLogId: null,
    entries: [],
    leaderCommit: null,
  }),
  'adv Entry Blank T5-N1.12': vectorCase(adv.decodeEntry, adv.encodeEntry, { logId: logId(5n, 1n, 12n), payload: { kind: 'blank' } }),
  'AppendEntriesResponse::Success': vectorCase(adv.decodeAppendEntriesResponse, adv.encodeAppendEntriesResponse, { type: 'success' }),
  'AppendEntriesResponse::Conflict': vectorCase(adv.decodeAppendEntriesResponse, adv.encodeAppendEntriesResponse, { type: 'conflict' }),
  'AppendEntriesResponse::HigherVote(T6-N3 committed)': vectorCase(adv.decodeAppendEntriesResponse, adv.encodeAppendEntriesResponse, {
    type: 'higherVote',
    vote: vote(6n, 3n, true),
  }),
  'StreamAppendResult Ok(Some(T5-N1.11))': vectorCase(adv.decodeStreamAppendResult, adv.encodeStreamAppendResult, {
    ok: true,
    matching: logId(5n, 1n, 11n),
  }),
  'StreamAppendResult Ok(None)': vectorCase(adv.decodeStreamAppendResult, adv.encodeStreamAppendResult, { ok: true, matching: null }),
  'StreamAppendResult Err(Conflict(T5-N1.10))': vectorCase(adv.decodeStreamAppendResult, adv.encodeStreamAppendResult, {
    ok: false,
    error: { type: 'conflict', logId: logId(5n, 1n, 10n) },
  }),
  'SnapshotResponse{vote:T5-N1 committed}': vectorCase(adv.decodeSnapshotResponse, adv.encodeSnapshotResponse, { vote: vote(5n, 1n, true) }),
  'coordinode SnapshotChunkMessage::DataChunk([1,2,255])': vectorCase(
    adv.decodeSnapshotChunkMessage,
    (v) => adv.encodeSnapshotChunkMessage(v),
    { type: 'dataChunk', data: new Uint8Array([1, 2, 255]) },
  ),
};

test('every CoordiNode vector has a typed value to check, and every checked value has a vector', (t) => {
  t.deepEqual(vectors.map((v) => v.name).sort(), Object.keys(vectorCases).sort());
});

for (const vector of vectors) {
  const caseFor = (): VectorCase => {
    const found = vectorCases[vector.name];
    if (found === undefined) throw new Error(`no expectation for vector ${vector.name}`);
    return found;
  };
  test(`vector "${vector.name}": the hex is the msgpack of the vector's value`, (t) => {
    t.deepEqual(plainMsgpackDecode(fromHex(vector.hex)), vector.value);
  });
  test(`vector "${vector.name}": decodes to the expected typed value`, (t) => {
    const { decode, expected } = caseFor();
    t.deepEqual(decode(fromHex(vector.hex)), expected);
  });
  test(`vector "${vector.name}": encodes byte for byte`, (t) => {
    t.is(toHex(caseFor().encodeExpected()), vector.hex);
  });
}

// ---------------------------------------------------------------------------
// Integers: smallest form, u64 beyond 2^53
// ---------------------------------------------------------------------------

test('integers use the smallest msgpack form, as rmp-serde writes them', (t) => {
  const cases: Array<[bigint, string]> = [
    [0n, '00'],
    [127n, '7f'],
    [128n, 'cc80'],
    [255n, 'ccff'],
    [256n, 'cd0100'],
    [65535n, 'cdffff'],
    [65536n, 'ce00010000'],
    [2n ** 32n - 1n, 'ceffffffff'],
    [2n ** 32n, 'cf0000000100000000'],
    [2n ** 53n + 1n, 'cf0020000000000001'],
    [2n ** 64n - 1n, 'cfffffffffffffffff'],
  ];
  for (const [value, hex] of cases) {
    t.is(toHex(adv.encodeLogId(logId(1n, 2n, value))), `929201 02${hex}`.replace(/ /g, ''), String(value));
    t.deepEqual(adv.decodeLogId(fromHex(`929201 02${hex}`)), logId(1n, 2n, value), String(value));
  }
});

test('u64 values of 2^53 and above survive a round trip exactly, in every u64 position', (t) => {
  const big = 2n ** 64n - 1n;
  const justAbove = 2n ** 53n + 1n;
  const message: VoteRequest = { vote: vote(justAbove, big, true), lastLogId: logId(big, justAbove, big - 1n), leadershipTransfer: true };
  const bytes = adv.encodeVoteRequest(message);
  t.deepEqual(adv.decodeVoteRequest(bytes), message);
  t.is(toHex(bytes), '93 92 92 cf0020000000000001 cfffffffffffffffff c3 92 92 cfffffffffffffffff cf0020000000000001 cffffffffffffffffe c3'.replace(/ /g, ''));
  const transfer = { fromLeader: vote(1n, big, true), toNodeId: big, lastLogId: null };
  t.deepEqual(adv.decodeTransferLeaderRequest(adv.encodeTransferLeaderRequest(transfer)), transfer);
});

test('small values written in a wide form (as another encoder might) still decode', (t) => {
  // LogId [[1, 2], 10] with every integer as uint64 (0xcf) and int64 (0xd3).
  t.deepEqual(adv.decodeLogId(fromHex('9292cf0000000000000001d30000000000000002cf000000000000000a')), logId(1n, 2n, 10n));
});

test('u64 fields reject negatives, floats and non-integers', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['9292ff020a', /negative integer -1/],
    ['9292d3ffffffffffffffff020a', /negative integer -1/],
    ['9292cb3ff8000000000000020a', /float 1.5/],
    ['9292a1310 20a', /expected u64, got string/],
    ['9292c0020a', /expected u64, got nil/],
  ];
  for (const [hex, reason] of cases) {
    const error = t.throws(() => adv.decodeLogId(fromHex(hex)), { instanceOf: CoordinodeDecodeError }, hex);
    t.regex(error?.reason ?? '', reason, hex);
    t.is(error?.path, 'LogId.leader_id.term', hex);
  }
});

test('encoders refuse numbers for u64 fields and values outside u64', (t) => {
  t.throws(() => adv.encodeLogId({ leaderId: { term: 1 as unknown as bigint, nodeId: 1n }, index: 1n }), {
    instanceOf: WireEncodeError,
    message: /bigint/,
  });
  t.throws(() => adv.encodeLogId(logId(1n, 1n, -1n)), { instanceOf: WireEncodeError, message: /out of range/ });
  t.throws(() => adv.encodeLogId(logId(1n, 1n, 2n ** 64n)), { instanceOf: WireEncodeError, message: /out of range/ });
});

// ---------------------------------------------------------------------------
// Leader-id modes
// ---------------------------------------------------------------------------

test('std mode: LeaderId is [term, voted_for | nil] and LogId is [term, index]', (t) => {
  t.is(toHex(std.encodeLeaderId(leader(5n, 1n))), '920501');
  t.is(toHex(std.encodeLeaderId(leader(5n, null))), '9205c0');
  t.deepEqual(std.decodeLeaderId(fromHex('9205c0')), leader(5n, null));
  t.is(toHex(std.encodeLogId(logId(4n, null, 10n))), '92040a');
  t.deepEqual(std.decodeLogId(fromHex('92040a')), logId(4n, null, 10n));
  const request: VoteRequest = { vote: vote(5n, 1n, false), lastLogId: logId(4n, null, 10n), leadershipTransfer: false };
  t.is(toHex(std.encodeVoteRequest(request)), '9392920501c292040ac2');
  t.deepEqual(std.decodeVoteRequest(fromHex('9392920501c292040ac2')), request);
  t.is(toHex(std.encodeEntry({ logId: logId(5n, null, 12n), payload: { kind: 'blank' } })), `9292050c a5${utf8Hex('Blank')}`.replace(/ /g, ''));
});

test('the two modes do not read each other: a std LogId is not an adv LogId and vice versa', (t) => {
  t.throws(() => adv.decodeLogId(fromHex('92040a')), { instanceOf: CoordinodeDecodeError, message: /LogId\.leader_id.*LeaderId/ });
  t.throws(() => std.decodeLogId(fromHex('929204020a')), { instanceOf: CoordinodeDecodeError, message: /LogId\.leader_id: expected u64, got array/ });
});

test('a leader id the mode cannot express is refused rather than silently changed', (t) => {
  t.throws(() => adv.encodeVote(vote(5n, null, false)), { instanceOf: WireEncodeError, message: /adv-mode LeaderId needs a nodeId/ });
  t.throws(() => std.encodeLogId(logId(5n, 1n, 3n)), { instanceOf: WireEncodeError, message: /std-mode CommittedLeaderId is the term alone/ });
  t.throws(() => createCoordinodeCodec({ leaderIdMode: 'raft' as LeaderIdMode }), { instanceOf: TypeError });
});

// ---------------------------------------------------------------------------
// Membership: integer map keys, sets
// ---------------------------------------------------------------------------

const threeNodes: Membership = {
  configs: [[1n, 2n, 3n]],
  nodes: new Map([
    [1n, { addr: 'http://n1' }],
    [2n, { addr: 'http://n2' }],
    [3n, { addr: 'http://n3' }],
  ]),
};

const membershipEntryHex = [
  '92',
  '9292050103', // log id T5-N1.3
  `81 aa${utf8Hex('Membership')}`,
  '92 91 93 010203', // configs [[1,2,3]]
  `83 01 91 a9${utf8Hex('http://n1')} 02 91 a9${utf8Hex('http://n2')} 03 91 a9${utf8Hex('http://n3')}`, // nodes, INTEGER keys
].join('').replace(/ /g, '');

test('a Membership entry is written with integer node-id keys, ascending, as rmp-serde writes a BTreeMap', (t) => {
  const entry: Entry<string> = { logId: logId(5n, 1n, 3n), payload: { kind: 'membership', membership: threeNodes } };
  t.is(toHex(adv.encodeEntry(entry)), membershipEntryHex);
  t.deepEqual(adv.decodeEntry(fromHex(membershipEntryHex)), entry);
  const shuffled: Membership = { configs: [[3n, 1n, 2n, 1n]], nodes: new Map([...threeNodes.nodes].reverse()) };
  t.is(toHex(adv.encodeEntry({ ...entry, payload: { kind: 'membership', membership: shuffled } })), membershipEntryHex, 'sets and maps are ordered and deduplicated');
});

test('node ids of 2^53 and above are integer map keys too', (t) => {
  const id = 2n ** 64n - 2n;
  const membership: Membership = { configs: [[id]], nodes: new Map([[id, { addr: 'http://far' }]]) };
  const bytes = adv.encodeMembership(membership);
  t.is(toHex(bytes), `92 91 91 cffffffffffffffffe 81 cffffffffffffffffe 91 aa${utf8Hex('http://far')}`.replace(/ /g, ''));
  t.deepEqual(adv.decodeMembership(bytes), membership);
});

test('string node-id keys (what a plain JS object would produce) are rejected', (t) => {
  const withStringKeys = plainMsgpackEncode([[[1]], { 1: ['http://n1'] }]);
  t.throws(() => adv.decodeMembership(withStringKeys), { instanceOf: CoordinodeDecodeError, message: /node id keys must be integers, got string key 1/ });
});

test('a set arriving unordered or with duplicates decodes as the set', (t) => {
  t.deepEqual(adv.decodeMembership(fromHex('92 91 94 03010301 80'.replace(/ /g, ''))), { configs: [[1n, 3n]], nodes: new Map() });
});

// ---------------------------------------------------------------------------
// Layout variants: VoteRequest by peer version, snapshot header
// ---------------------------------------------------------------------------

test('VoteRequest: 2 elements for alpha.20 peers, 3 for alpha.25; decoding accepts both', (t) => {
  const request: VoteRequest = { vote: vote(5n, 1n, false), lastLogId: logId(4n, 2n, 10n), leadershipTransfer: false };
  t.is(toHex(adv.encodeVoteRequest(request, { layout: 'without-leadership-transfer' })), '9292920501c2929204020a');
  t.is(toHex(adv.encodeVoteRequest(request, { layout: 'with-leadership-transfer' })), '9392920501c2929204020ac2');
  t.deepEqual(adv.decodeVoteRequest(fromHex('9292920501c2929204020a')), request);
  t.deepEqual(adv.decodeVoteRequest(fromHex('9392920501c2929204020ac3')), { ...request, leadershipTransfer: true });
  t.throws(() => adv.encodeVoteRequest({ ...request, leadershipTransfer: true }, { layout: 'without-leadership-transfer' }), {
    instanceOf: WireEncodeError,
  });
  t.throws(() => adv.decodeVoteRequest(fromHex('91929205 01c2'.replace(/ /g, ''))), { instanceOf: CoordinodeDecodeError, message: /at least 2 elements/ });
  t.throws(() => adv.decodeVoteRequest(fromHex('9492920501c2c0c2c2')), { instanceOf: CoordinodeDecodeError, message: /has 3 fields, got an array of 4/ });
});

const snapshotMeta: SnapshotMeta = {
  lastLogId: logId(5n, 1n, 10n),
  lastMembership: { logId: logId(5n, 1n, 3n), membership: { configs: [[1n]], nodes: new Map([[1n, { addr: 'a' }]]) } },
  snapshotId: 'snap-1',
};
const snapshotMetaHex = `93 929205010a 92 9292050103 92 919101 81 01 91 a161 a6${utf8Hex('snap-1')}`;
const headerHex = (sinceTs: string) => `81 a6${utf8Hex('Header')} 9${sinceTs === '' ? 3 : 4} 9292 0501 c3 ${snapshotMetaHex} cd0800 ${sinceTs}`.replace(/ /g, '');

test('SnapshotChunkMessage::Header is written with since_ts by default, without it on request, and read either way', (t) => {
  const full: SnapshotChunkMessage = { type: 'header', header: { vote: vote(5n, 1n, true), meta: snapshotMeta, dataSize: 2048n, sinceTs: null } };
  t.is(toHex(adv.encodeSnapshotChunkMessage(full)), headerHex('c0'));
  t.is(toHex(adv.encodeSnapshotChunkMessage(full, { headerLayout: 'without-since-ts' })), headerHex(''));
  t.deepEqual(adv.decodeSnapshotChunkMessage(fromHex(headerHex('c0'))), full);
  t.deepEqual(adv.decodeSnapshotChunkMessage(fromHex(headerHex(''))), full);
  const incremental: SnapshotChunkMessage = { type: 'header', header: { ...full.header, sinceTs: 2n ** 60n } };
  t.deepEqual(adv.decodeSnapshotChunkMessage(fromHex(headerHex('cf1000000000000000'))), incremental);
  t.throws(() => adv.encodeSnapshotChunkMessage(incremental, { headerLayout: 'without-since-ts' }), { instanceOf: WireEncodeError });
  t.deepEqual(adv.decodeSnapshotMeta(fromHex(snapshotMetaHex.replace(/ /g, ''))), snapshotMeta);
});

test('a 2 MiB DataChunk round-trips as an array of integers', (t) => {
  const data = new Uint8Array(2 * 1024 * 1024).map((_, i) => (i * 7) & 0xff);
  const bytes = adv.encodeSnapshotChunkMessage({ type: 'dataChunk', data });
  t.is(toHex(bytes.subarray(0, 16)), `81a9${utf8Hex('DataChunk')}dd00200000`);
  t.deepEqual(adv.decodeSnapshotChunkMessage(bytes), { type: 'dataChunk', data });
  t.throws(() => adv.decodeSnapshotChunkMessage(plainMsgpackEncode({ DataChunk: [1, 256] })), { instanceOf: CoordinodeDecodeError, message: /DataChunk\[1\]: expected u8/ });
  t.throws(() => adv.decodeSnapshotChunkMessage(plainMsgpackEncode({ DataChunk: new Uint8Array([1]) })), { instanceOf: CoordinodeDecodeError, message: /expected array, got bin/ });
});

// ---------------------------------------------------------------------------
// What rmp-serde also accepts: structs as maps, unit variants as maps
// ---------------------------------------------------------------------------

test('structs decode from the map form too, with Option and defaulted fields optional and unknown keys ignored', (t) => {
  const asMap = plainMsgpackEncode({
    vote: { leader_id: { term: 5, node_id: 1 }, committed: false, extra: [1, 2] },
    future_field: 'ignored',
  });
  t.deepEqual(adv.decodeVoteRequest(asMap), { vote: vote(5n, 1n, false), lastLogId: null, leadershipTransfer: false });
  const missingRequired = plainMsgpackEncode({ vote: { leader_id: { term: 5 }, committed: false } });
  t.throws(() => adv.decodeVoteRequest(missingRequired), { instanceOf: CoordinodeDecodeError, message: /VoteRequest\.vote\.leader_id: LeaderId is missing field node_id/ });
  const stdAsMap = plainMsgpackEncode({ leader_id: { term: 5 }, committed: true });
  t.deepEqual(std.decodeVote(stdAsMap), vote(5n, null, true), 'std voted_for is an Option, so it may be absent');
});

test('unit variants decode from {"Name": nil} as rmp-serde allows; newtype variants need their value', (t) => {
  t.deepEqual(adv.decodeAppendEntriesResponse(plainMsgpackEncode({ Success: null })), { type: 'success' });
  t.deepEqual(adv.decodeAppendEntriesResponse(plainMsgpackEncode({ PartialSuccess: null })), { type: 'partialSuccess', matching: null });
  t.throws(() => adv.decodeAppendEntriesResponse(plainMsgpackEncode('HigherVote')), { instanceOf: CoordinodeDecodeError, message: /HigherVote needs a value/ });
  t.throws(() => adv.decodeAppendEntriesResponse(plainMsgpackEncode({ Success: 1 })), { instanceOf: CoordinodeDecodeError, message: /carries no value/ });
  t.throws(() => adv.decodeAppendEntriesResponse(plainMsgpackEncode('Sucess')), { instanceOf: CoordinodeDecodeError, message: /unknown AppendEntriesResponse variant "Sucess"/ });
  t.throws(() => adv.decodeAppendEntriesResponse(plainMsgpackEncode({ Success: null, Conflict: null })), { instanceOf: CoordinodeDecodeError, message: /exactly one entry/ });
});

test('every AppendEntriesResponse and StreamAppendResult variant round-trips', (t) => {
  const responses: AppendEntriesResponse[] = [
    { type: 'success' },
    { type: 'conflict' },
    { type: 'partialSuccess', matching: null },
    { type: 'partialSuccess', matching: logId(3n, 2n, 9n) },
    { type: 'higherVote', vote: vote(9n, 4n, false) },
  ];
  for (const response of responses) t.deepEqual(adv.decodeAppendEntriesResponse(adv.encodeAppendEntriesResponse(response)), response);
  t.is(toHex(adv.encodeAppendEntriesResponse({ type: 'partialSuccess', matching: null })), `81ae${utf8Hex('PartialSuccess')}c0`);
  const results: StreamAppendResult[] = [
    { ok: true, matching: null },
    { ok: false, error: { type: 'higherVote', vote: vote(7n, 2n, true) } },
  ];
  for (const result of results) t.deepEqual(adv.decodeStreamAppendResult(adv.encodeStreamAppendResult(result)), result);
  t.is(
    toHex(adv.encodeStreamAppendResult({ ok: false, error: { type: 'higherVote', vote: vote(7n, 2n, true) } })),
    `81a3${utf8Hex('Err')}81aa${utf8Hex('HigherVote')}92920702c3`,
  );
});

// ---------------------------------------------------------------------------
// Payload codecs
// ---------------------------------------------------------------------------

test('Normal payloads: a string by default, raw bytes as Vec<u8>, or the msgpack structure kept as it is', (t) => {
  const bytesCodec = createCoordinodeCodec({ leaderIdMode: 'adv', payload: byteVecPayload });
  const entry = { logId: logId(5n, 1n, 11n), payload: { kind: 'normal' as const, data: new Uint8Array([0, 200]) } };
  t.is(toHex(bytesCodec.encodeEntry(entry)), `929292 0501 0b 81a6${utf8Hex('Normal')} 92 00 ccc8`.replace(/ /g, ''));
  t.deepEqual(bytesCodec.decodeEntry(bytesCodec.encodeEntry(entry)), entry);

  // CoordiNode's own D (a Request struct) passes through untouched.
  const opaque = createCoordinodeCodec({ leaderIdMode: 'adv', payload: msgpackValuePayload });
  const request: MsgpackValue = [[new MsgpackMap([['Put', ['key', new Uint8Array([1, 2]), -5, 1.5, 2n ** 63n]]])]];
  const opaqueEntry = { logId: logId(5n, 1n, 11n), payload: { kind: 'normal' as const, data: request } };
  const bytes = opaque.encodeEntry(opaqueEntry);
  t.is(toHex(opaque.encodeEntry(opaque.decodeEntry(bytes))), toHex(bytes));

  t.throws(() => adv.decodeEntry(plainMsgpackEncode([[[5, 1], 11], { Normal: 5 }])), { instanceOf: CoordinodeDecodeError, message: /Entry\.payload\.Normal: expected string, got integer/ });
  t.deepEqual(adv.decodeEntry(plainMsgpackEncode([[[5, 1], 11], { Normal: new TextEncoder().encode('bin ok') }])).payload, { kind: 'normal', data: 'bin ok' });
});

test('the msgpack writer agrees with @msgpack/msgpack wherever @msgpack/msgpack is right', (t) => {
  // Trees without integer-keyed maps and with integers below 2^32: both must write the same bytes.
  const tree: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
    node: fc.oneof(
      { depthSize: 'small' },
      fc.constant(null),
      fc.boolean(),
      fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 }),
      fc.double({ noNaN: true }).filter((x) => !Number.isInteger(x)),
      fc.string({ unit: 'grapheme', maxLength: 40 }),
      fc.uint8Array({ maxLength: 300 }),
      fc.array(tie('node'), { maxLength: 20 }),
      fc.dictionary(fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 8 }), tie('node'), { maxKeys: 18 }),
    ),
  })).node;
  const toMsgpackValue = (value: unknown): MsgpackValue => {
    if (Array.isArray(value)) return value.map(toMsgpackValue);
    if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
      return new MsgpackMap(Object.entries(value).map(([k, v]) => [k, toMsgpackValue(v)] as const));
    }
    return value as MsgpackValue;
  };
  fc.assert(
    fc.property(tree, (value) => {
      assert.equal(toHex(encodeMsgpack(toMsgpackValue(value))), toHex(plainMsgpackEncode(value)));
    }),
    { numRuns: 300 },
  );
  t.pass();
});

// ---------------------------------------------------------------------------
// RaftPayload protobuf wrapper
// ---------------------------------------------------------------------------

test('RaftPayload: 0x0a, varint length, bytes; empty payload is zero bytes', (t) => {
  t.is(encodeRaftPayload(new Uint8Array(0)).length, 0);
  t.is(toHex(encodeRaftPayload(new Uint8Array([1, 2, 3]))), '0a03010203');
  t.is(toHex(encodeRaftPayload(new Uint8Array(300)).subarray(0, 3)), '0aac02');
  t.is(encodeRaftPayload(new Uint8Array(300)).length, 303);
  t.deepEqual(decodeRaftPayload(new Uint8Array(0)), new Uint8Array(0));
  t.deepEqual(decodeRaftPayload(fromHex('0a03010203')), new Uint8Array([1, 2, 3]));
  const vector = vectors[0];
  if (vector === undefined) throw new Error('no vectors');
  t.deepEqual(adv.decodeVoteRequest(decodeRaftPayload(encodeRaftPayload(fromHex(vector.hex)))), vectorCases[vector.name]?.expected);
  t.is(encodeRaftEmpty().length, 0);
  t.notThrows(() => decodeRaftEmpty(new Uint8Array(0)));
});

test('RaftPayload decoding skips unknown fields, keeps the last data, and rejects malformed protobuf', (t) => {
  // field 2 varint 150, field 3 fixed64, field 4 fixed32, field 5 bytes, then data twice.
  t.deepEqual(decodeRaftPayload(fromHex('109601 190102030405060708 2501020304 2a0100 0a0101 0a020203'.replace(/ /g, ''))), new Uint8Array([2, 3]));
  const bad: Array<[string, RegExp]> = [
    ['0a', /truncated varint/],
    ['0a05010203', /claims 5 bytes, 3 left/],
    ['08', /truncated varint/],
    ['0801', /data \(1\) must be length-delimited/],
    ['0b', /unsupported protobuf wire type 3/],
    ['0f', /unsupported protobuf wire type 7/],
    ['02', /invalid field number 0/],
    ['19010203', /truncated fixed64/],
    ['0affffffffffffffffff7f', /varint/],
  ];
  for (const [hex, reason] of bad) {
    t.throws(() => decodeRaftPayload(fromHex(hex)), { instanceOf: CoordinodeDecodeError, message: reason }, hex);
  }
});

// ---------------------------------------------------------------------------
// Properties: round trips in both modes, fuzzing every decoder
// ---------------------------------------------------------------------------

const u64 = fc.oneof(
  fc.bigInt({ min: 0n, max: 300n }),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  fc.constantFrom(127n, 128n, 255n, 256n, 65535n, 65536n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n),
);
const text = fc.string({ unit: 'grapheme', maxLength: 24 });
const ascending = (ids: bigint[]): bigint[] => [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

function arbitrariesFor(mode: LeaderIdMode) {
  const leaderId = fc.record({ term: u64, nodeId: mode === 'adv' ? u64 : fc.option(u64, { nil: null }) });
  const committedLeaderId = fc.record({ term: u64, nodeId: mode === 'adv' ? u64 : fc.constant(null) });
  const voteArb = fc.record({ leaderId, committed: fc.boolean() });
  const logIdArb = fc.record({ leaderId: committedLeaderId, index: u64 });
  const optionalLogId = fc.option(logIdArb, { nil: null });
  const membership = fc.record({
    configs: fc.array(fc.uniqueArray(u64, { maxLength: 5 }).map(ascending), { maxLength: 2 }),
    nodes: fc
      .uniqueArray(fc.tuple(u64, fc.record({ addr: text })), { selector: ([id]) => id, maxLength: 5 })
      .map((entries) => new Map([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))),
  });
  const payload = fc.oneof(
    fc.constant({ kind: 'blank' as const }),
    fc.record({ kind: fc.constant('normal' as const), data: text }),
    fc.record({ kind: fc.constant('membership' as const), membership }),
  );
  const entry = fc.record({ logId: logIdArb, payload });
  const snapshotMetaArb = fc.record({
    lastLogId: optionalLogId,
    lastMembership: fc.record({ logId: optionalLogId, membership }),
    snapshotId: text,
  });
  return {
    vote: voteArb,
    logId: logIdArb,
    entry,
    membership,
    voteRequest: fc.record({ vote: voteArb, lastLogId: optionalLogId, leadershipTransfer: fc.boolean() }),
    voteResponse: fc.record({ vote: voteArb, voteGranted: fc.boolean(), lastLogId: optionalLogId }),
    appendEntriesRequest: fc.record({
      vote: voteArb,
      prevLogId: optionalLogId,
      entries: fc.array(entry, { maxLength: 4 }),
      leaderCommit: optionalLogId,
    }) as fc.Arbitrary<AppendEntriesRequest<string>>,
    appendEntriesResponse: fc.oneof(
      fc.constant({ type: 'success' as const }),
      fc.constant({ type: 'conflict' as const }),
      fc.record({ type: fc.constant('partialSuccess' as const), matching: optionalLogId }),
      fc.record({ type: fc.constant('higherVote' as const), vote: voteArb }),
    ),
    streamAppendResult: fc.oneof(
      fc.record({ ok: fc.constant(true as const), matching: optionalLogId }),
      fc.record({ ok: fc.constant(false as const), error: fc.record({ type: fc.constant('conflict' as const), logId: logIdArb }) }),
      fc.record({ ok: fc.constant(false as const), error: fc.record({ type: fc.constant('higherVote' as const), vote: voteArb }) }),
    ) as fc.Arbitrary<StreamAppendResult>,
    transferLeaderRequest: fc.record({ fromLeader: voteArb, toNodeId: u64, lastLogId: optionalLogId }),
    snapshotResponse: fc.record({ vote: voteArb }),
    snapshotMeta: snapshotMetaArb,
    snapshotChunkMessage: fc.oneof(
      fc.record({ type: fc.constant('dataChunk' as const), data: fc.uint8Array({ maxLength: 64 }) }),
      fc.record({
        type: fc.constant('header' as const),
        header: fc.record({ vote: voteArb, meta: snapshotMetaArb, dataSize: u64, sinceTs: fc.option(u64, { nil: null }) }),
      }),
    ) as fc.Arbitrary<SnapshotChunkMessage>,
  };
}

interface MessageCodec {
  name: string;
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
  values: fc.Arbitrary<unknown>;
}

function messageCodecs(codec: CoordinodeCodec<string>, mode: LeaderIdMode): MessageCodec[] {
  const a = arbitrariesFor(mode);
  const make = <T>(name: string, encode: (v: T) => Uint8Array, decode: (b: Uint8Array) => T, values: fc.Arbitrary<T>): MessageCodec =>
    ({ name: `${mode} ${name}`, encode: encode as (v: unknown) => Uint8Array, decode, values });
  return [
    make('Vote', codec.encodeVote, codec.decodeVote, a.vote),
    make('LogId', codec.encodeLogId, codec.decodeLogId, a.logId),
    make('Entry', codec.encodeEntry, codec.decodeEntry, a.entry),
    make('Membership', codec.encodeMembership, codec.decodeMembership, a.membership),
    make('VoteRequest', (v: VoteRequest) => codec.encodeVoteRequest(v), codec.decodeVoteRequest, a.voteRequest),
    make('VoteResponse', codec.encodeVoteResponse, codec.decodeVoteResponse, a.voteResponse),
    make('AppendEntriesRequest', codec.encodeAppendEntriesRequest, codec.decodeAppendEntriesRequest, a.appendEntriesRequest),
    make('AppendEntriesResponse', codec.encodeAppendEntriesResponse, codec.decodeAppendEntriesResponse, a.appendEntriesResponse),
    make('StreamAppendResult', codec.encodeStreamAppendResult, codec.decodeStreamAppendResult, a.streamAppendResult),
    make('TransferLeaderRequest', codec.encodeTransferLeaderRequest, codec.decodeTransferLeaderRequest, a.transferLeaderRequest),
    make('SnapshotResponse', codec.encodeSnapshotResponse, codec.decodeSnapshotResponse, a.snapshotResponse),
    make('SnapshotMeta', codec.encodeSnapshotMeta, codec.decodeSnapshotMeta, a.snapshotMeta),
    make('SnapshotChunkMessage', (v: SnapshotChunkMessage) => codec.encodeSnapshotChunkMessage(v), codec.decodeSnapshotChunkMessage, a.snapshotChunkMessage),
  ];
}

/** Fails the property unless `decode` returns or throws a CoordinodeDecodeError, quickly. */
function decodesOrRejectsCleanly(decode: (bytes: Uint8Array) => unknown, bytes: Uint8Array): boolean {
  const started = performance.now();
  try {
    decode(bytes);
  } catch (error) {
    if (!(error instanceof CoordinodeDecodeError)) throw error;
  }
  const elapsed = performance.now() - started;
  if (elapsed > 1000) throw new Error(`decoding took ${elapsed} ms`);
  return true;
}

const byteEdit = fc.record({ at: fc.nat(), deleteCount: fc.nat(3), insert: fc.uint8Array({ maxLength: 4 }) });

function editBytes(bytes: Uint8Array, edit: { at: number; deleteCount: number; insert: Uint8Array }): Uint8Array {
  const at = edit.at % (bytes.length + 1);
  return Uint8Array.from([...bytes.subarray(0, at), ...edit.insert, ...bytes.subarray(at + edit.deleteCount)]);
}

// Random well-formed msgpack of every shape (mostly of the wrong type for any message).
const anyMsgpack = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
    fc.double(),
    fc.constantFrom('Blank', 'Normal', 'Membership', 'Success', 'Conflict', 'PartialSuccess', 'HigherVote', 'Ok', 'Err', 'Header', 'DataChunk'),
    fc.string({ maxLength: 8 }),
    fc.uint8Array({ maxLength: 8 }),
    fc.array(tie('node'), { maxLength: 5 }),
    fc.dictionary(fc.constantFrom('Normal', 'Ok', 'Err', 'Header', 'HigherVote', 'vote', 'leader_id', 'term', 'node_id', 'x'), tie('node'), { maxKeys: 3 }),
  ),
})).node;

for (const mode of ['adv', 'std'] as const) {
  const codec = mode === 'adv' ? adv : std;
  for (const { name, encode, decode, values } of messageCodecs(codec, mode)) {
    test(`${name}: decode(encode(v)) equals v and encode(decode(x)) reproduces x`, (t) => {
      fc.assert(
        fc.property(values, (generated) => {
          const value = structuredClone(generated); // plain objects, as the decoder builds them
          const bytes = encode(value);
          assert.deepStrictEqual(decode(bytes), value);
          assert.equal(toHex(encode(decode(bytes))), toHex(bytes));
        }),
        { numRuns: 150 },
      );
      t.pass();
    });

    test(`${name}: random bytes, random msgpack and mutated encodings only ever raise CoordinodeDecodeError`, (t) => {
      fc.assert(fc.property(fc.uint8Array({ maxLength: 48 }), (bytes) => decodesOrRejectsCleanly(decode, bytes)), { numRuns: 300 });
      fc.assert(
        fc.property(anyMsgpack, (value) => decodesOrRejectsCleanly(decode, plainMsgpackEncode(value, { useBigInt64: true }))),
        { numRuns: 300 },
      );
      fc.assert(
        fc.property(values, fc.array(byteEdit, { minLength: 1, maxLength: 3 }), (value, edits) =>
          decodesOrRejectsCleanly(decode, edits.reduce(editBytes, encode(structuredClone(value)))),
        ),
        { numRuns: 300 },
      );
      t.pass();
    });
  }
}

test('RaftPayload: round trip, and random bytes only ever raise CoordinodeDecodeError', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (data) => {
      assert.deepStrictEqual(decodeRaftPayload(encodeRaftPayload(data)), data);
    }),
  );
  fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => decodesOrRejectsCleanly(decodeRaftPayload, bytes)), { numRuns: 500 });
  t.pass();
});

test('hostile declared lengths fail fast without allocating them', (t) => {
  // array32 / map32 / str32 / bin32 headers claiming 4 billion items, with no items.
  for (const hex of ['ddffffffff', 'dfffffffff', 'dbffffffff', 'c6ffffffff', '91ddffffffff']) {
    t.throws(() => adv.decodeAppendEntriesRequest(fromHex(hex)), { instanceOf: CoordinodeDecodeError, message: /malformed msgpack/ }, hex);
  }
  const deep = new Uint8Array(200_000).fill(0x91);
  t.throws(() => adv.decodeAppendEntriesRequest(deep), { instanceOf: CoordinodeDecodeError });
  t.throws(() => adv.decodeVote(new Uint8Array(0)), { instanceOf: CoordinodeDecodeError, message: /malformed msgpack/ });
  t.throws(() => adv.decodeVote(fromHex('9292050 1c2 00'.replace(/ /g, ''))), { instanceOf: CoordinodeDecodeError, message: /Extra 1/ });
});

test('ByteVec and bin are different things on the wire', (t) => {
  t.is(toHex(encodeMsgpack(new ByteVec(new Uint8Array([1, 200])))), '9201ccc8');
  t.is(toHex(encodeMsgpack(new Uint8Array([1, 200]))), 'c40201c8');
});
