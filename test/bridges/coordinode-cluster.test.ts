/**
 * End to end: three rale sidecar processes (one embedded PostgreSQL each)
 * with the coordinode bridge loaded in std mode, and a fake CoordiNode node
 * (test/bridges/coordinode-fake.ts) speaking RaftService. The fake joins
 * through the REST API, receives the log over StreamAppend, becomes a voter,
 * and then is needed: with the leader gone, the two remaining rale nodes
 * can elect a leader and commit only with the fake's vote and
 * acknowledgement (3 of 4 voters). A handler made to throw
 * (throwInHandler) is contained: the call fails INTERNAL, /health shows it,
 * consensus goes on.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { freePort, startPostgresCluster, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { spawnSidecar, type SidecarProcess } from '../../sidecar/src/process/spawn.ts';
import { encodeRaftPayload } from '../../bridges/coordinode/codec.ts';
import { MARK_CONFIG } from '../../bridges/coordinode/mapping.ts';
import { METHOD_PATHS } from '../../bridges/coordinode/service.ts';
import { FakeCoordinode } from './coordinode-fake.ts';

const ids = ['node1', 'node2', 'node3'];
const SECRET = 'coordinode-e2e-cluster-secret-0123456789';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(100);
  }
}

async function api(base: string, method: string, route: string, body?: unknown, timeoutMs = 30_000): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  let res: Response;
  try {
    res = await fetch(`${base}/api/v1${route}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new Error(`${method} ${base}${route} failed: ${(err as Error).message}`);
  }
  return { status: res.status, body: await res.json().catch(() => null) };
}

const text = new TextDecoder();
function fakeCommands(fake: FakeCoordinode): string[] {
  return fake.log.flatMap((e) => (e.payload.kind === 'normal' && Array.isArray(e.payload.data) ? [text.decode(new Uint8Array(e.payload.data as number[]))] : []));
}

test('coordinode e2e: a fake CoordiNode node joins, replicates, votes and is counted toward commit; a throwing handler is contained', async (t) => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'rale-coordinode-e2e-'));
  await fs.chmod(root, 0o755);
  const sidecars = new Map<string, SidecarProcess>();
  const lines: string[] = [];
  let servers: PostgresInstance[] = [];
  const fake = new FakeCoordinode({ id: 7n, mode: 'std', resultEvery: 2, flushAfterMs: 20 });
  t.teardown(async () => {
    if (process.env.COORDINODE_E2E_LOG) console.log(lines.join('\n'));
    await Promise.allSettled([...sidecars.values()].map((s) => s.stop()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    await fake.close();
    await fs.rm(root, { recursive: true, force: true });
  });
  await fake.listen();
  servers = await startPostgresCluster({ root, count: 3, names: ids });
  const members: Record<string, { peerPort: number; apiPort: number }> = {};
  for (const id of ids) members[id] = { peerPort: await freePort(), apiPort: await freePort() };
  const options = { nodeIds: { '1': 'node1', '2': 'node2', '3': 'node3', '7': 'cn7' }, leaderIdMode: 'std', throwInHandler: 'TransferLeader' };
  for (const [k, id] of ids.entries()) {
    const file = path.join(root, `${id}.json`);
    await fs.writeFile(file, JSON.stringify({ bridges: [{ name: 'coordinode', options }] }));
    const m = members[id] as { peerPort: number; apiPort: number };
    sidecars.set(
      id,
      spawnSidecar({ id, databaseUrl: (servers[k] as PostgresInstance).connectionString, peerPort: m.peerPort, apiPort: m.apiPort, members, bootstrap: ids, clusterSecret: SECRET, extraArgs: ['--config', file], onLine: (line) => lines.push(`${id} ${line}`) }),
    );
  }
  await Promise.all([...sidecars.values()].map((s) => s.waitHealthy(30_000)));
  const url = (id: string) => (sidecars.get(id) as SidecarProcess).apiUrl;
  const leaderOf = async (among: string[]) =>
    waitFor('a leader', async () => {
      const r = await api(url(among[0] as string), 'GET', '/consensus/leader');
      const leader = r.body?.leader ?? r.body?.leader_id ?? r.body?.node_id;
      return typeof leader === 'string' && among.includes(leader) ? (leader as string) : null;
    });
  const leader = await leaderOf(ids);

  // A write before the join: the fake must get it from the log.
  t.log('leader', leader);
  const first = await api(url(leader), 'POST', '/consensus/propose', { value: { op: 'set', key: 'before', value: 1 } });
  t.is(first.status, 200, JSON.stringify(first.body));

  // Join: learner, catch-up over StreamAppend (fewer results than requests), promotion.
  t.log('first written');
  // The server gives a catch-up 30 s and answers TIMEOUT ("join again to finish the join"), which a loaded machine can hit: do as it says, once.
  const joinBody = { node_id: 'cn7', address: `coordinode://127.0.0.1:${fake.port}` };
  let join = await api(url(leader), 'POST', '/cluster/join', joinBody, 60_000);
  if (join.status === 504) {
    t.log(`join timed out once: ${JSON.stringify(join.body)}`);
    join = await api(url(leader), 'POST', '/cluster/join', joinBody, 60_000);
  }
  t.is(join.status, 200, JSON.stringify(join.body));
  t.is(join.body.role, 'voter');
  t.true(fakeCommands(fake).some((c) => c.includes('"before"')), 'the fake holds the entry written before it joined');
  t.true(
    fake.log.some((e) => e.payload.kind === 'normal' && Array.isArray(e.payload.data) && (e.payload.data as number[])[1] === MARK_CONFIG[1] && text.decode(new Uint8Array(e.payload.data as number[])).includes('cn7')),
    'rale config entries travel as marked Normal entries',
  );
  t.true(fake.streamFrames > fake.streamResults, 'pipelined: fewer results than requests');

  // Containment: the TransferLeader handler throws; the caller gets INTERNAL, /health shows it.
  const client = new grpc.Client(`127.0.0.1:${(members[leader] as { peerPort: number }).peerPort}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const body = encodeRaftPayload(fake.codec.encodeTransferLeaderRequest({ fromLeader: { leaderId: { term: 1n, nodeId: 7n }, committed: true }, toNodeId: 1n, lastLogId: null }));
  const thrown = await FakeCoordinode.unaryCall(client, METHOD_PATHS.TransferLeader, body);
  t.is(thrown.error?.code, grpc.status.INTERNAL);
  t.regex(thrown.error?.details ?? '', /throws on purpose/);
  const health = await api(url(leader), 'GET', '/health');
  t.regex(JSON.stringify(health.body), /bridge_coordinode[^}]*TransferLeader handler throws on purpose/);

  // The leader dies: 2 rale voters of 4 remain, so the fake's vote and ack are needed.
  const votesBefore = fake.votesGranted.length;
  await (sidecars.get(leader) as SidecarProcess).stop();
  sidecars.delete(leader);
  const rest = ids.filter((id) => id !== leader);
  const next = await leaderOf(rest);
  t.true(fake.votesGranted.length > votesBefore, 'the fake granted the new leader its vote');
  t.is(fake.votesGranted.at(-1)?.vote.leaderId.nodeId, BigInt(next.slice(4)));
  const after = await api(url(next), 'POST', '/consensus/propose', { value: { op: 'set', key: 'after', value: 2 } });
  t.is(after.status, 200, JSON.stringify(after.body));
  t.true(fakeCommands(fake).some((c) => c.includes('"after"')), 'the fake acknowledged the entry that committed');
  const other = rest.find((id) => id !== next) as string;
  const read = await waitFor('the write on the other node', async () => {
    const r = await api(url(other), 'GET', '/kv/after');
    return r.status === 200 ? r : null;
  });
  t.is(read.body.value, 2);
});
