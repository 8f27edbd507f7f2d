/**
 * The Phalanx bridge on a real three-node rale cluster: three sidecar
 * processes, one embedded PostgreSQL each, the bridge loaded on every node
 * (and a bridge that throws on purpose on node1).
 *
 *  - a Phalanx client (application/grpc+json) writes on followers and the
 *    leader and reads everywhere;
 *  - a Phalanx node (test/bridges/phalanx-fake-node.ts) joins as a learner,
 *    receives every entry, applies SET/DELETE and commits what rale commits;
 *    it cannot be promoted, and its bids to lead are refused;
 *  - Phalanx's debug HTTP answers on every node;
 *  - the throwing bridge is contained: /health shows it, consensus goes on.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { freePort, startPostgresCluster, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { spawnSidecar, type SidecarProcess } from '../../sidecar/src/process/spawn.ts';
import {
  decodeProposeResponse,
  decodeReadResponse,
  decodeRequestVoteResponse,
  encodeCommand,
  encodeProposeRequest,
  encodeReadRequest,
  encodeRequestVoteRequest,
  type ProposeResponse,
  type ReadResponse,
} from '../../bridges/phalanx/codec.ts';
import { GrpcCallError, GrpcJsonClient } from '../../bridges/phalanx/grpc-json-client.ts';
import { FAULTY_SERVICE } from '../fixtures/bridges/faulty.ts';
import { FakePhalanxNode } from './phalanx-fake-node.ts';

const SECRET = 'phalanx-e2e-cluster-secret-0123456789';
const ids = ['node1', 'node2', 'node3'];
const utf8 = (s: string) => new TextEncoder().encode(s);

interface Node {
  id: string;
  peerPort: number;
  apiPort: number;
  debugPort: number;
  sidecar: SidecarProcess;
  kv: GrpcJsonClient;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function getJson(url: string): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any -- tests read the fields they check
  const res = await fetch(url);
  const text = await res.text();
  return { status: res.status, body: text === '' ? null : JSON.parse(text) };
}

test('Phalanx clients and a Phalanx learner on a three-node rale cluster', async (t) => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'rale-phalanx-e2e-'));
  await fs.chmod(root, 0o755);
  const nodes: Node[] = [];
  let servers: PostgresInstance[] = [];
  const fake = new FakePhalanxNode('px1');
  const lines: string[] = [];
  t.teardown(async () => {
    for (const n of nodes) n.kv.close();
    await Promise.all(nodes.map((n) => n.sidecar.stop(5_000)));
    await fake.close();
    await Promise.all(servers.map((s) => s.stop()));
    await fs.rm(root, { recursive: true, force: true });
  });
  try {
    servers = await startPostgresCluster({ root, count: 3, names: ids, persistent: false });
    const ports = await Promise.all(ids.map(async () => ({ peerPort: await freePort(), apiPort: await freePort(), debugPort: await freePort() })));
    const members = Object.fromEntries(ids.map((id, i) => [id, { peerPort: ports[i]!.peerPort, apiPort: ports[i]!.apiPort }]));
    const faulty = fileURLToPath(new URL('../fixtures/bridges/faulty.ts', import.meta.url));
    for (const [i, id] of ids.entries()) {
      const server = servers[i] as PostgresInstance;
      const { peerPort, apiPort, debugPort } = ports[i]!;
      const bridges: unknown[] = [{ name: 'phalanx', options: { debugListen: `127.0.0.1:${debugPort}` } }];
      if (id === 'node1') bridges.push({ module: faulty, options: { fail: 'handlers' } });
      const configFile = path.join(root, `${id}.json`);
      await fs.writeFile(configFile, JSON.stringify({ nodeId: id, databaseUrl: server.connectionString, bridges }));
      const sidecar = spawnSidecar({
        id,
        databaseUrl: server.connectionString,
        peerPort,
        apiPort,
        members,
        bootstrap: ids,
        clusterSecret: SECRET,
        extraArgs: ['--config', configFile, '--tick-ms', '20'],
        onLine: (line) => lines.push(`${id} ${line}`),
      });
      nodes.push({ id, peerPort, apiPort, debugPort, sidecar, kv: new GrpcJsonClient(`127.0.0.1:${peerPort}`) });
    }
    await Promise.all(nodes.map((n) => n.sidecar.waitHealthy(60_000)));
  } catch (err) {
    t.log(lines.slice(-60).join('\n'));
    throw err;
  }
  const node = (id: string) => nodes.find((n) => n.id === id) as Node;

  // Who leads, as Phalanx's /health tells it.
  const leaderId = await waitFor('a leader', async () => {
    for (const n of nodes) {
      const { body } = await getJson(`http://127.0.0.1:${n.debugPort}/health`);
      if (body.state === 'LEADER') return n.id;
    }
    return undefined;
  });
  const leader = node(leaderId);
  const followers = nodes.filter((n) => n.id !== leaderId);
  const propose = async (n: Node, command: { op: string; key: string; value: string }): Promise<ProposeResponse> =>
    decodeProposeResponse(await n.kv.unary('/phalanx.KV/Propose', utf8(encodeProposeRequest({ data: utf8(encodeCommand(command)) })), 10_000));
  const read = async (n: Node, key: string): Promise<ReadResponse> => decodeReadResponse(await n.kv.unary('/phalanx.KV/Read', utf8(encodeReadRequest({ key })), 10_000));

  // --- Phalanx clients: write on a follower (forwarded) and the leader, read everywhere.
  t.deepEqual(await propose(followers[0]!, { op: 'SET', key: 'greeting', value: 'hello' }), { success: true, leader_addr: '', error: '' });
  t.deepEqual(await propose(leader, { op: 'SET', key: 'other', value: 'x' }), { success: true, leader_addr: '', error: '' });
  for (const n of nodes) t.deepEqual(await read(n, 'greeting'), { value: 'hello', found: true, leader_addr: '', error: '' });
  t.deepEqual(await propose(followers[1]!, { op: 'DELETE', key: 'other', value: '' }), { success: true, leader_addr: '', error: '' });
  t.deepEqual(await read(leader, 'other'), { value: '', found: false, leader_addr: '', error: '' });
  // rale's own REST API sees what Phalanx clients wrote.
  t.is((await getJson(`http://127.0.0.1:${followers[1]!.apiPort}/api/v1/kv/greeting?consistency=linearizable`)).status, 200);

  // --- A Phalanx node joins as a learner and receives the log.
  await fake.listen();
  const joined = await fetch(`http://127.0.0.1:${followers[0]!.apiPort}/phalanx/members`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ node_id: 'px1', address: `127.0.0.1:${fake.port}` }),
  });
  t.is(joined.status, 200, await joined.clone().text());
  t.like(await joined.json(), { node_id: 'px1', role: 'learner', changed: true });
  t.deepEqual(await propose(followers[1]!, { op: 'SET', key: 'seen-by-phalanx', value: 'yes' }), { success: true, leader_addr: '', error: '' });
  await waitFor('the Phalanx node to apply the entries', () => fake.kv.get('seen-by-phalanx') === 'yes' && fake.kv.get('greeting') === 'hello' && !fake.kv.has('other'));
  t.true(fake.contentTypes.every((c) => c === 'application/grpc+json'));
  // It holds rale's log entry for entry, and commits what rale committed (its commit never passes rale's).
  const status = (await getJson(`http://127.0.0.1:${leader.debugPort}/debug/status`)).body;
  t.true(fake.commitIndex <= status.commit_index);
  await waitFor('the Phalanx node to commit everything', async () => fake.commitIndex === (await getJson(`http://127.0.0.1:${leader.debugPort}/debug/status`)).body.commit_index);
  const log = (await getJson(`http://127.0.0.1:${leader.apiPort}/api/v1/logs/${leaderId}?from=1&limit=1000`)).body;
  const raleLog = (log.entries ?? log) as Array<{ index: number; term: number }>;
  t.true(raleLog.length >= 5, JSON.stringify(log).slice(0, 300));
  for (const e of raleLog) t.is(fake.log[Number(e.index)]?.Term, Number(e.term), `entry ${e.index}`);
  t.is(fake.lastIndex(), Number(raleLog.at(-1)?.index));

  // The learner cannot be promoted through rale's REST join: the join answers that it stays a learner, and why.
  const promote = await fetch(`${leader.sidecar.apiUrl}/api/v1/cluster/join`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ node_id: 'px1', address: `phalanx://127.0.0.1:${fake.port}` }),
  });
  const promoted = (await promote.json()) as { role: string; changed: boolean; learner_reason?: string };
  t.is(promote.status, 200);
  t.like(promoted, { role: 'learner', changed: false });
  t.regex(promoted.learner_reason ?? '', /cannot become a voter/);
  const members = (await getJson(`${leader.sidecar.apiUrl}/api/v1/cluster/status`)).body;
  t.true(JSON.stringify(members).includes('px1'));

  // Its bid to lead is refused (pre-vote and vote); a stranger is not let in at all.
  const vote = async (candidate: string, preVote: boolean) =>
    decodeRequestVoteResponse(await followers[0]!.kv.unary('/phalanx.Consensus/RequestVote', utf8(encodeRequestVoteRequest({ Term: 1000, CandidateID: candidate, LastLogIndex: 1e6, LastLogTerm: 999, IsPreVote: preVote })), 5000));
  t.like(await vote('px1', true), { VoteGranted: false, IsPreVote: true });
  t.like(await vote('px1', false), { VoteGranted: false, IsPreVote: false });
  const stranger = await t.throwsAsync(vote('nobody', false), { instanceOf: GrpcCallError });
  t.is(stranger?.code, grpc.status.PERMISSION_DENIED);

  // --- Debug HTTP with Phalanx's fields.
  const leaderStatus = (await getJson(`http://127.0.0.1:${leader.debugPort}/debug/status`)).body;
  t.like(leaderStatus, { node_id: leaderId, state: 'LEADER', leader_id: leaderId, kv_data: { greeting: 'hello', 'seen-by-phalanx': 'yes' } });
  t.deepEqual([...leaderStatus.peers].sort(), [...ids.filter((id) => id !== leaderId), 'px1'].sort());
  t.is(leaderStatus.kv_size, 2);
  t.true(leaderStatus.metrics.messages_sent_total > 0);
  for (const f of followers) t.like((await getJson(`http://127.0.0.1:${f.debugPort}/health`)).body, { status: 'ok', node: f.id, state: 'FOLLOWER' });

  // --- The throwing bridge on node1 is contained: its handler fails, /health shows it, consensus goes on.
  const Client = grpc.makeGenericClientConstructor(FAULTY_SERVICE, 'Faulty');
  const faultyClient = new Client(`127.0.0.1:${node('node1').peerPort}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, (r: unknown, cb: (e: grpc.ServiceError | null) => void) => void>;
  const boom = await new Promise<grpc.ServiceError | null>((resolve) => (faultyClient.Boom as (r: unknown, cb: (e: grpc.ServiceError | null) => void) => void).call(faultyClient, {}, resolve));
  faultyClient.close();
  t.is(boom?.code, grpc.status.INTERNAL);
  const health = (await getJson(`http://127.0.0.1:${node('node1').apiPort}/api/v1/health`)).body;
  t.false(health.checks.bridge_faulty.ok);
  t.true(health.checks.bridge_phalanx.ok, health.checks.bridge_phalanx.detail);
  t.deepEqual(await propose(node('node1'), { op: 'SET', key: 'after-faults', value: '1' }), { success: true, leader_addr: '', error: '' });
  await waitFor('the Phalanx node to apply it', () => fake.kv.get('after-faults') === '1');
});
