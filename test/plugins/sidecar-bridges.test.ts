/**
 * Bridges in a real sidecar (in-process, on embedded PostgreSQL):
 *  - a bridge's HTTP routes and gRPC services reach propose and read;
 *  - a member whose address has a bridge's scheme is reached through the
 *    bridge's connector, its answers come back through ctx.deliver, and it
 *    counts toward commit (here the "foreign" member is a RaftNode on
 *    in-memory storage, driven by the test);
 *  - a bridge that throws is contained: counted, shown in /health, and
 *    consensus goes on; a bridge whose create throws does not stop the node.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { createLogger } from '../../sidecar/src/process/logger.ts';
import { Sidecar } from '../../sidecar/src/process/sidecar.ts';
import { soloSidecarConfig, waitFor } from '../process/support.ts';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { MemoryStateMachine } from '../../sidecar/src/node/memory-state-machine.ts';
import type { InvokeHandler, Transport } from '../../sidecar/src/node/transport.ts';
import type { Message } from '../../sidecar/src/core/types.ts';
import { LOOP_SERVICE } from '../fixtures/bridges/loopback.ts';
import { FAULTY_SERVICE } from '../fixtures/bridges/faulty.ts';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/bridges/${name}.ts`, import.meta.url));

let server: PostgresInstance;
const logLines: string[] = [];

test.before(async () => {
  server = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-plugins-${process.pid}`), persistent: false });
});

test.after.always(async () => {
  await server?.stop();
});

async function startSidecar(database: string, bridges: unknown[]): Promise<Sidecar> {
  const url = await server.createDatabase(database);
  return Sidecar.start(soloSidecarConfig(url, bridges), createLogger('n1', 'debug', (line) => logLines.push(line)));
}

function grpcCall(port: number, service: grpc.ServiceDefinition, method: string, request: unknown): Promise<unknown> {
  const Client = grpc.makeGenericClientConstructor(service, 'Test');
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void> & grpc.Client;
  return new Promise((resolve, reject) => {
    (client[method] as (req: unknown, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void).call(client, request, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res);
    });
  });
}

test.serial('a bridge serves its protocol, and a member at its scheme votes and counts toward commit', async (t) => {
  const sidecar = await startSidecar('loop', [{ module: fixture('loopback'), options: { greeting: 'hi' } }, { module: fixture('faulty'), options: { fail: 'handlers' } }]);
  const hooks = globalThis.raleLoopbackBridge;
  let foreign: RaftNode | null = null;
  t.teardown(async () => {
    await foreign?.stop();
    await sidecar.stop();
  });
  if (hooks === undefined) throw new Error('the loopback bridge did not load');
  t.true(hooks.started, 'start() ran once the node was up');
  t.deepEqual(hooks.ctx.options, { greeting: 'hi' });
  const api = sidecar.apiUrl() as string;
  await waitFor('leadership', () => (hooks.ctx.status().role === 'leader' ? true : undefined));

  // Client work through the bridge's own servers.
  const set = await fetch(`${api}/loopback/set/colour`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value: 'blue' }) });
  t.is(set.status, 200);
  t.deepEqual(await grpcCall(sidecar.peerPort, LOOP_SERVICE, 'Get', { key: 'colour' }), { value: 'blue' });

  // A "foreign" member: a RaftNode whose only link to n1 is the bridge (connector out, ctx.deliver in).
  let blocked = false;
  let foreignHandler: InvokeHandler | null = null;
  const foreignTransport: Transport = {
    listen: async (_id, handler) => {
      foreignHandler = handler;
    },
    connect: () => ({
      invoke: async (type, args) => {
        if (type !== 'raft') throw new Error(`the loop member only speaks raft, not ${type}`);
        if (!blocked) await hooks.ctx.deliver('f1', structuredClone(args) as Message[]);
        return null;
      },
      close: async () => {},
    }),
    close: async () => {
      foreignHandler = null;
    },
  };
  const foreignState = new MemoryStateMachine();
  foreign = new RaftNode({ id: 'f1', log: new MemoryLogStorage(), stateMachine: foreignState, transport: foreignTransport, tickMs: 20, core: { electionTicks: 10, heartbeatTicks: 1 } });
  await foreign.start();
  const seen: string[] = [];
  hooks.toMember = async (peer, type, args) => {
    seen.push(`${peer}:${type}`);
    if (!blocked && foreignHandler !== null) await foreignHandler(type, structuredClone(args), 'n1');
    return null;
  };

  await hooks.ctx.changeMembership({ type: 'addLearner', node: 'f1', context: 'loop://f1' });
  await hooks.ctx.changeMembership({ type: 'promote', node: 'f1' });
  t.true(seen.includes('f1:raft'), 'the core reached the member through the bridge connector');
  const status = hooks.ctx.status();
  t.deepEqual(
    status.members.map((m) => [m.id, m.role, m.address]),
    [
      ['n1', 'voter', status.members[0]?.address ?? null],
      ['f1', 'voter', 'loop://f1'],
    ],
  );
  await hooks.ctx.propose({ op: 'set', key: 'k', value: 1 });
  await waitFor('the member to apply k', () => (foreignState.kv.has('k') ? true : undefined));

  // Two voters: nothing commits without the member's acknowledgement.
  blocked = true;
  const refused = await t.throwsAsync(hooks.ctx.propose({ op: 'set', key: 'k', value: 2 }, { timeoutMs: 600 }));
  t.is((refused as Error & { code?: string }).code, 'TIMEOUT');
  t.regex(refused?.message ?? '', /not applied within/);
  blocked = false;
  const outcome = await hooks.ctx.propose({ op: 'set', key: 'k', value: 3 }, { timeoutMs: 10_000 });
  t.true(outcome.index > 0);
  await waitFor('the member to apply k=3', () => (foreignState.kv.get('k') === 3 ? true : undefined));

  // The faulty bridge: its handlers throw; the node answers 500 / INTERNAL, counts it, and goes on.
  const boom = await fetch(`${api}/faulty/anything`);
  t.is(boom.status, 500);
  const grpcBoom = await t.throwsAsync(grpcCall(sidecar.peerPort, FAULTY_SERVICE, 'Boom', {}));
  t.is((grpcBoom as grpc.ServiceError).code, grpc.status.INTERNAL);
  // A handler that answered and then failed: the caller keeps its answer (no second one), the failure is counted.
  t.deepEqual(await grpcCall(sidecar.peerPort, FAULTY_SERVICE, 'AnswerThenFail', {}), { answered: true });
  const health = await fetch(`${api}/api/v1/health`);
  const body = (await health.json()) as { checks: Record<string, { ok: boolean; detail: string }> };
  t.is(health.status, 200, 'a failing bridge does not make the node unhealthy');
  t.false(body.checks.bridge_faulty?.ok);
  t.true(body.checks.bridge_loopback?.ok);
  const metrics = await (await fetch(`${api}/api/v1/metrics`)).text();
  const errors = Number(/rale_bridge_errors_total\{bridge="faulty"\} (\d+)/.exec(metrics)?.[1]);
  t.true(errors >= 4, `faulty bridge errors counted: ${errors}`);
  t.regex(metrics, /rale_bridge_errors_total\{bridge="loopback"\} 0/);
  t.true(logLines.some((l) => l.includes('component=bridge') && l.includes('failed on purpose')));
  await hooks.ctx.propose({ op: 'set', key: 'after-faults', value: true });
});

test.serial('a bridge whose create throws leaves the node running and shows as down', async (t) => {
  const sidecar = await startSidecar('faulty_create', [{ module: fixture('faulty'), options: { fail: 'create' } }]);
  t.teardown(() => sidecar.stop());
  const api = sidecar.apiUrl() as string;
  await waitFor('a leader', () => (sidecar.node?.raft.isLeader() ? true : undefined));
  const metrics = await (await fetch(`${api}/api/v1/metrics`)).text();
  t.regex(metrics, /rale_bridge_up\{bridge="faulty"\} 0/);
  const health = (await (await fetch(`${api}/api/v1/health`)).json()) as { checks: Record<string, { ok: boolean; detail: string }> };
  t.regex(health.checks.bridge_faulty?.detail ?? '', /create failed/);
  const answer = await fetch(`${api}/api/v1/consensus/propose`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value: 'still works' }) });
  t.is(answer.status, 200);
});

test.serial('a bridge module of another API version, or an unknown built-in, stops the start with a clear error', async (t) => {
  const wrongVersion = await t.throwsAsync(startSidecar('bad_version', [{ module: fixture('wrong-version') }]));
  t.regex(wrongVersion?.message ?? '', /bridge API version 99, this rale implements version 1/);
  const unknown = await t.throwsAsync(startSidecar('bad_name', [{ name: 'no-such-bridge' }]));
  t.regex(unknown?.message ?? '', /no built-in bridge named "no-such-bridge"/);
});
