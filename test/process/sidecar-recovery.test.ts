/**
 * The sidecar's database watchdog and node restarts (in-process, on
 * embedded PostgreSQL), where the restart races something else:
 *  - a stop() while the node is being restarted stops the new node too;
 *  - watchdog pings that were sent to the previous node and fail late do
 *    not stop the node that replaced it.
 */
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { PgNode } from '../../sidecar/src/pg/node.ts';
import { createLogger } from '../../sidecar/src/process/logger.ts';
import { Sidecar } from '../../sidecar/src/process/sidecar.ts';
import { soloSidecarConfig, waitFor } from './support.ts';

let server: PostgresInstance;
const logLines: string[] = [];

test.before(async () => {
  server = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-recovery-${process.pid}`), persistent: false });
});

test.after.always(async () => {
  await server?.stop();
});

async function startSidecar(database: string): Promise<Sidecar> {
  const url = await server.createDatabase(database);
  return Sidecar.start(soloSidecarConfig(url), createLogger('n1', 'debug', (line) => logLines.push(line)));
}

function running(node: PgNode): boolean {
  try {
    node.raft.status();
    return true;
  } catch {
    return false;
  }
}

test.serial('a stop while the node restarts stops the restarted node as well', async (t) => {
  const sidecar = await startSidecar('stop_during_restart');
  const started: PgNode[] = [];
  const originalStart = PgNode.start;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let restartBegan!: () => void;
  const began = new Promise<void>((resolve) => (restartBegan = resolve));
  t.teardown(async () => {
    PgNode.start = originalStart;
    release();
    await sidecar.stop();
    for (const node of started) await node.stop();
  });
  await waitFor('leadership', () => (sidecar.node?.raft.isLeader() ? true : undefined));

  // The restart's PgNode.start is held until the stop is under way.
  PgNode.start = async (options) => {
    restartBegan();
    await gate;
    const node = await originalStart.call(PgNode, options);
    started.push(node);
    return node;
  };
  const first = sidecar.node as PgNode;
  await first.raft.stop(); // as when its storage fails: the sidecar restarts it
  await began;
  t.is(sidecar.status, 'recovering');
  const stopping = sidecar.stop();
  release();
  await stopping;

  t.is(sidecar.status, 'stopped');
  t.is(sidecar.node, null, 'no node is attached to a stopped sidecar');
  t.true(started.length <= 1);
  for (const node of started) t.false(running(node), 'the node started during the stop was stopped');
});

test.serial('late failures of pings sent to the previous node do not stop the node that replaced it', async (t) => {
  const sidecar = await startSidecar('stale_pings');
  const nodes: PgNode[] = [];
  t.teardown(async () => {
    await sidecar.stop();
    for (const node of nodes) await node.stop();
  });
  await waitFor('leadership', () => (sidecar.node?.raft.isLeader() ? true : undefined));
  const first = sidecar.node as PgNode;

  // Pings that hang (a database that stopped answering), answered only later.
  const realPing = sidecar.backend.pingDatabase;
  const pending: Array<(err: Error) => void> = [];
  sidecar.backend.pingDatabase = () => new Promise<void>((_, reject) => pending.push(reject));
  await waitFor('two pings in flight', () => (pending.length >= 2 ? true : undefined));
  sidecar.backend.pingDatabase = realPing;

  // Meanwhile the node restarts (its storage failed) and a new node serves.
  await first.raft.stop();
  const second = await waitFor('the restarted node', () => {
    const node = sidecar.node;
    return node !== null && node !== first && sidecar.status === 'running' ? node : undefined;
  });
  nodes.push(second);

  // Now the old pings fail: they were about the node that is gone.
  for (const reject of pending) reject(new Error('no answer within 1000 ms'));
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // three watchdog rounds
  const now = sidecar.node;
  if (now !== null && now !== second) nodes.push(now);
  t.is(now, second, 'the node that replaced the first one still serves');
  t.true(running(second));
  t.is(sidecar.status, 'running');
});
