/**
 * Test support: N rale nodes in one process, each on its own embedded
 * PostgreSQL server, talking over the in-memory network.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, startPostgresCluster, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import type { TestFn } from 'ava';
import { PgNode, type PgNodeOptions } from '../../sidecar/src/pg/node.ts';
import { MemoryNetwork } from '../../sidecar/src/node/transport.ts';
import { Role } from '../../sidecar/src/core/types.ts';

export interface PgCluster {
  ids: string[];
  servers: Map<string, PostgresInstance>;
  nodes: Map<string, PgNode>;
  network: MemoryNetwork;
  /** A pool per node's database (superuser), for the test's own SQL. */
  sql: Map<string, pg.Pool>;
  startNode(id: string, extra?: Partial<PgNodeOptions>): Promise<PgNode>;
  leader(): Promise<PgNode>;
  stop(): Promise<void>;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export async function startPgCluster(name: string, ids = ['node1', 'node2', 'node3'], extra: Partial<PgNodeOptions> = {}): Promise<PgCluster> {
  const root = path.join(os.tmpdir(), `rale-${name}-${process.pid}`);
  await fs.mkdir(root, { recursive: true, mode: 0o755 });
  await fs.chmod(root, 0o755);
  const instances = await startPostgresCluster({ root, count: ids.length, names: ids, persistent: false });
  const servers = new Map(ids.map((id, k) => [id, instances[k] as PostgresInstance]));
  const sql = new Map(
    ids.map((id) => {
      const pool = new pg.Pool({ connectionString: servers.get(id)!.connectionString, max: 4 });
      pool.on('error', () => {}); // idle connections die when a test restarts a server
      return [id, pool];
    }),
  );
  const network = new MemoryNetwork();
  const nodes = new Map<string, PgNode>();
  const cluster: PgCluster = {
    ids,
    servers,
    nodes,
    network,
    sql,
    async startNode(id, more = {}) {
      const node = await PgNode.start({
        id,
        connectionString: servers.get(id)!.connectionString,
        transport: network.transport(),
        bootstrap: ids,
        tickMs: 20,
        core: { electionTicks: 10, heartbeatTicks: 2 },
        seed: ids.indexOf(id) + 1,
        ...extra,
        ...more,
      });
      nodes.set(id, node);
      return node;
    },
    async leader() {
      return waitFor('a leader', () => [...nodes.values()].find((n) => n.raft.status().role === Role.Leader));
    },
    async stop() {
      await Promise.all([...nodes.values()].map((n) => n.stop()));
      await Promise.all([...sql.values()].map((p) => p.end()));
      await Promise.all(instances.map((s) => s.stop()));
      await fs.rm(root, { recursive: true, force: true });
    },
  };
  try {
    for (const id of ids) await cluster.startNode(id);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/**
 * One embedded PostgreSQL for a whole test file (its tests create databases
 * on it): started before the tests, stopped and removed after. Returns a
 * getter for the server.
 */
export function useScratchServer(test: TestFn, name: string): () => PostgresInstance {
  let server: PostgresInstance | undefined;
  const root = path.join(os.tmpdir(), `rale-${name}-${process.pid}`);
  test.before(async () => {
    await fs.mkdir(root, { recursive: true, mode: 0o755 });
    await fs.chmod(root, 0o755);
    server = await startPostgres({ dataDir: path.join(root, 'pg'), persistent: false });
  });
  test.after.always(async () => {
    await server?.stop();
    await fs.rm(root, { recursive: true, force: true });
  });
  return () => {
    if (server === undefined) throw new Error('the scratch PostgreSQL did not start (see test.before)');
    return server;
  };
}
