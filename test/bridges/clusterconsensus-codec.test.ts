import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  ClusterConsensusDecodeError,
  decodeAcceptRequest,
  decodeChangeMemberRequest,
  decodeErr,
  decodeGenericResponse,
  decodeOperationRequest,
  decodePrepareRequest,
  decodePrepareResponse,
  decodeStartParticipationRequest,
  decodeSubmitRequest,
  encodeAcceptRequest,
  encodeChangeMemberRequest,
  encodeErr,
  encodeGenericResponse,
  encodePrepareRequest,
  encodePrepareResponse,
  encodeStartParticipationRequest,
  encodeSubmitRequest,
  ERROR_CODES,
  errForHttpStatus,
  isNoErr,
  isRetryable,
  makeErr,
  NO_ERR,
  readOperationRequest,
  RETRYABLE_ERROR_CODES,
  UNDECODABLE_BODY_HTTP_STATUS,
  type Operation,
  type StartParticipationRequest,
} from '../../bridges/clusterconsensus/codec.ts';
import { WireEncodeError } from '../../bridges/shared/wire-errors.ts';

interface JsonVector {
  name: string;
  json: string;
}

const vectors = JSON.parse(readFileSync(new URL('../fixtures/vectors/clusterconsensus.json', import.meta.url), 'utf8')) as JsonVector[];

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
/** The change in the vectors: base64 "QUREw5drw5d2" is the UTF-8 of "ADD×k×v". */
const CHANGE = utf8('ADD\u00d7k\u00d7v');

interface VectorCase {
  decode(json: string): unknown;
  encodeExpected(): string;
  expected: unknown;
}

function vectorCase<T>(decode: (input: string) => T, encode: (value: T) => string, expected: T): VectorCase {
  return { decode, encodeExpected: () => encode(expected), expected };
}

const vectorCases: Record<string, VectorCase> = {
  'prepare req': vectorCase(decodePrepareRequest, encodePrepareRequest, { Instance: 2, Master: { Addr: 'http://127.0.0.1:9001' } }),
  'prepare resp': vectorCase(decodePrepareResponse, encodePrepareResponse, { Accepted: 2, Err: { Code: '', Err: '' } }),
  'accept req': vectorCase(decodeAcceptRequest, encodeAcceptRequest, { Instance: 2, Sequence: 5, Changes: [CHANGE] }),
  'generic resp ok': vectorCase(decodeGenericResponse, encodeGenericResponse, { Accepted: true, Err: { Code: '', Err: '' } }),
  'generic resp err': vectorCase(decodeGenericResponse, encodeGenericResponse, {
    Accepted: false,
    Err: makeErr('ERR_GAP', 'Received seq 9, but current seq is 6'),
  }),
  'submit req': vectorCase(decodeSubmitRequest, encodeSubmitRequest, { Changes: [CHANGE] }),
};

test('every clusterconsensus vector has a decoded value to check, and every checked value has a vector', (t) => {
  t.deepEqual(vectors.map((v) => v.name).sort(), Object.keys(vectorCases).sort());
});

for (const vector of vectors) {
  const caseFor = (): VectorCase => {
    const found = vectorCases[vector.name];
    if (found === undefined) throw new Error(`no expectation for vector ${vector.name}`);
    return found;
  };
  test(`vector "${vector.name}" decodes to the expected value`, (t) => {
    const { decode, expected } = caseFor();
    t.deepEqual(decode(vector.json), expected);
  });
  test(`vector "${vector.name}" encodes byte for byte`, (t) => {
    t.is(caseFor().encodeExpected(), vector.json);
  });
}

test('keys match case-insensitively: the seed README\'s lower-case mem/addr still reach Mem.Addr', (t) => {
  t.deepEqual(decodeChangeMemberRequest('{"instance":3,"SEQUENCE":4,"mem":{"addr":"http://h:1"}}'), {
    Instance: 3,
    Sequence: 4,
    Mem: { Addr: 'http://h:1' },
  });
  t.deepEqual(decodeGenericResponse('{"accepted":true,"err":{"code":"ERR_STATE","err":"ERR_STATE: x"}}'), {
    Accepted: true,
    Err: { Code: 'ERR_STATE', Err: 'ERR_STATE: x' },
  });
});

test('the seed README names the real code drops (seq, chg, snap, acceptedInstance, fail) are ignored', (t) => {
  t.deepEqual(decodeAcceptRequest('{"Instance":2,"seq":5,"chg":["QQ=="]}'), { Instance: 2, Sequence: 0, Changes: null });
  t.deepEqual(decodePrepareResponse('{"acceptedInstance":7,"fail":true}'), { Accepted: 0, Err: NO_ERR });
  t.is(decodeStartParticipationRequest('{"snap":"QQ=="}').Snapshot, null);
});

test('a repeated nested struct merges into the earlier one, as Go decodes it', (t) => {
  t.deepEqual(decodeGenericResponse('{"Err":{"Code":"ERR_GAP","Err":"a"},"err":{"Err":"b"}}').Err, { Code: 'ERR_GAP', Err: 'b' });
  t.deepEqual(decodePrepareRequest('{"Master":{"Addr":"x"},"Master":null}').Master, { Addr: 'x' });
});

test('StartParticipationRequest round-trips with every field, in Go field order', (t) => {
  const request: StartParticipationRequest = {
    Instance: 4,
    Sequence: 0,
    Cluster: 'c1',
    Self: { Addr: 'http://127.0.0.1:9003' },
    Master: { Addr: 'http://127.0.0.1:9001' },
    Participants: [{ Addr: 'http://127.0.0.1:9001' }, { Addr: 'http://127.0.0.1:9002' }],
    Snapshot: utf8('{}'),
  };
  const json = encodeStartParticipationRequest(request);
  t.is(
    json,
    '{"Instance":4,"Sequence":0,"Cluster":"c1","Self":{"Addr":"http://127.0.0.1:9003"},"Master":{"Addr":"http://127.0.0.1:9001"},' +
      '"Participants":[{"Addr":"http://127.0.0.1:9001"},{"Addr":"http://127.0.0.1:9002"}],"Snapshot":"e30="}',
  );
  t.deepEqual(decodeStartParticipationRequest(json), request);
  t.deepEqual(decodeStartParticipationRequest('{"Participants":[null,{"addr":"a"}]}').Participants, [{ Addr: '' }, { Addr: 'a' }], 'a null element is a zero Address');
});

test('nil and empty byte slices, and a nil change inside Changes, keep their Go encodings', (t) => {
  t.is(encodeSubmitRequest({ Changes: null }), '{"Changes":null}');
  t.is(encodeSubmitRequest({ Changes: [] }), '{"Changes":[]}');
  t.is(encodeSubmitRequest({ Changes: [null, new Uint8Array(0)] }), '{"Changes":[null,""]}');
  t.deepEqual(decodeSubmitRequest('{"Changes":[null,""]}'), { Changes: [null, new Uint8Array(0)] });
  t.is(encodeChangeMemberRequest({ Instance: 1, Sequence: 2, Mem: { Addr: '' } }), '{"Instance":1,"Sequence":2,"Mem":{"Addr":""}}');
});

test('wrong JSON types are ClusterConsensusDecodeErrors naming the field', (t) => {
  const cases: Array<[(input: string) => unknown, string, string, RegExp]> = [
    [decodePrepareRequest, '{"Instance":-1}', 'PrepareRequest.Instance', /not an unsigned integer/],
    [decodePrepareRequest, '{"Instance":2.5}', 'PrepareRequest.Instance', /not an unsigned integer/],
    [decodePrepareRequest, '{"Master":"http://x"}', 'PrepareRequest.Master', /cannot unmarshal string into Go value of type JSONAddress/],
    [decodeAcceptRequest, '{"Changes":"QQ=="}', 'AcceptRequest.Changes', /type \[\]\[\]uint8/],
    [decodeAcceptRequest, '{"Changes":["not base64!"]}', 'AcceptRequest.Changes[0]', /base64/],
    [decodeGenericResponse, '{"Accepted":"true"}', 'GenericResponse.Accepted', /type bool/],
    [decodeGenericResponse, '{"Err":"ERR_GAP"}', 'GenericResponse.Err', /type JSONErr/],
    [decodeStartParticipationRequest, '{"Participants":{"Addr":"a"}}', 'StartParticipationRequest.Participants', /\[\]JSONAddress/],
    [decodeStartParticipationRequest, '{"Sequence":18446744073709551616}', 'StartParticipationRequest.Sequence', /overflows uint64/],
  ];
  for (const [decode, json, path, reason] of cases) {
    const error = t.throws(() => decode(json), { instanceOf: ClusterConsensusDecodeError }, json);
    t.is(error?.path, path, json);
    t.regex(error?.reason ?? '', reason, json);
  }
});

test('error codes: the full list, and exactly ERR_STATE, ERR_CALL and ERR_MAJORITY are retryable', (t) => {
  t.deepEqual([...ERROR_CODES].sort(), ['ERR_CALL', 'ERR_CONNECT', 'ERR_DENIED', 'ERR_ENCODING', 'ERR_GAP', 'ERR_IO', 'ERR_MAJORITY', 'ERR_SEQUENCE', 'ERR_STATE']);
  t.deepEqual([...RETRYABLE_ERROR_CODES].sort(), ['ERR_CALL', 'ERR_MAJORITY', 'ERR_STATE']);
  t.deepEqual(ERROR_CODES.filter(isRetryable).sort(), ['ERR_CALL', 'ERR_MAJORITY', 'ERR_STATE']);
  t.false(isRetryable(''));
  t.false(isRetryable('ERR_UNKNOWN'));
  t.true(isNoErr(NO_ERR));
  t.false(isNoErr(makeErr('ERR_DENIED', 'instance 3 < 4')));
  t.deepEqual(makeErr('ERR_DENIED', 'instance 3 < 4'), { Code: 'ERR_DENIED', Err: 'ERR_DENIED: instance 3 < 4' });
});

test('an unreadable or undecodable body maps to HTTP 500 with a bare Err', (t) => {
  const empty = readOperationRequest('accept', new Uint8Array(0));
  t.false(empty.ok);
  if (!empty.ok) {
    t.is(empty.httpStatus, UNDECODABLE_BODY_HTTP_STATUS);
    t.is(empty.httpStatus, 500);
    t.is(encodeErr(empty.err), '{"Code":"ERR_IO","Err":"ERR_IO: Couldn\'t read request"}');
    t.is(empty.cause, null);
  }
  for (const body of ['{', '{"Instance":"2"}', '[]', 'null x']) {
    const result = readOperationRequest('prepare', body);
    t.false(result.ok, body);
    if (!result.ok) {
      t.is(result.httpStatus, 500);
      t.is(encodeErr(result.err), '{"Code":"ERR_ENCODING","Err":"ERR_ENCODING: Couldn\'t decode body"}');
      t.true(result.cause instanceof ClusterConsensusDecodeError);
    }
  }
  const decodedErr = decodeErr('{"Code":"ERR_ENCODING","Err":"ERR_ENCODING: Couldn\'t decode body"}');
  t.deepEqual(decodedErr, makeErr('ERR_ENCODING', "Couldn't decode body"));
});

test('each operation decodes its own request body', (t) => {
  const bodies: Record<Operation, string> = {
    prepare: '{"Instance":2,"Master":{"Addr":"m"}}',
    accept: '{"Instance":2,"Sequence":1,"Changes":[]}',
    addmember: '{"Instance":2,"Sequence":1,"Mem":{"Addr":"n"}}',
    rmmember: '{"Instance":2,"Sequence":2,"Mem":{"Addr":"n"}}',
    start: '{"Instance":2,"Cluster":"c"}',
    submit: '{"Changes":["QQ=="]}',
  };
  t.deepEqual(decodeOperationRequest('prepare', bodies.prepare), { op: 'prepare', request: { Instance: 2, Master: { Addr: 'm' } } });
  t.deepEqual(decodeOperationRequest('rmmember', bodies.rmmember), { op: 'rmmember', request: { Instance: 2, Sequence: 2, Mem: { Addr: 'n' } } });
  t.deepEqual(decodeOperationRequest('submit', bodies.submit), { op: 'submit', request: { Changes: [new Uint8Array([0x41])] } });
  for (const op of Object.keys(bodies) as Operation[]) {
    const result = readOperationRequest(op, bodies[op]);
    t.true(result.ok, op);
    if (result.ok) t.is(result.value.op, op);
  }
});

test('a client reads any status but 200 as ERR_CALL', (t) => {
  t.is(errForHttpStatus(200), null);
  t.deepEqual(errForHttpStatus(500), makeErr('ERR_CALL', 'Received HTTP code 500'));
  t.is(errForHttpStatus(400)?.Code, 'ERR_CALL');
});

test('encoders refuse values Go could not hold', (t) => {
  t.throws(() => encodePrepareRequest({ Instance: -1, Master: { Addr: '' } }), { instanceOf: WireEncodeError });
  t.throws(() => encodeAcceptRequest({ Instance: 1, Sequence: 0.5, Changes: null }), { instanceOf: WireEncodeError });
  t.throws(() => encodeSubmitRequest({ Changes: ['QQ==' as unknown as Uint8Array] }), { instanceOf: WireEncodeError, message: /SubmitRequest\.Changes\[0\]/ });
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const u64 = fc.oneof(fc.nat(1000), fc.maxSafeNat());
const text = fc.string({ unit: fc.oneof(fc.constantFrom('<', '&', '"', '\\', '\n', '\u2028', 'é'), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 })), maxLength: 16 });
const address = fc.record({ Addr: text });
const err = fc.oneof(fc.constant({ Code: '', Err: '' }), fc.record({ Code: fc.constantFrom(...ERROR_CODES), Err: text }));
const bytes = fc.option(fc.uint8Array({ maxLength: 32 }), { nil: null });
const changes = fc.option(fc.array(bytes, { maxLength: 4 }), { nil: null });

interface Codec {
  name: string;
  encode(value: unknown): string;
  decode(input: string | Uint8Array): unknown;
  values: fc.Arbitrary<unknown>;
}

const codec = <T>(name: string, encode: (v: T) => string, decode: (input: string | Uint8Array) => T, values: fc.Arbitrary<T>): Codec =>
  ({ name, encode: encode as (v: unknown) => string, decode, values });

const codecs: Codec[] = [
  codec('PrepareRequest', encodePrepareRequest, decodePrepareRequest, fc.record({ Instance: u64, Master: address })),
  codec('PrepareResponse', encodePrepareResponse, decodePrepareResponse, fc.record({ Accepted: u64, Err: err })),
  codec('AcceptRequest', encodeAcceptRequest, decodeAcceptRequest, fc.record({ Instance: u64, Sequence: u64, Changes: changes })),
  codec('ChangeMemberRequest', encodeChangeMemberRequest, decodeChangeMemberRequest, fc.record({ Instance: u64, Sequence: u64, Mem: address })),
  codec(
    'StartParticipationRequest',
    encodeStartParticipationRequest,
    decodeStartParticipationRequest,
    fc.record({
      Instance: u64,
      Sequence: u64,
      Cluster: text,
      Self: address,
      Master: address,
      Participants: fc.option(fc.array(address, { maxLength: 4 }), { nil: null }),
      Snapshot: bytes,
    }),
  ),
  codec('SubmitRequest', encodeSubmitRequest, decodeSubmitRequest, fc.record({ Changes: changes })),
  codec('GenericResponse', encodeGenericResponse, decodeGenericResponse, fc.record({ Accepted: fc.boolean(), Err: err })),
];

function decodesOrRejectsCleanly(decode: (input: string | Uint8Array) => unknown, input: string | Uint8Array): boolean {
  const started = performance.now();
  try {
    decode(input);
  } catch (error) {
    if (!(error instanceof ClusterConsensusDecodeError)) throw error;
  }
  const elapsed = performance.now() - started;
  if (elapsed > 1000) throw new Error(`decoding took ${elapsed} ms`);
  return true;
}

const edit = fc.record({
  at: fc.nat(),
  deleteCount: fc.nat(4),
  insert: fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom('"', '{', '}', '[', ']', ',', ':', 'null', '-1', '1.5', '"QQ="', '\\u00')),
});

function applyEdit(json: string, change: { at: number; deleteCount: number; insert: string }): string {
  const at = change.at % (json.length + 1);
  return json.slice(0, at) + change.insert + json.slice(at + change.deleteCount);
}

for (const { name, encode, decode, values } of codecs) {
  test(`${name}: decode(encode(v)) equals v and encode(decode(x)) reproduces x`, (t) => {
    fc.assert(
      fc.property(values, (generated) => {
        const value = structuredClone(generated);
        const json = encode(value);
        assert.deepStrictEqual(decode(json), value);
        assert.equal(encode(decode(json)), json);
      }),
      { numRuns: 300 },
    );
    t.pass();
  });

  test(`${name}: arbitrary input and mutated encodings only ever raise ClusterConsensusDecodeError`, (t) => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 60 }), (input) => decodesOrRejectsCleanly(decode, input)), { numRuns: 300 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 60 }), (input) => decodesOrRejectsCleanly(decode, input)), { numRuns: 300 });
    fc.assert(fc.property(fc.json({ maxDepth: 4 }), (input) => decodesOrRejectsCleanly(decode, input)), { numRuns: 300 });
    fc.assert(
      fc.property(values, fc.array(edit, { minLength: 1, maxLength: 3 }), (value, edits) =>
        decodesOrRejectsCleanly(decode, edits.reduce(applyEdit, encode(structuredClone(value)))),
      ),
      { numRuns: 400 },
    );
    t.pass();
  });
}

test('readOperationRequest never throws, whatever the body', (t) => {
  const ops: Operation[] = ['prepare', 'accept', 'addmember', 'rmmember', 'start', 'submit'];
  fc.assert(
    fc.property(fc.constantFrom(...ops), fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.json({ maxDepth: 3 })), (op, body) => {
      const result = readOperationRequest(op, body);
      assert.ok(result.ok || (result.httpStatus === 500 && (result.err.Code === 'ERR_IO' || result.err.Code === 'ERR_ENCODING')));
    }),
    { numRuns: 500 },
  );
  t.pass();
});
