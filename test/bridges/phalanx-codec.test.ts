import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  decodeAppendEntriesRequest,
  decodeAppendEntriesResponse,
  decodeCommand,
  decodeProposeRequest,
  decodeProposeResponse,
  decodeReadRequest,
  decodeReadResponse,
  decodeRequestVoteRequest,
  decodeRequestVoteResponse,
  encodeAppendEntriesRequest,
  encodeAppendEntriesResponse,
  encodeCommand,
  encodeCommandBytes,
  encodeProposeRequest,
  encodeProposeResponse,
  encodeReadRequest,
  encodeReadResponse,
  encodeRequestVoteRequest,
  encodeRequestVoteResponse,
  EntryType,
  PhalanxDecodeError,
  type AppendEntriesRequest,
  type LogEntry,
} from '../../bridges/phalanx/codec.ts';
import { WireEncodeError } from '../../bridges/shared/wire-errors.ts';

interface JsonVector {
  name: string;
  json: string;
}

const vectors = JSON.parse(readFileSync(new URL('../fixtures/vectors/phalanx.json', import.meta.url), 'utf8')) as JsonVector[];

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
const SET_FOO_BAR_JSON = '{"op":"SET","key":"foo","value":"bar"}';

interface VectorCase {
  decode(json: string): unknown;
  encodeExpected(): string;
  expected: unknown;
}

function vectorCase<T>(decode: (input: string) => T, encode: (value: T) => string, expected: T): VectorCase {
  return { decode, encodeExpected: () => encode(expected), expected };
}

// The decoded value of every vector, written out by hand from the protocol
// notes (the vector files hold only the JSON for Phalanx).
const vectorCases: Record<string, VectorCase> = {
  'fsm.Command SET': vectorCase(decodeCommand, encodeCommand, { op: 'SET', key: 'foo', value: 'bar' }),
  'fsm.Command DELETE': vectorCase(decodeCommand, encodeCommand, { op: 'DELETE', key: 'foo', value: '' }),
  ProposeRequest: vectorCase(decodeProposeRequest, encodeProposeRequest, { data: utf8(SET_FOO_BAR_JSON) }),
  'ProposeResponse ok': vectorCase(decodeProposeResponse, encodeProposeResponse, { success: true, leader_addr: '', error: '' }),
  'ProposeResponse redirect': vectorCase(decodeProposeResponse, encodeProposeResponse, {
    success: false,
    leader_addr: '127.0.0.1:9000',
    error: 'not leader',
  }),
  ReadRequest: vectorCase(decodeReadRequest, encodeReadRequest, { key: 'foo' }),
  ReadResponse: vectorCase(decodeReadResponse, encodeReadResponse, { value: 'bar', found: true, leader_addr: '', error: '' }),
  AppendEntriesRequest: vectorCase(decodeAppendEntriesRequest, encodeAppendEntriesRequest, {
    Term: 5,
    LeaderID: 'node-0',
    PrevLogIndex: 41,
    PrevLogTerm: 5,
    Entries: [{ Index: 42, Term: 5, Data: utf8(SET_FOO_BAR_JSON), Type: EntryType.Command }],
    LeaderCommit: 41,
  }),
  'AppendEntriesRequest heartbeat': vectorCase(decodeAppendEntriesRequest, encodeAppendEntriesRequest, {
    Term: 5,
    LeaderID: 'node-0',
    PrevLogIndex: 42,
    PrevLogTerm: 5,
    Entries: null,
    LeaderCommit: 42,
  }),
  AppendEntriesResponse: vectorCase(decodeAppendEntriesResponse, encodeAppendEntriesResponse, { Term: 5, Success: true, LastLogIndex: 42 }),
  RequestVoteRequest: vectorCase(decodeRequestVoteRequest, encodeRequestVoteRequest, {
    Term: 6,
    CandidateID: 'node-1',
    LastLogIndex: 42,
    LastLogTerm: 5,
    IsPreVote: false,
  }),
  RequestVoteResponse: vectorCase(decodeRequestVoteResponse, encodeRequestVoteResponse, { Term: 6, VoteGranted: true, IsPreVote: false }),
};

test('every Phalanx vector has a decoded value to check, and every checked value has a vector', (t) => {
  t.deepEqual(vectors.map((v) => v.name).sort(), Object.keys(vectorCases).sort());
});

for (const vector of vectors) {
  const vectorCaseFor = (): VectorCase => {
    const found = vectorCases[vector.name];
    if (found === undefined) throw new Error(`no expectation for vector ${vector.name}`);
    return found;
  };
  test(`vector "${vector.name}" decodes to the expected value`, (t) => {
    const { decode, expected } = vectorCaseFor();
    t.deepEqual(decode(vector.json), expected);
  });
  test(`vector "${vector.name}" encodes byte for byte`, (t) => {
    t.is(vectorCaseFor().encodeExpected(), vector.json);
  });
  test(`vector "${vector.name}" decodes from UTF-8 bytes too`, (t) => {
    const { decode, expected } = vectorCaseFor();
    t.deepEqual((decode as (input: string | Uint8Array) => unknown)(utf8(vector.json)), expected);
  });
}

test('the ProposeRequest vector carries the SET vector as its data', (t) => {
  const set = vectors.find((v) => v.name === 'fsm.Command SET');
  const propose = vectors.find((v) => v.name === 'ProposeRequest');
  t.truthy(set && propose);
  t.deepEqual(decodeProposeRequest(propose?.json ?? '').data, encodeCommandBytes(decodeCommand(set?.json ?? '')));
});

// ---------------------------------------------------------------------------
// Go encoding/json decoding rules
// ---------------------------------------------------------------------------

test('keys match case-insensitively, as Go matches them', (t) => {
  const decoded = decodeAppendEntriesRequest(
    '{"term":7,"leaderid":"n2","PREVLOGINDEX":3,"prevLogTerm":6,"entries":[{"index":4,"TERM":7,"data":"AQI=","tYpE":1}],"leadercommit":2}',
  );
  t.deepEqual(decoded, {
    Term: 7,
    LeaderID: 'n2',
    PrevLogIndex: 3,
    PrevLogTerm: 6,
    Entries: [{ Index: 4, Term: 7, Data: new Uint8Array([1, 2]), Type: 1 }],
    LeaderCommit: 2,
  });
  t.deepEqual(decodeProposeResponse('{"SUCCESS":true,"Leader_Addr":"h:1","ERROR":"not leader"}'), {
    success: true,
    leader_addr: 'h:1',
    error: 'not leader',
  });
});

test('the Kelvin sign and the long s fold to k and s, the only non-ASCII folds Go applies to ASCII names', (t) => {
  t.deepEqual(decodeReadRequest('{"\\u212aey":"x"}'), { key: 'x' });
  t.deepEqual(decodeAppendEntriesResponse('{"\u017fuccess":true}'), { Term: 0, Success: true, LastLogIndex: 0 });
  // A dotless i is not a fold of I for Go, so this key is unknown and ignored.
  t.deepEqual(decodeRequestVoteRequest('{"\u0131sPreVote":true}').IsPreVote, false);
});

test('escaped key characters are unescaped before matching', (t) => {
  t.is(decodeAppendEntriesResponse('{"\\u0054erm":9}').Term, 9);
});

test('unknown keys, including the snake_case names of Phalanx .proto file, are ignored', (t) => {
  const decoded = decodeAppendEntriesRequest(
    '{"Term":3,"leader_id":"ignored","prev_log_index":9,"Extra":{"deep":[1,{"x":null}],"n":1e400},"LeaderID":"n1"}',
  );
  t.is(decoded.Term, 3);
  t.is(decoded.LeaderID, 'n1');
  t.is(decoded.PrevLogIndex, 0);
});

test('missing fields take their zero values; an empty object and a top-level null decode to the zero message', (t) => {
  const zero: AppendEntriesRequest = { Term: 0, LeaderID: '', PrevLogIndex: 0, PrevLogTerm: 0, Entries: null, LeaderCommit: 0 };
  t.deepEqual(decodeAppendEntriesRequest('{}'), zero);
  t.deepEqual(decodeAppendEntriesRequest('null'), zero);
  t.deepEqual(decodeReadResponse('{"found":true}'), { value: '', found: true, leader_addr: '', error: '' });
});

test('null leaves a scalar at its value and makes a slice nil, as in Go', (t) => {
  t.deepEqual(decodeAppendEntriesResponse('{"Term":null,"Success":null,"LastLogIndex":null}'), { Term: 0, Success: false, LastLogIndex: 0 });
  t.is(decodeAppendEntriesResponse('{"Term":4,"Term":null}').Term, 4);
  t.is(decodeAppendEntriesRequest('{"Entries":[{"Index":1}],"Entries":null}').Entries, null);
});

test('a heartbeat has null Entries and an empty list stays an empty list', (t) => {
  const heartbeat = decodeAppendEntriesRequest('{"Term":5,"LeaderID":"node-0","Entries":null}');
  t.is(heartbeat.Entries, null);
  t.regex(encodeAppendEntriesRequest(heartbeat), /"Entries":null/);
  const empty = decodeAppendEntriesRequest('{"Entries":[]}');
  t.deepEqual(empty.Entries, []);
  t.regex(encodeAppendEntriesRequest(empty), /"Entries":\[\]/);
});

test('a repeated key decodes into what the earlier one produced (entries merge field by field)', (t) => {
  const decoded = decodeAppendEntriesRequest('{"Entries":[{"Index":1,"Term":2},{"Index":9}],"entries":[{"Index":5}]}');
  t.deepEqual(decoded.Entries, [{ Index: 5, Term: 2, Data: null, Type: 0 }]);
  t.is(decodeReadRequest('{"key":"a","KEY":"b"}').key, 'b');
});

test('[]byte: nil is null, empty is "", and a JSON array of bytes is accepted as Go accepts it', (t) => {
  const entry = (Data: Uint8Array | null): LogEntry => ({ Index: 1, Term: 1, Data, Type: 0 });
  const encodeEntry = (data: Uint8Array | null) => encodeAppendEntriesRequest({ Term: 1, LeaderID: '', PrevLogIndex: 0, PrevLogTerm: 0, Entries: [entry(data)], LeaderCommit: 0 });
  t.regex(encodeEntry(null), /"Data":null/);
  t.regex(encodeEntry(new Uint8Array(0)), /"Data":""/);
  t.deepEqual(decodeAppendEntriesRequest('{"Entries":[{"Data":""}]}').Entries?.[0]?.Data, new Uint8Array(0));
  t.deepEqual(decodeAppendEntriesRequest('{"Entries":[{"Data":[1,2,255]}]}').Entries?.[0]?.Data, new Uint8Array([1, 2, 255]));
  t.deepEqual(decodeProposeRequest('{"data":"QQ=\\r\\n="}').data, new Uint8Array([0x41]), 'CR and LF are ignored inside base64');
});

test('Go base64 rules: padding required, standard alphabet only', (t) => {
  for (const bad of ['"QQ"', '"QQ="', '"Q==="', '"QQ==QQ=="', '"-_8="', '"QQ ="', '"?"']) {
    const error = t.throws(() => decodeProposeRequest(`{"data":${bad}}`), { instanceOf: PhalanxDecodeError });
    t.is(error?.path, 'ProposeRequest.data');
    t.regex(error?.reason ?? '', /base64/);
  }
});

test('wrong JSON types are errors that name the field and what was wrong', (t) => {
  const cases: Array<[string, RegExp, string]> = [
    ['{"Term":"5"}', /cannot unmarshal string into Go value of type uint64/, 'AppendEntriesRequest.Term'],
    ['{"LeaderID":5}', /cannot unmarshal number 5 into Go value of type string/, 'AppendEntriesRequest.LeaderID'],
    ['{"Entries":{}}', /cannot unmarshal object into Go value of type \[\]\*LogEntry/, 'AppendEntriesRequest.Entries'],
    ['{"Entries":[5]}', /cannot unmarshal number 5 into Go value of type LogEntry/, 'AppendEntriesRequest.Entries[0]'],
    ['{"Entries":[null]}', /nil pointer/, 'AppendEntriesRequest.Entries[0]'],
    ['{"Entries":[{"Type":256}]}', /overflows uint8/, 'AppendEntriesRequest.Entries[0].Type'],
    ['{"Entries":[{"Data":5}]}', /into Go value of type \[\]uint8/, 'AppendEntriesRequest.Entries[0].Data'],
    ['{"Entries":[{"Data":[256]}]}', /overflows uint8/, 'AppendEntriesRequest.Entries[0].Data[0]'],
    ['[]', /cannot unmarshal array into Go value of type AppendEntriesRequest/, 'AppendEntriesRequest'],
    ['"x"', /cannot unmarshal string/, 'AppendEntriesRequest'],
  ];
  for (const [json, reason, path] of cases) {
    const error = t.throws(() => decodeAppendEntriesRequest(json), { instanceOf: PhalanxDecodeError }, json);
    t.regex(error?.reason ?? '', reason, json);
    t.is(error?.path, path, json);
    t.true(error?.message.startsWith(path), json);
  }
  t.throws(() => decodeAppendEntriesResponse('{"Success":1}'), { instanceOf: PhalanxDecodeError, message: /type bool/ });
  t.throws(() => decodeAppendEntriesResponse('{"Success":"true"}'), { instanceOf: PhalanxDecodeError, message: /type bool/ });
});

test('u64 fields take integers only: no negatives, fractions, exponents, nor values above 2^53 - 1', (t) => {
  for (const text of ['-1', '-0', '1.0', '1.5', '1e2', '1E+2', '0.0']) {
    t.throws(() => decodeAppendEntriesResponse(`{"Term":${text}}`), { instanceOf: PhalanxDecodeError, message: /not an unsigned integer/ }, text);
  }
  t.is(decodeAppendEntriesResponse('{"Term":9007199254740991}').Term, Number.MAX_SAFE_INTEGER);
  t.throws(() => decodeAppendEntriesResponse('{"Term":9007199254740992}'), { instanceOf: PhalanxDecodeError, message: /above 2\^53 - 1/ });
  t.throws(() => decodeAppendEntriesResponse('{"Term":18446744073709551615}'), { instanceOf: PhalanxDecodeError, message: /above 2\^53 - 1/ });
  t.throws(() => decodeAppendEntriesResponse('{"Term":18446744073709551616}'), { instanceOf: PhalanxDecodeError, message: /overflows uint64/ });
});

test('malformed JSON is a PhalanxDecodeError with the offset', (t) => {
  const cases = [
    '',
    ' ',
    '{',
    '{"Term":1,}',
    '{"Term":1} x',
    "{'Term':1}",
    '{"Term":01}',
    '{"Term":NaN}',
    '{"Term":1 /* c */}',
    '{"LeaderID":"a\nb"}',
    '{"LeaderID":"\\x"}',
    '{"LeaderID":"\\u12"}',
    '\ufeff{}',
    '{"Term":1}{"Term":2}',
    '[1,2',
    'tru',
    'nul',
    '{"a" 1}',
    '{1:2}',
  ];
  for (const json of cases) {
    const error = t.throws(() => decodeAppendEntriesResponse(json), { instanceOf: PhalanxDecodeError }, JSON.stringify(json));
    t.regex(error?.message ?? '', /offset \d+/, JSON.stringify(json));
  }
});

test('nesting beyond the limit fails cleanly instead of exhausting the stack', (t) => {
  const deep = '{"Extra":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}';
  t.throws(() => decodeAppendEntriesResponse(deep), { instanceOf: PhalanxDecodeError, message: /nesting deeper than/ });
  const acceptable = '{"Extra":' + '['.repeat(400) + ']'.repeat(400) + ',"Term":3}';
  t.is(decodeAppendEntriesResponse(acceptable).Term, 3);
});

test('string escapes decode as Go decodes them: surrogate pairs join, lone surrogates become U+FFFD', (t) => {
  t.is(decodeReadRequest('{"key":"\\ud83d\\ude00"}').key, '\u{1f600}');
  t.is(decodeReadRequest('{"key":"\\ud83dx"}').key, '\ufffdx');
  t.is(decodeReadRequest('{"key":"\\ude00\\ud83d"}').key, '\ufffd\ufffd');
  t.is(decodeReadRequest('{"key":"\\ud83d\\u0041"}').key, '\ufffdA');
  t.is(decodeReadRequest('{"key":"\\"\\\\\\/\\b\\f\\n\\r\\t"}').key, '"\\/\b\f\n\r\t');
});

test('invalid UTF-8 inside a string becomes U+FFFD, as in Go', (t) => {
  const bytes = new Uint8Array([...utf8('{"key":"a'), 0xff, ...utf8('b"}')]);
  t.is(decodeReadRequest(bytes).key, 'a\ufffdb');
});

// ---------------------------------------------------------------------------
// Go encoding/json encoding rules
// ---------------------------------------------------------------------------

test('omitempty drops empty leader_addr, error and Command.value but never ReadResponse.value', (t) => {
  t.is(encodeProposeResponse({ success: false, leader_addr: '', error: 'proposal timed out' }), '{"success":false,"error":"proposal timed out"}');
  t.is(encodeReadResponse({ value: '', found: false, leader_addr: '', error: '' }), '{"value":"","found":false}');
  t.is(encodeCommand({ op: 'DELETE', key: 'k', value: '' }), '{"op":"DELETE","key":"k"}');
  t.is(encodeReadRequest({ key: '' }), '{"key":""}');
});

test('strings are escaped as json.Marshal escapes them (HTML-safe)', (t) => {
  t.is(encodeReadRequest({ key: '<a href="x">&</a>' }), '{"key":"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e"}');
  t.is(encodeReadRequest({ key: '\u2028\u2029' }), '{"key":"\\u2028\\u2029"}');
  t.is(encodeReadRequest({ key: '\u0000\u001f\b\f\n\r\t\\' }), '{"key":"\\u0000\\u001f\\b\\f\\n\\r\\t\\\\"}');
  t.is(encodeReadRequest({ key: '\u007f\u00e9\u{1f600}' }), '{"key":"\u007f\u00e9\u{1f600}"}');
  t.is(encodeReadRequest({ key: 'a\ud800b' }), '{"key":"a\ufffdb"}', 'a lone surrogate is not representable in Go');
});

test('encoders refuse values Go could not hold', (t) => {
  const base = { Term: 1, Success: true, LastLogIndex: 1 };
  for (const Term of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN]) {
    t.throws(() => encodeAppendEntriesResponse({ ...base, Term }), { instanceOf: WireEncodeError }, String(Term));
  }
  t.throws(() => encodeAppendEntriesResponse({ ...base, Success: 'yes' as unknown as boolean }), { instanceOf: WireEncodeError });
  const entry: LogEntry = { Index: 1, Term: 1, Data: null, Type: 256 };
  const error = t.throws(
    () => encodeAppendEntriesRequest({ Term: 1, LeaderID: 'n', PrevLogIndex: 0, PrevLogTerm: 0, Entries: [entry], LeaderCommit: 0 }),
    { instanceOf: WireEncodeError },
  );
  t.is(error?.path, 'AppendEntriesRequest.Entries[0].Type');
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const u64 = fc.oneof(fc.nat(1000), fc.maxSafeNat());
// Strings as Go holds them (no lone surrogates), rich in the characters Go escapes.
const goText = fc.string({
  unit: fc.oneof(
    fc.constantFrom('<', '>', '&', '"', '\\', '\u2028', '\u2029', '\u0000', '\b', '\f', '\n', '\t', '\u007f', 'é', '\u{1f600}', '\u212a'),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }),
  ),
  maxLength: 12,
});
const goBytes = fc.option(fc.uint8Array({ maxLength: 40 }), { nil: null });
const logEntry = fc.record({ Index: u64, Term: u64, Data: goBytes, Type: fc.integer({ min: 0, max: 255 }) });
const appendEntriesRequest = fc.record({
  Term: u64,
  LeaderID: goText,
  PrevLogIndex: u64,
  PrevLogTerm: u64,
  Entries: fc.option(fc.array(logEntry, { maxLength: 4 }), { nil: null }),
  LeaderCommit: u64,
});

interface Codec<T> {
  name: string;
  encode(value: T): string;
  decode(input: string | Uint8Array): T;
  values: fc.Arbitrary<T>;
}

const codec = <T>(name: string, encode: (v: T) => string, decode: (input: string | Uint8Array) => T, values: fc.Arbitrary<T>): Codec<T> =>
  ({ name, encode, decode, values });

const codecs = [
  codec('AppendEntriesRequest', encodeAppendEntriesRequest, decodeAppendEntriesRequest, appendEntriesRequest),
  codec('AppendEntriesResponse', encodeAppendEntriesResponse, decodeAppendEntriesResponse, fc.record({ Term: u64, Success: fc.boolean(), LastLogIndex: u64 })),
  codec(
    'RequestVoteRequest',
    encodeRequestVoteRequest,
    decodeRequestVoteRequest,
    fc.record({ Term: u64, CandidateID: goText, LastLogIndex: u64, LastLogTerm: u64, IsPreVote: fc.boolean() }),
  ),
  codec('RequestVoteResponse', encodeRequestVoteResponse, decodeRequestVoteResponse, fc.record({ Term: u64, VoteGranted: fc.boolean(), IsPreVote: fc.boolean() })),
  codec('Command', encodeCommand, decodeCommand, fc.record({ op: fc.constantFrom('SET', 'DELETE', ''), key: goText, value: goText })),
  codec('ProposeRequest', encodeProposeRequest, decodeProposeRequest, fc.record({ data: goBytes })),
  codec('ProposeResponse', encodeProposeResponse, decodeProposeResponse, fc.record({ success: fc.boolean(), leader_addr: goText, error: goText })),
  codec('ReadRequest', encodeReadRequest, decodeReadRequest, fc.record({ key: goText })),
  codec('ReadResponse', encodeReadResponse, decodeReadResponse, fc.record({ value: goText, found: fc.boolean(), leader_addr: goText, error: goText })),
] as Array<Codec<unknown>>;

/** Runs `decode` and fails the property unless it returns or throws a PhalanxDecodeError, quickly. */
function decodesOrRejectsCleanly(decode: (input: string | Uint8Array) => unknown, input: string | Uint8Array): boolean {
  const started = performance.now();
  try {
    decode(input);
  } catch (error) {
    if (!(error instanceof PhalanxDecodeError)) throw error;
  }
  const elapsed = performance.now() - started;
  if (elapsed > 1000) throw new Error(`decoding took ${elapsed} ms`);
  return true;
}

/** Small edits of a valid encoding: drop, insert or replace a slice of characters. */
const mutation = fc.record({
  at: fc.nat(),
  deleteCount: fc.nat(4),
  insert: fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom('"', '{', '}', '[', ']', ',', ':', '-', '.', 'e', 'null', '0', '\\', '1e999', '"\\u')),
});

function mutate(text: string, edit: { at: number; deleteCount: number; insert: string }): string {
  const at = text.length === 0 ? 0 : edit.at % (text.length + 1);
  return text.slice(0, at) + edit.insert + text.slice(at + edit.deleteCount);
}

function recaseKeys(value: unknown, flips: boolean[], counter: { i: number }): unknown {
  if (Array.isArray(value)) return value.map((item) => recaseKeys(item, flips, counter));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.entries(value).map(([key, inner]) => {
        const flip = flips[counter.i++ % Math.max(1, flips.length)] ?? false;
        return [flip ? key.toUpperCase() : key.toLowerCase(), recaseKeys(inner, flips, counter)];
      }),
    );
  }
  return value;
}

for (const { name, encode, decode, values } of codecs) {
  test(`${name}: decode(encode(v)) equals v and encode(decode(x)) reproduces x`, (t) => {
    fc.assert(
      fc.property(values, (generated) => {
        const value = structuredClone(generated); // fc.record builds null-prototype objects; decoders build plain ones
        const text = encode(value);
        assert.deepStrictEqual(decode(text), value);
        assert.equal(encode(decode(text)), text);
        assert.deepStrictEqual(decode(new TextEncoder().encode(text)), value);
      }),
      { numRuns: 300 },
    );
    t.pass();
  });

  test(`${name}: keys in any letter case decode to the same value`, (t) => {
    fc.assert(
      fc.property(values, fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), (generated, flips) => {
        const value = structuredClone(generated);
        const recased = JSON.stringify(recaseKeys(JSON.parse(encode(value)), flips, { i: 0 }));
        assert.deepStrictEqual(decode(recased), value);
      }),
      { numRuns: 200 },
    );
    t.pass();
  });

  test(`${name}: arbitrary text, arbitrary bytes and arbitrary JSON only ever raise PhalanxDecodeError`, (t) => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 60 }), (text) => decodesOrRejectsCleanly(decode, text)), { numRuns: 300 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 60 }), (bytes) => decodesOrRejectsCleanly(decode, bytes)), { numRuns: 300 });
    fc.assert(fc.property(fc.json({ maxDepth: 4 }), (json) => decodesOrRejectsCleanly(decode, json)), { numRuns: 300 });
    t.pass();
  });

  test(`${name}: mutated valid encodings only ever raise PhalanxDecodeError`, (t) => {
    fc.assert(
      fc.property(values, fc.array(mutation, { minLength: 1, maxLength: 3 }), (value, edits) =>
        decodesOrRejectsCleanly(decode, edits.reduce(mutate, encode(value))),
      ),
      { numRuns: 400 },
    );
    t.pass();
  });
}
