/**
 * `npm start`: a local three-node rale cluster for trying rale out. Each
 * node is a PostgreSQL server (embedded, under `.rale/local/<node>`, kept and
 * reused by the next start) with its own sidecar process (`rale start`),
 * exactly as in production, on 127.0.0.1. Prints how to connect, and stops
 * everything cleanly on Ctrl-C (SIGINT) or SIGTERM.
 *
 * Options (environment): RALE_LOCAL_DIR (data folder), RALE_LOCAL_PORT
 * (first PostgreSQL port, default 54321), RALE_LOCAL_PEER_PORT (default
 * 7401), RALE_LOCAL_API_PORT (default 8401); the next nodes take the next
 * ports.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgresCluster, type PostgresInstance } from '../pg/embedded.ts';
import { spawnSidecar, type SidecarProcess } from '../process/spawn.ts';

const ids = ['node1', 'node2', 'node3'];
const root = process.env.RALE_LOCAL_DIR ?? fileURLToPath(new URL('../../../.rale/local/', import.meta.url));
const firstPgPort = Number(process.env.RALE_LOCAL_PORT ?? 54321);
const firstPeerPort = Number(process.env.RALE_LOCAL_PEER_PORT ?? 7401);
const firstApiPort = Number(process.env.RALE_LOCAL_API_PORT ?? 8401);

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** The cluster secret, made once and kept with the data so that restarts agree. */
async function clusterSecret(): Promise<string> {
  const file = path.join(root, 'cluster-secret');
  try {
    return (await fs.readFile(file, 'utf8')).trim();
  } catch {
    const secret = randomBytes(24).toString('hex');
    await fs.writeFile(file, secret + '\n', { mode: 0o600 });
    return secret;
  }
}

async function main(): Promise<void> {
  await fs.mkdir(root, { recursive: true, mode: 0o755 });
  for (const base of [firstPgPort, firstPeerPort, firstApiPort]) {
    for (let k = 0; k < ids.length; k++) {
      if (!(await portIsFree(base + k))) {
        throw new Error(
          `port ${base + k} on 127.0.0.1 is taken: is another rale cluster running? Stop it, or set RALE_LOCAL_PORT / RALE_LOCAL_PEER_PORT / RALE_LOCAL_API_PORT to other first ports.`,
        );
      }
    }
  }
  const secret = await clusterSecret();
  console.log(`starting PostgreSQL for ${ids.join(', ')} under ${root} ...`);
  const servers: PostgresInstance[] = await startPostgresCluster({
    root,
    count: ids.length,
    names: ids,
    ports: ids.map((_, k) => firstPgPort + k),
    persistent: true,
  });
  const members = Object.fromEntries(ids.map((id, k) => [id, { peerPort: firstPeerPort + k, apiPort: firstApiPort + k }]));
  const sidecars: SidecarProcess[] = [];
  let stopping = false;
  const stop = async (why: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${why}: stopping the sidecars and their PostgreSQL servers ...`);
    await Promise.allSettled(sidecars.map((s) => s.stop()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    console.log('stopped; data kept in ' + root);
    process.exit(code);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  for (const [k, id] of ids.entries()) {
    const sidecar = spawnSidecar({
      id,
      databaseUrl: (servers[k] as PostgresInstance).connectionString,
      ...(members[id] as { peerPort: number; apiPort: number }),
      members,
      bootstrap: ids,
      clusterSecret: secret,
      onLine: (line) => console.log(`[${id}] ${line}`),
    });
    sidecars.push(sidecar);
    void sidecar.exited.then((code) => {
      if (!stopping) void stop(`sidecar ${id} exited (${code})`, 1);
    });
  }
  try {
    await Promise.all(sidecars.map((s) => s.waitHealthy(60_000)));
  } catch (err) {
    console.error(`rale: ${(err as Error).message}`);
    await stop('start failed', 1);
    return;
  }
  console.log('\nrale local cluster is up: three sidecars, each beside its own PostgreSQL.\n');
  for (const [k, id] of ids.entries()) {
    const s = sidecars[k] as SidecarProcess;
    console.log(`  ${id}: psql '${(servers[k] as PostgresInstance).connectionString}'`);
    console.log(`         REST API ${s.apiUrl}/api/v1   peer ${s.peerAddress}`);
  }
  console.log(`
then, for example:
  SELECT rale_propose('{"op":"set","key":"greeting","value":"hello"}');   -- returns a proposal id
  SELECT * FROM rale_wait('<that id>');                                    -- after the transaction commits
  CALL rale.submit('{"op":"set","key":"n","value":1}', NULL);             -- propose and wait in one statement
  SELECT rale_get('greeting');  SELECT * FROM rale_status();  SELECT * FROM rale.members;

  npx rale status --api ${(sidecars[0] as SidecarProcess).apiUrl}
  curl -s ${(sidecars[0] as SidecarProcess).apiUrl}/api/v1/cluster/status

Ctrl-C stops the cluster; its data stays in ${path.relative(process.cwd(), root) || root} for the next start.`);
}

main().catch((err: Error) => {
  console.error(`rale: could not start the local cluster: ${err.message}`);
  process.exit(1);
});
