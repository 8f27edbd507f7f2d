/**
 * A node whose PostgreSQL went away for good still stops cleanly: nothing
 * (timers, reconnect loops, pooled connections) keeps the process alive.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const run = promisify(execFile);
const embedded = fileURLToPath(new URL('../../sidecar/src/pg/embedded.ts', import.meta.url));
const pgNode = fileURLToPath(new URL('../../sidecar/src/pg/node.ts', import.meta.url));
const transport = fileURLToPath(new URL('../../sidecar/src/node/transport.ts', import.meta.url));

test('stopping a node after its PostgreSQL died lets the process exit', async (t) => {
  const script = `
    import os from 'node:os';
    import path from 'node:path';
    import { startPostgres } from ${JSON.stringify(embedded)};
    import { PgNode } from ${JSON.stringify(pgNode)};
    import { MemoryNetwork } from ${JSON.stringify(transport)};
    const server = await startPostgres({ dataDir: path.join(os.tmpdir(), 'rale-shutdown-' + process.pid), persistent: false });
    const node = await PgNode.start({ id: 'solo', connectionString: server.connectionString, transport: new MemoryNetwork().transport(), bootstrap: ['solo'], tickMs: 20, onError: () => {} });
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 700)); // let the listener start reconnecting
    await node.stop();
    console.log('stopped');
  `;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { timeout: 30_000 });
  t.regex(stdout, /stopped/);
});
