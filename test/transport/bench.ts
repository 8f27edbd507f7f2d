/**
 * GrpcTransport on loopback, both ends in this process (so each figure pays
 * for client and server on the same cores): raft batches per second over one
 * stream, sequential round trips, unary calls, and a 20 MiB snapshot; in the
 * clear and, when openssl is available, with mutual TLS.
 *
 *   npx tsx test/transport/bench.ts
 */
import { GrpcTransport, type GrpcTransportOptions } from '../../sidecar/src/transport/grpc.ts';
import { EntryKind, MessageType, type Message } from '../../sidecar/src/core/types.ts';
import type { Connection } from '../../sidecar/src/node/transport.ts';
import { hasOpenssl, makePki } from './helpers.ts';

const quiet = () => {};

function append(n: number, payloadBytes: number): Message {
  return {
    type: MessageType.Append,
    from: 'a',
    to: 'b',
    term: 1,
    prevIndex: n,
    prevTerm: 1,
    commit: n,
    entries: [{ index: n + 1, term: 1, kind: EntryKind.Normal, data: new Uint8Array(payloadBytes) }],
  };
}

/** `total` invokes with at most `concurrency` in flight; returns operations per second. */
async function run(total: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await op(next++);
    }),
  );
  return total / (Number(process.hrtime.bigint() - started) / 1e9);
}

async function bench(label: string, serverOptions: GrpcTransportOptions, clientOptions: GrpcTransportOptions): Promise<void> {
  const server = new GrpcTransport({ ...serverOptions, log: quiet });
  await server.listen('b', async () => null);
  const client = new GrpcTransport({ ...clientOptions, log: quiet });
  const conn: Connection = client.connect('a', 'b', server.address);
  await conn.invoke('raft', []);
  const rows: Array<[string, string]> = [];
  for (const [name, payload] of [
    ['1 append of 100 B', 100],
    ['1 append of 4 KiB', 4096],
  ] as const) {
    const batch = [append(1, payload)];
    rows.push([`raft batches/s, ${name}, 256 in flight`, (await run(50_000, 256, () => conn.invoke('raft', batch))).toFixed(0)]);
  }
  const heartbeat = [{ type: MessageType.Heartbeat, from: 'a', to: 'b', term: 1, commit: 0, context: '' } as Message];
  const sequential = await run(5_000, 1, () => conn.invoke('raft', heartbeat));
  rows.push(['raft batch round trip (1 in flight), ms', (1000 / sequential).toFixed(3)]);
  const unary = await run(5_000, 1, () => conn.invoke('propose', { data: new Uint8Array(256), hops: 1 }));
  rows.push(['unary propose round trip (1 in flight), ms', (1000 / unary).toFixed(3)]);
  rows.push(['unary calls/s, 64 in flight', (await run(20_000, 64, () => conn.invoke('propose', { data: new Uint8Array(256), hops: 1 }))).toFixed(0)]);
  const snapshot = new Uint8Array(20 * 1024 * 1024);
  const rounds = 5;
  const perSecond = await run(rounds, 1, () =>
    conn.invoke('raft', [{ type: MessageType.Snapshot, from: 'a', to: 'b', term: 1, snapshot: { meta: { index: 1, term: 1, config: { voters: ['a', 'b'], learners: [] } }, data: snapshot } }]),
  );
  rows.push(['20 MiB snapshot, MiB/s', (perSecond * 20).toFixed(0)]);
  console.log(`\n${label}`);
  for (const [k, v] of rows) console.log(`  ${k.padEnd(48)} ${v}`);
  await client.close();
  await server.close();
}

await bench('insecure, cluster secret', { clusterSecret: 's' }, { clusterSecret: 's' });
if (hasOpenssl()) {
  const pki = makePki(['a', 'b']);
  const tls = (id: 'a' | 'b') => ({ ...(pki.nodes[id] as { cert: string; key: string }), ca: pki.ca });
  await bench('mutual TLS + cluster secret', { clusterSecret: 's', tls: tls('b') }, { clusterSecret: 's', tls: tls('a') });
}
