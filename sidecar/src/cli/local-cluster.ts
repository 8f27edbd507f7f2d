/**
 * `npm start`: a local three-node rale cluster on embedded PostgreSQL, for
 * trying rale out. Each node gets its own PostgreSQL server under
 * `.rale/local/<node>` (kept, and reused by the next start); the nodes talk
 * over an in-process network. Prints how to connect, and stops everything
 * cleanly on Ctrl-C (SIGINT) or SIGTERM.
 *
 * Options (environment): RALE_LOCAL_DIR (data folder), RALE_LOCAL_PORT
 * (first PostgreSQL port, default 54321; the next ones follow).
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgresCluster, type PostgresInstance } from '../pg/embedded.ts';
import { PgNode } from '../pg/node.ts';
import { MemoryNetwork } from '../node/transport.ts';

const ids = ['node1', 'node2', 'node3'];
const root = process.env.RALE_LOCAL_DIR ?? fileURLToPath(new URL('../../../.rale/local/', import.meta.url));
const firstPort = Number(process.env.RALE_LOCAL_PORT ?? 54321);

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function main(): Promise<void> {
  await fs.mkdir(root, { recursive: true, mode: 0o755 });
  const ports: number[] = [];
  for (let k = 0; k < ids.length; k++) {
    const port = firstPort + k;
    if (!(await portIsFree(port))) {
      throw new Error(`port ${port} on 127.0.0.1 is taken: is another rale cluster running? Stop it, or set RALE_LOCAL_PORT to another first port.`);
    }
    ports.push(port);
  }
  console.log(`starting PostgreSQL for ${ids.join(', ')} under ${root} ...`);
  const servers: PostgresInstance[] = await startPostgresCluster({ root, count: ids.length, names: ids, ports, persistent: true });
  const network = new MemoryNetwork();
  const nodes: PgNode[] = [];
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping the nodes and their PostgreSQL servers ...`);
    await Promise.allSettled(nodes.map((n) => n.stop()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    console.log('stopped; data kept in ' + root);
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  try {
    for (const [k, id] of ids.entries()) {
      nodes.push(
        await PgNode.start({
          id,
          connectionString: (servers[k] as PostgresInstance).connectionString,
          transport: network.transport(),
          bootstrap: ids,
          onError: (err, where) => console.error(`[${id}] ${where}: ${err.message}`),
        }),
      );
    }
  } catch (err) {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    throw err;
  }
  console.log('\nrale local cluster is up. Connect with psql (or any client) to any node:\n');
  for (const [k, id] of ids.entries()) console.log(`  ${id}: psql '${(servers[k] as PostgresInstance).connectionString}'`);
  console.log(`\nthen, for example:
  SELECT rale_propose('{"op":"set","key":"greeting","value":"hello"}');   -- returns a proposal id
  SELECT * FROM rale_wait('<that id>');                                    -- after the transaction commits
  CALL rale.submit('{"op":"set","key":"n","value":1}', NULL);             -- propose and wait in one statement
  SELECT rale_get('greeting');  SELECT * FROM rale_status();  SELECT * FROM rale.members;

Ctrl-C stops the cluster; its data stays in ${path.relative(process.cwd(), root) || root} for the next start.`);
}

main().catch((err: Error) => {
  console.error(`rale: could not start the local cluster: ${err.message}`);
  process.exit(1);
});
