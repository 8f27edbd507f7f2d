/**
 * Hostile input at the REST API: random and malformed bodies, content types
 * and encodings, oversized bodies, bad JSON, hostile path and query
 * parameters, bad Authorization headers. Properties, for every request:
 *  - the answer is rale's JSON error envelope (code, message, hint) with a
 *    4xx status, or a success; never 500, never a hang;
 *  - a refused request changes nothing (kv, log, membership);
 *  - an accepted proposal carries the value exactly as sent;
 *  - answers to documented operations match openapi.json;
 *  - the server keeps serving (a good request succeeds afterwards).
 * Many runs against an in-memory backend; fewer against a real node on
 * embedded PostgreSQL (rale.check_command in the loop, connections checked).
 */
import http from 'node:http';
import test from 'ava';
import fc from 'fast-check';
import { API_BASE, createApi } from '../../sidecar/src/http/api.ts';
import { pgNodeBackend } from '../../sidecar/src/http/node-api.ts';
import { checkResponse, loadSpec, templateOf } from '../http/openapi-check.ts';
import { serve, type Served } from '../http/support.ts';
import { startPgCluster, waitFor } from '../pg/support.ts';
import { FakeBackend, fuzz, hostileCommand, hostileJson, nastyNumberText, nastyString, nested, nestedText } from './support.ts';

const TOKEN = 'hostile-token-1';
const spec = loadSpec();

interface Raw {
  status: number;
  contentType: string;
  text: string;
  body: unknown;
}

/** One request with exactly these bytes and headers (fetch would refuse or normalise some of them). */
function raw(base: string, method: string, path: string, headers: Record<string, string | string[]> = {}, body?: Buffer | string): Promise<Raw> {
  const url = new URL(base);
  // Node frames no body of a DELETE or GET by default: its bytes would reach the server as a second, garbage request.
  if (body !== undefined) headers = { 'content-length': String(Buffer.byteLength(body)), ...headers };
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method, path: API_BASE + path, headers: { authorization: `Bearer ${TOKEN}`, ...headers }, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const contentType = res.headers['content-type'] ?? '';
          let parsed: unknown = text;
          if (contentType.startsWith('application/json')) parsed = JSON.parse(text);
          resolve({ status: res.statusCode ?? 0, contentType, text, body: parsed });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Percent-encodes every byte but unreserved ones (encodeURIComponent throws on lone surrogates). */
const pct = (s: string) => [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0')}`)).join('');

/** The properties every answer must have; returns a reason when one fails. */
function problems(method: string, path: string, answer: Raw): string[] {
  const out: string[] = [];
  if (answer.status >= 500) out.push(`status ${answer.status}`);
  if (answer.status >= 400) {
    const e = (answer.body as { error?: Record<string, unknown> } | string)?.valueOf() as { error?: Record<string, unknown> };
    if (typeof answer.body !== 'object' || e?.error === undefined) out.push(`not the error envelope: ${answer.text.slice(0, 200)}`);
    else if (typeof e.error.code !== 'string' || typeof e.error.message !== 'string' || typeof e.error.hint !== 'string' || e.error.hint === '') out.push(`envelope lacks code/message/hint: ${answer.text.slice(0, 200)}`);
  }
  let template: string | undefined;
  try {
    template = templateOf(spec, path.split('?')[0] as string);
  } catch {
    template = undefined; // a path that does not even percent-decode matches no template
  }
  if (template !== undefined && spec.paths[template]?.[method.toLowerCase()] !== undefined) {
    out.push(...checkResponse(spec, method, template, answer.status, answer.contentType, answer.body).map((p) => `openapi: ${p}`));
  }
  return out;
}

async function startFake(options: { bodyLimitBytes?: number } = {}): Promise<{ backend: FakeBackend; served: Served; internal: unknown[] }> {
  const backend = new FakeBackend();
  const internal: unknown[] = [];
  const api = createApi(backend, { token: TOKEN, onError: (err) => internal.push(err), requestTimeoutMs: 2000, ...options });
  const served = await serve(api);
  return { backend, served, internal };
}

const goodPropose = (base: string, key = 'good') =>
  raw(base, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, JSON.stringify({ value: { op: 'set', key, value: 'ok' } }));

// ---------------------------------------------------------------- in-memory backend: many runs

test('propose: any JSON body is answered 200 with the value exactly as sent, or 4xx changing nothing', async (t) => {
  const { backend, served, internal } = await startFake();
  t.teardown(() => served.close());
  await fc.assert(
    fc.asyncProperty(fc.oneof(hostileJson, fc.record({ value: hostileCommand }), fc.record({ value: hostileCommand, extra: hostileJson }, { requiredKeys: ['value'] })), async (body) => {
      const before = backend.snapshot();
      const text = JSON.stringify(body);
      const answer = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, text);
      const bad = problems('POST', '/consensus/propose', answer);
      if (answer.status === 200) {
        // What was proposed is what was sent: nothing silently dropped, rounded or nulled.
        const sent = (JSON.parse(text) as { value: unknown }).value;
        const a = answer.body as { proposed_as: string; command: { value?: unknown } };
        const proposed = a.proposed_as === 'value' ? a.command.value : a.command;
        if (JSON.stringify(proposed) !== JSON.stringify(sent)) bad.push(`proposed ${JSON.stringify(proposed).slice(0, 100)} for ${JSON.stringify(sent).slice(0, 100)}`);
      } else if (backend.snapshot() !== before) bad.push(`refused with ${answer.status} but the state changed`);
      if (bad.length > 0) throw new Error(`${bad.join('; ')}\nbody: ${text.slice(0, 300)}`);
    }),
    fuzz(300),
  );
  t.deepEqual(internal, []);
  t.is((await goodPropose(served.url)).status, 200, 'still serves');
});

test('any bytes, content type and encoding on every endpoint: 4xx envelope or success, never 500', async (t) => {
  const { backend, served, internal } = await startFake({ bodyLimitBytes: 4096 });
  t.teardown(() => served.close());
  const routes: Array<[string, string]> = [
    ['POST', '/consensus/propose'],
    ['POST', '/cluster/join'],
    ['POST', '/consensus/transfer-leader'],
    ['GET', '/cluster/status'],
    ['DELETE', '/cluster/nodes/n9'],
    ['PUT', '/consensus/propose'],
    ['PATCH', '/kv/a'],
    ['POST', '/nowhere'],
  ];
  const contentType = fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'application/json; charset=utf-16',
    'application/json; charset=nonsense',
    'text/plain',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/*',
    '',
    ';;;',
    'application/json\u00ff',
  );
  const bodyBytes = fc.oneof(
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
    fc.string({ maxLength: 200 }).map((s) => Buffer.from(s)),
    fc.constantFrom('{', '{"value":', '[1,2', '{"value":1}}', 'nul', '\ufeff{"value":1}', '{"value":1e400}', '"str"', '').map((s) => Buffer.from(s)),
    fc.integer({ min: 4097, max: 20_000 }).map((n) => Buffer.from(JSON.stringify({ value: 'x'.repeat(n) }))),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...routes),
      contentType,
      fc.option(fc.constantFrom('gzip', 'deflate', 'br', 'identity', 'compress', 'x-nonsense'), { nil: undefined }),
      bodyBytes,
      async ([method, path], type, encoding, body) => {
        const before = backend.snapshot();
        const headers: Record<string, string> = { 'content-type': type };
        if (encoding !== undefined) headers['content-encoding'] = encoding;
        const answer = await raw(served.url, method, path, headers, body);
        const bad = problems(method, path, answer);
        if (answer.status >= 400 && backend.snapshot() !== before) bad.push('refused but the state changed');
        if (bad.length > 0) throw new Error(`${method} ${path} (${type}, ${encoding}) -> ${answer.status}: ${bad.join('; ')}`);
      },
    ),
    fuzz(300),
  );
  t.deepEqual(internal, []);
  t.is((await goodPropose(served.url)).status, 200, 'still serves');
});

test('hostile path and query parameters: 4xx envelope or success, never 500, nothing changes', async (t) => {
  const { backend, served, internal } = await startFake();
  t.teardown(() => served.close());
  backend.state.kv.set('present', { value: 1, version: 1 });
  const segment = fc.oneof(
    nastyString.map((s) => pct(s.slice(0, 2000))),
    fc.constantFrom('%', '%E0%A4%A', '%ZZ', '%C0%AF', '%00', '..', '.', '%2F..%2F', 'a/b', 'n1;drop', '%F0%9F%98', 'x'.repeat(5000), '%25', '~', 'n1%20'),
    fc.stringMatching(/^[A-Za-z0-9_.:%-]{1,200}$/),
  );
  const query = fc.oneof(
    fc.constant(''),
    fc.constantFrom('?from=-1', '?limit=0', '?limit=1001', '?limit=1e3', '?from=99999999999999999999', '?from=1&from=2', '?consistency=LOCAL', '?consistency[]=local', '?x=1', '?%zz=1', '?limit=%00', '?from=0x10', '?limit=%205'),
    fc.dictionary(fc.constantFrom('from', 'limit', 'consistency', 'x'), fc.string({ maxLength: 20 }), { maxKeys: 3 }).map((q) => `?${new URLSearchParams(q)}`),
  );
  const target = fc.oneof(
    fc.tuple(segment, query).map(([s, q]) => ['GET', `/kv/${s}${q}`] as const),
    fc.tuple(segment, query).map(([s, q]) => ['GET', `/logs/${s}${q}`] as const),
    fc.tuple(segment, query).map(([s, q]) => ['DELETE', `/cluster/nodes/${s}${q}`] as const),
    fc.tuple(segment, query).map(([s, q]) => ['GET', `/${s}${q}`] as const),
    query.map((q) => ['GET', `/cluster/status${q}`] as const),
    query.map((q) => ['GET', `/health${q}`] as const),
  );
  await fc.assert(
    fc.asyncProperty(target, async ([method, path]) => {
      // Removing a real member is a legitimate request: keep the ids away from them.
      if (method === 'DELETE' && /^\/cluster\/nodes\/n[123](\?|$)/i.test(path)) return;
      const before = backend.snapshot();
      const answer = await raw(served.url, method, path);
      const bad = problems(method, path, answer);
      if (backend.snapshot() !== before) bad.push(`the state changed (${answer.status})`);
      if (bad.length > 0) throw new Error(`${method} ${path.slice(0, 200)} -> ${answer.status}: ${bad.join('; ')}`);
    }),
    fuzz(400),
  );
  t.deepEqual(internal, []);
  t.is((await raw(served.url, 'GET', '/kv/present?consistency=local')).status, 200, 'still serves');
});

test('bad Authorization headers: 401 envelope with WWW-Authenticate, whatever was sent', async (t) => {
  const { backend, served, internal } = await startFake();
  t.teardown(() => served.close());
  const header = fc.oneof(
    fc.string({ unit: fc.constantFrom(...'\t !"#$%&\'()*+,-./09:;<=>?@AZaz[\\]^_`{|}~\u00a0\u00e9\u00ff'), maxLength: 100 }),
    fc.constantFrom('Bearer', 'Bearer ', 'bearer  ', `Bearer ${TOKEN}x`, `Bearer  ${TOKEN.slice(0, -1)}`, `Basic ${Buffer.from('a:b').toString('base64')}`, `Bearer ${'t'.repeat(8000)}`, 'Bearer \u00ff\u00fe', `Token ${TOKEN}`),
  );
  await fc.assert(
    fc.asyncProperty(header, fc.constantFrom<[string, string]>(['GET', '/cluster/status'], ['POST', '/consensus/propose'], ['GET', '/metrics']), async (auth, [method, path]) => {
      if (new RegExp(`^Bearer +${TOKEN} *$`, 'i').test(auth)) return;
      const before = backend.snapshot();
      const body = method === 'POST' ? JSON.stringify({ value: 1 }) : undefined;
      const answer = await raw(served.url, method, path, { authorization: auth, 'content-type': 'application/json' }, body);
      const bad = problems(method, path, answer);
      if (answer.status !== 401) bad.push(`status ${answer.status}, expected 401`);
      if (backend.snapshot() !== before) bad.push('the state changed');
      if (bad.length > 0) throw new Error(`${JSON.stringify(auth).slice(0, 100)}: ${bad.join('; ')}`);
    }),
    fuzz(150),
  );
  t.deepEqual(internal, []);
});

// ---------------------------------------------------------------- named regressions (bugs these properties found)

test('regression: a value nested 5,000 levels deep is 400 naming the field, not 500 (JSON.stringify overflowed)', async (t) => {
  const { backend, served, internal } = await startFake();
  t.teardown(() => served.close());
  for (const value of [nestedText(5000), `{"op":"set","key":"k","value":${nestedText(5000, '"x"', 'object')}}`, `{"op":"set","key":"k","value":${nestedText(100)}}`]) {
    const answer = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, `{"value":${value}}`);
    t.is(answer.status, 400, answer.text.slice(0, 200));
    t.like(answer.body, { error: { code: 'INVALID_ARGUMENT', field: 'value' } });
    t.regex((answer.body as { error: { message: string } }).error.message, /nested deeper than 100 levels/);
  }
  // The limit itself is accepted: the same rule as rale.check_command.
  const atLimit = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, JSON.stringify({ value: { op: 'set', key: 'k', value: nested(99) } }));
  t.is(atLimit.status, 200, atLimit.text.slice(0, 200));
  t.is(backend.state.log.length, 1);
  t.deepEqual(internal, []);
});

test('regression: numbers beyond a double (1e400) are 400, not silently proposed as null', async (t) => {
  const { backend, served } = await startFake();
  t.teardown(() => served.close());
  for (const text of ['{"value":1e400}', '{"value":{"op":"set","key":"k","value":[1,-1e400]}}']) {
    const answer = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, text);
    t.is(answer.status, 400, answer.text);
    t.regex((answer.body as { error: { field: string } }).error.field, /^value/);
  }
  t.is(backend.state.log.length, 0);
});

test('regression: a key of 1024 characters but more than 1024 bytes is 400 (it could not be stored: it stalled the state machine)', async (t) => {
  const { backend, served } = await startFake();
  t.teardown(() => served.close());
  const key = '中'.repeat(400); // 400 characters, 1200 bytes
  const put = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, JSON.stringify({ value: { op: 'set', key, value: 1 } }));
  t.is(put.status, 400, put.text);
  t.like(put.body, { error: { field: 'value.key' } });
  const get = await raw(served.url, 'GET', `/kv/${encodeURIComponent(key)}`);
  t.like(get.body, { error: { field: 'key' } });
  t.is(backend.state.log.length, 0);
});

test('regression: a path parameter that does not percent-decode is 400, not 500', async (t) => {
  const { served, internal } = await startFake();
  t.teardown(() => served.close());
  for (const path of ['/kv/%E0%A4%A', '/logs/%ZZ', '/cluster/nodes/%']) {
    const answer = await raw(served.url, path.startsWith('/cluster') ? 'DELETE' : 'GET', path);
    t.is(answer.status, 400, `${path}: ${answer.text}`);
    t.like(answer.body, { error: { code: 'INVALID_ARGUMENT' } });
  }
  t.deepEqual(internal, []);
});

// ---------------------------------------------------------------- a real node on embedded PostgreSQL: fewer runs

test('real node (and regression: NUL and lone surrogates are 400, not 503): hostile proposals through REST and rale.check_command: 200 exact or 4xx, no state change, no leaked connection', async (t) => {
  const cluster = await startPgCluster('hostile-rest', ['solo']);
  t.teardown(() => cluster.stop());
  const node = await cluster.leader();
  const internal: unknown[] = [];
  const api = createApi(pgNodeBackend(node), { token: TOKEN, onError: (err) => internal.push(err), requestTimeoutMs: 5000 });
  const served = await serve(api);
  t.teardown(async () => {
    api.close();
    await served.close();
  });
  const sql = cluster.sql.get('solo')!;
  // Connections beyond this test's own pool (the node's pools), and sessions left inside a transaction.
  const connections = async () => {
    const r = await sql.query<{ n: string; busy: string }>(
      `SELECT count(*) AS n, count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS busy FROM pg_stat_activity WHERE backend_type = 'client backend'`,
    );
    return { others: Number(r.rows[0]!.n) - sql.totalCount, inTransaction: Number(r.rows[0]!.busy) };
  };
  const digest = async () => (await sql.query<{ d: string }>(`SELECT (SELECT count(*) FROM rale.kv) || '/' || (SELECT coalesce(max(index), 0) FROM rale.log_entries) || '/' || (SELECT count(*) FROM rale.proposals) AS d`)).rows[0]!.d;
  t.is((await goodPropose(served.url, 'warm')).status, 200);
  const baseline = { ...(await connections()), checkedOut: node.pool.totalCount - node.pool.idleCount };
  const numberValue = nastyNumberText.map((n) => `{"value":{"op":"set","key":"n","value":${n}}}`);
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.record({ value: hostileCommand }).map((b) => JSON.stringify(b)), numberValue), async (text) => {
      const before = await digest();
      const answer = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, text);
      const bad = problems('POST', '/consensus/propose', answer);
      if (answer.status === 200) {
        const sent = (JSON.parse(text) as { value: unknown }).value;
        const a = answer.body as { proposed_as: string; command: { value?: unknown } };
        const proposed = a.proposed_as === 'value' ? a.command.value : a.command;
        if (JSON.stringify(proposed) !== JSON.stringify(sent)) bad.push('the proposal differs from what was sent');
      } else if ((await digest()) !== before) bad.push('refused but the state changed');
      if (bad.length > 0) throw new Error(`${answer.status} ${bad.join('; ')}: ${answer.text.slice(0, 300)}\nbody: ${text.slice(0, 300)}`);
    }),
    fuzz(40),
  );
  // Regressions: text jsonb cannot hold was a 503 STORAGE (PostgreSQL refused it inside rale.check_command or the read).
  for (const text of ['{"value":{"op":"set","key":"k","value":"a\\u0000b"}}', '{"value":{"op":"set","key":"k","value":{"\\ud800":1}}}', '{"value":"\\udc00"}']) {
    const answer = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json' }, text);
    t.is(answer.status, 400, `${text}: ${answer.text}`);
  }
  t.is((await raw(served.url, 'GET', '/kv/a%00b')).status, 400);
  t.deepEqual(internal, []);
  t.is((await goodPropose(served.url, 'after')).status, 200, 'still serves');
  // Connections the API borrowed went back to the pool: none beyond the pools' idle ones.
  // Every connection the API borrowed from the node's pool went back (the pool may have grown: idle ones are not leaks).
  const checkedOut = () => node.pool.totalCount - node.pool.idleCount;
  await waitFor('the node pool to settle', () => checkedOut() <= baseline.checkedOut && node.pool.waitingCount === 0, 3000).catch(() => {});
  t.true(checkedOut() <= baseline.checkedOut, `checked out ${checkedOut()} vs ${baseline.checkedOut}`);
  t.is((await connections()).inTransaction, 0, 'no session left inside a transaction');
});

test('regression: a body that does not decompress as its Content-Encoding says is 400, not 500', async (t) => {
  const { served, internal } = await startFake();
  t.teardown(() => served.close());
  for (const encoding of ['gzip', 'deflate', 'br']) {
    const answer = await raw(served.url, 'POST', '/consensus/propose', { 'content-type': 'application/json', 'content-encoding': encoding }, '{"value":"not compressed at all"}');
    t.is(answer.status, 400, `${encoding}: ${answer.text}`);
    t.like(answer.body, { error: { code: 'INVALID_ARGUMENT', field: 'body' } });
  }
  t.deepEqual(internal, []);
});
