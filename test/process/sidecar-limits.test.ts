/**
 * peer.maxMessageBytes below the core's own message and entry limits (1 MiB
 * each): the core must not build Appends the peers refuse, or an entry
 * larger than the limit (or a batch of small ones) is retransmitted forever
 * and nothing after it commits. A proposal too large is refused at once.
 */
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { freePort, startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { validateConfig } from '../../sidecar/src/process/config.ts';
import { createLogger } from '../../sidecar/src/process/logger.ts';
import { Sidecar } from '../../sidecar/src/process/sidecar.ts';
import { RaftNode } from '../../sidecar/src/node/raft-node.ts';
import { MemoryLogStorage } from '../../sidecar/src/storage/memory.ts';
import { MemoryStateMachine } from '../../sidecar/src/node/memory-state-machine.ts';
import { GrpcTransport } from '../../sidecar/src/transport/grpc.ts';

const SECRET = 'a-test-secret-of-enough-length';
const LIMIT = 64 * 1024;
let server: PostgresInstance;

test.before(async () => {
  server = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-limits-${process.pid}`), persistent: false });
});

test.after.always(async () => {
  await server?.stop();
});

test('with a small peer.maxMessageBytes, entries replicate within it and larger ones are refused at once', async (t) => {
  const url = await server.createDatabase('small_messages');
  const sAddress = `127.0.0.1:${await freePort()}`;
  const transport = new GrpcTransport({ listen: { host: '127.0.0.1', port: 0 }, clusterSecret: SECRET, maxMessageBytes: LIMIT, log: () => {} });
  const fAddress = `127.0.0.1:${await transport.bind()}`;
  const state = new MemoryStateMachine();
  const follower = new RaftNode({
    id: 'f',
    log: new MemoryLogStorage(),
    stateMachine: state,
    transport,
    addresses: { s: sAddress, f: fAddress },
    tickMs: 20,
    core: { electionTicks: 10, heartbeatTicks: 1 },
    bootstrap: ['s', 'f'],
  });
  let sidecar: Sidecar | null = null;
  t.teardown(async () => {
    await sidecar?.stop();
    await follower.stop();
  });
  await follower.start();
  sidecar = await Sidecar.start(
    validateConfig({
      nodeId: 's',
      databaseUrl: url,
      peer: { listen: sAddress, secret: SECRET, maxMessageBytes: LIMIT },
      api: { listen: '127.0.0.1:0' },
      cluster: { bootstrap: ['s', 'f'], peers: { f: { peer: fAddress } } },
      raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 1, requestTimeoutMs: 5000 },
      logLevel: 'warn',
    }),
    createLogger('s', 'warn', () => {}),
  );
  const s = sidecar;
  const deadline = Date.now() + 20_000;
  while (!(s.node?.raft.isLeader() ?? false)) {
    if (Date.now() > deadline) throw new Error('s did not become leader');
    if (follower.isLeader()) follower.transferLeadership('s');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const raft = s.node?.raft as RaftNode;

  // Too large for the peers: refused now, not retransmitted forever.
  const big = await t.throwsAsync(raft.command({ op: 'set', key: 'big', value: 'x'.repeat(100 * 1024) }, { timeoutMs: 3_000 }));
  t.is((big as Error & { code?: string }).code, 'ENTRY_TOO_LARGE');

  // Many entries that fit one by one but not in one batch: they still replicate and commit.
  const value = 'y'.repeat(8 * 1024);
  await Promise.all(Array.from({ length: 40 }, (_, k) => raft.command({ op: 'set', key: `k${k}`, value }, { timeoutMs: 15_000 })));
  await raft.command({ op: 'set', key: 'after', value: 1 }, { timeoutMs: 5_000 });
  const fDeadline = Date.now() + 10_000;
  while (!state.kv.has('after') && Date.now() < fDeadline) await new Promise((resolve) => setTimeout(resolve, 20));
  t.true(state.kv.has('after'), 'the follower applied everything');
});
