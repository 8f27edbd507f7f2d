/**
 * The REST API's pure parts, without a cluster: the propose value mapping and
 * body validation, the error envelope and status mapping, the Prometheus
 * renderer, and the OpenAPI checker the integration tests rely on.
 */
import test from 'ava';
import { RaleError, ErrorCodes, type ErrorCode } from '../../sidecar/src/errors.ts';
import { HttpError, envelopeOf, headersOf, toHttpError } from '../../sidecar/src/http/errors.ts';
import { ApiMetrics, Counter } from '../../sidecar/src/http/metrics.ts';
import { CONSENSUS_VALUE_KEY, intQuery, nodeId, objectBody, proposeCommand } from '../../sidecar/src/http/validate.ts';
import { Role } from '../../sidecar/src/core/types.ts';
import { ProgressState } from '../../sidecar/src/core/progress.ts';
import type { CoreStatus } from '../../sidecar/src/core/raft.ts';
import { assertCheckable, check, checkResponse, loadSpec } from './openapi-check.ts';
import { parsePrometheus } from './support.ts';

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof HttpError && err.status === 400) return err.details.field as string;
    throw err;
  }
  return undefined;
}

test('propose: a command object is proposed as is; any other value is set under consensus.value', (t) => {
  const set = { op: 'set', key: 'k', value: { deep: [1] } };
  t.deepEqual(proposeCommand({ value: set }), { command: set, mapping: 'command' });
  t.deepEqual(proposeCommand({ value: { op: 'delete', key: 'k' } }).mapping, 'command');
  t.deepEqual(proposeCommand({ value: { op: 'cas', key: 'k', expected: null, value: 1 } }).mapping, 'command');
  t.deepEqual(proposeCommand({ value: { op: 'call', handler: 'h' } }).mapping, 'command');
  for (const value of ['configuration_update', 0, false, null, [1, 2], { no: 'op here' }, {}]) {
    t.deepEqual(proposeCommand({ value }), { command: { op: 'set', key: CONSENSUS_VALUE_KEY, value }, mapping: 'value' }, JSON.stringify(value));
  }
});

test('propose: malformed bodies and commands name the field at fault', (t) => {
  const cases: Array<[unknown, string]> = [
    [undefined, 'body'],
    ['text', 'body'],
    [[{ value: 1 }], 'body'],
    [{}, 'value'],
    [{ value: 1, id: 'x' }, 'id'],
    [{ value: { op: 'set', value: 1 } }, 'value.key'],
    [{ value: { op: 'set', key: 1, value: 1 } }, 'value.key'],
    [{ value: { op: 'set', key: 'x'.repeat(1025), value: 1 } }, 'value.key'],
    [{ value: { op: 'set', key: 'k' } }, 'value.value'],
    [{ value: { op: 'cas', key: 'k', value: 1 } }, 'value.expected'],
    [{ value: { op: 'call' } }, 'value.handler'],
    [{ value: { op: 'SET', key: 'k', value: 1 } }, 'value.op'],
    [{ value: { op: 7 } }, 'value.op'],
    [{ value: { op: 'register_handler', name: 'h', function: 'f(jsonb)' } }, 'value.op'],
  ];
  for (const [body, field] of cases) t.is(fieldOf(() => proposeCommand(body)), field, JSON.stringify(body));
});

test('node ids, objects and integer query parameters are checked', (t) => {
  t.is(nodeId('node-1.a:b_c', 'node_id'), 'node-1.a:b_c');
  for (const bad of ['', '-x', 'has space', 'ü', 'x'.repeat(129), 5, null]) t.is(fieldOf(() => nodeId(bad, 'node_id')), 'node_id', String(bad));
  t.is(fieldOf(() => objectBody({ node_id: 'a' }, ['node_id', 'address'])), 'address');
  t.deepEqual(objectBody({ a: 1 }, ['a', 'b'], ['a']), { a: 1 });
  t.is(intQuery({}, 'limit', 100, 1, 1000), 100);
  t.is(intQuery({ limit: '7' }, 'limit', 100, 1, 1000), 7);
  for (const raw of ['0', '1001', '1.5', 'x', '', ['1', '2']]) t.is(fieldOf(() => intQuery({ limit: raw }, 'limit', 100, 1, 1000)), 'limit', String(raw));
});

test('every engine error code has an HTTP status; the envelope keeps code, message and hint', (t) => {
  const expected: Record<ErrorCode, number> = {
    NOT_LEADER: 421,
    NO_LEADER: 503,
    TRANSFER_IN_PROGRESS: 409,
    ENTRY_TOO_LARGE: 413,
    CONFIG_CHANGE_PENDING: 409,
    INVALID_CONFIG_CHANGE: 409,
    INVALID_ARGUMENT: 400,
    PROPOSAL_DROPPED: 503,
    APPLY_FAILED: 422,
    TIMEOUT: 504,
    STOPPED: 503,
    STORAGE: 503,
  };
  t.deepEqual(Object.keys(expected).sort(), Object.keys(ErrorCodes).sort(), 'a new engine code needs a status here');
  for (const code of Object.keys(ErrorCodes) as ErrorCode[]) {
    const err = toHttpError(new RaleError(code, `m-${code}`, { leader: 'n2', code: 'SPOOF', hint: 'spoof' }));
    t.is(err.status, expected[code], code);
    const envelope = envelopeOf(err);
    t.deepEqual(envelope, { error: { code, message: `m-${code}`, hint: ErrorCodes[code], leader: 'n2' } }, 'details cannot overwrite the fixed fields');
  }
  t.is(headersOf(HttpError.of('NO_LEADER', 'x'))['Retry-After'], '1');
  t.is(headersOf(new HttpError(401, 'UNAUTHORIZED', 'x'))['WWW-Authenticate'], 'Bearer realm="rale"');
});

test('unknown errors become 500 INTERNAL without their message; body-parser errors keep their status', (t) => {
  const internal = toHttpError(new Error('password=hunter2 in a connection string'));
  t.is(internal.status, 500);
  t.is(internal.code, 'INTERNAL');
  t.notRegex(JSON.stringify(envelopeOf(internal)), /hunter2/);
  t.is(toHttpError(Object.assign(new Error('too big'), { type: 'entity.too.large', status: 413, limit: 10 })).code, 'PAYLOAD_TOO_LARGE');
  const parse = toHttpError(Object.assign(new Error('Unexpected end'), { type: 'entity.parse.failed', status: 400 }));
  t.is(parse.status, 400);
  t.is(parse.details.field, 'body');
  t.is(toHttpError(Object.assign(new Error('gzip?'), { type: 'encoding.unsupported', status: 415 })).status, 415);
});

function fakeStatus(over: Partial<CoreStatus> = {}): CoreStatus {
  return {
    id: 'n1',
    role: Role.Leader,
    term: 3,
    vote: 'n1',
    leader: 'n1',
    commit: 10,
    applied: 9,
    firstIndex: 1,
    lastIndex: 12,
    lastTerm: 3,
    persisted: 12,
    config: { voters: ['n1', 'n2', 'n3'], learners: [] },
    progress: {
      n2: { match: 12, next: 13, state: ProgressState.Replicate, recentlyActive: true },
      'n"3': { match: 4, next: 5, state: ProgressState.Probe, recentlyActive: false },
    },
    transferTarget: null,
    ...over,
  };
}

test('metrics: valid exposition, one-hot role, lag per follower, escaped labels, cumulative histogram', (t) => {
  let status = fakeStatus();
  const metrics = new ApiMetrics({ id: 'n1', status: () => status });
  metrics.applyLatency.observe(0.003);
  metrics.applyLatency.observe(0.2);
  metrics.applyLatency.observe(60);
  metrics.proposalsFailed.inc({ code: 'TIMEOUT' });
  const { types, samples } = parsePrometheus(metrics.render());
  t.is(samples.get('rale_term'), 3);
  t.is(samples.get('rale_role{role="leader"}'), 1);
  t.is([...samples.keys()].filter((k) => k.startsWith('rale_role{')).reduce((n, k) => n + samples.get(k)!, 0), 1);
  t.is(samples.get('rale_follower_lag_entries{follower="n2"}'), 0);
  t.is(samples.get('rale_follower_lag_entries{follower="n\\"3"}'), 8);
  t.is(samples.get('rale_follower_recently_active{follower="n\\"3"}'), 0);
  t.is(samples.get('rale_proposals_failed_total{code="TIMEOUT"}'), 1);
  t.is(samples.get('rale_proposals_submitted_total'), 0, 'an unlabelled counter shows 0 before its first increment');
  t.is(types.get('rale_proposal_apply_seconds'), 'histogram');
  t.is(samples.get('rale_proposal_apply_seconds_bucket{le="0.005"}'), 1);
  t.is(samples.get('rale_proposal_apply_seconds_bucket{le="0.25"}'), 2);
  t.is(samples.get('rale_proposal_apply_seconds_bucket{le="10"}'), 2);
  t.is(samples.get('rale_proposal_apply_seconds_bucket{le="+Inf"}'), 3);
  t.is(samples.get('rale_proposal_apply_seconds_count'), 3);
  t.true(Math.abs(samples.get('rale_proposal_apply_seconds_sum')! - 60.203) < 1e-9);

  // Elections are counted from term increases, leader changes from new leader ids.
  status = fakeStatus({ term: 5, role: Role.Follower, leader: 'n2', progress: {} });
  const after = parsePrometheus(metrics.render()).samples;
  t.is(after.get('rale_elections_seen_total'), 2);
  t.is(after.get('rale_leader_changes_total'), 2);
  t.is(after.get('rale_role{role="follower"}'), 1);
  t.false([...after.keys()].some((k) => k.startsWith('rale_follower_lag_entries{')));
});

test('metrics: a stopped node still renders, with rale_up 0', (t) => {
  const metrics = new ApiMetrics({
    id: 'n1',
    status: () => {
      throw new RaleError('STOPPED', 'stopped');
    },
  });
  const { samples } = parsePrometheus(metrics.render());
  t.is(samples.get('rale_up'), 0);
  t.false(samples.has('rale_term'));
  const c = new Counter('x_total', 'help', true);
  t.deepEqual(c.render(), ['# HELP x_total help', '# TYPE x_total counter'], 'a labelled counter shows no series before its first increment');
});

test('the Prometheus parser used by the tests rejects malformed exposition', (t) => {
  t.throws(() => parsePrometheus('# HELP a x\n# TYPE a gauge\na 1'), { message: /newline/ });
  t.throws(() => parsePrometheus('a 1\n'), { message: /before its TYPE/ });
  t.throws(() => parsePrometheus('# HELP a x\n# TYPE a gauge\na{b="c} 1\n'), { message: /malformed/ });
  t.throws(() => parsePrometheus('# HELP a x\n# TYPE a gauge\na 1\na 2\n'), { message: /duplicate/ });
});

test('the OpenAPI checker catches wrong types, missing and undocumented fields, and refuses keywords it does not implement', (t) => {
  const spec = loadSpec();
  const status = { $ref: '#/components/schemas/Leader' };
  t.deepEqual(check(spec, status, { node_id: 'n1', address: null, api_url: null, term: 1, is_this_node: true }), []);
  t.regex(check(spec, status, { node_id: 'n1', address: null, api_url: null, term: '1', is_this_node: true }).join(), /term: expected integer/);
  t.regex(check(spec, status, { node_id: 'n1', address: null, api_url: null, is_this_node: true }).join(), /missing required "term"/);
  t.regex(check(spec, status, { node_id: 'n1', address: null, api_url: null, term: 1, is_this_node: true, extra: 1 }).join(), /undocumented property "extra"/);
  t.regex(check(spec, status, { node_id: 'bad id', address: null, api_url: null, term: 1, is_this_node: true }).join(), /does not match/);
  t.regex(check(spec, { type: 'string', enum: ['a'] }, 'b').join(), /not one of/);
  t.throws(() => check(spec, { oneOf: [] }, 1), { message: /does not implement the keyword "oneOf"/ });
  t.regex(checkResponse(spec, 'GET', '/consensus/leader', 418, 'application/json', {}).join(), /does not list/);
  t.regex(checkResponse(spec, 'GET', '/metrics', 200, 'application/json', {}).join(), /content type/);
  t.deepEqual(checkResponse(spec, 'GET', '/metrics', 200, 'text/plain; version=0.0.4; charset=utf-8', 'x 1\n'), []);
});

test('the OpenAPI document is well formed: unique operation ids, every $ref resolves, every schema uses only checked keywords', (t) => {
  const spec = loadSpec();
  t.is(spec.openapi, '3.1.0');
  const ids = Object.values(spec.paths).flatMap((item) => Object.values(item).map((op) => op.operationId));
  t.is(new Set(ids).size, ids.length);
  const text = JSON.stringify(spec);
  for (const [, name] of text.matchAll(/"#\/components\/schemas\/(\w+)"/g)) t.truthy(spec.components.schemas[name as string], name);
  for (const [, name] of text.matchAll(/"#\/components\/parameters\/(\w+)"/g)) t.truthy(spec.components.parameters?.[name as string], name);
  for (const [name, schema] of Object.entries(spec.components.schemas)) t.notThrows(() => assertCheckable(schema), name);
  t.throws(() => assertCheckable({ type: 'object', properties: { a: { type: 'array', items: { format: 'uuid' } } } }), { message: /"format" \(at \$\.a\[\]\)/ });
  for (const item of Object.values(spec.paths)) {
    for (const op of Object.values(item)) {
      t.true(op.security === undefined || (Array.isArray(op.security) && op.security.length === 0), op.operationId);
      for (const [status, response] of Object.entries(op.responses)) {
        if (Number(status) >= 400) t.deepEqual(response.content?.['application/json']?.schema, { $ref: '#/components/schemas/ErrorEnvelope' }, `${op.operationId} ${status}`);
      }
    }
  }
});
