/**
 * The REST API over real HTTP (127.0.0.1, port 0), one API server per node
 * of a three-node cluster on embedded PostgreSQL. Every answer is checked
 * against openapi.json by the client (support.ts). Tests run serially
 * against one cluster; later tests depend on the membership earlier ones
 * leave (always three voters, node ids shift as leaders move).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import express from 'express';
import { startPgCluster, waitFor, type PgCluster } from '../pg/support.ts';
import { PgNode } from '../../sidecar/src/pg/node.ts';
import { startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { API_BASE, createApi, type RaleApi } from '../../sidecar/src/http/api.ts';
import { pgNodeBackend } from '../../sidecar/src/http/node-api.ts';
import { clusterIdOf } from '../../sidecar/src/node/cluster-id.ts';
import { HttpError } from '../../sidecar/src/http/errors.ts';
import { ErrorCodes } from '../../sidecar/src/errors.ts';
import { CONSENSUS_VALUE_KEY } from '../../sidecar/src/http/validate.ts';
import { ApiClient, parsePrometheus, serve, type Answer, type Served } from './support.ts';
import { operations } from './openapi-check.ts';

const TOKEN = 'test-token-7f3a9c';
const client = new ApiClient(TOKEN);

let cluster: PgCluster;
const apis = new Map<string, RaleApi>();
const served = new Map<string, Served>();
/** Unexpected errors the API answered as 500: none may happen. */
const internalErrors: unknown[] = [];
/** Extra resources a test started, stopped in after.always even if it failed. */
const cleanups: Array<() => Promise<void>> = [];

const url = (id: string): string => {
  const s = served.get(id);
  if (s === undefined) throw new Error(`no API server for ${id}`);
  return s.url;
};

async function startApi(node: PgNode): Promise<void> {
  const api = createApi(pgNodeBackend(node), {
    token: TOKEN,
    peerApiUrl: (id) => served.get(id)?.url,
    requestTimeoutMs: 5000,
    joinTimeoutMs: 15_000,
    healthTimeoutMs: 500,
    onError: (err) => internalErrors.push(err),
  });
  apis.set(node.id, api);
  served.set(node.id, await serve(api));
}

async function stopApi(id: string): Promise<void> {
  apis.get(id)?.close();
  apis.delete(id);
  await served.get(id)?.close();
  served.delete(id);
}

/** The leader and the two followers, as the nodes themselves say. */
async function roles(): Promise<{ leader: string; followers: string[] }> {
  const leader = (await cluster.leader()).id;
  const voters = cluster.nodes.get(leader)!.raft.status().config.voters;
  return { leader, followers: voters.filter((id) => id !== leader) };
}

function expectError(t: import('ava').ExecutionContext, answer: Answer, status: number, code: string, field?: string): void {
  t.is(answer.status, status, `status of ${answer.text}`);
  t.is(answer.body?.error?.code, code, answer.text);
  t.is(typeof answer.body?.error?.message, 'string');
  t.true(answer.body?.error?.hint.length > 0);
  if (field !== undefined) t.is(answer.body?.error?.field, field, answer.text);
}

/** `root` and all its descendants (PostgreSQL backends call setsid(), so a process group is not enough). */
function processTree(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so parse after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(name), ppid);
    } catch {
      // the process ended while we looked
    }
  }
  const tree = [root];
  for (let k = 0; k < tree.length; k++) for (const [pid, ppid] of parent) if (ppid === tree[k]) tree.push(pid);
  return tree;
}

test.before(async () => {
  cluster = await startPgCluster('http');
  for (const node of cluster.nodes.values()) await startApi(node);
  await cluster.leader();
});

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  for (const id of [...served.keys()]) await stopApi(id);
  await cluster?.stop();
});

test.serial('every operation in openapi.json is implemented, and every route the server has is documented', async (t) => {
  const self = cluster.ids[0]!;
  for (const { method, path: template } of operations(client.spec)) {
    // Unknown ids and keys: exercises the route without changing the cluster.
    const concrete = template.replace('{node_id}', 'spec-probe').replace('{key}', 'spec-probe');
    const answer = await client.call(url(self), method.toUpperCase(), concrete, method === 'post' ? { body: {} } : {});
    t.not(answer.status, 405, `${method} ${template}`);
    t.false(['NOT_FOUND', 'METHOD_NOT_ALLOWED'].includes(answer.body?.error?.code), `${method} ${template} reached its handler: ${answer.text}`);
  }
  const api = apis.get(self)!;
  type Layer = { route?: { path: string; methods: Record<string, boolean> } };
  const registered = (api.app.router.stack as unknown as Layer[])
    .filter((layer) => layer.route !== undefined)
    .flatMap((layer) =>
      Object.keys(layer.route!.methods)
        .filter((m) => m !== '_all')
        .map((m) => `${m} ${layer.route!.path.replace(API_BASE, '').replace(/:(\w+)/g, '{$1}')}`),
    )
    .sort();
  const documented = operations(client.spec)
    .map(({ method, path: p }) => `${method} ${p}`)
    .sort();
  t.deepEqual(registered, documented);
  t.deepEqual(api.routes.map((r) => `${r.method} ${r.path}`).sort(), documented);
});

test.serial('status and leader agree on every node', async (t) => {
  const { leader, followers } = await roles();
  for (const id of cluster.ids) {
    const s = await client.get(url(id), '/cluster/status');
    t.is(s.status, 200);
    t.is(s.body.node_id, id);
    t.is(s.body.cluster_id, clusterIdOf(cluster.ids), 'every node reports the id its founders computed');
    t.is(s.body.leader, leader);
    t.is(s.body.role, id === leader ? 'leader' : 'follower');
    t.deepEqual([...s.body.voters].sort(), [...cluster.ids].sort());
    t.is(s.body.members.length, 3);
    t.is(s.body.members.filter((m: { leader: boolean }) => m.leader).length, 1);
    t.deepEqual(Object.keys(s.body.replication).sort(), id === leader ? [...followers].sort() : []);
    const l = await client.get(url(id), '/consensus/leader');
    t.is(l.status, 200);
    t.is(l.body.node_id, leader);
    t.is(l.body.is_this_node, id === leader);
    t.is(l.body.api_url, url(leader));
  }
});

test.serial('propose on the leader and on a follower; bare values and commands; exactly once with Idempotency-Key', async (t) => {
  const { leader, followers } = await roles();
  const onLeader = await client.post(url(leader), '/consensus/propose', { value: { op: 'set', key: 'alpha', value: { n: 1 } } });
  t.is(onLeader.status, 200);
  t.is(onLeader.body.status, 'applied');
  t.is(onLeader.body.proposed_as, 'command');
  t.deepEqual(onLeader.body.result, { ok: true });
  t.true(onLeader.body.index > 0);

  // A follower forwards to the leader and answers once applied on itself.
  const onFollower = await client.post(url(followers[0]!), '/consensus/propose', { value: 'configuration_update' });
  t.is(onFollower.status, 200);
  t.is(onFollower.body.proposed_as, 'value');
  t.deepEqual(onFollower.body.command, { op: 'set', key: CONSENSUS_VALUE_KEY, value: 'configuration_update' });
  t.is(onFollower.body.leader, leader);
  t.true(onFollower.body.index > onLeader.body.index);
  const local = await client.get(url(followers[0]!), `/kv/${CONSENSUS_VALUE_KEY}?consistency=local`);
  t.is(local.body.value, 'configuration_update', 'read-your-writes on the follower that proposed');

  // Other bare values: numbers, arrays, objects without op, null.
  for (const value of [42, [1, 'two'], { feature: 'x', enabled: true }, null]) {
    const r = await client.post(url(followers[1]!), '/consensus/propose', { value });
    t.is(r.status, 200);
    t.is(r.body.proposed_as, 'value');
    const read = await client.get(url(leader), `/kv/${CONSENSUS_VALUE_KEY}`);
    t.deepEqual(read.body.value, value);
  }

  // Compare-and-set: a mismatch is a decided outcome, answered 200 with ok: false.
  const cas = await client.post(url(followers[1]!), '/consensus/propose', { value: { op: 'cas', key: 'alpha', expected: { n: 0 }, value: { n: 2 } } });
  t.deepEqual(cas.body.result, { ok: false, current: { n: 1 } });
  const cas2 = await client.post(url(followers[1]!), '/consensus/propose', { value: { op: 'cas', key: 'alpha', expected: { n: 1 }, value: { n: 2 } } });
  t.deepEqual(cas2.body.result, { ok: true });

  // The same Idempotency-Key twice: applied once.
  const headers = { 'Idempotency-Key': 'test-once-1' };
  const first = await client.post(url(followers[0]!), '/consensus/propose', { value: { op: 'set', key: 'once', value: 1 } }, { headers });
  const again = await client.post(url(leader), '/consensus/propose', { value: { op: 'set', key: 'once', value: 1 } }, { headers });
  t.is(first.status, 200);
  t.is(again.status, 200);
  t.is(again.body.proposal_id, first.body.proposal_id);
  const read = await client.get(url(followers[1]!), '/kv/once');
  t.is(read.body.version, first.body.index, 'the retry did not write again');
  const { rows } = await cluster.sql.get(leader)!.query('SELECT count(*)::int AS n FROM rale.results WHERE proposal_id = $1', [first.body.proposal_id]);
  t.is(rows[0].n, 1);

  const del = await client.post(url(leader), '/consensus/propose', { value: { op: 'delete', key: 'once' } });
  t.deepEqual(del.body.result, { ok: true, existed: true });
});

test.serial('a command the state machine refuses is 422 APPLY_FAILED with its log position', async (t) => {
  for (const id of cluster.ids) {
    await cluster.sql.get(id)!.query(`CREATE OR REPLACE FUNCTION public.http_refuse(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'refused: %', payload->>'why'; END $$`);
  }
  const { leader, followers } = await roles();
  const reg = await cluster.sql.get(leader)!.query<{ id: string }>(`SELECT rale.register_handler('http_refuse', 'public.http_refuse') AS id`);
  t.is((await cluster.sql.get(leader)!.query('SELECT (rale.wait($1, 10000)).status', [reg.rows[0]!.id])).rows[0].status, 'applied');
  // The handler check runs in the database of the node asked: wait until it knows the handler.
  await waitFor('handler on the follower', async () => (await cluster.sql.get(followers[0]!)!.query(`SELECT 1 FROM rale.handlers WHERE name = 'http_refuse'`)).rowCount === 1);
  const r = await client.post(url(followers[0]!), '/consensus/propose', { value: { op: 'call', handler: 'http_refuse', payload: { why: 'on purpose' } } });
  expectError(t, r, 422, 'APPLY_FAILED');
  t.regex(r.body.error.message, /refused: on purpose/);
  t.true(r.body.error.index > 0);
  t.true(r.body.error.term > 0);
});

test.serial('reads: linearizable by default (with its read index), local on request, 404 for a missing key', async (t) => {
  const { leader, followers } = await roles();
  const w = await client.post(url(leader), '/consensus/propose', { value: { op: 'set', key: 'path/with spaces', value: 'v1' } });
  const key = encodeURIComponent('path/with spaces');
  for (const id of followers) {
    // Linearizable on a follower sees the write acknowledged before the read began.
    const r = await client.get(url(id), `/kv/${key}`);
    t.is(r.status, 200);
    t.is(r.body.key, 'path/with spaces');
    t.is(r.body.value, 'v1');
    t.is(r.body.consistency, 'linearizable');
    t.true(r.body.read_index >= w.body.index);
    t.true(r.body.applied_index >= r.body.read_index);
    t.is(r.body.version, w.body.index);
  }
  const local = await waitFor('the local read catches up', async () => {
    const r = await client.get(url(followers[1]!), `/kv/${key}?consistency=local`);
    return r.status === 200 && r;
  });
  t.is(local.body.consistency, 'local');
  t.is(local.body.read_index, null);
  const missing = await client.get(url(followers[0]!), '/kv/never-set');
  expectError(t, missing, 404, 'UNKNOWN_KEY');
  t.is(missing.body.error.key, 'never-set');
  t.true(missing.body.error.read_index > 0);
  const missingLocal = await client.get(url(followers[0]!), '/kv/never-set?consistency=local');
  expectError(t, missingLocal, 404, 'UNKNOWN_KEY');
});

test.serial('logs: this node from its database, another node relayed to it, pages', async (t) => {
  const { leader, followers } = await roles();
  const own = await client.get(url(leader), `/logs/${leader}?limit=1000`);
  t.is(own.status, 200);
  t.is(own.body.node_id, leader);
  t.is(own.headers.get('x-rale-relayed-to'), null);
  // The founding voters are the log's first entry; the first leader's no-op follows.
  t.is(own.body.entries[0].kind, 'config');
  t.deepEqual(own.body.entries[0].payload, { type: 'bootstrap', voters: cluster.ids });
  t.is(own.body.entries[1].kind, 'noop');
  t.is(own.body.entries[1].payload, null);
  const alpha = own.body.entries.find((e: { payload: { command?: { key?: string } } | null }) => e.payload?.command?.key === 'alpha');
  t.is(alpha?.kind, 'normal');
  t.deepEqual(alpha?.payload.command, { op: 'set', key: 'alpha', value: { n: 1 } });

  const other = await client.get(url(leader), `/logs/${followers[0]}?limit=1000`);
  t.is(other.status, 200);
  t.is(other.body.node_id, followers[0]);
  t.is(other.headers.get('x-rale-relayed-to'), followers[0]!);
  t.truthy(other.body.entries.find((e: { index: number }) => e.index === alpha?.index));

  const page = await client.get(url(followers[1]!), `/logs/${followers[1]}?from=2&limit=2`);
  t.deepEqual(
    page.body.entries.map((e: { index: number }) => e.index),
    [2, 3],
  );
  t.is(page.body.next_from, 4);
  const tail = await client.get(url(followers[1]!), `/logs/${followers[1]}?from=${page.body.last_index}&limit=10`);
  t.is(tail.body.next_from, null);
});

test.serial('metrics: Prometheus text with term, role, indexes, proposals, elections, follower lag and apply latency', async (t) => {
  const { leader, followers } = await roles();
  await client.post(url(leader), '/consensus/propose', { value: 'metrics-probe' });
  const scrapes = 'rale_http_requests_total{method="GET",route="/api/v1/metrics",status="200"}';
  const before = parsePrometheus((await client.get(url(leader), '/metrics')).text).samples.get(scrapes) ?? 0;
  const m = await client.get(url(leader), '/metrics');
  t.is(m.status, 200);
  t.is(m.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const { types, samples } = parsePrometheus(m.text);
  const status = cluster.nodes.get(leader)!.raft.status();
  t.is(types.get('rale_term'), 'gauge');
  t.is(samples.get('rale_term'), status.term);
  t.is(samples.get('rale_up'), 1);
  // The process's own memory (this test runs the nodes in its own process).
  t.is(types.get('process_resident_memory_bytes'), 'gauge');
  t.true(samples.get('process_resident_memory_bytes')! > 10 * 1024 * 1024);
  t.true(samples.get('nodejs_heap_size_used_bytes')! > 0 && samples.get('nodejs_heap_size_used_bytes')! <= samples.get('nodejs_heap_size_total_bytes')!);
  t.true(samples.has('nodejs_external_memory_bytes'));
  t.is(samples.get(`rale_node_info{node_id="${leader}"}`), 1);
  t.is(samples.get('rale_role{role="leader"}'), 1);
  t.is(samples.get('rale_role{role="follower"}'), 0);
  t.true(samples.get('rale_commit_index')! >= status.commit - 5);
  t.true(samples.get('rale_applied_index')! > 0);
  t.true(samples.get('rale_proposals_submitted_total')! >= 1);
  t.is(types.get('rale_elections_seen_total'), 'counter');
  t.true(samples.has('rale_elections_seen_total'));
  t.true(samples.get('rale_entries_applied_total')! > 0);
  for (const f of followers) {
    t.true(samples.has(`rale_follower_lag_entries{follower="${f}"}`), `lag of ${f}`);
    t.true(samples.get(`rale_follower_match_index{follower="${f}"}`)! > 0);
  }
  t.is(samples.get(scrapes), before + 1, 'the previous scrape was counted');
  t.is(types.get('rale_proposal_apply_seconds'), 'histogram');
  const buckets = [...samples.entries()].filter(([k]) => k.startsWith('rale_proposal_apply_seconds_bucket')).map(([, v]) => v);
  t.true(buckets.length > 2);
  for (let k = 1; k < buckets.length; k++) t.true(buckets[k]! >= buckets[k - 1]!, 'buckets are cumulative');
  t.is(buckets[buckets.length - 1], samples.get('rale_proposal_apply_seconds_count'));
  t.true(samples.get('rale_proposal_apply_seconds_count')! >= 1);
  t.true(samples.get('rale_proposal_apply_seconds_sum')! > 0);

  const onFollower = parsePrometheus((await client.get(url(followers[0]!), '/metrics')).text).samples;
  t.is(onFollower.get('rale_role{role="follower"}'), 1);
  t.false([...onFollower.keys()].some((k) => k.startsWith('rale_follower_lag_entries{')), 'only the leader reports lag');
});

test.serial('bad input answers the error envelope with the right status and field, and the server keeps serving', async (t) => {
  const { leader, followers } = await roles();
  const f = url(followers[0]!);
  const propose = (body: unknown, headers?: Record<string, string>) => client.post(f, '/consensus/propose', body, { headers });
  expectError(t, await client.call(f, 'POST', '/consensus/propose', { rawBody: '{"value": ', headers: { 'content-type': 'application/json' } }), 400, 'INVALID_ARGUMENT', 'body');
  expectError(t, await propose([1, 2]), 400, 'INVALID_ARGUMENT', 'body');
  const bare = await client.call(f, 'POST', '/consensus/propose', { rawBody: '"configuration_update"', headers: { 'content-type': 'application/json' } });
  expectError(t, bare, 400, 'INVALID_ARGUMENT', 'body');
  t.regex(bare.body.error.message, /must be a JSON object, got string/);
  expectError(t, await propose({}), 400, 'INVALID_ARGUMENT', 'value');
  expectError(t, await propose({ value: 1, valeu: 2 }), 400, 'INVALID_ARGUMENT', 'valeu');
  expectError(t, await propose({ value: { op: 'set', key: 5, value: 1 } }), 400, 'INVALID_ARGUMENT', 'value.key');
  expectError(t, await propose({ value: { op: 'set', key: '', value: 1 } }), 400, 'INVALID_ARGUMENT', 'value.key');
  expectError(t, await propose({ value: { op: 'set', key: 'k' } }), 400, 'INVALID_ARGUMENT', 'value.value');
  expectError(t, await propose({ value: { op: 'cas', key: 'k', value: 1 } }), 400, 'INVALID_ARGUMENT', 'value.expected');
  expectError(t, await propose({ value: { op: 'explode', key: 'k' } }), 400, 'INVALID_ARGUMENT', 'value.op');
  expectError(t, await propose({ value: { op: 'register_handler', name: 'x', function: 'pg_sleep(double precision)' } }), 400, 'INVALID_ARGUMENT', 'value.op');
  const noHandler = await propose({ value: { op: 'call', handler: 'nope', payload: {} } });
  expectError(t, noHandler, 400, 'INVALID_ARGUMENT', 'value.handler');
  t.regex(noHandler.body.error.hint, /register_handler/, "the database's hint is passed on");
  expectError(t, await propose({ value: 1 }, { 'Idempotency-Key': 'has space' }), 400, 'INVALID_ARGUMENT', 'Idempotency-Key');
  expectError(t, await client.call(f, 'POST', '/consensus/propose', { rawBody: 'value=1', headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
  // Over the API's 1 MiB body limit, and under it but over the replicated max_command_bytes.
  const huge = await propose({ value: 'x'.repeat(1024 * 1024 + 10) });
  expectError(t, huge, 413, 'PAYLOAD_TOO_LARGE');
  t.is(huge.body.error.limit, 1024 * 1024);
  expectError(t, await propose({ value: 'x'.repeat(70_000) }), 413, 'ENTRY_TOO_LARGE');

  const join = (body: unknown) => client.post(f, '/cluster/join', body);
  expectError(t, await join({ node_id: 7, address: 'a:1' }), 400, 'INVALID_ARGUMENT', 'node_id');
  expectError(t, await join({ node_id: 'bad id!', address: 'a:1' }), 400, 'INVALID_ARGUMENT', 'node_id');
  expectError(t, await join({ node_id: 'node9' }), 400, 'INVALID_ARGUMENT', 'address');
  expectError(t, await join({ node_id: 'node9', address: 'has space:1' }), 400, 'INVALID_ARGUMENT', 'address');
  expectError(t, await join({ node_id: 'node9', address: 'a:1', role: 'voter' }), 400, 'INVALID_ARGUMENT', 'role');
  expectError(t, await client.post(f, '/consensus/transfer-leader', {}), 400, 'INVALID_ARGUMENT', 'node_id');
  expectError(t, await client.post(f, '/consensus/transfer-leader', { node_id: 'nope' }), 404, 'UNKNOWN_NODE');
  expectError(t, await client.delete(f, '/cluster/nodes/nope'), 404, 'UNKNOWN_NODE');
  expectError(t, await client.delete(f, '/cluster/nodes/bad%20id'), 400, 'INVALID_ARGUMENT', 'node_id');
  expectError(t, await client.get(f, '/logs/nope'), 404, 'UNKNOWN_NODE');
  expectError(t, await client.get(f, `/logs/${followers[0]}?limit=0`), 400, 'INVALID_ARGUMENT', 'limit');
  expectError(t, await client.get(f, `/logs/${followers[0]}?from=abc`), 400, 'INVALID_ARGUMENT', 'from');
  expectError(t, await client.get(f, `/logs/${followers[0]}?form=1`), 400, 'INVALID_ARGUMENT', 'form');
  expectError(t, await client.get(f, '/kv/alpha?consistency=eventual'), 400, 'INVALID_ARGUMENT', 'consistency');
  expectError(t, await client.get(f, '/kv/alpha?consistency=local&consistency=local'), 400, 'INVALID_ARGUMENT', 'consistency');

  const wrongMethod = await client.call(f, 'PUT', '/cluster/status', { body: {} });
  expectError(t, wrongMethod, 405, 'METHOD_NOT_ALLOWED');
  t.is(wrongMethod.headers.get('allow'), 'GET, HEAD');
  expectError(t, await client.get(f, '/no/such/endpoint'), 404, 'NOT_FOUND');

  // Authentication: everything but /health needs the token.
  const noToken = await client.get(f, '/cluster/status', { token: null });
  expectError(t, noToken, 401, 'UNAUTHORIZED');
  t.is(noToken.headers.get('www-authenticate'), 'Bearer realm="rale"');
  expectError(t, await client.get(f, '/cluster/status', { token: TOKEN + 'x' }), 401, 'UNAUTHORIZED');
  expectError(t, await client.get(f, '/metrics', { token: '' }), 401, 'UNAUTHORIZED');
  expectError(t, await client.get(f, '/cluster/status', { token: null, headers: { authorization: `Basic ${TOKEN}` } }), 401, 'UNAUTHORIZED');
  // Authentication comes before the body: an unauthenticated oversized body is a 401, not a 413.
  expectError(t, await client.post(f, '/consensus/propose', { value: 'x'.repeat(2 * 1024 * 1024) }, { token: null }), 401, 'UNAUTHORIZED');
  t.is((await client.get(f, '/health', { token: null })).status, 200);

  // Nothing was proposed by any of the refused requests, and every node still serves.
  for (const id of cluster.ids) t.is((await client.get(url(id), '/cluster/status')).status, 200);
  const { rows } = await cluster.sql.get(leader)!.query(`SELECT count(*)::int AS n FROM rale.kv WHERE key IN ('k', 'x')`);
  t.is(rows[0].n, 0);
  t.deepEqual(internalErrors, []);
});

test.serial('bridges mount routes after creation, behind the token unless told otherwise, with the same envelope', async (t) => {
  const id = cluster.ids[0]!;
  const api = apis.get(id)!;
  const router = express.Router();
  router.get('/ping', (_req, res) => {
    res.json({ pong: true });
  });
  router.get('/fail', () => {
    throw new HttpError(409, 'INVALID_ARGUMENT', 'bridge says no', { field: 'x' });
  });
  api.mount('/bridges/echo', router);
  api.mount('/bridges/open', router, { auth: false });
  const base = url(id);
  const auth = { authorization: `Bearer ${TOKEN}` };
  t.is((await fetch(`${base}/bridges/echo/ping`)).status, 401);
  const ok = await fetch(`${base}/bridges/echo/ping`, { headers: auth });
  t.deepEqual(await ok.json(), { pong: true });
  t.is((await fetch(`${base}/bridges/open/ping`)).status, 200);
  const fail = await fetch(`${base}/bridges/echo/fail`, { headers: auth });
  t.is(fail.status, 409);
  t.deepEqual(((await fail.json()) as { error: unknown }).error, { code: 'INVALID_ARGUMENT', message: 'bridge says no', hint: ErrorCodes.INVALID_ARGUMENT, field: 'x' });
  t.is((await fetch(`${base}/bridges/echo/nothing-here`, { headers: auth })).status, 404);
});

test.serial('join a fourth node (through a follower, relayed to the leader), then remove it (forwarded from another follower)', async (t) => {
  const { leader, followers } = await roles();
  const server4: PostgresInstance = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-http-node4-${process.pid}`), persistent: false });
  cleanups.push(() => server4.stop());
  // A new node: no bootstrap, it waits to be joined.
  const node4 = await PgNode.start({
    id: 'node4',
    connectionString: server4.connectionString,
    transport: cluster.network.transport(),
    tickMs: 20,
    core: { electionTicks: 10, heartbeatTicks: 2 },
    seed: 4,
  });
  cleanups.push(() => node4.stop());
  await startApi(node4);
  cleanups.push(() => stopApi('node4'));

  const before = await client.get(url('node4'), '/health', { token: null });
  expectError(t, before, 503, 'UNHEALTHY');
  t.true(before.body.error.reasons.some((r: string) => r.startsWith('membership')));

  const joined = await client.post(url(followers[0]!), '/cluster/join', { node_id: 'node4', address: 'memory://node4' });
  t.is(joined.status, 200, joined.text);
  t.is(joined.headers.get('x-rale-relayed-to'), leader);
  t.is(joined.body.role, 'voter');
  t.true(joined.body.changed);
  t.true(joined.body.voters.includes('node4'));
  t.is(joined.body.address, 'memory://node4');
  for (const id of [...cluster.ids, 'node4']) {
    await waitFor(`${id} sees four voters`, async () => (await client.get(url(id), '/cluster/status')).body.voters.length === 4);
  }
  const members = (await client.get(url(leader), '/cluster/status')).body.members;
  t.is(members.find((m: { node_id: string }) => m.node_id === 'node4').address, 'memory://node4');
  // The new node has the replicated state and serves reads.
  const alpha = await client.get(url('node4'), '/kv/alpha');
  t.deepEqual(alpha.body.value, { n: 2 });
  await waitFor('node4 healthy', async () => (await client.get(url('node4'), '/health')).status === 200);
  const w = await client.post(url('node4'), '/consensus/propose', { value: { op: 'set', key: 'from-node4', value: true } });
  t.is(w.status, 200);

  const again = await client.post(url(leader), '/cluster/join', { node_id: 'node4', address: 'memory://node4' });
  t.is(again.status, 200);
  t.false(again.body.changed);

  const removed = await client.delete(url(followers[1]!), '/cluster/nodes/node4');
  t.is(removed.status, 200, removed.text);
  t.is(removed.headers.get('x-rale-relayed-to'), null, 'forwarded over the peer transport, not relayed');
  t.true(removed.body.removed);
  t.false(removed.body.voters.includes('node4'));
  for (const id of cluster.ids) {
    await waitFor(`${id} sees three voters`, async () => (await client.get(url(id), '/cluster/status')).body.voters.length === 3);
  }
  // node4 may never hear of its removal (the leader stops replicating to it at once), but it loses its leader.
  await waitFor('node4 unhealthy', async () => (await client.get(url('node4'), '/health')).status === 503);

  // A stopped node's API still answers, with 503s in the envelope.
  await node4.stop();
  const stopped = await client.get(url('node4'), '/health');
  expectError(t, stopped, 503, 'UNHEALTHY');
  t.false(stopped.body.error.checks.raft.ok);
  expectError(t, await client.get(url('node4'), '/cluster/status'), 503, 'STOPPED');
  expectError(t, await client.get(url('node4'), '/kv/alpha?consistency=local'), 503, 'STORAGE');
  t.is(parsePrometheus((await client.get(url('node4'), '/metrics')).text).samples.get('rale_up'), 0);
  await stopApi('node4');
  await server4.stop();
});

test.serial('transfer leadership through a follower (relayed) and on the leader; 421 where no relay is possible', async (t) => {
  const { leader, followers } = await roles();
  const [f1, f2] = followers as [string, string];
  const viaFollower = await client.post(url(f1), '/consensus/transfer-leader', { node_id: f2 });
  t.is(viaFollower.status, 200, viaFollower.text);
  t.is(viaFollower.headers.get('x-rale-relayed-to'), leader);
  t.deepEqual({ ...viaFollower.body, term: 0 }, { leader: f2, previous_leader: leader, term: 0, changed: true });
  for (const id of cluster.ids) await waitFor(`${id} follows ${f2}`, async () => (await client.get(url(id), '/consensus/leader')).body.node_id === f2);

  const back = await client.post(url(f2), '/consensus/transfer-leader', { node_id: leader });
  t.is(back.status, 200, back.text);
  t.is(back.headers.get('x-rale-relayed-to'), null);
  t.is(back.body.leader, leader);
  t.true(back.body.term > viaFollower.body.term);
  const same = await client.post(url(f1), '/consensus/transfer-leader', { node_id: leader });
  t.false(same.body.changed);

  // A node configured without peer API URLs cannot relay: it names the leader instead.
  await waitFor(`${f1} follows ${leader}`, () => cluster.nodes.get(f1)!.raft.status().leader === leader);
  const bare = createApi(pgNodeBackend(cluster.nodes.get(f1)!), { token: TOKEN });
  const bareServer = await serve(bare);
  try {
    const r = await client.post(bareServer.url, '/consensus/transfer-leader', { node_id: f2 });
    expectError(t, r, 421, 'NOT_LEADER');
    t.is(r.body.error.leader, leader);
    t.true('leader_address' in r.body.error);
    const logs = await client.get(bareServer.url, `/logs/${f2}`);
    expectError(t, logs, 421, 'WRONG_NODE');
    t.is(logs.body.error.node_id, f2);
    // Proposals need no relay: RaftNode forwards them over the peer transport.
    t.is((await client.post(bareServer.url, '/consensus/propose', { value: 'no relay needed' })).status, 200);
  } finally {
    bare.close();
    await bareServer.close();
  }
});

test.serial('remove the leader: a new leader takes over; the old one is unhealthy until it joins again', async (t) => {
  const { leader: old, followers } = await roles();
  const removed = await client.delete(url(old), `/cluster/nodes/${old}`);
  t.is(removed.status, 200, removed.text);
  t.deepEqual([...removed.body.voters].sort(), [...followers].sort());
  const newLeader = await waitFor('a new leader', async () => {
    const views = await Promise.all(followers.map((id) => client.get(url(id), '/consensus/leader')));
    const ids = new Set(views.map((v) => (v.status === 200 ? v.body.node_id : null)));
    const [only] = ids;
    return ids.size === 1 && typeof only === 'string' && only !== old && only;
  });
  t.true(followers.includes(newLeader));
  const health = await client.get(url(old), '/health');
  expectError(t, health, 503, 'UNHEALTHY');
  t.false(health.body.error.checks.membership.ok);
  t.is((await client.get(url(old), '/consensus/leader')).body.error.code, 'NO_LEADER', 'the removed node knows no leader any more');
  t.is((await client.post(url(followers[0]!), '/consensus/propose', { value: 'after the leader left' })).status, 200);

  const rejoined = await client.post(url(newLeader), '/cluster/join', { node_id: old, address: `memory://${old}` });
  t.is(rejoined.status, 200, rejoined.text);
  t.true(rejoined.body.changed);
  await waitFor(`${old} healthy again`, async () => (await client.get(url(old), '/health')).status === 200);
  const read = await client.get(url(old), `/kv/${CONSENSUS_VALUE_KEY}`);
  t.is(read.body.value, 'after the leader left');
});

test.serial('health: a follower cut off from the leader reports 503 with its reasons, and recovers', async (t) => {
  const { leader, followers } = await roles();
  for (const id of cluster.ids) {
    const h = await client.get(url(id), '/health', { token: null });
    t.is(h.status, 200, h.text);
    t.true(Object.values(h.body.checks).every((c) => (c as { ok: boolean }).ok));
  }
  const cut = followers[0]!;
  cluster.network.isolate(cut);
  try {
    const h = await waitFor('the cut-off follower reports 503', async () => {
      const r = await client.get(url(cut), '/health');
      return r.status === 503 && r;
    });
    expectError(t, h, 503, 'UNHEALTHY');
    t.true(h.body.error.reasons.some((r: string) => /^leader/.test(r)), JSON.stringify(h.body.error.reasons));
    t.true(h.body.error.checks.postgres.ok);
    t.is(h.headers.get('retry-after'), '1');
    t.is((await client.get(url(leader), '/health')).status, 200, 'the leader still has a quorum');
    t.is((await client.get(url(followers[1]!), '/health')).status, 200);
    // A linearizable read on the cut-off node cannot be confirmed.
    const read = await client.get(url(cut), '/kv/alpha');
    t.true([503, 504].includes(read.status), read.text);
  } finally {
    cluster.network.heal();
  }
  await waitFor('the follower recovers', async () => (await client.get(url(cut), '/health')).status === 200);
});

test.serial('health: a node whose PostgreSQL does not answer reports 503 naming postgres, and recovers; the others keep serving', async (t) => {
  const { leader, followers } = await roles();
  const frozen = followers[1]!;
  // Freeze the server (postmaster and every backend): it neither answers nor fails, the hardest
  // case for a health check. Stopping it for good is not used here: a PgNode whose server is gone
  // keeps a pg-listen reconnect timer that never lets the test process exit.
  const processes = processTree(cluster.servers.get(frozen)!.pid);
  for (const pid of processes) process.kill(pid, 'SIGSTOP');
  try {
    const h = await client.get(url(frozen), '/health');
    expectError(t, h, 503, 'UNHEALTHY');
    t.false(h.body.error.checks.postgres.ok);
    t.regex(h.body.error.checks.postgres.detail, /no answer within 500 ms/);
    t.true(h.body.error.reasons.some((r: string) => r.startsWith('postgres')));
    t.is((await client.post(url(leader), '/consensus/propose', { value: 'two of three' })).status, 200);
    t.is((await client.get(url(followers[0]!), '/health')).status, 200);
  } finally {
    for (const pid of processes) process.kill(pid, 'SIGCONT');
  }
  await waitFor('the node recovers', async () => (await client.get(url(frozen), '/health')).status === 200);
  t.is((await client.get(url(frozen), `/kv/${CONSENSUS_VALUE_KEY}`)).body.value, 'two of three');
});

test.serial('every documented operation was exercised with a 200 that matched its schema, and nothing failed unexpectedly', (t) => {
  for (const { method, path: template } of operations(client.spec)) {
    t.true(client.seen.has(`${method.toUpperCase()} ${template} 200`), `${method} ${template}`);
  }
  t.deepEqual(internalErrors, []);
});
