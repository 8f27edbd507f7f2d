/**
 * SidecarTransport (plugins/sidecar-transport.ts) on its own:
 *  - each node started on it gets its own view, and a node that finishes
 *    stopping late detaches itself only, not the node that replaced it;
 *  - a bridge connector that never answers cannot hang the node: its
 *    invoke and close are bounded and the failure is counted against the
 *    bridge.
 */
import test from 'ava';
import { GrpcTransport } from '../../sidecar/src/transport/grpc.ts';
import { SidecarTransport, checkNodeInfo } from '../../sidecar/src/plugins/sidecar-transport.ts';
import type { Message } from '../../sidecar/src/core/types.ts';

function makeTransport(connectorTimeoutMs?: number): { transport: SidecarTransport; errors: Array<[string, string]> } {
  const errors: Array<[string, string]> = [];
  const base = new GrpcTransport({ listen: { host: '127.0.0.1', port: 0 }, log: () => {} });
  const transport = new SidecarTransport(base, 'n1', (owner, err) => errors.push([owner, (err as Error).message]), connectorTimeoutMs);
  return { transport, errors };
}

test('a node that finishes stopping after its successor started does not detach the successor', async (t) => {
  const { transport } = makeTransport();
  t.teardown(() => transport.closeForGood());
  const calls: string[] = [];
  const old = transport.forNode();
  await old.listen('n1', async () => {
    calls.push('old');
    return null;
  });
  // The old node is being stopped; meanwhile its successor starts ...
  const successor = transport.forNode();
  await successor.listen('n1', async () => {
    calls.push('successor');
    return null;
  });
  // ... and the old node's stop reaches transport.close() only now.
  await old.close();
  await transport.deliver('n2', [] as Message[]);
  t.deepEqual(calls, ['successor']);

  // The successor's own close does detach it.
  await successor.close();
  const refused = await t.throwsAsync(transport.deliver('n2', [] as Message[]));
  t.is((refused as Error & { code?: string }).code, 'STOPPED');
});

test('a bridge connector whose invoke or close never settles is bounded and counted against the bridge', async (t) => {
  const { transport, errors } = makeTransport(200);
  t.teardown(() => transport.closeForGood());
  transport.registerScheme('hang', 'hanging', () => ({
    invoke: () => new Promise(() => {}),
    close: () => new Promise(() => {}),
  }));
  const connection = transport.connect('n1', 'f1', 'hang://10.0.0.9:1');
  const failed = await t.throwsAsync(connection.invoke('raft', []));
  t.regex(failed?.message ?? '', /bridge hanging.*did not answer within 200 ms/);
  await connection.close(); // resolves: a stopping node is not held by the bridge
  t.is(errors.length, 2);
  t.true(errors.every(([owner]) => owner === 'hanging'));
  t.regex(errors[1]?.[1] ?? '', /close/);
});

test("a peer's 'info' answer is taken only as an http(s) URL of sane length", (t) => {
  t.deepEqual(checkNodeInfo({ api: 'http://10.0.0.4:8400' }), { api: 'http://10.0.0.4:8400' });
  t.deepEqual(checkNodeInfo({ api: 'https://rale-2.example:8400/' }), { api: 'https://rale-2.example:8400' }, 'no trailing slash');
  for (const bad of [null, 'http://x', 42, {}, { api: null }, { api: 7 }, { api: 'file:///etc/passwd' }, { api: 'javascript:alert(1)' }, { api: 'not a url' }, { api: `http://h/${'x'.repeat(3000)}` }]) {
    t.is(checkNodeInfo(bad), null, JSON.stringify(bad)?.slice(0, 60));
  }
});
