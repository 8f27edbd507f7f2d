/**
 * The clusterconsensus bridge end to end: three `rale start` processes, one
 * embedded PostgreSQL each, the bridge loaded on every node (and a bridge
 * that throws, to show containment). A clusterconsensus client submits
 * through a follower; a participant (test/fixtures/clusterc-participant.ts,
 * behaving like the reference) joins as a learner at clusterc://, is refused
 * promotion, follows rale's committed changes, forwards its own client's
 * submit to its master, and is resynchronised by the next leader after the
 * first one is stopped.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { encodeSubmitRequest, decodeGenericResponse, decodePrepareResponse, decodeErr, encodePrepareRequest } from '../../bridges/clusterconsensus/codec.ts';
import { opaqueChangeKey } from '../../bridges/clusterconsensus/changes.ts';
import { freePort, startPostgresCluster, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { spawnSidecar, type SidecarProcess } from '../../sidecar/src/process/spawn.ts';
import { FakeParticipant } from '../fixtures/clusterc-participant.ts';

const ids = ['n1', 'n2', 'n3'];
const faulty = fileURLToPath(new URL('../fixtures/bridges/faulty.ts', import.meta.url));
const utf8 = (text: string) => new TextEncoder().encode(text);

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last !== undefined ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function leaderOf(nodes: SidecarProcess[]): Promise<SidecarProcess> {
  return waitFor('a leader', async () => {
    for (const node of nodes) {
      const r = await fetch(`${node.apiUrl}/api/v1/consensus/leader`).catch(() => null);
      if (r?.ok !== true) continue;
      const { node_id: leader } = (await r.json()) as { node_id: string | null };
      const found = nodes.find((n) => n.id === leader);
      if (found !== undefined) return found;
    }
    return undefined;
  });
}

async function kv(node: SidecarProcess, key: string): Promise<unknown> {
  const r = await fetch(`${node.apiUrl}/api/v1/kv/${encodeURIComponent(key)}`);
  return r.ok ? ((await r.json()) as { value: unknown }).value : undefined;
}

function post(url: string, body: string): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
}

test('clusterconsensus clients and participants work with a three-node rale cluster', async (t) => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'rale-clusterc-'));
  await fs.chmod(root, 0o755); // PostgreSQL may run as another user (root runs it as postgres)
  const nodes: SidecarProcess[] = [];
  let servers: PostgresInstance[] = [];
  const participant = new FakeParticipant('rale');
  const logs: string[] = [];
  t.teardown(async () => {
    await participant.close();
    await Promise.allSettled(nodes.map((n) => n.stop()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    await fs.rm(root, { recursive: true, force: true });
  });
  servers = await startPostgresCluster({ root, count: 3, names: ids });
  const members: Record<string, { peerPort: number; apiPort: number }> = {};
  for (const id of ids) members[id] = { peerPort: await freePort(), apiPort: await freePort() };
  for (const [k, id] of ids.entries()) {
    const { peerPort, apiPort } = members[id] as { peerPort: number; apiPort: number };
    const configFile = path.join(root, `${id}.json`);
    await fs.writeFile(
      configFile,
      JSON.stringify({
        bridges: [
          { name: 'clusterconsensus', options: { clusterId: 'rale', advertiseUrl: `http://127.0.0.1:${apiPort}`, retryMs: 200, requestTimeoutMs: 3000 } },
          { module: faulty, options: { fail: 'handlers' } },
        ],
      }),
    );
    const node = spawnSidecar({
      id,
      databaseUrl: (servers[k] as PostgresInstance).connectionString,
      peerPort,
      apiPort,
      members,
      bootstrap: ids,
      extraArgs: ['--config', configFile, '--tick-ms', '20'],
      onLine: (line) => logs.push(`${id}: ${line}`),
    });
    nodes.push(node);
  }
  t.teardown(() => {
    if (!t.passed) t.log(logs.filter((l) => /clusterc|error|warn|leader/i.test(l) && !l.includes('faulty')).slice(-40).join('\n'));
  });
  await Promise.all(nodes.map((n) => n.waitHealthy(40_000)));
  const leader = await leaderOf(nodes);
  const follower = nodes.find((n) => n !== leader) as SidecarProcess;

  // --- A clusterconsensus client submits through a follower: a kv command and an opaque change.
  const kvChange = utf8('{"op":"set","key":"colour","value":"blue"}');
  const opaque = utf8('ADD\u00d7k\u00d7v');
  const submitted = await post(`${follower.apiUrl}/_clusterc/rale/submit`, encodeSubmitRequest({ Changes: [kvChange, opaque] }));
  t.is(submitted.status, 200);
  t.deepEqual(decodeGenericResponse(await submitted.text()), { Accepted: true, Err: { Code: '', Err: '' } });
  t.is(await kv(follower, 'colour'), 'blue', 'applied once Accepted, readable on the node that answered');
  t.is(await kv(leader, opaqueChangeKey('rale', opaque)), Buffer.from(opaque).toString('base64'));

  // --- The protocol's own errors and HTTP statuses.
  t.is((await fetch(`${follower.apiUrl}/_clusterc/rale/submit`)).status, 400, 'GET: 400');
  const garbage = await post(`${follower.apiUrl}/_clusterc/rale/submit`, '{"Changes": 5}');
  t.is(garbage.status, 500);
  t.is(decodeErr(await garbage.text()).Code, 'ERR_ENCODING');
  const prepare = await post(`${leader.apiUrl}/_clusterc/rale/prepare`, encodePrepareRequest({ Instance: 1000, Master: { Addr: 'http://127.0.0.1:1' } }));
  t.true(decodePrepareResponse(await prepare.text()).Accepted > 1000, 'a rale node denies every foreign candidate');

  // --- A participant joins as a learner; the join stops there and says why it cannot be promoted.
  const url = await participant.listen();
  const join = await post(`${follower.apiUrl}/api/v1/cluster/join`, JSON.stringify({ node_id: 'p1', address: url.replace('http://', 'clusterc://') }));
  const joinBody = await join.text();
  t.is(join.status, 200, joinBody);
  // (changed may be false: on a loaded machine a relayed join can be retried after its first attempt added the learner.)
  t.like(JSON.parse(joinBody), { node_id: 'p1', role: 'learner' });
  t.regex(JSON.parse(joinBody).learner_reason, /clusterconsensus participant and cannot be promoted/);
  const status = (await (await fetch(`${leader.apiUrl}/api/v1/cluster/status`)).json()) as { members: Array<{ node_id: string; role: string; address: string }> };
  t.like(status.members.find((m) => m.node_id === 'p1'), { role: 'learner', address: url.replace('http://', 'clusterc://') }, 'membership records the participant and its protocol');
  await waitFor('participant started with the state', () => (participant.kv.get('colour') === 'blue' ? true : undefined));
  t.is(participant.master, `${leader.apiUrl}`);

  // --- Changes committed in rale (REST) reach the participant, applied.
  const proposed = await post(`${leader.apiUrl}/api/v1/consensus/propose`, JSON.stringify({ value: { op: 'set', key: 'size', value: 3 } }));
  t.is(proposed.status, 200, await proposed.text());
  await waitFor('the participant applies size', () => (participant.kv.get('size') === 3 ? true : undefined));
  t.true(participant.applied.includes('{"op":"set","key":"size","value":3}'));

  // --- A client of the participant: it forwards the submit to its master (rale's leader).
  const viaParticipant = await post(`${url}/_clusterc/rale/submit`, encodeSubmitRequest({ Changes: [utf8('{"op":"set","key":"from-participant","value":true}')] }));
  t.deepEqual(decodeGenericResponse(await viaParticipant.text()), { Accepted: true, Err: { Code: '', Err: '' } });
  t.is(await kv(follower, 'from-participant'), true);
  await waitFor('the participant applies its own client change', () => (participant.kv.get('from-participant') === true ? true : undefined));

  // --- The throwing bridge is contained and shows in /health; consensus goes on.
  t.is((await fetch(`${leader.apiUrl}/faulty`)).status, 500);
  const health = (await (await fetch(`${leader.apiUrl}/api/v1/health`)).json()) as { checks: Record<string, { ok: boolean; detail: string }> };
  t.false(health.checks.bridge_faulty?.ok);
  t.true(health.checks.bridge_clusterconsensus?.ok, JSON.stringify(health.checks.bridge_clusterconsensus));
  t.regex(health.checks.bridge_clusterconsensus?.detail ?? '', /p1 .*at index \d+, instance \d+/);

  // --- Leader change: the new leader prepares a higher instance and restarts the participant from its state.
  const instanceBefore = participant.instance;
  const installsBefore = participant.installs;
  await leader.stop();
  nodes.splice(nodes.indexOf(leader), 1);
  const next = await leaderOf(nodes);
  const after = await post(`${next.apiUrl}/_clusterc/rale/submit`, encodeSubmitRequest({ Changes: [utf8('{"op":"set","key":"after","value":"failover"}')] }));
  t.deepEqual(decodeGenericResponse(await after.text()).Accepted, true);
  await waitFor('the participant follows the new leader', () => (participant.kv.get('after') === 'failover' ? true : undefined), 30_000);
  t.true(participant.instance > instanceBefore, `instance ${participant.instance} > ${instanceBefore}`);
  t.true(participant.installs > installsBefore, 'resynchronised with start');
  t.is(participant.master, next.apiUrl);
});
